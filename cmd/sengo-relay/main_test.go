package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
	"github.com/sengo-relay/sengo-relay/stream"
)

// TestMain lets a test start this binary as the real relay process (for
// SIGKILL and SIGTERM tests): with SENGORELAY_TEST_MAIN=1 it runs main.
func TestMain(m *testing.M) {
	if os.Getenv("SENGORELAY_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	b, err := fixtures.CommittedConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "sengo-relay-config-")
	if err == nil {
		committedConfig = filepath.Join(dir, "config.yaml")
		err = os.WriteFile(committedConfig, b, 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	checkedInConfig = committedConfig
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// committedConfig is the repository's config.yaml as committed (see
// fixtures.CommittedConfig), in a temp file; checkedInConfig is what a test
// runs the relay with, that file unless the test points it elsewhere.
var committedConfig, checkedInConfig string

// relayEnv points the checked-in config at a temp data dir and free ports.
func relayEnv(dataDir string, extra ...string) []string {
	return append([]string{
		"SENGO_RELAY_DATA_DIR=" + dataDir,
		"SENGO_RELAY_HTTP_LISTEN=127.0.0.1:0",
		"SENGO_RELAY_NATS_EMBEDDED_LISTEN=127.0.0.1:0",
		"SENGO_RELAY_METRICS_LISTEN=127.0.0.1:0",
		"SENGO_RELAY_LOG_LEVEL=debug",
	}, extra...)
}

// logWatch reads JSON log lines and remembers fields of interest.
type logWatch struct {
	mu    sync.Mutex
	lines []map[string]any
	seen  chan struct{}
}

func watchLogs(r io.Reader) *logWatch {
	w := &logWatch{seen: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			w.mu.Lock()
			w.lines = append(w.lines, m)
			w.mu.Unlock()
			select {
			case w.seen <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// field waits for a log line with message msg and returns its key field.
func (w *logWatch) field(t testing.TB, msg, key string) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		for _, l := range w.lines {
			if l["message"] == msg {
				v, _ := l[key].(string)
				w.mu.Unlock()
				return v
			}
		}
		w.mu.Unlock()
		select {
		case <-w.seen:
		case <-deadline:
			t.Fatalf("no log line %q within 30s", msg)
		}
	}
}

// atLeast returns the lines at level warn or above (level "warn"), or
// every line but debug ("info").
func (w *logWatch) atLeast(level string) string {
	skip := map[string][]string{"warn": {"debug", "info"}, "info": {"debug"}}[level]
	var b strings.Builder
	for _, line := range strings.Split(w.text(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || slices.Contains(skip, fmt.Sprint(m["level"])) {
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func (w *logWatch) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, l := range w.lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// startRun runs run() in this process with the checked-in config; it
// returns the HTTP base URL, the logs, and a stop function that returns
// run's error.
func startRun(t testing.TB, env []string) (string, *logWatch, func() error) {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	pr, pw := io.Pipe()
	logs := watchLogs(pr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", checkedInConfig}, pw, io.Discard)
		pw.Close()
	}()
	addr := logs.field(t, "http listening", "addr")
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = fmt.Errorf("run did not return within 30s of cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return "http://" + addr, logs, stop
}

func post(t testing.TB, url string, body []byte) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func waitReady(t testing.TB, base string) {
	t.Helper()
	eventually(t, "readyz 200", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func eventually(t testing.TB, what string, cond func() bool) { t.Helper(); poll.Until(t, what, cond) }

// collect subscribes to sengo.events.> and gathers events.
type collect struct {
	mu  sync.Mutex
	evs []event.Event
}

func subscribe(t *testing.T, url string, opts ...nats.Option) *collect {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.Timeout(15*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c := &collect{}
	if _, err := nc.Subscribe("sengo.events.>", func(m *nats.Msg) {
		ev, err := event.Unmarshal(m.Data)
		if err != nil {
			t.Errorf("undecodable event on %s: %v", m.Subject, err)
			return
		}
		c.mu.Lock()
		c.evs = append(c.evs, ev)
		c.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *collect) n() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.evs) }

// storedEvents reads SENGO_EVENTS through a JetStream client at url.
func storedEvents(t *testing.T, url string, opts ...nats.Option) []event.Event {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.Timeout(15*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var out []event.Event
	for _, m := range natstest.Messages(t, js, event.StreamEvents) {
		ev, err := event.Unmarshal(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func uniqueIDs(t *testing.T, evs []event.Event) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, e := range evs {
		if ids[e.ID] {
			t.Errorf("event %s stored twice", e.ID)
		}
		ids[e.ID] = true
	}
	return ids
}

// The README's first-callback walkthrough, end to end through run(): each
// fixture answers 200, and a plain NATS subscriber on the embedded server
// sees one normalized event per status change.
func TestServeEndToEnd(t *testing.T) {
	base, logs, stop := startRun(t, relayEnv(t.TempDir()))
	natsURL := logs.field(t, "embedded nats started", "client_url")
	waitReady(t, base)
	if err := run(context.Background(), []string{"healthcheck", "--url", base + "/healthz"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("healthcheck against a running relay: %v", err)
	}
	// Without --url it probes http.listen, as the container's healthcheck does.
	t.Setenv("SENGO_RELAY_HTTP_LISTEN", strings.TrimPrefix(base, "http://"))
	if err := run(context.Background(), []string{"healthcheck", "--config", checkedInConfig}, io.Discard, io.Discard); err != nil {
		t.Fatalf("healthcheck on http.listen: %v", err)
	}
	sub := subscribe(t, natsURL, subscriberAuth(t, logs))

	distinct := map[string]bool{}
	for _, fx := range fixtures.Callbacks() {
		if code := post(t, base+"/callbacks/sengo/main", fx.Body); code != 200 {
			t.Fatalf("%s: %d", fx.Name, code)
		}
		var env struct{ ResponseData json.RawMessage }
		raw := fx.Body
		if json.Unmarshal(fx.Body, &env) == nil && env.ResponseData != nil {
			raw = env.ResponseData
		}
		var tx struct{ ID, Status string }
		_ = json.Unmarshal(raw, &tx)
		distinct[tx.ID+"/"+tx.Status] = true
	}
	eventually(t, "one event per status change", func() bool { return sub.n() >= len(distinct) })
	if err := stop(); err != nil {
		t.Fatalf("run returned %v", err)
	}
	if sub.n() != len(distinct) {
		t.Fatalf("subscriber saw %d events, want %d", sub.n(), len(distinct))
	}
	for _, ev := range sub.evs {
		if ev.SpecVersion != "1.0" || ev.Source != "sengo/main" || !strings.HasPrefix(ev.Type, "id.sengo.transaction.") || ev.Data.Currency != "IDR" {
			t.Errorf("not a normalized event: %+v", ev)
		}
	}
	if !strings.Contains(logs.text(), `"message":"stopped"`) {
		t.Error("no orderly shutdown in the logs")
	}
}

// A relay that cannot reach its NATS at start says why. It retried
// without a word of its own, and the operator could not tell a server
// down from a wrong token or an untrusted certificate. (Once while the
// reason stays the same: TestAConnectFailureIsLoggedOnce.)
func TestARelayThatCannotConnectSaysWhy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, logs := startRunWith(t, writeConfig(t, endpointYAML("orders", newHook(t).URL, "1s")),
		relayEnv(t.TempDir(), "SENGO_RELAY_NATS_URL=nats://"+closed))
	eventually(t, "a log line saying why NATS cannot be reached", func() bool {
		return strings.Contains(logs.text(), "connection refused")
	})
	if !strings.Contains(logs.text(), `"url":"nats://`+closed+`"`) {
		t.Errorf("the relay did not name the server it connects to: %s", logs.text())
	}
}

// NATS stopped: callbacks get 503; back: the same callbacks get 200 and
// produce their events once.
func TestNATSOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	srv := natstest.Start(t)
	orders := newHook(t)
	base, logs := startRunWith(t, writeConfig(t, endpointYAML("orders", orders.URL, "1s")),
		relayEnv(t.TempDir(), "SENGO_RELAY_NATS_URL="+srv.URL(), "SENGO_RELAY_HTTP_PUBLISH_TIMEOUT=1s", "SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay warnings:\n%s", logs.atLeast("warn"))
		}
	})
	waitReady(t, base)
	first := fixtures.Body("callback-va-success")
	if code := post(t, base+"/callbacks/sengo/main", first); code != 200 {
		t.Fatalf("before the outage: %d", code)
	}
	srv.Stop()
	during := [][]byte{fixtures.Body("callback-retail-success"), fixtures.Body("callback-qris-success"), fixtures.Body("callback-ewallet-failed")}
	for _, b := range during {
		resp, err := http.Post(base+"/callbacks/sengo/main", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("during the outage: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	resp, _ := http.Get(base + "/readyz")
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("readyz during the outage: %d", resp.StatusCode)
	}
	srv.Restart()
	for _, b := range append(during, first) { // SenGo retries, plus a repeat of the first
		eventually(t, "200 after recovery", func() bool { return post(t, base+"/callbacks/sengo/main", b) == 200 })
	}
	eventually(t, "4 events", func() bool { return len(storedEvents(t, srv.URL())) >= 4 })
	evs := storedEvents(t, srv.URL())
	ids := uniqueIDs(t, evs)
	if len(ids) != 4 || len(evs) != 4 {
		t.Fatalf("%d events after recovery, want 4 distinct", len(evs))
	}
	eventually(t, "4 webhooks", func() bool { return len(orders.received()) >= 4 })
	delivered := map[string]int{}
	for _, id := range orders.received() {
		delivered[id]++
	}
	for id := range ids {
		if delivered[id] != 1 {
			t.Errorf("event %s delivered %d times, want once", id, delivered[id])
		}
	}
}

// relayProcess is this test binary running main() as the real relay.
type relayProcess struct {
	cmd  *exec.Cmd
	logs *logWatch
	base string
}

func startProcess(t *testing.T, dataDir string, extraEnv ...string) *relayProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--config", checkedInConfig)
	cmd.Env = append(append(os.Environ(), "SENGORELAY_TEST_MAIN=1"), relayEnv(dataDir, extraEnv...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &relayProcess{cmd: cmd, logs: watchLogs(out)}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			lines := strings.Split(p.logs.text(), "\n")
			t.Logf("relay stderr:\n%s\nrelay log (last lines):\n%s", stderr.String(), strings.Join(lines[max(0, len(lines)-15):], "\n"))
		}
	})
	p.base = "http://" + p.logs.field(t, "http listening", "addr")
	return p
}

// SIGKILL right after callbacks were answered 200, before intake could
// finish them; the restarted relay publishes every one, each once.
func TestKillAfter200LosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	dir := t.TempDir()
	// Intake confirms with a slow SenGo (the sandbox, 200 ms per answer)
	// with one worker, so notifications are really in flight, some taken
	// and not acknowledged, when the kill comes.
	sb, client, sbURL := startSandbox(t, sandbox.CallbackPolicy{})
	env := []string{"SENGO_RELAY_INTAKE_WORKERS=1", "SENGO_RELAY_PROJECTS_MAIN_API_KEY=" + sbKey,
		"SENGO_RELAY_PROJECTS_MAIN_TOKEN=" + sbToken, "SENGO_RELAY_PROJECTS_MAIN_BASE_URL=" + sbURL}
	const n = 30
	var bodies [][]byte
	var ids []string
	for i := range n {
		tx, err := client.CreateRetail(context.Background(), sengo.RetailRequest{Reference: fmt.Sprintf("K-%d", i), PhoneNumber: "0812", Channel: "indomaret", Amount: 10000, ViewName: "Toko"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
			t.Fatal(err)
		}
		paid, err := client.Check(context.Background(), tx.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, append(append([]byte(`{"responseData":`), paid.Raw...), '}'))
		ids = append(ids, tx.ID)
	}
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(200 * time.Millisecond)})
	p := startProcess(t, dir, env...)
	waitReady(t, p.base)
	for i, body := range bodies {
		if code := post(t, p.base+"/callbacks/sengo/main", body); code != 200 {
			t.Fatalf("callback %d: %d", i, code)
		}
	}
	// Prove the work is in flight at the moment of the kill: the intake
	// consumer has delivered at least one notification it has not
	// acknowledged, and its ack floor is below the last one accepted.
	nc, err := nats.Connect(p.logs.field(t, "embedded nats started", "client_url"), relayAuth(t, p.logs), nats.Timeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	var info *jetstream.ConsumerInfo
	eventually(t, "a notification taken by intake", func() bool {
		c, err := js.Consumer(context.Background(), event.StreamInbox, "intake")
		if err != nil {
			return false
		}
		info, err = c.Info(context.Background())
		return err == nil && info.NumAckPending > 0
	})
	nc.Close()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	if info.AckFloor.Stream >= n || info.NumAckPending == 0 {
		t.Fatalf("nothing in flight at the kill: ack floor %d of %d, %d unacknowledged", info.AckFloor.Stream, n, info.NumAckPending)
	}
	t.Logf("killed with intake's ack floor at %d of %d, %d taken and unacknowledged", info.AckFloor.Stream, n, info.NumAckPending)

	sb.SetFaults(sandbox.Faults{})
	p2 := startProcess(t, dir, env...)
	waitReady(t, p2.base)
	natsURL := p2.logs.field(t, "embedded nats started", "client_url")
	auth := relayAuth(t, p2.logs)
	eventually(t, fmt.Sprintf("%d events after restart", n), func() bool { return len(storedEvents(t, natsURL, auth)) >= n })
	evs := storedEvents(t, natsURL, auth)
	got := uniqueIDs(t, evs)
	for i, id := range ids {
		if !got[event.ID("main", id, event.StatusSuccess)] {
			t.Errorf("callback %d was answered 200 but has no event", i)
		}
	}
	if len(evs) != n {
		t.Errorf("%d events, want %d", len(evs), n)
	}
}

// SIGTERM: a graceful stop that exits 0 and says so.
func TestSIGTERMStopsGracefully(t *testing.T) {
	p := startProcess(t, t.TempDir())
	waitReady(t, p.base)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := p.cmd.Wait()
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if !strings.Contains(p.logs.text(), `"message":"stopped"`) {
		t.Fatalf("no orderly stop in the logs:\n%s", p.logs.text())
	}
}

func TestSubcommands(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "sengo-relay ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"check-config", "--config", checkedInConfig}, &out, io.Discard); err != nil {
		t.Fatalf("check-config on the checked-in config: %v", err)
	}
	if !strings.Contains(out.String(), "project main: POST /callbacks/sengo/main") {
		t.Fatalf("check-config output: %s", out.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("http: {listen: nope}\nnats: {replicas: 0}\nprojects: {main: {signature: maybe}}\nextra: 1\n"), 0o600)
	err := run(context.Background(), []string{"check-config", "--config", bad}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "extra") {
		t.Fatalf("unknown key: %v", err)
	}
	os.WriteFile(bad, []byte("http: {listen: nope}\nnats: {replicas: 0}\nprojects: {main: {signature: maybe}}\n"), 0o600)
	err = run(context.Background(), []string{"check-config", "--config", bad}, io.Discard, io.Discard)
	for _, want := range []string{"http.listen", "nats.replicas", "projects.main.signature"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("invalid config error does not list %s: %v", want, err)
		}
	}
	if err := run(context.Background(), []string{"healthcheck", "--url", "http://127.0.0.1:1/healthz"}, io.Discard, io.Discard); err == nil {
		t.Error("healthcheck passed with nothing listening")
	}
	if err := run(context.Background(), []string{"frobnicate"}, io.Discard, io.Discard); err == nil {
		t.Error("unknown command accepted")
	}
}

// check-config says per project whether notifications are confirmed and
// against which API, and never prints a secret (not even a password in
// nats.url).
func TestCheckConfigShowsConfirmationAndRedacts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(`nats: {url: "nats://relay:s3cretpass@10.0.0.1:4222,nats://relay:s3cretpass@10.0.0.2:4222"}
projects:
  main: {api_key: SC-KEY-123, token: tok-secret-456, base_url: "http://127.0.0.1:8090/api", require_confirmation: true}
  open: {}
  gw: {api_key: SC-KEY-789, token: tok-secret-789, base_url: "https://gw:apipw0123456@api.example.id/api", callback_token: cbtok-0123456789abcdef}
`), 0o600)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check-config", "--config", path}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"project main: POST /callbacks/sengo/main, confirm on against http://127.0.0.1:8090/api, required, signature optional, api token on",
		"project open: POST /callbacks/sengo/open, confirm off (events carry confirmed: false), signature off, api token off",
		"nats://relay:xxxxx@10.0.0.1:4222",
		"project gw: POST /callbacks/sengo/gw/<callback_token>, confirm on against https://gw:xxxxx@api.example.id/api",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("check-config does not say %q:\n%s", want, s)
		}
	}
	for _, secret := range []string{"s3cretpass", "SC-KEY-123", "tok-secret-456", "SC-KEY-789", "tok-secret-789", "apipw0123456", "cbtok-0123456789abcdef"} {
		if strings.Contains(s, secret) {
			t.Errorf("check-config prints a secret:\n%s", s)
		}
	}
}

// relayAuth is the relay's own identity on the embedded server whose
// start logs shows (the CLI's too): its password file in the store dir.
func relayAuth(t testing.TB, logs *logWatch) nats.Option {
	t.Helper()
	dir := logs.field(t, "embedded nats started", "store_dir")
	pw, err := stream.ReadPassword(filepath.Join(dir, stream.RelayPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	return nats.UserInfo(config.EmbeddedRelayUser, pw)
}

// subscriberAuth is the read-only identity order services use.
func subscriberAuth(t testing.TB, logs *logWatch) nats.Option {
	t.Helper()
	pw, err := stream.ReadPassword(logs.field(t, "embedded nats started", "subscriber_password_file"))
	if err != nil {
		t.Fatal(err)
	}
	return nats.UserInfo(logs.field(t, "embedded nats started", "subscriber_user"), pw)
}

// /metrics is not on the public callback listener; it has a listener of its
// own, behind a bearer token when one is set.
func TestMetricsAreNotPublic(t *testing.T) {
	base, logs, _ := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_METRICS_TOKEN=metrics-token-0123456789"))
	waitReady(t, base)
	if code := get(t, base+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("public listener /metrics: %d, want 404", code)
	}
	addr := logs.field(t, "metrics listening", "addr")
	if code := get(t, "http://"+addr+"/metrics"); code != http.StatusUnauthorized {
		t.Fatalf("metrics without the token: %d", code)
	}
	for _, wrong := range []string{"Bearer metrics-token-0123456788", "Bearer ", "Basic bWV0cmljcy10b2tlbi0wMTIzNDU2Nzg5"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		req.Header.Set("Authorization", wrong)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("metrics with %q: %d, want 401", wrong, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer metrics-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "sengo_relay_inbox_pending") {
		t.Fatalf("metrics with the token: %d", resp.StatusCode)
	}
}

// The checked-in config runs group commit: the embedded store says so at
// start, and callbacks answered 200 were served by the relay's fsyncs,
// several callbacks sharing one.
func TestCheckedInConfigRunsGroupCommit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("group commit needs syncfs (Linux); elsewhere nats-server fsyncs every write")
	}
	base, logs, _ := startRun(t, relayEnv(t.TempDir()))
	waitReady(t, base)
	logs.field(t, "embedded nats started", "store_dir")
	if strings.Contains(logs.text(), "the store is on XFS") {
		t.Skip("the temporary directory is on XFS, where the relay keeps per-write fsync")
	}
	if !strings.Contains(logs.text(), `"group_commit":true`) {
		t.Fatal("embedded nats started without group commit on the checked-in config")
	}
	body := fixtures.Body("callback-retail-success")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code := post(t, base+"/callbacks/sengo/main", body); code != 200 {
				t.Errorf("callback: %d", code)
			}
		}()
	}
	wg.Wait()
	addr := logs.field(t, "metrics listening", "addr")
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fsyncs, writers := metricValue(string(b), "sengo_relay_store_fsyncs_total"), metricValue(string(b), "sengo_relay_store_fsync_writers_total")
	if fsyncs < 1 || writers < 8 {
		t.Fatalf("%v fsyncs served %v writers after 8 callbacks answered 200: the 200s did not wait for the relay's fsync", fsyncs, writers)
	}
}

// nats.storage: memory (tests only) keeps nothing across a restart, so a
// 200 to SenGo is not durable whatever the fsync setting: check-config
// says so, where it used to print "fsync always (group commit)" alone.
func TestCheckConfigWarnsOfMemoryStorage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("nats: {storage: memory}\nprojects:\n  main: {}\n"), 0o600)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check-config", "--config", path}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "memory storage: everything stored is lost on restart") {
		t.Errorf("check-config does not warn of memory storage:\n%s", out.String())
	}
}

// http.max_body_bytes may be up to 16 MiB, and the store takes messages of
// its max_payload at most (the embedded one 8 MiB, a NATS server's 1 MiB by
// default): a callback near the limit could not be stored (503 at every
// try of SenGo's), and one that could, with its headers, not quarantined,
// so that it was retried until the inbox dropped it. serve refuses to start
// when the limit leaves the headers no room within the store's max_payload.
func TestServeRefusesABodyLimitTheStoreCannotHold(t *testing.T) {
	for _, kv := range relayEnv(t.TempDir(), "SENGO_RELAY_HTTP_MAX_BODY_BYTES=16777216") {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	pr, pw := io.Pipe()
	logs := watchLogs(pr)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", checkedInConfig}, pw, io.Discard)
		pw.Close()
	}()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "http.max_body_bytes") || !strings.Contains(err.Error(), "max_payload") {
				t.Fatalf("serve: %v, want http.max_body_bytes refused for the store's max_payload", err)
			}
			return
		case <-logs.seen:
			if strings.Contains(logs.text(), `"http listening"`) {
				t.Fatal("serve started with a body limit over the store's max_payload")
			}
		case <-deadline:
			t.Fatal("serve neither started nor refused within 30s")
		}
	}
}

// A relay started while its external NATS was down exited at once: the
// connection, still being made, reported a max_payload of 0, and the body
// limit's check refused every limit ("set it to at most -65536"). It
// waits instead, as the README says, and takes callbacks once NATS is up;
// the body limit is checked then.
func TestServeWaitsForAnExternalNATSThatIsDown(t *testing.T) {
	srv := natstest.Start(t)
	srv.Stop()
	base, logs, _ := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_NATS_URL="+srv.URL()))
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("readyz with NATS down: %d", resp.StatusCode)
	}
	srv.Restart()
	waitReady(t, base)
	if code := post(t, base+"/callbacks/sengo/main", fixtures.Body("callback-va-success")); code != 200 {
		t.Fatalf("a callback once NATS is up: %d\n%s", code, logs.atLeast("warn"))
	}
}

// The same relay with a body limit the server cannot hold stops once it
// reaches the server, with why.
func TestServeStartedWhileNATSIsDownChecksTheBodyLimitOnceUp(t *testing.T) {
	srv := natstest.Start(t)
	srv.Stop()
	base, _, stop := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_NATS_URL="+srv.URL(), "SENGO_RELAY_HTTP_MAX_BODY_BYTES=16777216"))
	srv.Restart()
	eventually(t, "the relay stopped", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return true
		}
		resp.Body.Close()
		return false
	})
	if err := stop(); err == nil || !strings.Contains(err.Error(), "http.max_body_bytes") || !strings.Contains(err.Error(), "max_payload") {
		t.Fatalf("serve: %v, want http.max_body_bytes refused for the server's max_payload", err)
	}
}

// A relay whose streams JetStream refuses to provision as configured (an
// external NATS that holds SENGO_INBOX in memory from a trial with
// nats.storage: memory; nats.replicas: 3 on a server that cannot place
// them) retries with /readyz at 503. Its callback listener answered 200
// meanwhile, each a write into the stream as it was: in memory, lost with
// the server's next restart, and never processed. Until its streams are
// provisioned, a callback is refused (503, store_unavailable).
func TestCallbacksWaitForTheStreamsToBeProvisioned(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	spec := provisionSpec(config.Default())
	inbox := spec.Streams[0]
	if inbox.Name != event.StreamInbox {
		t.Fatalf("the spec's first stream is %s", inbox.Name)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: inbox.Name, Subjects: inbox.Subjects, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	base, logs, _ := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_NATS_URL="+srv.URL()))
	logs.field(t, "provisioning streams failed; retrying", "error")
	if code := post(t, base+"/callbacks/sengo/main", fixtures.Body("callback-va-success")); code != 503 {
		t.Fatalf("a callback while the inbox is in memory, not provisioned: %d, want 503", code)
	}
	if info, err := js.Stream(t.Context(), inbox.Name); err != nil || info.CachedInfo().State.Msgs != 0 {
		t.Fatalf("the memory inbox holds %d messages (%v)", info.CachedInfo().State.Msgs, err)
	}
}

// A relay moved from its embedded store to nats.url leaves the store's
// unfinished work (notifications answered 200, events not delivered) where
// nothing reads it: it says so at start.
func TestARelayOnNATSURLWarnsOfTheStoreItLeft(t *testing.T) {
	srv := natstest.Start(t)
	dataDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dataDir, "jetstream", "jetstream", "$G", "streams", event.StreamInbox), 0o750); err != nil {
		t.Fatal(err)
	}
	_, logs, _ := startRun(t, relayEnv(dataDir, "SENGO_RELAY_NATS_URL="+srv.URL()))
	if dir := logs.field(t, "nats.url is set, and the embedded store an earlier run of this relay used is still in store_dir: nothing reads it now, and what it held unfinished stays there (README: \"Moving from the embedded store\")", "store_dir"); dir == "" {
		t.Fatal("no store_dir in the warning")
	}
}
