package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"

	"github.com/sengo-relay/sengo-relay/internal/config"
)

// The production layout in deploy/ stays loadable: nats-server accepts
// its config, the relay accepts its own, and every manifest is valid YAML.
func TestDeployFiles(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy")
	t.Setenv("SERVER_NAME", "nats-1")
	const natsToken = "nats_0123456789abcdef"
	t.Setenv("NATS_TOKEN", natsToken)
	for i := 1; i <= 3; i++ { // as the entrypoint makes them
		t.Setenv(fmt.Sprintf("NATS_ROUTE_%d", i), fmt.Sprintf("nats://route:%s@nats-%d:6222", natsToken, i))
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats", "nats-server.conf"))
	if err != nil {
		t.Fatalf("nats-server.conf: %v", err)
	}
	if opts.ServerName != "nats-1" || !opts.JetStream || opts.Cluster.Name != "sengo" || len(opts.Routes) != 3 {
		t.Fatalf("nats-server.conf: name %q jetstream %v cluster %q routes %d", opts.ServerName, opts.JetStream, opts.Cluster.Name, len(opts.Routes))
	}
	// Every listener beyond loopback authenticates: clients and routes with
	// the token; monitoring, which cannot, is on loopback.
	if opts.Authorization != natsToken || opts.Cluster.Username != "route" || opts.Cluster.Password != natsToken || opts.HTTPHost != "127.0.0.1" {
		t.Fatalf("nats-server.conf: client token set %v, route user %q, route password set %v, monitoring on %q", opts.Authorization == natsToken, opts.Cluster.Username, opts.Cluster.Password == natsToken, opts.HTTPHost)
	}
	for _, r := range opts.Routes {
		if p, _ := r.User.Password(); r.User.Username() != "route" || p != natsToken {
			t.Fatalf("nats-server.conf: route %s does not carry the token", r.Redacted())
		}
	}
	if !opts.SyncAlways {
		t.Fatal("nats-server.conf: JetStream must fsync before every acknowledgement (sync_interval: always)")
	}

	secrets := t.TempDir()
	env := map[string]string{}
	for key, file := range map[string]string{
		"SENGO_RELAY_PROJECTS_MAIN_API_KEY_FILE":        "k",
		"SENGO_RELAY_PROJECTS_MAIN_TOKEN_FILE":          "t",
		"SENGO_RELAY_PROJECTS_MAIN_CALLBACK_TOKEN_FILE": "c",
		"SENGO_RELAY_ENDPOINTS_ORDERS_SECRETS_FILE":     "w",
		"SENGO_RELAY_ADMIN_TOKEN_FILE":                  "a",
		"SENGO_RELAY_METRICS_TOKEN_FILE":                "m",
		"SENGO_RELAY_NATS_TOKEN_FILE":                   "n",
	} {
		p := filepath.Join(secrets, file)
		value := "secret-value-0123456789"
		if file == "w" {
			value = testSecret
		}
		os.WriteFile(p, []byte(value+"\n"), 0o600)
		env[key] = p
	}
	cfg, err := config.Load(filepath.Join(dir, "relay.yaml"), config.Env(env))
	if err != nil {
		t.Fatalf("relay.yaml: %v", err)
	}
	if cfg.NATS.Replicas != 3 || !strings.Contains(cfg.NATS.URL, "nats-3") || !cfg.Projects["main"].Confirms() {
		t.Fatalf("relay.yaml: %+v", cfg.NATS)
	}

	// The image's configuration holds no secret and no project: alone it is
	// refused, saying how to add one; with a project from the environment
	// (as the README's Docker section does) it loads, on :8080, fsync always.
	image := filepath.Join(dir, "docker", "config.yaml")
	if _, err := config.Load(image, config.Env{}); err == nil || !strings.Contains(err.Error(), "SENGO_RELAY_PROJECTS_") {
		t.Fatalf("image config without a project: %v", err)
	}
	cfg, err = config.Load(image, config.Env{
		"SENGO_RELAY_PROJECTS_MAIN_API_KEY_FILE": env["SENGO_RELAY_PROJECTS_MAIN_API_KEY_FILE"],
		"SENGO_RELAY_PROJECTS_MAIN_TOKEN_FILE":   env["SENGO_RELAY_PROJECTS_MAIN_TOKEN_FILE"],
	})
	if err != nil {
		t.Fatalf("image config: %v", err)
	}
	if u, _ := healthURL(cfg.HTTP.Listen); u != "http://127.0.0.1:8080/healthz" || cfg.DataDir != "/data" || !cfg.Projects["main"].Confirms() {
		t.Fatalf("image config: healthcheck %s, data %s", u, cfg.DataDir)
	}
	if _, always, _ := cfg.NATS.Embedded.Sync(); !always {
		t.Fatal("image config: sync_interval is not always")
	}
	// No file in deploy/ carries a secret value: every Secret the file sets
	// on its own is empty, and every Secret of the loaded configuration came
	// from one of the secret files the variables named.
	fromFiles := map[string]bool{}
	for _, p := range env {
		b, _ := os.ReadFile(p)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			fromFiles[line] = true
		}
	}
	for _, f := range []string{"relay.yaml", "docker/config.yaml"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		raw := config.Default()
		if err := yaml.Unmarshal(b, &raw); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		eachSecret(reflect.ValueOf(raw), "", func(path string, s config.Secret) {
			if s.Set() {
				t.Errorf("%s: %s holds a secret value; use %s_file or a variable", f, path, path)
			}
		})
		withEnv := config.Env{}
		for k, v := range env {
			withEnv[k] = v
		}
		if f == "docker/config.yaml" { // the endpoint as the README's docker run adds it
			withEnv["SENGO_RELAY_ENDPOINTS_ORDERS_URL"] = "https://orders.internal.example.id/hooks/sengo"
			withEnv["SENGO_RELAY_ENDPOINTS_ORDERS_FILTER_STATUSES"] = "success,expired,failed"
		}
		loaded, err := config.Load(filepath.Join(dir, f), withEnv)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		set := 0
		eachSecret(reflect.ValueOf(loaded), "", func(path string, s config.Secret) {
			if s.Set() {
				set++
			}
			if s.Set() && !fromFiles[s.Value()] {
				t.Errorf("%s: %s is set, but not from a secret file", f, path)
			}
		})
		if set < len(env) { // each variable named one secret file
			t.Errorf("%s: %d secrets set from %d files", f, set, len(env))
		}
	}
	// Nor a line that looks like a secret, whatever key it is under.
	for _, f := range []string{"relay.yaml", "docker/config.yaml"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		for _, key := range []string{"token:", "api_key:", "callback_token:", "password:", "secrets:", "whsec_"} {
			for _, line := range strings.Split(string(b), "\n") {
				if l := strings.TrimSpace(line); strings.HasPrefix(l, key) && !strings.HasPrefix(l, "#") {
					t.Errorf("%s: a secret written in the file: %q", f, l)
				}
			}
		}
	}
	dockerignore, err := os.ReadFile(filepath.Join("..", "..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"deploy/secrets/", "sandbox-data/", "data/", "/config.yaml", "*.local.yaml", "**/*.local.yaml", "webhook.secret"} {
		if !strings.Contains("\n"+string(dockerignore), "\n"+must+"\n") {
			t.Errorf(".dockerignore does not exclude %s", must)
		}
	}
	// deploy/secrets/ keeps nothing in git but its .gitignore.
	if b, err := os.ReadFile(filepath.Join(dir, "secrets", ".gitignore")); err != nil || string(b) != "*\n!.gitignore\n" {
		t.Errorf("deploy/secrets/.gitignore must ignore everything but itself: %q %v", b, err)
	}
	dockerfile, _ := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if !strings.Contains(string(dockerfile), "COPY deploy/docker/config.yaml") || !strings.Contains(string(dockerfile), `CMD ["/sengo-relay", "healthcheck"]`) {
		t.Error("Dockerfile: the image must carry deploy/docker/config.yaml and probe http.listen")
	}

	for _, f := range []string{"compose.yaml", "k8s/nats.yaml", "k8s/relay.yaml"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		docs := 0
		for {
			var v map[string]any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if strings.HasPrefix(f, "k8s/") && (v["apiVersion"] == nil || v["kind"] == nil) {
				t.Fatalf("%s: document %d lacks apiVersion or kind", f, docs+1)
			}
			docs++
		}
		if docs == 0 {
			t.Fatalf("%s: empty", f)
		}
	}

	// Compose, Kubernetes and the README name the same secrets relay.yaml
	// reads, and both start serve without --config: the file is mounted
	// where the image's SENGO_RELAY_CONFIG points, which the healthcheck
	// reads too.
	const imageConfig = "/etc/sengo-relay/config.yaml"
	if !strings.Contains(string(dockerfile), "ENV SENGO_RELAY_CONFIG="+imageConfig+"\n") {
		t.Errorf("Dockerfile: SENGO_RELAY_CONFIG is not %s", imageConfig)
	}
	relayYAML, _ := os.ReadFile(filepath.Join(dir, "relay.yaml"))
	var want []string
	for _, m := range regexp.MustCompile(`/run/secrets/([a-z0-9_]+)`).FindAllStringSubmatch(string(relayYAML), -1) {
		want = append(want, m[1])
	}
	slices.Sort(want)
	if len(want) < 6 {
		t.Fatalf("relay.yaml: secrets %v", want)
	}
	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
			Secrets []string `yaml:"secrets"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
		Secrets map[string]struct {
			File string `yaml:"file"`
		} `yaml:"secrets"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for name, svc := range compose.Services {
		if !strings.HasPrefix(name, "relay-") {
			continue
		}
		got := slices.Sorted(slices.Values(svc.Secrets))
		if !slices.Equal(got, want) || !slices.Equal(svc.Command, []string{"serve"}) || !slices.Contains(svc.Volumes, "./relay.yaml:"+imageConfig+":ro") {
			t.Errorf("compose.yaml %s: command %v, secrets %v (relay.yaml reads %v), volumes %v", name, svc.Command, got, want, svc.Volumes)
		}
	}
	for _, name := range want {
		if compose.Secrets[name].File != "./secrets/"+name {
			t.Errorf("compose.yaml: secret %s is not ./secrets/%s", name, name)
		}
	}
	var deployment struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Args         []string `yaml:"args"`
						VolumeMounts []struct {
							Name      string `yaml:"name"`
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
					Volumes []struct {
						Name   string `yaml:"name"`
						Secret struct {
							SecretName string `yaml:"secretName"`
						} `yaml:"secret"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	k8s, _ := os.ReadFile(filepath.Join(dir, "k8s", "relay.yaml"))
	if err := yaml.NewDecoder(bytes.NewReader(k8s)).Decode(&deployment); err != nil {
		t.Fatalf("k8s/relay.yaml: %v", err)
	}
	// The Kubernetes relays reach the StatefulSet's pods, not compose's hosts.
	if !strings.Contains(string(k8s), "SENGO_RELAY_NATS_URL, value: \"nats://nats-0.nats.sengo.svc:4222,nats://nats-1.nats.sengo.svc:4222,nats://nats-2.nats.sengo.svc:4222\"") {
		t.Error("k8s/relay.yaml: the relays' NATS URL is not the StatefulSet's three pods")
	}
	pod := deployment.Spec.Template.Spec
	if len(pod.Containers) != 1 || !slices.Equal(pod.Containers[0].Args, []string{"serve"}) {
		t.Errorf("k8s/relay.yaml: the relay's args are not [serve]")
	}
	mounts := map[string]string{}
	for _, m := range pod.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["config"] != filepath.Dir(imageConfig) || mounts["secrets"] != "/run/secrets" {
		t.Errorf("k8s/relay.yaml: mounts %v", mounts)
	}
	readme, _ := os.ReadFile(filepath.Join("..", "..", "README.md"))
	_, docker, _ := strings.Cut(string(readme), "\n## Docker\n")
	docker, _, _ = strings.Cut(docker, "\n## ")
	for _, v := range pod.Volumes {
		if v.Secret.SecretName == "" {
			continue
		}
		for _, name := range want {
			for where, text := range map[string]string{"k8s/relay.yaml": string(k8s), "README's Docker section": docker} {
				if !strings.Contains(text, "generic "+v.Secret.SecretName) || !strings.Contains(text, "--from-file="+name) {
					t.Errorf("%s: no kubectl line creating secret %s with %s", where, v.Secret.SecretName, name)
				}
			}
		}
	}
}

// The README's Docker section works with the relay's rules: its run block
// makes secrets that deploy/relay.yaml loads with (as compose mounts them),
// and each docker run names variables and mounts with which the image's
// configuration loads.
func TestDockerSectionCommands(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is not installed; .ci/run installs it")
		}
		t.Skip("openssl is not installed")
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Docker\n")
	section, _, _ = strings.Cut(section, "\n## ")
	if !ok {
		t.Fatal("README.md has no Docker section")
	}
	var run string
	var dockerRuns []string
	for _, part := range strings.Split(section, "```sh\n")[1:] {
		code, _, _ := strings.Cut(part, "```")
		if strings.Contains(code, "docker run ") {
			dockerRuns = append(dockerRuns, code)
		}
		if strings.Contains(code, "openssl rand") && !strings.Contains(code, "docker") {
			run = code
		}
	}
	if run == "" || len(dockerRuns) < 2 {
		t.Fatalf("README.md Docker section: the secrets block or the docker run examples are missing")
	}
	work := t.TempDir()
	shell := func(code string) {
		t.Helper()
		cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", code)
		cmd.Dir = work
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s\n%s", err, code, out)
		}
	}
	// SenGo's two values first, put in place by hand as the section says;
	// all under a umask that keeps new files to their owner.
	secrets := filepath.Join(work, "deploy", "secrets")
	os.MkdirAll(secrets, 0o700)
	shell("umask 077; printf '%s' 'SC-0123456789abcdef' > deploy/secrets/sengo_api_key; printf '%s' 'tok-0123456789abcdef' > deploy/secrets/sengo_token")
	shell("umask 077\n" + run)
	if st, err := os.Stat(secrets); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("deploy/secrets: %v %v, want 0700", st.Mode(), err)
	}
	entries, _ := os.ReadDir(secrets)
	for _, e := range entries {
		if st, _ := e.Info(); st.Mode().Perm()&0o004 == 0 {
			t.Errorf("deploy/secrets/%s: %v; the container's user cannot read a bind-mounted file the host keeps 0600", e.Name(), st.Mode())
		}
	}
	// deploy/relay.yaml with the files where compose mounts them.
	relay, err := os.ReadFile(filepath.Join("..", "..", "deploy", "relay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	mounted := filepath.Join(work, "relay.yaml")
	os.WriteFile(mounted, []byte(strings.ReplaceAll(string(relay), "/run/secrets/", secrets+"/")), 0o600)
	if _, err := config.Load(mounted, config.Env{}); err != nil {
		t.Errorf("deploy/relay.yaml with the secrets the README makes: %v", err)
	}

	for i, code := range dockerRuns {
		words := strings.Fields(strings.ReplaceAll(code, "\\\n", " "))
		mounts, env := map[string]string{}, config.Env{}
		for j := 0; j+1 < len(words); j++ {
			arg := strings.Trim(strings.ReplaceAll(words[j+1], "$PWD", work), `"`)
			switch words[j] {
			case "-v":
				host, inside, _ := strings.Cut(arg, ":")
				inside = strings.TrimSuffix(inside, ":ro")
				if strings.HasPrefix(host, "/") {
					mounts[inside] = host
				}
			case "-e":
				k, v, _ := strings.Cut(arg, "=")
				env[k] = v
			case "-p":
				if strings.HasSuffix(arg, ":4222") && strings.Count(arg, ":") < 2 {
					t.Errorf("docker run %d: -p %s publishes NATS on every interface of the host", i+1, arg)
				}
			}
		}
		for k, v := range env {
			if strings.HasPrefix(v, "/run/secrets/") {
				if mounts[v] == "" {
					t.Errorf("docker run %d: %s=%s is not mounted", i+1, k, v)
				}
				env[k] = mounts[v]
			}
		}
		// Its own commands first (the subscriber's password).
		for _, line := range strings.Split(code, "\n") {
			if strings.HasPrefix(line, "openssl ") {
				shell(line)
			}
		}
		cfg, err := config.Load(filepath.Join("..", "..", "deploy", "docker", "config.yaml"), env)
		if err != nil {
			t.Errorf("docker run %d: the image's config with its variables: %v", i+1, err)
			continue
		}
		if cfg.Projects["main"] == nil || !cfg.Projects["main"].Confirms() {
			t.Errorf("docker run %d: project main does not confirm", i+1)
		}
	}
}

// eachSecret calls fn with the dotted path of every config.Secret under v.
func eachSecret(v reflect.Value, path string, fn func(string, config.Secret)) {
	if v.Type() == reflect.TypeFor[config.Secret]() {
		fn(path, v.Interface().(config.Secret))
		return
	}
	join := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			eachSecret(v.Elem(), path, fn)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			eachSecret(v.Field(i), join(name), fn)
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			eachSecret(v.MapIndex(k), join(fmt.Sprint(k.Interface())), fn)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			eachSecret(v.Index(i), fmt.Sprintf("%s[%d]", path, i), fn)
		}
	}
}

// deploy/nginx.conf really sends a callback that one relay answers 503
// (store unavailable) to the other: nginx does not retry a POST on 503
// unless told non_idempotent. Tested against real nginx, which .ci/run
// installs; without it the test is skipped, except under CI.
func TestNginxRetries503OnTheOtherRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			bin = "/usr/sbin/nginx"
		} else if os.Getenv("CI") != "" {
			t.Fatal("nginx is not installed; .ci/run installs it")
		} else {
			t.Skip("nginx is not installed (apt-get install nginx-light)")
		}
	}
	var down, up atomic.Int64
	var forwarded sync.Map // the X-Forwarded-For values the relay saw
	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		down.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer unavailable.Close()
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded.Store(r.Header.Get("X-Forwarded-For"), true)
		body, _ := io.ReadAll(r.Body)
		if string(body) != `{"id":"tx-1"}` {
			w.WriteHeader(400)
			return
		}
		up.Add(1)
		w.WriteHeader(200)
	}))
	defer healthy.Close()

	conf, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := string(conf)
	for from, to := range map[string]string{
		"relay-1:8080": strings.TrimPrefix(unavailable.URL, "http://"),
		"relay-2:8080": strings.TrimPrefix(healthy.URL, "http://"),
		"listen 80;":   "listen " + addr + ";",
	} {
		if !strings.Contains(c, from) {
			t.Fatalf("nginx.conf has no %q", from)
		}
		c = strings.Replace(c, from, to, 1)
	}
	c = "pid " + dir + "/nginx.pid;\nerror_log " + dir + "/error.log;\n" + c
	c = strings.Replace(c, "http {", "http {\n  access_log off;\n  client_body_temp_path "+dir+"/body;\n  proxy_temp_path "+dir+"/proxy;", 1)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", path, "-g", "daemon off;")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the workers go with the master
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() }()
	eventually(t, "nginx listening", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	const n = 6
	for i := range n {
		// A caller's own X-Forwarded-For (SenGo's address, to pass
		// allowed_ips) is not passed on: appended to, it reached the relay,
		// which trusts nginx's network and so took the caller's word.
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/callbacks/sengo/main", strings.NewReader(`{"id":"tx-1"}`))
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("callback %d: %d through nginx (relay 1 saw %d, relay 2 %d)\n%s", i, resp.StatusCode, down.Load(), up.Load(), b)
		}
	}
	if up.Load() != n || down.Load() == 0 {
		t.Fatalf("relay 2 stored %d of %d; relay 1 was tried %d times", up.Load(), n, down.Load())
	}
	forwarded.Range(func(k, _ any) bool {
		if k != "127.0.0.1" {
			t.Errorf("the relay saw X-Forwarded-For %q, want nginx's peer alone (127.0.0.1)", k)
		}
		return true
	})
}
