// Command lint-deploy checks the Dockerfile with BuildKit's own linter (the
// rules of `docker build --check`) and deploy/compose.yaml with compose-go
// (the loader and JSON schema of `docker compose config`), without Docker,
// and decodes every Kubernetes manifest of deploy/k8s strictly into the
// official API types (an unknown or misplaced field is an error). It also
// applies .dockerignore: nothing secret enters the build context, and the
// relay builds from what does.
// It is its own module so the relay's go.mod does not carry their
// dependencies. Run from the repository root: scripts/lint-deploy.sh.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	root := "."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	problems := lintDockerfile(filepath.Join(root, "Dockerfile"))
	problems += lintContext(root)
	problems += lintCompose(filepath.Join(root, "deploy", "compose.yaml"))
	for _, f := range []string{"nats.yaml", "relay.yaml"} {
		problems += lintKubernetes(filepath.Join(root, "deploy", "k8s", f))
	}
	if problems > 0 {
		fmt.Printf("lint-deploy: %d problem(s)\n", problems)
		os.Exit(1)
	}
	fmt.Println("lint-deploy: Dockerfile, deploy/compose.yaml and deploy/k8s ok")
}

func lintDockerfile(path string) int {
	dt, err := os.ReadFile(path)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	// The checks of `docker build --check`: every stage, every rule. Base
	// images are not fetched; each resolves to an empty linux image of this
	// machine's architecture.
	source := llb.NewSourceMap(nil, path, "Dockerfile", dt)
	source.Definition = &llb.Definition{}
	res, err := dockerfile2llb.DockerfileLint(context.Background(), dt, dockerfile2llb.ConvertOpt{
		SourceMap:    source,
		MetaResolver: offlineImages{},
	})
	if err != nil {
		fmt.Printf("%s: %v\n", path, err)
		return 1
	}
	n := 0
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		fmt.Printf("%s:%d: %s: %s (%s)\n", path, line, w.RuleName, w.Detail, w.URL)
		n++
	}
	if res.Error != nil {
		fmt.Printf("%s: %s\n", path, res.Error.Message)
		n++
	}
	return n
}

// offlineImages answers every base image with an empty configuration, so
// the lint needs no registry.
type offlineImages struct{}

func (offlineImages) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	img := ocispecs.Image{Platform: ocispecs.Platform{OS: "linux", Architecture: runtime.GOARCH}}
	img.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	b, err := json.Marshal(img)
	return ref, digest.FromBytes(b), b, err
}

// mustLeave are paths the build context must never carry: a user's own
// configuration, deploy's secrets, the relay's and the sandbox's data.
var mustLeave = []string{
	".git/config", "config.yaml", "my.local.yaml", "deploy/my.local.yaml", "deploy/secrets/sengo_api_key",
	"data/jetstream/relay.password", "sandbox-data/x", "webhook.secret", "examples/webhook.secret",
	"sengo-relay", "sengo-relay.test", "cmd/sengo-relay/sengo-relay.test", "cpu.prof",
	".env", "deploy/.env",
}

// lintContext applies .dockerignore as `docker build` does: the paths of
// mustLeave are excluded, and the relay builds from what is left (copied
// to a temporary directory) with the files the Dockerfile copies present.
func lintContext(root string) int {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		fmt.Printf(".dockerignore: %v\n", err)
		return 1
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		fmt.Printf(".dockerignore: %v\n", err)
		return 1
	}
	n := 0
	for _, p := range mustLeave {
		if ok, _ := pm.MatchesOrParentMatches(p); !ok {
			fmt.Printf(".dockerignore: %s would enter the build context\n", p)
			n++
		}
	}
	tmp, err := os.MkdirTemp("", "lint-deploy-context-")
	if err != nil {
		fmt.Println(err)
		return n + 1
	}
	defer os.RemoveAll(tmp)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ok, err := pm.MatchesOrParentMatches(rel); err != nil || ok {
			if d.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(tmp, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(tmp, rel), b, 0o644)
	})
	if err != nil {
		fmt.Printf("build context: %v\n", err)
		return n + 1
	}
	for _, p := range []string{"go.mod", "go.sum", "deploy/docker/config.yaml"} {
		if _, err := os.Stat(filepath.Join(tmp, p)); err != nil {
			fmt.Printf("build context: %s is missing; the Dockerfile copies it\n", p)
			n++
		}
	}
	build := exec.Command("go", "build", "-trimpath", "-o", os.DevNull, "./cmd/sengo-relay")
	build.Dir = tmp
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Printf("build context: the relay does not build from it: %v\n%s", err, out)
		n++
	}
	return n
}

func lintCompose(path string) int {
	opts, err := cli.NewProjectOptions([]string{path}, cli.WithName("sengo-relay"))
	if err != nil {
		fmt.Printf("%s: %v\n", path, err)
		return 1
	}
	if _, err := opts.LoadProject(context.Background()); err != nil {
		fmt.Printf("%s: %v\n", path, err)
		return 1
	}
	return 0
}

// kinds are the manifests' types, by apiVersion and kind.
var kinds = map[string]func() any{
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"apps/v1/StatefulSet":           func() any { return &appsv1.StatefulSet{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/Ingress":  func() any { return &networkingv1.Ingress{} },
}

func lintKubernetes(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	n := 0
	for i, doc := range strings.Split(string(b), "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			fmt.Printf("%s: document %d: %v\n", path, i+1, err)
			n++
			continue
		}
		mk, ok := kinds[head.APIVersion+"/"+head.Kind]
		if !ok {
			fmt.Printf("%s: document %d: %s %s is not a kind this lint knows\n", path, i+1, head.APIVersion, head.Kind)
			n++
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), mk()); err != nil {
			fmt.Printf("%s: document %d (%s): %v\n", path, i+1, head.Kind, err)
			n++
		}
	}
	return n
}
