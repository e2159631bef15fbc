package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/receiver"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
)

const (
	sbKey   = "SC-E2ESANDBOX0000001"
	sbToken = "e2e-sandbox-token-000000000001"
	// cbToken is main's callback_token: SenGo echoes the callback URL, it
	// in it, and no event or stored copy may hold it.
	cbToken = "e2e-callback-token-0123456789"
)

// startSandbox runs the SenGo sandbox in this process.
func startSandbox(t *testing.T, policy sandbox.CallbackPolicy) (*sandbox.Server, *sengo.Client, string) {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{Projects: []sandbox.Project{{Key: sbKey, Token: sbToken, Active: 1_000_000}}, Callbacks: policy})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { hs.Close(); sb.Close() })
	return sb, sengo.NewClient(hs.URL+"/api", sbKey, sbToken), hs.URL + "/api"
}

// sandboxConfig is a relay config whose project confirms with the sandbox
// and whose "orders" endpoint takes successes.
func sandboxConfig(t *testing.T, sandboxURL, hookURL string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	body := fmt.Sprintf(`projects:
  main: {api_key: %s, token: %s, base_url: %q, callback_token: %s}
intake: {retry_initial: 50ms, retry_max: 500ms, confirm_attempts: 3}
reconcile: {interval: 1m, window: 48h}
admin: {listen: "127.0.0.1:0"}
endpoints:
  orders: {url: %q, secrets: [%s], filter: {statuses: [success]}, deliver_from: all, timeout: 2s}
`, sbKey, sbToken, sandboxURL, cbToken, hookURL, testSecret)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *hook) events(t *testing.T) []event.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []event.Event
	for _, b := range h.bodies {
		ev, err := event.Unmarshal(b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// metricsText reads /metrics from the relay's metrics listener.
func metricsText(t *testing.T, logs *logWatch) string {
	resp, err := http.Get("http://" + logs.field(t, "metrics listening", "addr") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Create a retail payment at Alfamart through the client, pay it in the
// sandbox (which sends its callback twice), and the consumer receives
// exactly one success event, confirmed.
func TestConfirmedPaymentEndToEnd(t *testing.T) {
	sb, client, sbURL := startSandbox(t, sandbox.CallbackPolicy{Duplicates: 1})
	orders := newHook(t)
	base, logs := startRunWith(t, sandboxConfig(t, sbURL, orders.URL), relayEnv(t.TempDir()))
	waitReady(t, base)

	tx, err := client.CreateRetail(context.Background(), sengo.RetailRequest{
		Reference: "INV-1001", PhoneNumber: "081234567890", Channel: "alfamart", Amount: 25000, ViewName: "Toko Contoh",
		AdditionalInfo: sengo.AdditionalInfo{Callback: base + "/callbacks/sengo/main/" + cbToken},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both callback copies answered 200", func() bool {
		ok := 0
		for _, s := range sb.Sent() {
			if s.HTTPStatus == 200 {
				ok++
			}
		}
		return ok == 2
	})
	eventually(t, "the webhook", func() bool { return len(orders.received()) >= 1 })
	eventually(t, "the relay to settle", func() bool {
		m := metricsText(t, logs)
		return strings.Contains(m, "sengo_relay_inbox_pending 0") && strings.Contains(m, `sengo_relay_endpoint_pending{endpoint="orders"} 0`)
	})
	evs := orders.events(t)
	if len(evs) != 1 {
		t.Fatalf("%d events delivered, want exactly 1", len(evs))
	}
	ev := evs[0]
	if ev.Data.Status != event.StatusSuccess || !ev.Data.Confirmed || ev.Data.TransactionID != tx.ID || ev.Data.Channel != "alfamart" || ev.Data.PaymentCode != tx.PaymentCode || ev.Data.TotalAmount != 25085 {
		t.Fatalf("event %+v", ev.Data)
	}
	if raw := string(ev.Data.Raw); strings.Contains(raw, cbToken) || !strings.Contains(raw, "[redacted]") {
		t.Fatalf("the event's raw object holds the callback token, or no [redacted]: %s", raw)
	}
}

// A forged callback (valid shape, success for a transaction the sandbox
// says is pending) is quarantined with SenGo's version and never published.
func TestForgedCallbackQuarantined(t *testing.T) {
	sb, client, sbURL := startSandbox(t, sandbox.CallbackPolicy{})
	orders := newHook(t)
	cfgPath := sandboxConfig(t, sbURL, orders.URL)
	base, logs := startRunWith(t, cfgPath, relayEnv(t.TempDir(), "SENGO_RELAY_ADMIN_TOKEN="+adminToken))
	natsURL := logs.field(t, "embedded nats started", "client_url")
	waitReady(t, base)
	tx, err := client.CreateRetail(context.Background(), sengo.RetailRequest{Reference: "INV-2002", PhoneNumber: "0812", Channel: "alfamart", Amount: 50000, ViewName: "Toko"})
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(tx.Raw, []byte(`"status":"pending"`), []byte(`"status":"success"`), 1)
	forged = append(append([]byte(`{"responseCode":200,"responseMessage":"success","responseData":`), forged...), '}')
	if code := post(t, base+"/callbacks/sengo/main/"+cbToken, forged); code != 200 {
		t.Fatalf("the forged callback is stored first (it may be real): %d", code)
	}
	nc, err := nats.Connect(natsURL, relayAuth(t, logs), nats.Timeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var q []*jetstream.RawStreamMsg
	eventually(t, "the quarantine", func() bool { q = natstest.Messages(t, js, event.StreamQuarantine); return len(q) == 1 })
	if reason := q[0].Header.Get(event.HeaderReason); !strings.Contains(reason, "SenGo says pending") {
		t.Fatalf("reason %q", reason)
	}
	var sengoSide struct{ Status string }
	if err := json.Unmarshal([]byte(q[0].Header.Get(receiver.HeaderAPIObject)), &sengoSide); err != nil || sengoSide.Status != "pending" {
		t.Fatalf("SenGo's version not kept: %q", q[0].Header.Get(receiver.HeaderAPIObject))
	}
	// Reconciliation may publish the real pending state; never the forged success.
	for _, m := range natstest.Messages(t, js, event.StreamEvents) {
		if ev, _ := event.Unmarshal(m.Data); ev.Data.Status != event.StatusPending {
			t.Fatalf("published %s for a forged callback", ev.Data.Status)
		}
	}
	if n := len(orders.received()); n != 0 {
		t.Fatalf("the consumer received %d", n)
	}
	// The story of the payment shows the forged claim set aside, with
	// SenGo's version, and nothing published for it as a success.
	api := newAdminAPI(t, logs.field(t, "admin listening", "addr"))
	var tl struct {
		Transaction struct{ MerchantRef, Status string }
		Quarantined []struct {
			Status, Reason string
			SenGo          json.RawMessage
		}
		Steps []struct{ Kind, Summary string }
	}
	if code := api.get("/admin/transactions/main/"+tx.ID, &tl); code != 200 || len(tl.Quarantined) != 1 || tl.Quarantined[0].Status != "success" ||
		!strings.Contains(tl.Quarantined[0].Reason, "SenGo says pending") || len(tl.Quarantined[0].SenGo) == 0 || tl.Transaction.MerchantRef != "INV-2002" || tl.Transaction.Status == "success" {
		t.Fatalf("the story: %d %+v", code, tl)
	}

	// The operator sees it with the CLI; once SenGo says paid, a redrive
	// confirms it again and it is delivered.
	t.Setenv("SENGO_RELAY_NATS_EMBEDDED_LISTEN", strings.TrimPrefix(natsURL, "nats://"))
	var out bytes.Buffer
	if err := run(context.Background(), []string{"quarantine", "list", "--config", cfgPath, "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var listed []receiver.QuarantineEntry
	if err := json.Unmarshal(out.Bytes(), &listed); err != nil || len(listed) != 1 || listed[0].TransactionID != tx.ID || listed[0].Status != event.StatusSuccess {
		t.Fatalf("quarantine list: %v %s", err, out.String())
	}
	if err := run(context.Background(), []string{"quarantine", "redrive", "--config", cfgPath}, io.Discard, io.Discard); err == nil {
		t.Fatal("redrive without a filter or --all accepted")
	}
	if err := run(context.Background(), []string{"quarantine", "purge", "--config", cfgPath}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "quarantine purge needs") {
		t.Fatalf("purge without a filter or --all: %v", err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"quarantine", "purge", "--config", cfgPath, "--seq", "999"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "purged 0 of 0") {
		t.Fatalf("purge of a missing one: %v %s", err, out.String())
	}
	if err := run(context.Background(), []string{"quarantine", "show", "--config", cfgPath, "--seq", "999"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "no quarantined notification 999") {
		t.Fatalf("show of a missing one: %v", err)
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"quarantine", "redrive", "--config", cfgPath, "--seq", strconv.FormatUint(listed[0].Seq, 10)}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "redriven 1 of 1") {
		t.Fatalf("redrive: %v %s", err, out.String())
	}
	eventually(t, "the now genuine success delivered", func() bool { return len(orders.received()) == 1 })
}

// With the relay stopped, three transactions are paid in a sandbox that
// never retries callbacks; once the relay starts, reconciliation delivers
// all three exactly once, and a second run finds nothing missing.
func TestReconcileAfterDowntime(t *testing.T) {
	sb, client, sbURL := startSandbox(t, sandbox.CallbackPolicy{Retries: 0})
	orders := newHook(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the relay is down: callbacks to it are refused
	var ids []string
	for i := range 3 {
		tx, err := client.CreateVirtualAccount(context.Background(), sengo.VirtualAccountRequest{
			Reference: fmt.Sprintf("VA-%d", i), BankCode: "014", ViewName: "Toko", Type: "ClosedAmount", Amount: 15000,
			AdditionalInfo: sengo.AdditionalInfo{Callback: "http://" + addr + "/callbacks/sengo/main/" + cbToken},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tx.ID)
	}
	eventually(t, "three failed callbacks", func() bool { return len(sb.Sent()) == 3 })
	for _, s := range sb.Sent() {
		if s.Error == "" {
			t.Fatalf("a callback reached a stopped relay: %+v", s)
		}
	}

	cfg := sandboxConfig(t, sbURL, orders.URL)
	base, logs := startRunWith(t, cfg, relayEnv(t.TempDir(), "SENGO_RELAY_HTTP_LISTEN="+addr, "SENGO_RELAY_ADMIN_TOKEN="+adminToken))
	natsURL := logs.field(t, "embedded nats started", "client_url")
	waitReady(t, base)
	eventually(t, "three webhooks from reconciliation", func() bool { return len(orders.received()) >= 3 })
	eventually(t, "the relay to settle", func() bool {
		m := metricsText(t, logs)
		return strings.Contains(m, "sengo_relay_inbox_pending 0") && strings.Contains(m, `sengo_relay_endpoint_pending{endpoint="orders"} 0`)
	})
	got := map[string]int{}
	for _, ev := range orders.events(t) {
		got[ev.Data.TransactionID]++
		if !ev.Data.Confirmed {
			t.Errorf("reconciled event not confirmed: %+v", ev.Data)
		}
	}
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("transaction %s delivered %d times, want 1", id, got[id])
		}
	}
	// Reconciliation fed SenGo's objects, which echo the callback URL,
	// into the inbox: the token was taken out first.
	nc, err := nats.Connect(natsURL, relayAuth(t, logs))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	inbox, err := js.Stream(t.Context(), event.StreamInbox)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= inbox.CachedInfo().State.LastSeq; seq++ {
		if m, err := inbox.GetMsg(t.Context(), seq); err == nil && bytes.Contains(m.Data, []byte(cbToken)) {
			t.Fatalf("inbox message %d holds the callback token: %s", seq, m.Data)
		}
	}
	t.Setenv("SENGO_RELAY_NATS_EMBEDDED_LISTEN", strings.TrimPrefix(natsURL, "nats://")) // the CLI reaches the relay's embedded server
	var out bytes.Buffer
	if err := run(context.Background(), []string{"reconcile", "--config", cfg}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "3 checked, 0 missing, 0 fed") {
		t.Fatalf("second reconciliation: %s", out.String())
	}

	// Both runs are recorded, newest first, with what the first found.
	api := newAdminAPI(t, logs.field(t, "admin listening", "addr"))
	var runs struct {
		Items []struct {
			Trigger               string
			Checked, Missing, Fed int
			Found                 []struct{ TransactionID, MerchantRef, Status string }
		}
	}
	eventually(t, "two runs recorded", func() bool { api.get("/admin/reconciliations?project=main", &runs); return len(runs.Items) >= 2 })
	newest, first := runs.Items[0], runs.Items[len(runs.Items)-1]
	if newest.Trigger != "cli" || newest.Missing != 0 || first.Trigger != "periodic" || first.Missing != 3 || first.Fed != 3 || len(first.Found) != 3 {
		t.Fatalf("runs %+v", runs.Items)
	}
	refs := map[string]bool{}
	for _, f := range first.Found {
		refs[f.MerchantRef] = f.Status == "success"
	}
	if !refs["VA-0"] || !refs["VA-1"] || !refs["VA-2"] {
		t.Errorf("the first run found %+v", first.Found)
	}
}

// The sandbox CLI controls a running sandbox: faults, pay, callbacks.
func TestSandboxCLI(t *testing.T) {
	sb, client, sbURL := startSandbox(t, sandbox.CallbackPolicy{})
	root := strings.TrimSuffix(sbURL, "/api")
	ctx := context.Background()
	var out bytes.Buffer
	if err := run(ctx, []string{"sandbox", "faults", "--url", root, "--fail500", "1", "--drop-callbacks"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "CLI-1", Amount: 5000}); err == nil {
		t.Fatal("the injected 500 did not happen")
	}
	tx, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "CLI-1", Amount: 5000, AdditionalInfo: sengo.AdditionalInfo{Callback: "http://127.0.0.1:1/cb"}})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(ctx, []string{"sandbox", "pay", tx.ID, "--url", root}, &out, io.Discard); err != nil || !strings.Contains(out.String(), `"status":"success"`) {
		t.Fatalf("pay: %v %s", err, out.String())
	}
	eventually(t, "the dropped callback logged", func() bool { return len(sb.Sent()) == 1 })
	out.Reset()
	if err := run(ctx, []string{"sandbox", "callbacks", "--url", root}, &out, io.Discard); err != nil || !strings.Contains(out.String(), `"dropped":true`) {
		t.Fatalf("callbacks: %v %s", err, out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"sandbox", "faults", "--url", root}, &out, io.Discard); err != nil || !strings.Contains(out.String(), `"drop":true`) {
		t.Fatalf("show faults: %v %s", err, out.String())
	}
	// A fault of one transaction's checks: the rest of the API works.
	if err := run(ctx, []string{"sandbox", "faults", "--url", root, "--fail-check", tx.ID}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	var apiErr *sengo.APIError
	if _, err := client.Check(ctx, tx.ID, false); !errors.As(err, &apiErr) || apiErr.HTTPStatus != 500 {
		t.Fatalf("check of %s with --fail-check: %v, want a 500", tx.ID, err)
	}
	if _, err := client.Check(ctx, "another-id", false); !errors.Is(err, sengo.ErrTransactionNotFound) {
		t.Fatalf("check of another id: %v, want TRANSACTION_NOT_FOUND", err)
	}
	// One flag changes that setting alone: --fail-check above reset
	// --drop-callbacks (every flag not given was sent as its default).
	out.Reset()
	if err := run(ctx, []string{"sandbox", "faults", "--url", root}, &out, io.Discard); err != nil || !strings.Contains(out.String(), `"drop":true`) || !strings.Contains(out.String(), tx.ID) {
		t.Fatalf("faults after --fail-check: %v %s, want callbacks still dropped and the check failing", err, out.String())
	}
	// --reset puts everything back, then applies the flags given with it.
	out.Reset()
	if err := run(ctx, []string{"sandbox", "faults", "--url", root, "--reset", "--callback-duplicates", "1"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(ctx, []string{"sandbox", "faults", "--url", root}, &out, io.Discard); err != nil || strings.Contains(out.String(), `"drop":true`) || strings.Contains(out.String(), tx.ID) || !strings.Contains(out.String(), `"duplicates":1`) {
		t.Fatalf("faults after --reset --callback-duplicates 1: %v %s", err, out.String())
	}
}

// A base_url that is not SenGo's API (here: HTML 404s) is named at start,
// and the relay still runs.
func TestWrongBaseURLIsReportedAtStart(t *testing.T) {
	notSenGo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(404)
		w.Write([]byte("<html>404</html>"))
	}))
	defer notSenGo.Close()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte(`projects:
  main: {api_key: SC-KEY-PROBE, token: probe-token-000000000, base_url: "`+notSenGo.URL+`"}
`), 0o600)
	base, logs := startRunWith(t, cfg, relayEnv(t.TempDir()))
	if hint := logs.field(t, "SenGo API probe failed", "hint"); !strings.Contains(hint, "projects.main.base_url") {
		t.Fatalf("hint %q", hint)
	}
	waitReady(t, base)
	if strings.Contains(logs.text(), "probe-token") {
		t.Fatal("the token reached the logs")
	}
}

// The sandbox's controls have no authentication: it refuses a
// non-loopback address unless told --allow-remote.
func TestSandboxRefusesRemoteListen(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		err := run(context.Background(), []string{"sandbox", "--listen", addr, "--state-dir", ""}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--allow-remote") {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

// On loopback the sandbox answers to this machine's names only: a web
// page whose name an attacker rebinds to 127.0.0.1 would read every
// transaction and drive its controls as if it were the sandbox's own.
func TestTheSandboxOnLoopbackAnswersToItsOwnNames(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"sandbox", "--listen", "127.0.0.2:0", "--state-dir", ""}, pw, io.Discard) // loopback, none of its names
		pw.Close()
	}()
	t.Cleanup(func() { cancel(); <-done })
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	addr, _, _ := strings.Cut(strings.TrimPrefix(line, "sengo sandbox: API http://"), "/")
	for host, want := range map[string]int{"rebind.attacker.example:8090": http.StatusMisdirectedRequest, addr: http.StatusOK, "localhost:8090": http.StatusOK} {
		if got := statusForHost(t, "http://"+addr+"/sandbox/transactions", host, ""); got != want {
			t.Errorf("Host %s: %d, want %d", host, got, want)
		}
	}
}

// A periodic reconciliation catching up after a long stop looks back at
// most SenGo's 7 days, and stays as far short of the transactions' TTL as
// reconcile.window must: a transaction whose entry expired would be fed
// and published again.
func TestReconcileCatchUpStaysShortOfTheTTL(t *testing.T) {
	var cfg config.Config
	cfg.Reconcile.Interval = config.Duration(10 * time.Minute)
	if reconcileCatchUp(cfg) != 0 {
		t.Error("catch_up off looks back further than the window")
	}
	cfg.Reconcile.CatchUp = true
	for _, tc := range []struct{ ttl, want time.Duration }{
		{0, receiver.ReconcileWindowMax},
		{14 * 24 * time.Hour, receiver.ReconcileWindowMax},
		{4 * 24 * time.Hour, 3*24*time.Hour - 10*time.Minute - time.Second},
	} {
		cfg.Streams.Transactions.TTL = config.Duration(tc.ttl)
		if got := reconcileCatchUp(cfg); got != tc.want {
			t.Errorf("ttl %s: catch up %s, want %s", tc.ttl, got, tc.want)
		}
	}
}

// net/http's error lines (a TLS handshake's failure) may quote what a
// client sent, such as the protocols it offered, up to 64 KiB: each
// reaches the log cut to 1 KiB of valid UTF-8.
func TestNetHTTPsErrorLinesAreBounded(t *testing.T) {
	var logs bytes.Buffer
	l := newStdLogger(zerolog.New(&logs))
	l.Printf("http: TLS handshake error from 192.0.2.1:5000: tls: client requested unsupported application protocols ([%s])", strings.Repeat("h2\xff,", 20000))
	if n := len(logs.String()); n > 1200 || !strings.Contains(logs.String(), "TLS handshake error") || !utf8.ValidString(logs.String()) {
		t.Fatalf("a line of %d bytes: %.200q", n, logs.String())
	}
}
