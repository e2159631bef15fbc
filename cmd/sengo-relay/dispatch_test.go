package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/verify"
)

const (
	testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	adminToken = "admin-token-0123456789abcdef"
)

// hook is a webhook consumer that verifies signatures and records events.
type hook struct {
	*httptest.Server
	mu     sync.Mutex
	ids    []string
	bodies [][]byte
	fail   atomic.Int64 // answer 500 to this many more requests
	hang   atomic.Bool  // hang every request until the client gives up
	gate   atomic.Pointer[gate]
}

// gate holds one failed answer: the one that leaves left failures to give.
type gate struct {
	left int64
	open chan struct{}
}

// holdFailure makes the failed answer that leaves left failures to give
// wait, before answering 500, until release is called (or the client
// gives up): the test sees what the relay did before it.
func (h *hook) holdFailure(t *testing.T, left int64) (release func()) {
	g := &gate{left: left, open: make(chan struct{})}
	h.gate.Store(g)
	var once sync.Once
	release = func() { once.Do(func() { close(g.open) }) }
	t.Cleanup(release)
	return release
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	v, err := verify.NewWebhookVerifier(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := v.Verify(r.Header, body); err != nil {
			t.Errorf("bad signature: %v", err)
			w.WriteHeader(400)
			return
		}
		if h.hang.Load() {
			<-r.Context().Done()
			return
		}
		if left := h.fail.Add(-1); left >= 0 {
			if g := h.gate.Load(); g != nil && g.left == left {
				select {
				case <-g.open:
				case <-r.Context().Done():
				}
			}
			w.WriteHeader(500)
			return
		}
		h.mu.Lock()
		h.ids = append(h.ids, r.Header.Get("webhook-id"))
		h.bodies = append(h.bodies, body)
		h.mu.Unlock()
		w.WriteHeader(200)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) received() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ids...)
}

// writeConfig writes a config with webhook endpoints for the tests.
func writeConfig(t testing.TB, endpoints string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	body := `projects:
  main: {}
admin: {listen: "127.0.0.1:0", token: ` + adminToken + `}
endpoints:
` + endpoints
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func endpointYAML(name, url, timeout string) string {
	return fmt.Sprintf("  %s: {url: %q, secrets: [%s], filter: {all: true}, deliver_from: all, timeout: %s, retry: {schedule: [200ms, 200ms, 200ms, 200ms, 200ms], jitter: 0}}\n", name, url, testSecret, timeout)
}

// startRunWith runs run() with the given config file.
func startRunWith(t testing.TB, cfgPath string, env []string) (string, *logWatch) {
	t.Helper()
	checkedInConfig = cfgPath
	t.Cleanup(func() { checkedInConfig = committedConfig })
	base, logs, _ := startRun(t, env)
	return base, logs
}

// A callback accepted by the relay reaches a webhook consumer, signed;
// dead letters and replays work through the CLI and the admin API.
func TestDeliveryEndToEnd(t *testing.T) {
	good, bad := newHook(t), newHook(t)
	bad.fail.Store(1 << 30)
	cfg := writeConfig(t, endpointYAML("orders", good.URL, "1s")+endpointYAML("broken", bad.URL, "1s"))
	base, logs := startRunWith(t, cfg, relayEnv(t.TempDir()))
	natsURL := logs.field(t, "embedded nats started", "client_url")
	adminAddr := logs.field(t, "admin listening", "addr")
	waitReady(t, base)

	body := fixtures.Body("callback-retail-success")
	if code := post(t, base+"/callbacks/sengo/main", body); code != 200 {
		t.Fatal(code)
	}
	want := event.ID("main", "66e934f6-f5d6-4f1c-bb3d-450ec2873782", event.StatusSuccess)
	eventually(t, "the webhook", func() bool { return len(good.received()) == 1 })
	if got := good.received()[0]; got != want {
		t.Fatalf("webhook-id %s, want %s", got, want)
	}

	// The broken endpoint exhausts 6 attempts and dead-letters; the CLI sees it.
	t.Setenv("SENGO_RELAY_NATS_EMBEDDED_LISTEN", strings.TrimPrefix(natsURL, "nats://")) // the CLI reaches the relay's embedded server
	var out bytes.Buffer
	eventually(t, "a dead letter", func() bool {
		out.Reset()
		return run(context.Background(), []string{"dlq", "list", "--config", cfg, "--endpoint", "broken", "--json"}, &out, io.Discard) == nil &&
			strings.Contains(out.String(), want)
	})
	var entries []struct {
		Seq      uint64
		Attempts int
		Reason   string
	}
	json.Unmarshal(out.Bytes(), &entries)
	if len(entries) != 1 || entries[0].Attempts != 6 || entries[0].Reason != "retries_exhausted" {
		t.Fatalf("dead letters %s", out.String())
	}

	// Admin API: token required; endpoint status shows the failures.
	req, _ := http.NewRequest(http.MethodGet, "http://"+adminAddr+"/admin/endpoints", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("admin without token: %d", resp.StatusCode)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var status []struct {
		Name                string
		ConsecutiveFailures int
	}
	json.NewDecoder(resp.Body).Decode(&status)
	resp.Body.Close()
	if len(status) != 2 || status[0].Name != "broken" || status[0].ConsecutiveFailures != 6 {
		t.Fatalf("endpoint status %+v", status)
	}

	// Redrive after the endpoint recovers: delivered with the same id.
	bad.fail.Store(0)
	out.Reset()
	if err := run(context.Background(), []string{"dlq", "redrive", "--config", cfg, "--endpoint", "broken"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "redriven 1 of 1") {
		t.Fatalf("redrive: %v %s", err, out.String())
	}
	eventually(t, "the redriven webhook", func() bool { return len(bad.received()) == 1 })
	if bad.received()[0] != want {
		t.Fatalf("redrive changed the id: %s", bad.received()[0])
	}

	// Replay the last hour to orders: the same event again, with progress.
	var progress bytes.Buffer
	out.Reset()
	if err := run(context.Background(), []string{"replay", "--config", cfg, "--endpoint", "orders", "--since", "1h"}, &out, &progress); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "queued 1 deliveries, 0 already queued by an earlier run (matched per endpoint: orders 1)") || !strings.Contains(progress.String(), "1/1 events scanned") {
		t.Fatalf("replay output %q progress %q", out.String(), progress.String())
	}
	eventually(t, "the replayed webhook", func() bool { return len(good.received()) == 2 })
	if ids := good.received(); ids[1] != want {
		t.Fatalf("replay changed the id: %v", ids)
	}
	// The console shows the command line's replay as a job, done.
	jobID := strings.Fields(out.String())[1]
	jobID = strings.TrimSuffix(jobID, ":")
	req, _ = http.NewRequest(http.MethodGet, "http://"+adminAddr+"/admin/replays/"+jobID, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var job struct {
		Relay    string
		Progress dispatcher.ReplayProgress
	}
	json.NewDecoder(resp.Body).Decode(&job)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(job.Relay, "sengo-relay replay ") || !job.Progress.Done || job.Progress.Queued != 1 {
		t.Fatalf("the admin API on the command line's replay %s: %d %+v; want it done, 1 queued, run by the command", jobID, resp.StatusCode, job)
	}

	// The printed command runs the same job again: nothing is sent twice,
	// whereas the relative --since 1h would now be another window.
	first := out.String()
	_, resume, ok := strings.Cut(first, "run:\n  sengo-relay ")
	if !ok {
		t.Fatalf("no resume command in %q", first)
	}
	out.Reset()
	if err := run(context.Background(), strings.Fields(resume), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "queued 0 deliveries, 1 already queued by an earlier run") {
		t.Fatalf("second run: %q", out.String())
	}
	// So is the window its first line prints, typed again: printed to the
	// second, it was another job, which queued everything again.
	window := regexp.MustCompile(`events stored (\S+) to (\S+), for`).FindStringSubmatch(first)
	if window == nil {
		t.Fatalf("no window in %q", first)
	}
	out.Reset()
	if err := run(context.Background(), []string{"replay", "--config", cfg, "--endpoint", "orders", "--since", window[1], "--until", window[2]}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "queued 0 deliveries, 1 already queued by an earlier run") {
		t.Fatalf("the printed window %s to %s run again: %q", window[1], window[2], out.String())
	}
	// A dry run counts per endpoint and queues nothing.
	out.Reset()
	if err := run(context.Background(), []string{"replay", "--config", cfg, "--all", "--since", "1d", "--dry-run"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "would queue 2 deliveries (per endpoint: broken 1, orders 1); nothing queued") {
		t.Fatalf("dry run: %q", out.String())
	}
}

// SIGKILL while one endpoint has an attempt in flight and the other has
// retries scheduled; after a restart every event reaches every endpoint,
// none under a new id.
func TestKillDuringDeliveriesLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	slow, flaky := newHook(t), newHook(t)
	slow.hang.Store(true)
	flaky.fail.Store(8)
	cfg := writeConfig(t, endpointYAML("slow", slow.URL, "1s")+endpointYAML("flaky", flaky.URL, "1s"))
	dir := t.TempDir()
	checkedInConfig = cfg
	t.Cleanup(func() { checkedInConfig = committedConfig })
	p := startProcess(t, dir, "SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0")
	waitReady(t, p.base)
	want := map[string]bool{}
	for i := range 5 {
		body := fmt.Appendf(nil, `{"id":"k-%d","merchantRef":"K-%d","status":"success","feePayer":"customer","amount":1000,"fee":0,"totalAmount":1000,"qris":{}}`, i, i)
		if code := post(t, p.base+"/callbacks/sengo/main", body); code != 200 {
			t.Fatal(code)
		}
		want[event.ID("main", fmt.Sprintf("k-%d", i), event.StatusSuccess)] = true
	}
	eventually(t, "retries scheduled on flaky", func() bool { return flaky.fail.Load() <= 3 })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	slow.hang.Store(false)

	p2 := startProcess(t, dir, "SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0")
	waitReady(t, p2.base)
	for name, h := range map[string]*hook{"slow": slow, "flaky": flaky} {
		eventually(t, name+" to receive every event", func() bool {
			got := map[string]bool{}
			for _, id := range h.received() {
				got[id] = true
			}
			return len(got) == len(want)
		})
		for _, id := range h.received() {
			if !want[id] {
				t.Errorf("%s received an unknown id %s", name, id)
			}
		}
	}
}

// relayStore starts the relay of configuration cfg and connects to its
// embedded store as the relay does; the CLI's commands run in the test
// reach it too. Both end with the test.
func relayStore(t *testing.T, cfg string) jetstream.JetStream {
	t.Helper()
	base, logs := startRunWith(t, cfg, relayEnv(t.TempDir()))
	natsURL := logs.field(t, "embedded nats started", "client_url")
	waitReady(t, base)
	nc, err := nats.Connect(natsURL, relayAuth(t, logs), nats.Timeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	t.Setenv("SENGO_RELAY_NATS_EMBEDDED_LISTEN", strings.TrimPrefix(natsURL, "nats://"))
	return js
}

// What the CLI's tables print is stored text others chose: an endpoint's
// error (Go's certificate error repeats the names a certificate gives,
// control characters and all), a forged notification's transaction id and
// merchantRef. Printed raw, an escape sequence erased or rewrote rows of
// the operator's terminal, and a newline and tabs added a fake row. A
// table prints every control character as a space.
func TestCLITablesPrintNoControlCharacters(t *testing.T) {
	bad := newHook(t)
	cfg := writeConfig(t, endpointYAML("broken", bad.URL, "1s"))
	js := relayStore(t, cfg)
	const hostile = `\u001b[1A\u001b[2K\u001b]0;owned\u0007\n999\tfake\trow\r\u202e`
	if _, err := js.Publish(t.Context(), event.DLQTxSubject("broken", "tx-esc"), []byte(`{"endpoint":"broken","eventId":"ev-esc","transactionId":"tx`+hostile+`","merchantRef":"REF`+hostile+`","reason":"gone","lastError":"x509: certificate is valid for `+hostile+`, not hook.example","event":{}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: event.QuarantineTxSubject("main", "tx-esc"), Header: nats.Header{event.HeaderReason: {"reason \x1b[2K\tfake"}},
		Data: []byte(`{"id":"tx` + hostile + `","merchantRef":"R` + hostile + `","status":"success","feePayer":"customer","amount":1000,"fee":0,"totalAmount":1000,"qris":{}}`)}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"dlq", "list"}, {"quarantine", "list"}} {
		var out bytes.Buffer
		if err := run(context.Background(), append(args, "--config", cfg), &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if i := strings.IndexFunc(out.String(), func(r rune) bool { return r != '\n' && (unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)) }); i >= 0 || strings.Count(out.String(), "\n") != 3 {
			t.Errorf("%s printed %q: want three lines, no control character", strings.Join(args, " "), out.String())
		}
	}
}

// A listing of the quarantine keeps at most 32 MiB of notifications, the
// newest. Forged claims of 60 KiB each filled that, and the CLI listed
// them alone as if they were all: the genuine claims quarantined before
// them, which an operator must redrive, went unmentioned. It says how many
// it left out, as the console and the API do.
func TestQuarantineListSaysWhatItLeftOut(t *testing.T) {
	cfg := writeConfig(t, endpointYAML("orders", newHook(t).URL, "1s"))
	js := relayStore(t, cfg)
	const n = 600
	pad := strings.Repeat("f", 60<<10)
	natstest.PublishMany(t, js, n, func(i int) *nats.Msg {
		return &nats.Msg{Subject: event.QuarantineTxSubject("main", fmt.Sprintf("forged-%d", i)), Header: nats.Header{event.HeaderReason: {"SenGo has no transaction"}},
			Data: fmt.Appendf(nil, `{"id":"forged-%d","merchantRef":"%s","status":"success","feePayer":"customer","amount":1000,"fee":0,"totalAmount":1000,"qris":{}}`, i, pad)}
	})
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"quarantine", "list", "--config", cfg, "--project", "main"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	listed := strings.Count(out.String(), "\n") - 2
	if listed >= n || !strings.Contains(out.String(), fmt.Sprintf("(%d older not listed", n-listed)) {
		t.Fatalf("%d of %d listed, ending %q: want the number left out", listed, n, out.String()[max(0, out.Len()-120):])
	}
	out.Reset()
	if err := run(context.Background(), []string{"quarantine", "list", "--config", cfg, "--project", "main", "--json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "older not listed") {
		t.Fatalf("--json said on stderr %q: want the number left out", errOut.String())
	}
}

// The dlq commands read a page at a time and reach every dead letter: an
// outage's worth (more than one page of 1,000) is listed whole, as one
// JSON array, and purged whole, without holding it all in memory.
func TestDLQCommandsByPage(t *testing.T) {
	bad := newHook(t)
	bad.fail.Store(1 << 30)
	cfg := writeConfig(t, endpointYAML("broken", bad.URL, "1s"))
	js := relayStore(t, cfg)
	const n = dispatcher.DLQPage + 5
	natstest.PublishMany(t, js, n, func(i int) *nats.Msg {
		return &nats.Msg{Subject: event.DLQTxSubject("broken", fmt.Sprintf("tx-%d", i)), Data: []byte(`{"endpoint":"broken","eventId":"ev-` + strconv.Itoa(i) + `","event":{}}`)}
	})
	var out bytes.Buffer
	if err := run(context.Background(), []string{"dlq", "list", "--config", cfg, "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var entries []dispatcher.DLQEntry
	if err := json.Unmarshal(out.Bytes(), &entries); err != nil || len(entries) != n || entries[n-1].EventID != "ev-"+strconv.Itoa(n-1) {
		t.Fatalf("dlq list --json: %v, %d entries of %d", err, len(entries), n)
	}
	out.Reset()
	if err := run(context.Background(), []string{"dlq", "list", "--config", cfg}, &out, io.Discard); err != nil || !strings.HasSuffix(out.String(), fmt.Sprintf("\n%d dead letters\n", n)) || strings.Count(out.String(), "\n") != n+2 {
		t.Fatalf("dlq list: %v, %d lines ending %q", err, strings.Count(out.String(), "\n"), out.String()[max(0, out.Len()-40):])
	}
	out.Reset()
	if err := run(context.Background(), []string{"dlq", "purge", "--config", cfg, "--all"}, &out, io.Discard); err != nil || out.String() != fmt.Sprintf("purged %d\n", n) {
		t.Fatalf("dlq purge --all: %v %q", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"dlq", "list", "--config", cfg, "--json"}, &out, io.Discard); err != nil || strings.TrimSpace(out.String()) != "[]" {
		t.Fatalf("dlq list after the purge: %v %q", err, out.String())
	}
	// A redrive or a purge runs until it is done (or interrupted): the CLI
	// cut every dlq and quarantine command at 5 minutes, a long outage's
	// dead letters on a cluster half redriven. Each store call keeps its
	// own timeout.
	loaded, err := config.Load(cfg, config.Environ(os.Environ()))
	if err != nil {
		t.Fatal(err)
	}
	cmd := &cobra.Command{}
	cmd.SetContext(context.Background())
	if err := withRelay(cmd, loaded, func(ctx context.Context, _ jetstream.JetStream) error {
		if d, ok := ctx.Deadline(); ok {
			t.Errorf("a CLI action must finish by %s", time.Until(d).Round(time.Minute))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// An endpoint taken out of the configuration left its backlog in a
// consumer nothing read. The relay started without it dead-letters what
// waited for it (here an event waiting for its retry), with reason
// endpoint_removed, and deletes its consumers; the endpoint kept goes on.
func TestRemovedEndpointIsRetired(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	var tries atomic.Int64
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		tries.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(old.Close)
	kept := newHook(t)
	oldYAML := fmt.Sprintf("  old: {url: %q, secrets: [%s], filter: {all: true}, deliver_from: all, timeout: 1s, retry: {schedule: [3s, 1h], jitter: 0}}\n", old.URL, testSecret)
	dir := t.TempDir()
	checkedInConfig = writeConfig(t, oldYAML+endpointYAML("kept", kept.URL, "1s"))
	t.Cleanup(func() { checkedInConfig = committedConfig })
	p := startProcess(t, dir, "SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0")
	waitReady(t, p.base)
	body := []byte(`{"id":"rm-1","merchantRef":"RM-1","status":"success","feePayer":"customer","amount":1000,"fee":0,"totalAmount":1000,"qris":{}}`)
	if code := post(t, p.base+"/callbacks/sengo/main", body); code != 200 {
		t.Fatal(code)
	}
	eventually(t, "kept delivered, old failed once", func() bool { return len(kept.received()) == 1 && tries.Load() == 1 })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	checkedInConfig = writeConfig(t, endpointYAML("kept", kept.URL, "1s"))
	p2 := startProcess(t, dir, "SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0", "SENGO_RELAY_DELIVERY_RETIRE_REMOVED_AFTER=1s")
	waitReady(t, p2.base)
	eventually(t, "old retired", func() bool {
		return strings.Contains(p2.logs.text(), "removed endpoint retired") && strings.Count(p2.logs.text(), "removed endpoint retired") == 2
	})
	req, _ := http.NewRequest(http.MethodGet, "http://"+p2.logs.field(t, "admin listening", "addr")+"/admin/dlq?endpoint=old", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var entries []struct {
		EventID  string
		Reason   string
		Attempts int
	}
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		t.Fatal(err)
	}
	want := event.ID("main", "rm-1", event.StatusSuccess)
	if len(entries) != 1 || entries[0].EventID != want || entries[0].Reason != dispatcher.ReasonRemoved || entries[0].Attempts != 1 {
		t.Fatalf("dead letters of old: %+v", entries)
	}
	if n := tries.Load(); n != 1 {
		t.Fatalf("the removed endpoint was tried %d times", n)
	}
}

// The command printed to resume or run again a replay is the same job: a
// dry run's keeps --dry-run. Without it, an operator who interrupted a
// slow dry run and pasted the command queued every matching event for real.
func TestResumeCommandIsTheSameJob(t *testing.T) {
	c := newReplayCmd()
	if err := c.ParseFlags([]string{"--endpoint", "orders", "--since", "24h", "--dry-run"}); err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	for _, dry := range []bool{true, false} {
		req := dispatcher.ReplayRequest{Endpoints: []string{"orders"}, Since: since, Until: since.Add(24 * time.Hour), DryRun: dry}
		got := resumeCommand(c, req)
		if strings.Contains(got, "--dry-run") != dry {
			t.Errorf("dry run %v: %s", dry, got)
		}
	}
}

// The command printed to resume a replay --all repeated --all: with an
// endpoint added to the configuration since, that was another job (its id
// is its endpoints'), which queued every event again for the endpoints the
// first had. It names the endpoints, and the project when one was given.
func TestResumeCommandOfAllNamesTheEndpoints(t *testing.T) {
	c := newReplayCmd()
	if err := c.ParseFlags([]string{"--all", "--since", "24h", "--project", "main"}); err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	req := dispatcher.ReplayRequest{Endpoints: []string{"orders", "crm"}, Project: "main", Since: since, Until: since.Add(24 * time.Hour)}
	got := resumeCommand(c, req)
	if strings.Contains(got, "--all") || !strings.Contains(got, "--endpoint orders,crm") || !strings.Contains(got, "--project main") {
		t.Fatalf("resume command %s, want the endpoints by name and the project", got)
	}
	again := newReplayCmd()
	if err := again.ParseFlags(strings.Fields(got)[2:]); err != nil {
		t.Fatal(err)
	}
	eps, _ := again.Flags().GetStringSlice("endpoint")
	if !slices.Equal(eps, []string{"orders", "crm"}) {
		t.Fatalf("the resume command's endpoints read back as %v", eps)
	}
}

// --endpoint takes a list now, whose value reads "[]" as a string: an
// empty one ("$EP" unset) passed the check for empty flags, and with --all
// beside it the replay went to every endpoint. An empty value is refused,
// alone or in the list.
func TestAnEmptyEndpointListIsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--endpoint", "", "--all", "--since", "1h", "--dry-run"},
		{"--endpoint", "orders,", "--since", "1h", "--dry-run"},
	} {
		c := newReplayCmd()
		if err := c.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		if err := emptyFlag(c); err == nil || !strings.Contains(err.Error(), "--endpoint is empty") {
			t.Errorf("%v: %v, want --endpoint is empty", args, err)
		}
	}
}
