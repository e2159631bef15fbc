package receiver

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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
)

// A callback whose id is thousands of non-ASCII bytes once became an 8 KB
// SENGO_TX key; reading it exceeded nats-server's control line, the server
// dropped the connection for good and all processing stopped. It is now
// refused at the edge, and a genuine callback after it is still processed.
func TestHostileIDIsRefusedAndProcessingGoesOn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	long := strings.Repeat("é", 1500) // 3,000 bytes
	resp, body := h.post("/callbacks/sengo/main", callback(long, event.StatusSuccess))
	if resp.StatusCode != 422 || toString(body["error"].(map[string]any)["code"]) != "invalid_notification" {
		t.Fatalf("hostile id answered %d %v, want 422 invalid_notification", resp.StatusCode, body)
	}
	for _, id := range []string{"with space", strings.Repeat("a", 129), "idé"} {
		if resp, _ := h.post("/callbacks/sengo/main", callback(id, event.StatusSuccess)); resp.StatusCode != 422 {
			t.Errorf("id %q answered %d, want 422", id, resp.StatusCode)
		}
	}
	ref := strings.Replace(string(callback("tx-ok-ref", event.StatusSuccess)), `"REF-tx-ok-ref"`, `"`+strings.Repeat("R", 256)+`"`, 1)
	if resp, _ := h.post("/callbacks/sengo/main", []byte(ref)); resp.StatusCode != 422 {
		t.Errorf("a 256-byte merchantRef answered %d, want 422", resp.StatusCode)
	}
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-after", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatalf("genuine callback answered %d", resp.StatusCode)
	}
	eventually(t, "event of the genuine callback", func() bool { return len(statuses(h.events(), "tx-after")) == 1 })
}

// A notification with a hostile id that reached the inbox anyway (stored
// by an older version, or fed by reconciliation) is quarantined; it never
// wedges intake, and the work connection stays up.
func TestHostileIDInTheInboxIsQuarantined(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ctx := context.Background()
	long := strings.Repeat("é", 3000)
	if _, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: "sengo.inbox.main", Data: callback(long, event.StatusSuccess),
		Header: nats.Header{event.HeaderProject: []string{"main"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: "sengo.inbox.main", Data: callback("tx-next", event.StatusSuccess),
		Header: nats.Header{event.HeaderProject: []string{"main"}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "intake idle", h.intakeIdle)
	if got := statuses(h.events(), "tx-next"); len(got) != 1 {
		t.Fatalf("tx-next events %v, want one", got)
	}
	if n := h.msgs(event.StreamQuarantine); n != 1 {
		t.Fatalf("quarantine holds %d, want the hostile notification", n)
	}
}

func TestTxKeyIsBounded(t *testing.T) {
	t.Parallel()
	for _, id := range []string{strings.Repeat("é", 3000), strings.Repeat("a", 5000), strings.Repeat("a.", 300)} {
		k := txKey("main", id)
		if len(k) > 5+maxKeyID {
			t.Errorf("txKey of a %d-byte id is %d bytes", len(id), len(k))
		}
		if k2 := txKey("main", id+"x"); k2 == k {
			t.Errorf("two ids share the key %s", k)
		}
	}
}

// panicConfirmer crashes on one transaction id: the stand-in for any bug
// that a particular notification triggers.
type panicConfirmer struct{ id string }

func (p panicConfirmer) Confirm(_ context.Context, _ string, tx sengo.Transaction) (sengo.Transaction, bool, error) {
	if tx.ID == p.id {
		panic("boom on " + tx.ID)
	}
	return tx, false, nil
}

// A notification that crashes processing is quarantined after its first
// attempt, not redelivered in a loop; the others are processed.
func TestNotificationThatPanicsIsQuarantined(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) { ic.Confirmer = panicConfirmer{id: "tx-crash"} })
	for _, id := range []string{"tx-crash", "tx-fine"} {
		if resp, _ := h.post("/callbacks/sengo/main", callback(id, event.StatusSuccess)); resp.StatusCode != 200 {
			t.Fatal(resp.StatusCode)
		}
	}
	eventually(t, "intake idle", h.intakeIdle)
	if got := statuses(h.events(), "tx-fine"); len(got) != 1 {
		t.Fatalf("tx-fine events %v", got)
	}
	if n := h.msgs(event.StreamQuarantine); n != 1 {
		t.Fatalf("quarantine holds %d, want 1", n)
	}
	m := natstest.Messages(t, h.js, event.StreamQuarantine)[0]
	if !strings.Contains(m.Header.Get(event.HeaderReason), "panicked") {
		t.Fatalf("reason %q", m.Header.Get(event.HeaderReason))
	}
}

// /healthz fails once the process cannot work any more (a NATS connection
// closed for good), so an orchestrator restarts it.
func TestHealthzFailsWhenNotLive(t *testing.T) {
	t.Parallel()
	var dead error
	h := newHarness(t, false, func(c *Config, _ *IntakeConfig) { c.Live = func() error { return dead } })
	if resp, _ := h.do(mustRequest(t, "GET", h.http.URL+"/healthz")); resp.StatusCode != 200 {
		t.Fatalf("healthz %d while live", resp.StatusCode)
	}
	dead = errors.New("nats connection sengo-relay/work closed for good")
	resp, body := h.do(mustRequest(t, "GET", h.http.URL+"/healthz"))
	if resp.StatusCode != 503 || toString(body["error"].(map[string]any)["code"]) != "not_live" {
		t.Fatalf("healthz %d %v, want 503 not_live", resp.StatusCode, body)
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// inboxAckFloor is the intake consumer's ack floor and its count of
// messages delivered and not yet acknowledged.
func (h *harness) inboxAckFloor() (floor uint64, ackPending int) {
	h.t.Helper()
	cons, err := h.js.Consumer(context.Background(), event.StreamInbox, IntakeConsumer)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.AckFloor.Stream, info.NumAckPending
}

// While a store intake writes to refuses writes, the notification is
// retried and never acknowledged; when writes work again its event is
// published exactly once. SENGO_EVENTS and the SENGO_TX bucket are made to
// refuse writes for real.
func TestIntakeNeverAcksAFailedWrite(t *testing.T) {
	t.Parallel()
	for _, stream := range []string{event.StreamEvents, "KV_" + event.BucketTx} {
		t.Run(stream, func(t *testing.T) {
			h := newHarness(t, true)
			restore := natstest.RefuseWrites(t, h.js, stream)
			if resp, _ := h.post("/callbacks/sengo/main", callback("tx-w", event.StatusSuccess)); resp.StatusCode != 200 {
				t.Fatal(resp.StatusCode)
			}
			eventually(t, "intake retried", func() bool { return h.intakeCount("main", "retry") >= 2 })
			if floor, _ := h.inboxAckFloor(); floor != 0 {
				t.Fatalf("inbox ack floor %d while %s refuses writes: the notification was acknowledged", floor, stream)
			}
			if n := len(h.events()); n != 0 {
				t.Fatalf("%d events while %s refuses writes", n, stream)
			}
			restore()
			eventually(t, "intake idle", h.intakeIdle)
			if got := statuses(h.events(), "tx-w"); len(got) != 1 {
				t.Fatalf("events %v after writes came back, want one", got)
			}
			if n := h.msgs(event.StreamQuarantine); n != 0 {
				t.Fatalf("%d quarantined", n)
			}
		})
	}
}

// A notification set aside whose quarantine write the store refuses is
// retried, never acknowledged: acknowledged, it was neither published nor
// quarantined.
func TestIntakeNeverAcksAFailedQuarantine(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.RequireConfirmation = map[string]bool{"main": true}
	})
	restore := natstest.RefuseWrites(t, h.js, event.StreamQuarantine)
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-q", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	cons, err := h.js.Consumer(context.Background(), event.StreamInbox, IntakeConsumer)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the quarantine retried", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumRedelivered >= 1
	})
	if floor, _ := h.inboxAckFloor(); floor != 0 {
		t.Fatalf("inbox ack floor %d while the quarantine refuses writes: the notification was acknowledged", floor)
	}
	restore()
	eventually(t, "intake idle", h.intakeIdle)
	if n := h.msgs(event.StreamQuarantine); n != 1 {
		t.Fatalf("quarantine holds %d after writes came back, want 1", n)
	}
	if n := len(h.events()); n != 0 {
		t.Fatalf("%d events published unconfirmed", n)
	}
}

// A project that requires confirmation never publishes an unconfirmed
// notification, even if no Confirmer checks it: it is quarantined.
func TestRequireConfirmationFailsClosed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.RequireConfirmation = map[string]bool{"main": true}
	})
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-forged", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "intake idle", h.intakeIdle)
	if n := len(h.events()); n != 0 {
		t.Fatalf("%d events published unconfirmed", n)
	}
	if n := h.msgs(event.StreamQuarantine); n != 1 {
		t.Fatalf("quarantine holds %d, want 1", n)
	}
	// The copy names the inbox message it was, so that a final status
	// received after it (a forged pending set aside) does not wait for it.
	if got := natstest.Messages(t, h.js, event.StreamQuarantine)[0].Header.Get(HeaderInboxSeq); got != "1" {
		t.Fatalf("the quarantined copy names inbox message %q, want 1", got)
	}
}

// A notification the inbox stored on condition that it was the first of
// its transaction is quarantined without that condition: its copy in
// quarantine, where the transaction's earlier notifications are kept
// longer than in the inbox, would be refused, and the notification
// retried without end instead of set aside.
func TestAQuarantinedCopyCarriesNoConditionOfTheInbox(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.RequireConfirmation = map[string]bool{"main": true}
	})
	ctx := context.Background()
	inbox, err := h.js.Stream(ctx, event.StreamInbox)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []event.Status{event.StatusSuccess, event.StatusFailed} {
		if err := inbox.Purge(ctx); err != nil { // the inbox forgot the first
			t.Fatal(err)
		}
		if resp, _ := h.post("/callbacks/sengo/main", callback("tx-twice", s)); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", s, resp.StatusCode)
		}
		eventually(t, fmt.Sprintf("%s quarantined", s), func() bool { return h.msgs(event.StreamQuarantine) == uint64(i+1) })
	}
	if n := len(h.events()); n != 0 {
		t.Fatalf("%d events published unconfirmed", n)
	}
}

// A forged "success" stored first once made SenGo's genuine callback a
// "200 duplicate" for the whole duplicate window, and the paid order
// waited for reconciliation. The genuine one is now stored and published,
// confirmed, while the forged one is quarantined.
func TestForgedSuccessFirstDoesNotSwallowTheGenuine(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 2
	})
	tx, err := client.CreateQRIS(context.Background(), sengo.QRISRequest{Reference: "INV-F", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	// The attacker knows the id (it is in the payment page) and claims success first.
	forged := strings.Replace(string(tx.Raw), `"status":"pending"`, `"status":"success"`, 1)
	if resp, _ := h.post("/callbacks/sengo/main", []byte(`{"responseData":`+forged+`}`)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the forged claim quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	resp, body := h.post("/callbacks/sengo/main", payCallback(t, sb, client, tx.ID))
	if resp.StatusCode != 200 || body["status"] != "accepted" {
		t.Fatalf("genuine callback: %d %v, want 200 accepted", resp.StatusCode, body)
	}
	eventually(t, "the genuine success published", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
	if ev := h.events()[0]; ev.Data.Status != event.StatusSuccess || !ev.Data.Confirmed {
		t.Fatalf("event %+v", ev)
	}
}

// A claim SenGo denied, quarantined as unconfirmed, is not put back once
// its project no longer confirms (its credentials removed, or a relay
// still on a configuration without them): it was published unconfirmed,
// a forged success SenGo had denied.
func TestADeniedClaimIsNotRecheckedWithoutConfirmation(t *testing.T) {
	t.Parallel()
	_, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 1
	})
	ctx := context.Background()
	h.claimSuccess(client, "INV-DENIED")
	eventually(t, "the forged claim quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	due := time.Now().Add(RecheckAfter[0] + time.Second)
	if n, err := RecheckUnconfirmed(ctx, h.js, due, nil, func(string) bool { return false }); err != nil || n != 0 {
		t.Fatalf("rechecked %d (%v) for a project that no longer confirms, want none", n, err)
	}
	if n, err := RecheckUnconfirmed(ctx, h.js, due, nil, func(p string) bool { return p == "main" }); err != nil || n != 1 {
		t.Fatalf("rechecked %d (%v) for a project that confirms, want 1", n, err)
	}
}

// SenGo's API can lag its own callback: a success quarantined as
// unconfirmed is confirmed again on a schedule, and published once SenGo
// agrees. A claim SenGo never confirms stops being rechecked.
func TestUnconfirmedIsRecheckedLater(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 1
	})
	ctx := context.Background()
	lagging, forged := h.claimSuccess(client, "INV-LAG"), h.claimSuccess(client, "INV-FORGED")
	eventually(t, "both claims quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 2 })
	if n, err := RecheckUnconfirmed(ctx, h.js, time.Now(), nil, nil); err != nil || n != 0 {
		t.Fatalf("rechecked %d (%v) before the first recheck was due", n, err)
	}
	if _, err := sb.Transition(lagging.ID, event.StatusSuccess); err != nil { // SenGo catches up
		t.Fatal(err)
	}
	later := time.Now()
	for i := range RecheckAfter {
		later = later.Add(RecheckAfter[i] + time.Second)
		if _, err := RecheckUnconfirmed(ctx, h.js, later, nil, nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, "intake idle", h.intakeIdle)
	}
	if got := statuses(h.events(), lagging.ID); len(got) != 1 || got[0] != event.StatusSuccess {
		t.Fatalf("lagging payment: events %v, want its success", got)
	}
	if got := statuses(h.events(), forged.ID); len(got) != 0 {
		t.Fatalf("forged claim published: %v", got)
	}
	q, err := ListQuarantine(ctx, h.js, QuarantineFilter{TransactionID: forged.ID})
	if err != nil || len(q) != 1 || q[0].Rechecks != strconv.Itoa(len(RecheckAfter)) {
		t.Fatalf("forged claim in quarantine: %v %+v", err, q)
	}
	if n, _ := RecheckUnconfirmed(ctx, h.js, later.Add(24*time.Hour), nil, nil); n != 0 {
		t.Fatalf("rechecked %d after the schedule ended", n)
	}
}

// An event decided but not published (the events stream refused it) once
// waited for a second confirmation on its redelivery; with SenGo's API
// down meanwhile, the paid order waited too, or was stranded for good on a
// mismatch. The redelivery now publishes the decided event first.
func TestDecidedEventDoesNotWaitOnASecondConfirmation(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
	})
	ctx := context.Background()
	tx, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-D", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	paid, _ := client.Check(ctx, tx.ID, false)
	restore := natstest.RefuseWrites(t, h.js, event.StreamEvents)
	if resp, _ := h.post("/callbacks/sengo/main", append(append([]byte(`{"responseData":`), paid.Raw...), '}')); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the event decided and its publish refused", func() bool { return h.intakeCount("main", "retry") >= 1 })
	sb.SetFaults(sandbox.Faults{Fail500: 1 << 30}) // SenGo's API goes down
	restore()
	eventually(t, "the decided event published while SenGo is down", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
}

// Reconciliation treats a transaction whose decided event is still in
// the outbox as missing, so feeding it makes intake publish the event.
func TestReconcileSeesAnUnpublishedOutboxAsMissing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	tx, err := sengo.ParseCallback(callback("tx-ob", event.StatusSuccess))
	if err != nil {
		t.Fatal(err)
	}
	ev := tx.Event("main", "", time.Now(), true)
	b, _ := event.Marshal(ev)
	st := txState{Project: "main", TransactionID: tx.ID, Status: tx.Status,
		History: []txEvent{{Status: tx.Status, EventID: ev.ID}},
		Outbox:  []outboxItem{{EventID: ev.ID, Subject: event.EventSubject("main", tx.Product, tx.Status), Event: b}}}
	raw, _ := json.Marshal(st)
	kv, _ := h.js.KeyValue(t.Context(), event.BucketTx)
	if _, err := kv.Create(t.Context(), txKey("main", tx.ID), raw); err != nil {
		t.Fatal(err)
	}
	if missing, _, err := isMissing(t.Context(), kv, "main", tx); err != nil || !missing {
		t.Fatalf("missing %v (%v), want true while the event waits in the outbox", missing, err)
	}
	st.Outbox = nil
	raw, _ = json.Marshal(st)
	kv.Put(t.Context(), txKey("main", tx.ID), raw)
	if missing, _, _ := isMissing(t.Context(), kv, "main", tx); missing {
		t.Fatal("missing after the event was published")
	}
}

// Reconciliation once stopped at the first project whose SenGo API failed;
// every project is now reconciled on its own and the failure is reported
// and counted for the project that failed.
func TestReconcileGoesOnPastAFailingProject(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	broken, brokenClient := startSandbox(t)
	broken.SetFaults(sandbox.Faults{Fail500: 1 << 30})
	_, good := startSandbox(t)
	if _, err := good.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-R", Amount: 5000}); err != nil {
		t.Fatal(err)
	}
	sum, err := Reconcile(ctx, ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"a-broken": brokenClient, "b-good": good},
		Window: 24 * time.Hour, Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if err == nil || !strings.Contains(err.Error(), "a-broken") {
		t.Fatalf("err = %v, want the broken project's failure", err)
	}
	if sum.Fed != 1 || h.msgs(event.StreamInbox) != 1 {
		t.Fatalf("fed %d, inbox %d: the good project was not reconciled", sum.Fed, h.msgs(event.StreamInbox))
	}
	if n := testutil.ToFloat64(h.metrics.Reconcile.WithLabelValues("a-broken", "failed")); n != 1 {
		t.Fatalf("failures counted %v", n)
	}
}

func (h *harness) cfgLogger() zerolog.Logger { return h.cfg.Logger }

// A change an earlier run fed, still waiting in the inbox for intake, is
// missing again for the next run, whose feed the inbox drops as a
// duplicate: it was counted fed a second time, so a run's record said it
// fed what it did not.
func TestReconcileCountsOnlyWhatItStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false) // no intake: what is fed stays in the inbox
	ctx := context.Background()
	_, client := startSandbox(t)
	if _, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-F", Amount: 5000}); err != nil {
		t.Fatal(err)
	}
	cfg := ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": client}, Window: 24 * time.Hour, Metrics: h.metrics, Logger: h.cfgLogger()}
	for run, wantFed := range []int{1, 0} {
		sum, err := Reconcile(ctx, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Missing != 1 || sum.Fed != wantFed {
			t.Fatalf("run %d: missing %d, fed %d; want 1 and %d", run+1, sum.Missing, sum.Fed, wantFed)
		}
	}
	if n := h.msgs(event.StreamInbox); n != 1 {
		t.Fatalf("inbox %d, want 1", n)
	}
	if n := testutil.ToFloat64(h.metrics.Reconcile.WithLabelValues("main", "fed")); n != 1 {
		t.Fatalf("fed counted %v, want 1", n)
	}
}

// While NATS is known to be down a callback gets 503 at once, not after the
// whole publish timeout, and nothing is stored behind its back.
func TestOutageAnswers503AtOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false, func(c *Config, _ *IntakeConfig) { c.PublishTimeout = 20 * time.Second })
	h.nats.Stop()
	eventually(t, "the client sees the outage", func() bool { return h.js.Conn().Status() != nats.CONNECTED })
	start := time.Now()
	resp, got := h.post("/callbacks/sengo/main", callback("tx-out", event.StatusSuccess))
	if resp.StatusCode != 503 || toString(got["error"].(map[string]any)["code"]) != "store_unavailable" {
		t.Fatalf("%d %v", resp.StatusCode, got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("answered after %s: it waited for the publish timeout", d)
	}
	h.nats.Restart()
	eventually(t, "reconnected", func() bool { return h.js.Conn().Status() == nats.CONNECTED })
	if n := h.msgs(event.StreamInbox); n != 0 {
		t.Fatalf("the inbox holds %d after a 503", n)
	}
}

// A pending answered 200 and then overtaken by its success (the pending's
// processing delayed: here its writes failed a few times) was dropped as
// "late pending". Receipt order now decides: the success waits for the
// pending received before it, and both are published in that order.
//
// The inbox is read for the pending from the stream's leader: a direct
// get is answered by any replica in a cluster, and one not caught up
// missed the pending, so the success went first and the pending was
// dropped as stale.
func TestPendingReceivedFirstIsPublishedFirst(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.RetryInitial, ic.RetryMax = 200*time.Millisecond, 5*time.Second
	})
	leaderReads, replicaReads := h.subjectReads(event.StreamInbox)
	restore := natstest.RefuseWrites(t, h.js, "KV_"+event.BucketTx)
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-po", event.StatusPending)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	// Five failures put the pending's next try 3.2s away (doubling from
	// 200ms); the success's first failure puts its next try 200ms away.
	eventually(t, "the pending failed five times", func() bool { return h.intakeCount("main", "retry") >= 5 })
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-po", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	// The success's own first try (inbox sequence 2): it waits for the
	// pending (counted "waiting"), or, with the ordering broken, fails on
	// the refused write. Counting retries alone once let one more of the
	// pending's failures stand for it, and a broken ordering went unseen.
	eventually(t, "the success tried once", func() bool {
		return h.intakeCount("main", "waiting") >= 1 || strings.Contains(h.logs.String(), `"inbox_seq":2,`)
	})
	restore() // the success's next try comes seconds before the pending's
	eventually(t, "both published", func() bool { return len(statuses(h.events(), "tx-po")) == 2 })
	if got := statuses(h.events(), "tx-po"); got[0] != event.StatusPending || got[1] != event.StatusSuccess {
		t.Fatalf("published %v, want pending then success", got)
	}
	if n := h.intakeCount("main", "stale"); n != 0 {
		t.Fatalf("%v notifications dropped as stale", n)
	}
	if leaderReads.Load() == 0 || replicaReads.Load() != 0 {
		t.Fatalf("the inbox read for earlier notifications %d times from its leader, %d with direct gets any replica answers", leaderReads.Load(), replicaReads.Load())
	}
}

// Intake once fetched twice as many notifications as it had workers; with
// slow confirmations, the ones waiting in that buffer passed ack_wait
// before a worker started them, were redelivered, and were processed (and
// confirmed with SenGo) twice. Each notification is now confirmed once.
func TestSlowConfirmationsProcessEachNotificationOnce(t *testing.T) {
	// A worker's in-progress signal every 200 ms, not every second: with
	// the 1.5 s ack wait below, a signal late by half a second on a loaded
	// CI machine had a notification a worker held handed out again. The
	// ones waiting in the old buffer got no signal at all, whatever its
	// interval. Restored after the harness's workers stop (cleanups run
	// last first); not in parallel, as it sets it.
	t.Cleanup(func(d time.Duration) func() { return func() { intakeInProgressEvery = d } }(intakeInProgressEvery))
	intakeInProgressEvery = 200 * time.Millisecond
	sb, err := sandbox.New(sandbox.Config{Projects: []sandbox.Project{{Key: "SC-K", Token: "tok-0000000000000000"}}})
	if err != nil {
		t.Fatal(err)
	}
	var checks atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/check/") {
			checks.Add(1)
		}
		sb.Handler().ServeHTTP(w, r)
	}))
	defer func() { hs.Close(); sb.Close() }()
	client := sengo.NewClient(hs.URL+"/api", "SC-K", "tok-0000000000000000")
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.Workers, ic.AckWait = 2, 1500*time.Millisecond
	})
	ctx := context.Background()
	const n = 8
	var bodies [][]byte
	for i := range n {
		tx, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: fmt.Sprintf("INV-S%d", i), Amount: 5000})
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, append(append([]byte(`{"responseData":`), tx.Raw...), '}'))
	}
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(700 * time.Millisecond)}) // SenGo's API is slow
	for _, b := range bodies {
		if resp, _ := h.post("/callbacks/sengo/main", b); resp.StatusCode != 200 {
			t.Fatal(resp.StatusCode)
		}
	}
	eventually(t, "every notification published", func() bool { return len(h.events()) == n })
	eventually(t, "intake idle", h.intakeIdle)
	if got := checks.Load(); got != n {
		t.Fatalf("%d confirmations for %d notifications", got, n)
	}
}

// startSandbox runs the SenGo sandbox over httptest until the test ends and
// returns it with a client of its one project.
func startSandbox(t testing.TB) (*sandbox.Server, *sengo.Client) {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{Projects: []sandbox.Project{{Key: "SC-K", Token: "tok-0000000000000000"}}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { hs.Close(); sb.Close() })
	return sb, sengo.NewClient(hs.URL+"/api", "SC-K", "tok-0000000000000000")
}

// startSandboxHanging is startSandbox whose API never answers a check of
// an id starting with prefix (the request hangs until the caller gives up).
func startSandboxHanging(t testing.TB, prefix string) (*sandbox.Server, *sengo.Client) {
	t.Helper()
	return sandboxWithChecks(t, func(id string, _ http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(id, prefix) {
			return false
		}
		<-r.Context().Done() // never answered
		return true
	})
}

// refusingSandbox is a sandbox that refuses the check of an id refuse
// says yes to: 422 REQUEST_INVALID, as SenGo refuses a request it will
// not look up.
func refusingSandbox(t testing.TB, refuse func(id string) bool) (*sandbox.Server, *sengo.Client) {
	t.Helper()
	return sandboxWithChecks(t, func(id string, w http.ResponseWriter, _ *http.Request) bool {
		if !refuse(id) {
			return false
		}
		w.WriteHeader(http.StatusUnprocessableEntity)
		w.Write([]byte(`{"responseCode":422,"responseMessage":"REQUEST_INVALID"}`))
		return true
	})
}

// sandboxWithChecks is a sandbox whose check of a transaction id goes to
// check first: it answers (true) or leaves it to the sandbox (false).
func sandboxWithChecks(t testing.TB, check func(id string, w http.ResponseWriter, r *http.Request) bool) (*sandbox.Server, *sengo.Client) {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{Projects: []sandbox.Project{{Key: "SC-K", Token: "tok-0000000000000000"}}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, id, found := strings.Cut(r.URL.Path, "/check/"); found && check(id, w, r) {
			return
		}
		sb.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(func() { hs.Close(); sb.Close() })
	return sb, sengo.NewClient(hs.URL+"/api", "SC-K", "tok-0000000000000000")
}

// paidQRIS creates a QRIS transaction of ref at SenGo, pays it and
// returns the callback SenGo then sends.
func paidQRIS(t testing.TB, sb *sandbox.Server, client *sengo.Client, ref string) []byte {
	t.Helper()
	tx, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: ref, Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	return payCallback(t, sb, client, tx.ID)
}

// payCallback makes SenGo's transaction id paid and returns the callback
// SenGo then sends: its API's own object as responseData.
func payCallback(t testing.TB, sb *sandbox.Server, client *sengo.Client, id string) []byte {
	t.Helper()
	if _, err := sb.Transition(id, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	paid, err := client.Check(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte(`{"responseData":`), paid.Raw...), '}')
}

// A caller's X-Request-Id was taken as it came, whatever its length and
// bytes, into the response, every log line of the request and the inbox
// message's headers. Only a short plain one is kept now; any other is
// replaced by a generated id.
func TestHostileRequestIDIsReplaced(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	for i, rid := range []string{strings.Repeat("r", 5000), "two\twords", "a b<script>", "é"} {
		resp, _ := h.post("/callbacks/sengo/main", callback(fmt.Sprintf("tx-rid-%d", i), event.StatusPending), "X-Request-Id", rid)
		got := resp.Header.Get("X-Request-Id")
		if resp.StatusCode != 200 || got == rid || len(got) == 0 || len(got) > 64 {
			t.Errorf("X-Request-Id %.20q: answered %d with request id %.20q, want 200 and a generated id", rid, resp.StatusCode, got)
		}
	}
	resp, _ := h.post("/callbacks/sengo/main", callback("tx-rid-ok", event.StatusPending), "X-Request-Id", "sengo-7f3a.1:2_b")
	if got := resp.Header.Get("X-Request-Id"); got != "sengo-7f3a.1:2_b" {
		t.Errorf("a plain request id came back as %q", got)
	}
	s, _ := h.js.Stream(t.Context(), event.StreamInbox)
	for seq := uint64(1); seq <= 5; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if rid := m.Header.Get(event.HeaderRequestID); len(rid) > 64 || strings.ContainsAny(rid, "\t <é") {
			t.Errorf("inbox message %d keeps request id %.20q", seq, rid)
		}
		if m.Header.Get(event.HeaderSourceIP) != "127.0.0.1" || m.Header.Get(event.HeaderSignature) != SignatureNotChecked {
			t.Errorf("inbox message %d: source ip %q, signature %q", seq, m.Header.Get(event.HeaderSourceIP), m.Header.Get(event.HeaderSignature))
		}
	}
}

// A quarantine filled by forged claims is never held in memory at once:
// a listing keeps at most maxQuarantineListBytes (the newest), and the
// recheck of unconfirmed claims visits them one at a time, every one.
func TestQuarantineListingIsBoundedInMemory(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	const n = 6
	big := strings.Repeat("x", 8<<10) // 8 KiB of claim each
	for i := range n {
		tx := fmt.Sprintf("forged-%d", i)
		body := fmt.Sprintf(`{"responseData":{"id":%q,"merchantRef":"INV-%d","status":"success","note":%q}}`, tx, i, big)
		m := &nats.Msg{Subject: event.QuarantineTxSubject("main", tx), Data: []byte(body), Header: nats.Header{}}
		m.Header.Set(event.HeaderReason, sengo.ErrUnconfirmed.Error())
		m.Header.Set(event.HeaderProject, "main")
		if _, err := h.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	old := maxQuarantineListBytes
	maxQuarantineListBytes = 2*(8<<10) + 2048 // two of them
	t.Cleanup(func() { maxQuarantineListBytes = old })
	got, err := ListQuarantine(ctx, h.js, QuarantineFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range got {
		var c struct {
			ResponseData struct{ ID string } `json:"responseData"`
		}
		_ = json.Unmarshal(e.Notification, &c)
		ids = append(ids, c.ResponseData.ID)
	}
	if len(ids) != 2 || ids[0] != "forged-4" || ids[1] != "forged-5" {
		t.Fatalf("listed %v; want the newest two that fit (forged-4, forged-5)", ids)
	}
	// The recheck is not bounded by the listing: it redrives all six.
	if k, err := RecheckUnconfirmed(ctx, h.js, time.Now().Add(time.Hour), nil, nil); err != nil || k != n {
		t.Fatalf("rechecked %d (%v); want all %d", k, err, n)
	}
}

// subjectReads counts the reads of stream for the next message on a
// subject from now on: those sent to its leader (the stream API), and
// those any replica may answer (direct gets).
func (h *harness) subjectReads(stream string) (leader, replica *atomic.Int64) {
	h.t.Helper()
	leader, replica = new(atomic.Int64), new(atomic.Int64)
	for subject, n := range map[string]*atomic.Int64{"$JS.API.STREAM.MSG.GET." + stream: leader, "$JS.API.DIRECT.GET." + stream: replica} {
		sub, err := h.js.Conn().Subscribe(subject, func(m *nats.Msg) {
			if strings.Contains(string(m.Data), "next_by_subj") {
				n.Add(1)
			}
		})
		if err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := h.js.Conn().Flush(); err != nil {
		h.t.Fatal(err)
	}
	return leader, replica
}

// A forged "pending" (wrong amount: SenGo's API disagrees, so it is
// quarantined at once) stored before SenGo's genuine "success" does not
// hold the genuine one back: the receipt-order check read the inbox only,
// not what became of the pending, and made it wait orderWaitMax (2 min)
// for a pending never to be applied.
func TestForgedPendingDoesNotDelayTheGenuineSuccess(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
	})
	ctx := context.Background()
	tx, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-FP", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(tx.Raw), `"amount":5000`, `"amount":1`, 1)
	if forged == string(tx.Raw) {
		t.Fatalf("no amount in %s", tx.Raw)
	}
	if resp, _ := h.post("/callbacks/sengo/main", []byte(`{"responseData":`+forged+`}`)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the forged pending quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	leaderReads, replicaReads := h.subjectReads(event.StreamQuarantine)
	if resp, _ := h.post("/callbacks/sengo/main", payCallback(t, sb, client, tx.ID)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	start := time.Now()
	defer func() { t.Logf("waiting counted %v; elapsed %s", h.intakeCount("main", "waiting"), time.Since(start)) }()
	poll.Within(t, 15*time.Second, "the genuine success published", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
	// What became of the pending is read from the quarantine's leader, as
	// the inbox is (TestPendingReceivedFirstIsPublishedFirst).
	if leaderReads.Load() == 0 || replicaReads.Load() != 0 {
		t.Fatalf("the quarantine read %d times from its leader, %d with direct gets any replica answers", leaderReads.Load(), replicaReads.Load())
	}
}

// A pending set aside and then redriven (the automatic recheck does it)
// or purged no longer has a quarantine entry under its inbox sequence, and
// was taken for one intake had not settled yet: every final status of
// its transaction waited orderWaitMax (2 min) for it, holding an intake
// slot all the while, and forged finals posted at a few a second filled
// them all. A pending intake has acknowledged is not waited for.
func TestAPendingSetAsideAndRedrivenOrPurgedDoesNotHoldFinalsBack(t *testing.T) {
	t.Parallel()
	for _, then := range []string{"redriven", "purged"} {
		t.Run(then, func(t *testing.T) {
			h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
				ic.RequireConfirmation = map[string]bool{"main": true} // nothing confirms: each is set aside at once
			})
			ctx := context.Background()
			if resp, _ := h.post("/callbacks/sengo/main", callback("tx-held", event.StatusPending)); resp.StatusCode != 200 {
				t.Fatal(resp.StatusCode)
			}
			eventually(t, "the pending set aside", func() bool { return h.msgs(event.StreamQuarantine) == 1 && h.intakeIdle() })
			entries, err := ListQuarantine(ctx, h.js, QuarantineFilter{})
			if err != nil || len(entries) != 1 {
				t.Fatalf("%d entries, %v", len(entries), err)
			}
			want := uint64(1)
			switch then {
			case "redriven":
				if n, err := RedriveQuarantine(ctx, h.js, entries, nil); n != 1 || err != nil {
					t.Fatalf("redrove %d, %v", n, err)
				}
				eventually(t, "the copy set aside again", func() bool {
					e, _ := ListQuarantine(ctx, h.js, QuarantineFilter{})
					return len(e) == 1 && e[0].Seq != entries[0].Seq && h.intakeIdle()
				})
			case "purged":
				if n, err := PurgeQuarantine(ctx, h.js, entries); n != 1 || err != nil {
					t.Fatalf("purged %d, %v", n, err)
				}
				want = 0
			}
			if resp, _ := h.post("/callbacks/sengo/main", callback("tx-held", event.StatusSuccess)); resp.StatusCode != 200 {
				t.Fatal(resp.StatusCode)
			}
			poll.Within(t, 15*time.Second, "the success decided (set aside) without waiting", func() bool {
				e, _ := ListQuarantine(ctx, h.js, QuarantineFilter{})
				return uint64(len(e)) == want+1
			})
		})
	}
}

// Whoever can POST a callback chooses its W3C baggage header (up to 8 KB
// of key=values): it is not passed on. It was copied into the inbox
// message, the event's headers on SENGO_EVENTS and from there into every
// webhook, as trusted-looking context.
func TestCallersBaggageIsNotForwarded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	resp, _ := h.post("/callbacks/sengo/main", callback("tx-bag", event.StatusSuccess),
		"baggage", "user.role=admin,tenant=victim", "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "event published", func() bool { return len(statuses(h.events(), "tx-bag")) == 1 })
	for _, stream := range []string{event.StreamInbox, event.StreamEvents} {
		for _, m := range natstest.Messages(t, h.js, stream) {
			if b := m.Header.Get("Baggage") + m.Header.Get("baggage"); b != "" {
				t.Errorf("%s message %d carries the caller's baggage %q", stream, m.Sequence, b)
			}
		}
	}
}

// An unknown project name is any caller's text: the request log line
// bounds it as the metric label and the span attribute do (it wrote it
// whole, twice: path and project).
func TestUnknownProjectNameIsBoundedInTheLog(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	name := strings.Repeat("p", 16<<10)
	if resp, _ := h.post("/callbacks/sengo/"+name, callback("tx-x", event.StatusSuccess)); resp.StatusCode != 404 {
		t.Fatal(resp.StatusCode)
	}
	if n := len(h.logs.String()); n > 4<<10 {
		t.Fatalf("one rejected request wrote %d bytes of log", n)
	}
}

// A request's method is any caller's text too: Go's server takes a
// method of any token characters up to its header limit, and the log
// line wrote it whole (32 KiB a request, no credentials needed).
func TestAnUnknownMethodIsBoundedInTheLog(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	method := strings.Repeat("A", 16<<10)
	req, err := http.NewRequest(method, h.http.URL+"/callbacks/sengo/main", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := h.do(req); resp.StatusCode < 400 {
		t.Fatal(resp.StatusCode)
	}
	if n := len(h.logs.String()); n > 4<<10 || !strings.Contains(h.logs.String(), `"method":"other"`) {
		t.Fatalf("one request with a made-up method wrote %d bytes of log: %.300s", n, h.logs.String())
	}
}

// Forged callbacks with made-up ids are each quarantined (SenGo has no
// such transaction). 10,000 of them do not push a genuine success that was
// quarantined because SenGo's API lagged out of the recheck: it read only
// the newest 10,000 entries, and now reads everything stored within
// recheckWindow, one at a time.
func TestForgedFloodDoesNotStrandAnUnconfirmedGenuine(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 1
	})
	ctx := context.Background()
	tx := h.claimSuccess(client, "INV-LAGF") // SenGo's callback says success before its API does
	eventually(t, "the genuine success quarantined as unconfirmed", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	// The flood: what intake writes for a forged callback of an unknown id
	// (written straight to the quarantine to keep the test short).
	natstest.PublishMany(t, h.js, maxQuarantineScan, func(i int) *nats.Msg {
		id := fmt.Sprintf("forged-%d", i)
		return &nats.Msg{Subject: event.QuarantineTxSubject("main", id), Data: callback(id, event.StatusSuccess), Header: nats.Header{
			event.HeaderProject: []string{"main"}, event.HeaderSource: []string{SourceCallback},
			event.HeaderReason: []string{"confirm " + id + ": SenGo's API disagrees with the notification: SenGo has no transaction " + id},
		}}
	})
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil { // SenGo's API catches up
		t.Fatal(err)
	}
	n, err := RecheckUnconfirmed(ctx, h.js, time.Now().Add(RecheckAfter[0]+time.Second), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("recheck redrove %d notifications, want the genuine success", n)
	}
	eventually(t, "the genuine success published", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
}

// An id that is a dot segment ("." or "..") passed the callback checks
// (printable ASCII without spaces), and GET /check/.. is a different URL
// once the path is cleaned: SenGo (here the sandbox behind Go's ServeMux)
// answers a 404 without its code, which confirmation takes for a
// misconfigured base_url and retries for as long as the inbox keeps it.
// Each such forged notification held one of intake's max_ack_pending
// slots for 7 days; max_ack_pending of them stopped intake for everyone.
func TestDotSegmentIDsDoNotStallIntake(t *testing.T) {
	t.Parallel()
	forgedThenGenuine(t, http.StatusUnprocessableEntity, sandbox.Faults{}, "..", ".", "..", ".")
}

// forgedThenGenuine posts a forged success for each id to a relay with
// four intake slots (max_ack_pending), wants each answered status, then
// wants SenGo's genuine callback published: forged notifications that
// hold a slot each would keep it out. SenGo's API has faults meanwhile.
// It returns the harness.
func forgedThenGenuine(t *testing.T, status int, faults sandbox.Faults, ids ...string) *harness {
	t.Helper()
	sb, client := startSandbox(t)
	sb.SetFaults(faults)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 2
		ic.Workers, ic.MaxAckPending = 2, 4
	})
	for i, id := range ids {
		body := fmt.Appendf(nil, `{"id":%q,"merchantRef":"FORGED-%d","status":"success","amount":10000,"fee":0,"totalAmount":10000,"qris":{}}`, id, i)
		if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != status {
			t.Fatalf("forged id %q: %d %v, want %d", id, resp.StatusCode, got, status)
		}
	}
	tx, err := client.CreateQRIS(context.Background(), sengo.QRISRequest{Reference: "INV-GENUINE", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := h.post("/callbacks/sengo/main", payCallback(t, sb, client, tx.ID)); resp.StatusCode != 200 {
		t.Fatalf("genuine callback: %d %v", resp.StatusCode, body)
	}
	eventually(t, "the genuine success published", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
	return h
}

// A body that does not arrive in full within the listener's read timeout
// (the client announced more than it sends, then stalls) is answered 400
// body_unreadable, and nothing is stored.
func TestStalledBodyIsBodyUnreadable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	srv := httptest.NewUnstartedServer(h.app)
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /callbacks/sengo/main HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(poll.Deadline))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"body_unreadable"`) {
		t.Fatalf("a stalled body: %d %s, want 400 body_unreadable", resp.StatusCode, body)
	}
	if n := h.msgs(event.StreamInbox); n != 0 {
		t.Fatalf("%d notifications stored from a stalled body", n)
	}
}

// SenGo may refuse to check an id it finds malformed (the sandbox answers
// 422 REQUEST_INVALID for one outside its id alphabet) although the
// callback checks accept it (printable ASCII). Confirmation took any such
// refusal for an outage and retried it for as long as the inbox keeps it,
// each forged notification holding one of intake's max_ack_pending slots;
// max_ack_pending of them stopped intake for everyone. A refused check is
// now unconfirmed: confirm_attempts tries, then quarantine and rechecks.
func TestRefusedCheckDoesNotStallIntake(t *testing.T) {
	t.Parallel()
	h := forgedThenGenuine(t, http.StatusOK, sandbox.Faults{}, "forged:0", "forged:1", "forged:2", "forged:3")
	eventually(t, "the forged ones quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 4 })
	for _, e := range natstest.Messages(t, h.js, event.StreamQuarantine) {
		// Refused, not "failed while SenGo answers others": a refusal is an
		// answer, and needs no probe to tell it from an outage.
		if r := e.Header.Get(event.HeaderReason); !strings.Contains(r, sengo.ErrUnconfirmed.Error()) || !strings.Contains(r, "refused to check") || !strings.Contains(r, "REQUEST_INVALID") {
			t.Errorf("quarantined with reason %q, want unconfirmed: SenGo refused the check", r)
		}
	}
}

// SenGo's API may fail the check of one transaction id (a 500 for it
// alone) while it answers every other. Confirmation took each such
// failure for an outage and retried it for as long as the inbox keeps the
// notification, each holding one of intake's max_ack_pending slots:
// max_ack_pending forged ids SenGo chokes on stopped intake for everyone.
// After confirm_attempts tries, a check that failed while SenGo answers a
// check of a made-up id (404 TRANSACTION_NOT_FOUND) is unconfirmed:
// quarantined, and rechecked on the quarantine's schedule.
func TestCheckFailingForOneIDDoesNotStallIntake(t *testing.T) {
	t.Parallel()
	ids := []string{"forged-0", "forged-1", "forged-2", "forged-3"}
	h := forgedThenGenuine(t, http.StatusOK, sandbox.Faults{FailChecks: ids}, ids...)
	eventually(t, "the forged ones quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 4 })
	for _, e := range natstest.Messages(t, h.js, event.StreamQuarantine) {
		if r := e.Header.Get(event.HeaderReason); !strings.Contains(r, sengo.ErrUnconfirmed.Error()) || !strings.Contains(r, "500") {
			t.Errorf("quarantined with reason %q, want unconfirmed: SenGo failed the check of this id alone", r)
		}
	}
}

// During an outage of SenGo's API (every call fails), a notification is
// retried, never quarantined however many attempts it takes: the check of
// a made-up id fails too, so the failure is not the transaction's own.
func TestCheckOutageIsRetriedNotQuarantined(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 1
	})
	tx, err := client.CreateQRIS(context.Background(), sengo.QRISRequest{Reference: "INV-OUTAGE", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	body := payCallback(t, sb, client, tx.ID)
	sb.SetFaults(sandbox.Faults{Fail500: 1 << 30})
	if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
		t.Fatalf("callback: %d %v", resp.StatusCode, got)
	}
	eventually(t, "several confirmations failed", func() bool {
		return testutil.ToFloat64(h.metrics.Confirm.WithLabelValues("main", "unavailable")) >= 5
	})
	if n := h.msgs(event.StreamQuarantine); n != 0 {
		t.Fatalf("%d notifications quarantined during an outage of SenGo's API", n)
	}
	sb.SetFaults(sandbox.Faults{}) // SenGo is back
	eventually(t, "the success published", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
}

// A check SenGo never answers for one id (the request hangs until the
// attempt's time runs out) counts as failing for that id: processing has
// used its time, yet the notification is still quarantined (settling has
// its own time inside AckWait), and intake stays free for the genuine one.
func TestCheckNeverAnsweredForOneIDIsQuarantined(t *testing.T) {
	t.Parallel()
	sb, client := startSandboxHanging(t, "forged-hang")
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		// The check outlasts every attempt's processing time: with its own
		// timeout shorter, a later attempt joining the same shared call
		// would see it time out, and never run out of time.
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client}, sengo.CheckTimeout(time.Hour))
		ic.ConfirmAttempts = 2
		ic.Workers, ic.MaxAckPending, ic.AckWait = 1, 1, 1500*time.Millisecond
	})
	body := []byte(`{"id":"forged-hang","merchantRef":"FORGED-H","status":"success","amount":10000,"fee":0,"totalAmount":10000,"qris":{}}`)
	if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
		t.Fatalf("forged callback: %d %v", resp.StatusCode, got)
	}
	tx, err := client.CreateQRIS(context.Background(), sengo.QRISRequest{Reference: "INV-AFTER-HANG", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if resp, got := h.post("/callbacks/sengo/main", payCallback(t, sb, client, tx.ID)); resp.StatusCode != 200 {
		t.Fatalf("genuine callback: %d %v", resp.StatusCode, got)
	}
	eventually(t, "the genuine success published", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
	q := natstest.Messages(t, h.js, event.StreamQuarantine)
	if len(q) != 1 || !strings.Contains(q[0].Header.Get(event.HeaderReason), sengo.ErrUnconfirmed.Error()) {
		t.Fatalf("quarantine %+v, want the never-answered one, unconfirmed", q)
	}
}

// Forged callbacks whose checks SenGo never answers held an intake worker
// each for the whole processing time of every attempt (20 s with the
// defaults, and the client tried three times within it), confirm_attempts
// times: a few such requests a minute kept every worker busy, and the
// genuine callback behind them waited. A check now has its own timeout
// (intake.confirm_timeout) and one try per attempt, and a check that timed
// out while SenGo answers others is quarantined at once.
func TestHangingChecksDoNotStarveIntake(t *testing.T) {
	t.Parallel()
	sb, client := startSandboxHanging(t, "forged-hang-")
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client}, sengo.CheckTimeout(300*time.Millisecond)) // the genuine check must not overrun it on a loaded machine
		ic.ConfirmAttempts = 1000                                                                                             // only "at once" quarantines them within the test
		ic.Workers, ic.MaxAckPending = 2, 256                                                                                 // slots to spare: the workers are what is fought over
	})
	const forged = 12
	for i := range forged {
		body := fmt.Appendf(nil, `{"id":"forged-hang-%d","merchantRef":"FORGED-%d","status":"success","amount":10000,"fee":0,"totalAmount":10000,"qris":{}}`, i, i)
		if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
			t.Fatalf("forged callback: %d %v", resp.StatusCode, got)
		}
	}
	tx, err := client.CreateQRIS(context.Background(), sengo.QRISRequest{Reference: "INV-NOT-STARVED", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if resp, got := h.post("/callbacks/sengo/main", payCallback(t, sb, client, tx.ID)); resp.StatusCode != 200 {
		t.Fatalf("genuine callback: %d %v", resp.StatusCode, got)
	}
	eventually(t, "the genuine success published", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
	eventually(t, "the forged ones quarantined", func() bool { return h.msgs(event.StreamQuarantine) == forged })
}

// Intake retries a notification it cannot finish for as long as the inbox
// keeps it, after its 200 to SenGo, which will not send it again. When
// SENGO_EVENTS refused writes for longer than the inbox keeps notifications
// (7 days by default), the inbox dropped it: neither published nor
// quarantined. It is now quarantined shortly before (a tenth of the
// retention), with why, to be redriven.
func TestNotificationAboutToAgeOutIsQuarantined(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	s, err := h.js.Stream(t.Context(), event.StreamInbox)
	if err != nil {
		t.Fatal(err)
	}
	short := s.CachedInfo().Config
	short.MaxAge, short.Duplicates = 5*time.Second, time.Second // quarantined after 4.5s
	if _, err := h.js.UpdateStream(t.Context(), short); err != nil {
		t.Fatal(err)
	}
	h.icfg.RetryMax = 200 * time.Millisecond // retried within the last 0.5s (config enforces as much)
	h.startIntake()
	natstest.RefuseWrites(t, h.js, event.StreamEvents)
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-age", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "quarantined before the inbox drops it", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	m, err := h.js.Stream(t.Context(), event.StreamQuarantine)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if reason := raw.Header.Get(event.HeaderReason); !strings.Contains(reason, ErrExpiring.Error()) || !strings.Contains(reason, "SENGO_EVENTS") && !strings.Contains(reason, "publish") {
		t.Fatalf("quarantined with reason %q", reason)
	}
}

// intake.retry_max is the longest retry delay: the duplicate window and
// the inbox's guard against expiry are sized from it. The backoff's jitter
// went up to half again as much.
func TestRetryDelayNeverExceedsRetryMax(t *testing.T) {
	t.Parallel()
	in := &Intake{cfg: IntakeConfig{RetryInitial: 50 * time.Millisecond, RetryMax: time.Second}}
	for attempt := uint64(1); attempt <= 200; attempt++ {
		if d := in.retryDelay(attempt); d > time.Second || d <= 0 {
			t.Fatalf("attempt %d: delay %s, want at most retry_max (1s)", attempt, d)
		}
	}
}

// One transaction of SenGo's list that does not parse (a merchantRef with
// a control character, a product the relay does not know) made the whole
// page an error, and reconciliation of that day stopped there: every later
// page and status of the day (success after pending) was never checked,
// for as long as SenGo listed it. The others are now reconciled, and the
// day is reported failed.
func TestReconcileGoesOnPastATransactionItCannotRead(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false) // no intake: what is fed stays in the inbox
	item := listed
	bad := json.RawMessage(`{"id":"tx-bad","merchantRef":"REF-\u0007","status":"pending","amount":1}`)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var list []json.RawMessage
		if r.URL.Path == "/transactions" && r.URL.Query().Get("page") == "1" {
			switch r.URL.Query().Get("status") {
			case "pending":
				list = []json.RawMessage{item("tx-a", event.StatusPending), bad}
			case "success":
				list = []json.RawMessage{item("tx-b", event.StatusSuccess)}
			}
		}
		if list == nil {
			list = []json.RawMessage{}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": list})
	}))
	defer api.Close()
	client := sengo.NewClient(api.URL, apiKey, apiToken)
	sum, err := Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": client}, Window: time.Hour,
		Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if sum.Fed != 2 || h.msgs(event.StreamInbox) != 2 {
		t.Fatalf("fed %d, inbox %d (err %v); want tx-a and tx-b fed past the transaction that does not parse", sum.Fed, h.msgs(event.StreamInbox), err)
	}
	if err == nil || !strings.Contains(err.Error(), "main") {
		t.Fatalf("err = %v, want the day reported as not wholly reconciled", err)
	}
}

// A callback URL configured without its project (/callbacks/sengo/<token>
// instead of /callbacks/sengo/main/<token>) puts the callback token where
// the project goes. An unknown project's name is logged and traced as
// "unknown", and its segment of the path as [unknown]: they wrote the
// token whole.
func TestATokenInTheProjectPositionIsNeverLoggedOrTraced(t *testing.T) {
	t.Parallel()
	const token = "tok-4f9c2a7e1b3d5f60"
	rec := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	h := newHarness(t, false, func(c *Config, _ *IntakeConfig) { c.Projects[0].CallbackToken = token })
	for _, path := range []string{"/callbacks/sengo/" + token, "/callbacks/sengo/" + token + "/x"} {
		if resp, _ := h.post(path, callback("tx-t", event.StatusSuccess)); resp.StatusCode != 404 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
	if strings.Contains(h.logs.String(), token) || !strings.Contains(h.logs.String(), `"project":"unknown"`) {
		t.Errorf("the log holds the token, or names no unknown project:\n%s", h.logs.String())
	}
	if !strings.Contains(h.logs.String(), `/callbacks/sengo/[unknown]`) {
		t.Errorf("the log's path does not hide an unknown project:\n%s", h.logs.String())
	}
	spans := rec.Ended()
	if len(spans) == 0 {
		t.Fatal("no span recorded")
	}
	for _, s := range spans {
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), token) {
				t.Errorf("span %s: attribute %s = %q", s.Name(), a.Key, a.Value.Emit())
			}
		}
	}
	// A known project is named as before.
	if resp, _ := h.post("/callbacks/sengo/main/"+token, callback("tx-t", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	if !strings.Contains(h.logs.String(), `"project":"main"`) || !strings.Contains(h.logs.String(), `/callbacks/sengo/main/[redacted]`) {
		t.Errorf("a known project is not named:\n%s", h.logs.String())
	}
}

// SenGo's version of a disputed transaction goes beside the callback in
// its quarantine entry, as a header. It went whole: an API object of a few
// megabytes (a QRIS image, any field SenGo adds) made the entry larger than
// a NATS message may be, so the quarantine failed at every retry, and the
// disputed notification was never set aside; line breaks in it (an answer
// pretty-printed) broke the header block. It is stored compacted and cut.
func TestAHugeAPIObjectStillQuarantines(t *testing.T) {
	t.Parallel()
	sb, err := sandbox.New(sandbox.Config{Projects: []sandbox.Project{{Key: "SC-K", Token: "tok-0000000000000000"}}})
	if err != nil {
		t.Fatal(err)
	}
	var dispute atomic.Bool
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !dispute.Load() || !strings.Contains(r.URL.Path, "/check/") {
			sb.Handler().ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		sb.Handler().ServeHTTP(rec, r)
		var env struct {
			ResponseCode    int            `json:"responseCode"`
			ResponseMessage string         `json:"responseMessage"`
			ResponseData    map[string]any `json:"responseData"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.ResponseData == nil {
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
		env.ResponseData["amount"] = 1                                       // disputed: the fields differ
		env.ResponseData["qrImage"] = strings.Repeat("iVBORw0KGgo", 200_000) // 2.2 MB
		b, _ := json.MarshalIndent(env, "", "  ")
		_, _ = w.Write(bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")))
	}))
	t.Cleanup(func() { hs.Close(); sb.Close() })
	client := sengo.NewClient(hs.URL+"/api", "SC-K", "tok-0000000000000000")
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
	})
	body := paidQRIS(t, sb, client, "INV-HUGE")
	dispute.Store(true)
	if resp, _ := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the disputed notification quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	s, err := h.js.Stream(t.Context(), event.StreamQuarantine)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	api := m.Header.Get(HeaderAPIObject)
	if len(api) == 0 || len(api) > maxAPIObject+len("…") || strings.ContainsAny(api, "\r\n") {
		t.Errorf("API object header: %d bytes, line breaks %v", len(api), strings.ContainsAny(api, "\r\n"))
	}
	if !strings.Contains(m.Header.Get(event.HeaderReason), "fields differ") {
		t.Errorf("reason %q", m.Header.Get(event.HeaderReason))
	}
}

// The recheck runs every 30 s on every relay and reads every quarantined
// notification of the last day, to find the unconfirmed ones due. It read
// each whole: a forged 64 KiB body, set aside as a mismatch, was read
// about 2,880 times a day per relay. It reads their headers only (the
// reason, the rechecks done and when it was stored are all it needs), as
// does the selection of an operator's purge or redrive of many.
func TestTheRecheckReadsNoBodies(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	big := bytes.Repeat([]byte("x"), 32<<10)
	natstest.PublishMany(t, h.js, 200, func(i int) *nats.Msg {
		id := fmt.Sprintf("forged-%d", i)
		return &nats.Msg{Subject: event.QuarantineTxSubject("main", id), Data: big, Header: nats.Header{
			event.HeaderProject: []string{"main"}, event.HeaderSource: []string{SourceCallback},
			event.HeaderReason: []string{"confirm " + id + ": SenGo's API disagrees with the notification: SenGo has no transaction " + id},
		}}
	})
	nc, js := h.nats.Connect(t)
	before := nc.Stats().InBytes
	if n, err := RecheckUnconfirmed(t.Context(), js, time.Now().Add(RecheckAfter[0]+time.Second), nil, nil); n != 0 || err != nil {
		t.Fatal(n, err)
	}
	if read := nc.Stats().InBytes - before; read > 1<<20 {
		t.Errorf("the recheck read %d KiB for 200 notifications none of which is unconfirmed", read>>10)
	}
	// An operator's purge or redrive of them all selects them the same
	// way: by sequence, from their headers.
	before = nc.Stats().InBytes
	_, selected, err := EachQuarantinedBatch(t.Context(), js, QuarantineFilter{Project: "main"}, func(es []QuarantineEntry) (int, error) { return len(es), nil })
	if err != nil || selected != 200 {
		t.Fatal(selected, err)
	}
	if read := nc.Stats().InBytes - before; read > 1<<20 {
		t.Errorf("selecting 200 notifications to act on read %d KiB", read>>10)
	}
}

// A final status reads its transaction's quarantined notifications once,
// however many earlier pendings it finds set aside: it read them again for
// each, and fifteen forged pendings of 60 KiB (quarantined: nothing
// confirms them) made every later notification of the transaction read
// some 120 of them, 7 MiB for one request.
func TestForgedPendingsDoNotMultiplyTheReadsOfALaterStatus(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc, ijs := srv.Connect(t) // intake's own connection, to count what it reads
	h := newHarnessOn(t, srv, true, func(_ *Config, ic *IntakeConfig) {
		ic.JetStream = ijs
		ic.RequireConfirmation = map[string]bool{"main": true} // nothing confirms: each is set aside at once
	})
	padded := func(s event.Status, i int) []byte {
		b := callback("tx-many", s)
		return fmt.Appendf(b[:len(b)-1], `,"pad%d":%q}`, i, strings.Repeat("x", 60<<10))
	}
	const pendings = 15
	for i := range pendings {
		if resp, _ := h.post("/callbacks/sengo/main", padded(event.StatusPending, i)); resp.StatusCode != http.StatusOK {
			t.Fatalf("pending %d: %d", i, resp.StatusCode)
		}
	}
	eventually(t, "every forged pending set aside", func() bool { return h.msgs(event.StreamQuarantine) == pendings && h.intakeIdle() })
	before := nc.Stats().InBytes
	if resp, _ := h.post("/callbacks/sengo/main", padded(event.StatusSuccess, 99)); resp.StatusCode != http.StatusOK {
		t.Fatalf("success: %d", resp.StatusCode)
	}
	eventually(t, "the success set aside too", func() bool { return h.msgs(event.StreamQuarantine) == pendings+1 && h.intakeIdle() })
	// Each of the fifteen inbox messages and fifteen quarantined ones once,
	// and the success itself: about 2 MiB.
	if read := nc.Stats().InBytes - before; read > 3<<20 {
		t.Errorf("intake read %d KiB for one notification after %d forged pendings", read>>10, pendings)
	}
}

// Each page of SenGo's list holding a transaction the relay cannot read
// (SenGo adds a product) added its own error to the run's: up to 1,000
// pages, four statuses and eight days of about 200 bytes each, in one log
// line every 10 minutes and in the run's record (whose history message
// past the store's max_payload was lost). A day's unread pages are
// reported as their count and the first.
func TestReconcileErrorsAreBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	bad := json.RawMessage(`{"id":"tx-bad","merchantRef":"REF-\u0007","status":"pending","amount":1}`)
	pages := 0
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		list := []json.RawMessage{}
		if page, _ := strconv.Atoi(r.URL.Query().Get("page")); page <= 60 {
			list = []json.RawMessage{bad}
			pages++
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": list})
	}))
	defer api.Close()
	client := sengo.NewClient(api.URL, apiKey, apiToken)
	_, err := Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": client}, Window: 24 * time.Hour,
		Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if err == nil || pages < 480 {
		t.Fatalf("err = %v after %d unreadable pages", err, pages)
	}
	if n := len(err.Error()); n > 4<<10 {
		t.Errorf("the run's error is %d KiB for %d unreadable pages", n>>10, pages)
	}
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if len(line) > 8<<10 {
			t.Errorf("a log line of %d KiB: %.200s", len(line)>>10, line)
		}
	}
}

// A check that failed while SenGo answers others (a probe of a made-up id
// tells) is quarantined at once, and the probe's answer stood for every
// caller for 5 s: when SenGo stopped answering within 5 s of a probe that
// worked, every genuine notification whose check timed out took that
// answer for its own and was quarantined as failing alone, instead of
// being retried as in an outage (published only by the recheck, or by
// reconciliation past its schedule). A probe counts for a failed check
// only if it started after that check did.
func TestAnOutageRightAfterAProbeIsAnOutage(t *testing.T) {
	t.Parallel()
	var outage atomic.Bool
	sb, client := sandboxWithChecks(t, func(id string, w http.ResponseWriter, r *http.Request) bool {
		if !outage.Load() && !strings.HasPrefix(id, "forged-hang-") {
			return false
		}
		<-r.Context().Done() // never answered
		return true
	})
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client}, sengo.CheckTimeout(300*time.Millisecond))
		ic.ConfirmAttempts = 1000
	})
	const genuine = 3
	var bodies [][]byte
	for i := range genuine {
		bodies = append(bodies, paidQRIS(t, sb, client, fmt.Sprint("INV-OUTAGE-", i)))
	}
	// A check that hangs for its transaction alone: the probe answers, and
	// it is quarantined.
	forged := []byte(`{"id":"forged-hang-1","merchantRef":"FORGED-1","status":"success","amount":10000,"fee":0,"totalAmount":10000,"qris":{}}`)
	if resp, got := h.post("/callbacks/sengo/main", forged); resp.StatusCode != 200 {
		t.Fatalf("forged callback: %d %v", resp.StatusCode, got)
	}
	eventually(t, "the forged one quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	// SenGo stops answering at once, within the probe's 5 s.
	outage.Store(true)
	for _, b := range bodies {
		if resp, got := h.post("/callbacks/sengo/main", b); resp.StatusCode != 200 {
			t.Fatalf("genuine callback: %d %v", resp.StatusCode, got)
		}
	}
	eventually(t, "each genuine check timed out", func() bool {
		return h.intakeCount("main", "retry")+h.intakeCount("main", "quarantined") >= genuine+1
	})
	if n := h.msgs(event.StreamQuarantine); n != 1 {
		t.Fatalf("%d genuine notification(s) quarantined as failing alone during an outage", n-1)
	}
	outage.Store(false)
	eventually(t, "the genuine ones published once SenGo answers again", func() bool { return h.msgs(event.StreamEvents) == genuine })
}

// The same with the probe sent after a genuine check began but before
// SenGo stopped answering: that check, failing in the outage, took the
// probe's answer for its own and was quarantined. A probe counts only for
// checks that had failed when it was sent.
func TestAProbeSentBeforeACheckFailedDoesNotVouchForIt(t *testing.T) {
	t.Parallel()
	var outage atomic.Bool
	var genuineID atomic.Value
	genuineID.Store("")
	var genuineAsked atomic.Int32
	sb, client := sandboxWithChecks(t, func(id string, w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasPrefix(id, "forged-500-"):
			w.WriteHeader(http.StatusInternalServerError)
		case outage.Load() || id == genuineID.Load():
			if id == genuineID.Load() {
				genuineAsked.Add(1)
			}
			<-r.Context().Done() // never answered
		default:
			return false
		}
		return true
	})
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client}, sengo.CheckTimeout(2*time.Second))
		ic.ConfirmAttempts = 1
	})
	tx, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: "INV-IN-FLIGHT", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	body := payCallback(t, sb, client, tx.ID)
	genuineID.Store(tx.ID)
	if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
		t.Fatalf("genuine callback: %d %v", resp.StatusCode, got)
	}
	eventually(t, "the genuine check in flight", func() bool { return genuineAsked.Load() == 1 })
	// A check failing for its transaction alone: the probe, sent now,
	// answers, and it is quarantined.
	forged := []byte(`{"id":"forged-500-1","merchantRef":"FORGED-1","status":"success","amount":10000,"fee":0,"totalAmount":10000,"qris":{}}`)
	if resp, got := h.post("/callbacks/sengo/main", forged); resp.StatusCode != 200 {
		t.Fatalf("forged callback: %d %v", resp.StatusCode, got)
	}
	eventually(t, "the forged one quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	outage.Store(true) // before the genuine check times out
	eventually(t, "the genuine check timed out and was settled", func() bool {
		return h.intakeCount("main", "retry")+h.intakeCount("main", "quarantined") >= 2
	})
	if n := h.msgs(event.StreamQuarantine); n != 1 {
		t.Fatalf("the genuine notification, whose check failed in the outage, was quarantined as failing alone")
	}
}

// A probe counts for a failed check only if it was sent after that check
// failed, when it says SenGo answers. When it says SenGo does not (an
// outage: only a reason to retry), that answer was not shared either, and
// a probe that got no answer was not kept at all: during an outage every
// failed check past confirm_attempts sent a probe of its own, doubling the
// calls on a throttled key. A "no" stands for 5 s for every caller.
func TestAnOutageIsProbedOnceNotPerCheck(t *testing.T) {
	t.Parallel()
	var outage atomic.Bool
	var probes atomic.Int32
	sb, client := sandboxWithChecks(t, func(id string, w http.ResponseWriter, _ *http.Request) bool {
		if !outage.Load() {
			return false
		}
		if strings.HasPrefix(id, sengo.ProbeIDPrefix) {
			probes.Add(1)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 1
		ic.RetryInitial, ic.RetryMax = 50*time.Millisecond, 100*time.Millisecond
	})
	var bodies [][]byte
	for i := range 10 {
		bodies = append(bodies, paidQRIS(t, sb, client, fmt.Sprint("INV-THROTTLED-", i)))
	}
	outage.Store(true)
	for _, b := range bodies {
		if resp, got := h.post("/callbacks/sengo/main", b); resp.StatusCode != 200 {
			t.Fatalf("callback: %d %v", resp.StatusCode, got)
		}
	}
	eventually(t, "30 failed checks retried", func() bool { return h.intakeCount("main", "retry") >= 30 })
	if n := probes.Load(); n > 3 {
		t.Fatalf("%d probes for %v retries in one outage, want one every 5 s", n, h.intakeCount("main", "retry"))
	}
	if n := h.msgs(event.StreamQuarantine); n != 0 {
		t.Fatalf("%d quarantined during an outage", n)
	}
}

// The waits counted per notification (which are no attempts) were wiped
// whole once 4,096 notifications had waited; with several relays, those
// another relay settled are never removed, so the map filled in normal
// running, and each wipe took their credit from the finals waiting then:
// one such final's next unconfirmed answer quarantined it at once. Full,
// the map forgets only notifications that waited long ago.
func TestAFullWaitMapForgetsTheSettledFirst(t *testing.T) {
	t.Parallel()
	in := &Intake{waited: map[uint64]waits{}, cfg: IntakeConfig{AckWait: 30 * time.Second}}
	now := time.Now()
	for seq := range uint64(maxWaited - 2) {
		in.waited[100_000+seq] = waits{n: 1, last: now.Add(-time.Hour)} // settled by another relay
	}
	for range 2 {
		in.waitCredit(7, 1, true, now) // a final waiting now
	}
	in.waitCredit(8, 1, true, now) // fills the map
	in.waitCredit(9, 1, true, now) // past it
	if got := in.waitCredit(7, 3, false, now); got != 1 {
		t.Fatalf("attempt 3 of a final that waited twice counts as %d, want 1: its credit was wiped", got)
	}
	if len(in.waited) > 3 {
		t.Fatalf("%d entries kept, want the three waiting now", len(in.waited))
	}
}

// SenGo's 400 CREATE_FAILED says its upstream switching failed, and a
// proxy's 408, 421 or 425 asks for another try: none is about this
// transaction. Counted as a failed check, each sent the probe, which
// SenGo answered from its own records (TRANSACTION_NOT_FOUND) while every
// real check failed: each genuine payment was taken for one failing alone
// and quarantined. They are retried as an outage.
func TestATryAgainAnswerIsAnOutageNotThisTransactionAlone(t *testing.T) {
	t.Parallel()
	for name, answer := range map[string]func(w http.ResponseWriter){
		"CREATE_FAILED": func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"responseCode":400,"responseMessage":"CREATE_FAILED"}`))
		},
		"421": func(w http.ResponseWriter) { w.WriteHeader(http.StatusMisdirectedRequest) },
		// Throttled: the merchant's key over SenGo's rate (its own calls,
		// or forged ids checked on it), and the one probe let through.
		"429": func(w http.ResponseWriter) { w.WriteHeader(http.StatusTooManyRequests) },
	} {
		t.Run(name, func(t *testing.T) {
			var failing atomic.Bool
			sb, client := sandboxWithChecks(t, func(id string, w http.ResponseWriter, _ *http.Request) bool {
				if !failing.Load() || strings.HasPrefix(id, sengo.ProbeIDPrefix) {
					return false // the probe: SenGo's own "no such transaction"
				}
				answer(w)
				return true
			})
			h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
				ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
				ic.ConfirmAttempts = 2
				ic.RetryInitial, ic.RetryMax = 50*time.Millisecond, 100*time.Millisecond
			})
			body := paidQRIS(t, sb, client, "INV-SWITCH")
			failing.Store(true)
			if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
				t.Fatalf("callback: %d %v", resp.StatusCode, got)
			}
			eventually(t, "5 failed checks retried, or a quarantine", func() bool {
				return h.intakeCount("main", "retry") >= 5 || h.msgs(event.StreamQuarantine) > 0
			})
			if n := h.msgs(event.StreamQuarantine); n != 0 {
				t.Fatalf("a genuine payment quarantined while SenGo answered %s to every check", name)
			}
		})
	}
}

// A confirmed event carries SenGo's object from the check as its raw. One
// with a QR image in it (megabytes) made the transaction's state, which
// holds the event until it is published, larger than the server takes: the
// write failed at every retry for as long as the inbox kept the payment,
// and the paid order was never announced. An object over 64 KiB is not
// kept: the event's raw is the notification's own, which the inbox took.
func TestAHugeConfirmedObjectIsNotKeptInTheEvent(t *testing.T) {
	t.Parallel()
	sb, err := sandbox.New(sandbox.Config{Projects: []sandbox.Project{{Key: "SC-K", Token: "tok-0000000000000000"}}})
	if err != nil {
		t.Fatal(err)
	}
	var huge atomic.Bool
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !huge.Load() || !strings.Contains(r.URL.Path, "/check/") {
			sb.Handler().ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		sb.Handler().ServeHTTP(rec, r)
		var env map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env["responseData"] == nil {
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
		env["responseData"].(map[string]any)["qrImage"] = strings.Repeat("iVBORw0KGgo", 150_000) // 1.6 MB, the fields as they were
		_ = json.NewEncoder(w).Encode(env)
	}))
	t.Cleanup(func() { hs.Close(); sb.Close() })
	client := sengo.NewClient(hs.URL+"/api", "SC-K", "tok-0000000000000000")
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
	})
	body := paidQRIS(t, sb, client, "INV-QR")
	// Anyone may send the notification (this project has no signature):
	// what only it says is not SenGo's.
	body = bytes.Replace(body, []byte(`{"responseData":{`), []byte(`{"responseData":{"forgedNote":"not SenGo's",`), 1)
	body = regexp.MustCompile(`"fee":\d+`).ReplaceAll(body, []byte(`"fee":99999`))
	huge.Store(true)
	if resp, _ := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	poll.Within(t, 10*time.Second, "the confirmed event published", func() bool { return len(h.events()) == 1 })
	ev := h.events()[0]
	if !ev.Data.Confirmed || len(ev.Data.Raw) > 64<<10 || !bytes.Contains(ev.Data.Raw, []byte("INV-QR")) {
		t.Fatalf("event confirmed %v, raw of %d bytes: want SenGo's fields", ev.Data.Confirmed, len(ev.Data.Raw))
	}
	if bytes.Contains(ev.Data.Raw, []byte("not SenGo's")) || bytes.Contains(ev.Data.Raw, []byte("99999")) || ev.Data.Fee == 99999 {
		t.Fatalf("a confirmed event's raw carries what only the notification said: %s", ev.Data.Raw)
	}
}

// SenGo's list may answer every page past the last with the last one
// again (its documentation says nothing of how a list ends). Paging
// stopped only at an empty page, and each status of each day fetched 1,000
// pages, every run: hours of requests against the merchant's key, whose
// throttling then failed the confirmations of every notification. A page
// that repeats the one before ends the list.
func TestReconcileStopsAtAPageThatRepeats(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	var requests atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": []json.RawMessage{listed("tx-last-"+r.URL.Query().Get("status"), event.StatusSuccess)}})
	}))
	defer api.Close()
	client := sengo.NewClient(api.URL, apiKey, apiToken)
	_, _ = Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": client}, Window: time.Hour,
		Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if n, most := requests.Load(), int64(2*len(event.Statuses)*2); n > most { // two pages a status, a day or two
		t.Fatalf("%d list requests, want at most %d", n, most)
	}
}

// A list of one status and day longer than maxPages pages ended there
// as if it had been read whole: the transactions past it were never
// reconciled, and the run was reported a success. It is reported failed,
// and the other statuses are still read.
func TestReconcileReportsAListItDidNotFinish(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page := []json.RawMessage{}
		status := event.Status(r.URL.Query().Get("status"))
		if status == event.StatusSuccess || status == event.StatusFailed && r.URL.Query().Get("page") == "1" {
			page = append(page, listed("tx-"+string(status)+"-"+r.URL.Query().Get("page"), status))
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": page})
	}))
	defer api.Close()
	client := sengo.NewClient(api.URL, apiKey, apiToken)
	sum, err := Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": client}, Window: time.Minute,
		Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if err == nil || !strings.Contains(err.Error(), "not read to its end") {
		t.Fatalf("a list cut at %d pages: %v", maxPages, err)
	}
	failed := 0
	for _, f := range sum.Found {
		if f.Status == event.StatusFailed {
			failed++
		}
	}
	if sum.Checked < maxPages+1 || failed == 0 && sum.Missing <= maxPages {
		t.Fatalf("checked %d, missing %d: the other statuses were not read", sum.Checked, sum.Missing)
	}
}

// One project's checks failing for every id (its key revoked, SenGo's
// allowlist refusing the relay, a wrong base_url) is an outage for that
// project, and its notifications were retried for as long as the inbox
// keeps them, each holding one of the one intake consumer's
// max_ack_pending slots: once they filled it, no notification of any
// project was processed, those of projects that do not confirm too. A
// project holds at most a share of them; past it, its notifications are
// set aside as unconfirmed and rechecked on the quarantine's schedule.
//
// An outage that answers "try again" (429 throttled, SenGo's
// CREATE_FAILED, a proxy's 408) is one too: it was not counted a failed
// check at all, and held the slots as before.
func TestOneProjectsFailingChecksDoNotStallTheOthers(t *testing.T) {
	t.Parallel()
	t.Run("500", func(t *testing.T) {
		sb, client := startSandbox(t)
		sb.SetFaults(sandbox.Faults{Fail500: 1 << 30}) // main's API fails every call
		oneProjectsOutage(t, client)
	})
	t.Run("429", func(t *testing.T) {
		_, client := sandboxWithChecks(t, func(_ string, w http.ResponseWriter, _ *http.Request) bool {
			w.WriteHeader(http.StatusTooManyRequests) // main's key throttled, the probe too
			return true
		})
		oneProjectsOutage(t, client)
	})
	t.Run("CREATE_FAILED", func(t *testing.T) {
		_, client := sandboxWithChecks(t, func(_ string, w http.ResponseWriter, _ *http.Request) bool {
			w.WriteHeader(http.StatusBadRequest) // SenGo's upstream switching failing every check
			w.Write([]byte(`{"responseCode":400,"responseMessage":"CREATE_FAILED"}`))
			return true
		})
		oneProjectsOutage(t, client)
	})
}

// twoProjects is a harness with projects main, confirmed by client, and
// other, not confirmed, whose intake has 8 slots (max_ack_pending).
func twoProjects(t *testing.T, client *sengo.Client, opts ...func(*IntakeConfig)) *harness {
	return newHarness(t, true, func(c *Config, ic *IntakeConfig) {
		c.Projects = append(c.Projects, Project{Name: "other"})
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.Workers, ic.MaxAckPending = 2, 8
		for _, o := range opts {
			o(ic)
		}
	})
}

// othersPaymentGoesThrough posts project other's success and waits for
// its event while main's notifications wait.
func othersPaymentGoesThrough(t *testing.T, h *harness, while string) {
	t.Helper()
	body := []byte(`{"id":"other-1","merchantRef":"O-1","status":"success","amount":10000,"fee":0,"totalAmount":10000,"qris":{}}`)
	if resp, got := h.post("/callbacks/sengo/other", body); resp.StatusCode != 200 {
		t.Fatalf("other's callback: %d %v", resp.StatusCode, got)
	}
	poll.Within(t, 20*time.Second, "other's success published while "+while, func() bool { return len(statuses(h.events(), "other-1")) == 1 })
}

func oneProjectsOutage(t *testing.T, client *sengo.Client) {
	h := twoProjects(t, client)
	for i := range 12 {
		body := fmt.Appendf(nil, `{"id":"main-%d","merchantRef":"M-%d","status":"success","amount":10000,"fee":0,"totalAmount":10000,"qris":{}}`, i, i)
		if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
			t.Fatalf("main's callback %d: %d %v", i, resp.StatusCode, got)
		}
	}
	eventually(t, "main's notifications retried", func() bool {
		return testutil.ToFloat64(h.metrics.Confirm.WithLabelValues("main", "unavailable")) >= 12
	})
	othersPaymentGoesThrough(t, h, "main's API fails")
	for _, e := range natstest.Messages(t, h.js, event.StreamQuarantine) {
		if r := e.Header.Get(event.HeaderReason); !strings.Contains(r, sengo.ErrUnconfirmed.Error()) || !strings.Contains(r, "set aside") {
			t.Errorf("quarantined with reason %q, want unconfirmed, set aside for the other projects", r)
		}
	}
}

// With one project (or when the consumer is not crowded) setting its
// notifications aside makes room for nobody: during an outage of its
// checks they are retried as before, for as long as the inbox keeps them,
// however few slots max_ack_pending has.
func TestAnOutageOfTheOnlyProjectSetsNothingAside(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	sb.SetFaults(sandbox.Faults{Fail500: 1 << 30})
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.Workers, ic.MaxAckPending = 2, 4
	})
	for i := range 8 {
		body := fmt.Appendf(nil, `{"id":"only-%d","merchantRef":"O-%d","status":"success","amount":10000,"fee":0,"totalAmount":10000,"qris":{}}`, i, i)
		if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
			t.Fatalf("callback %d: %d %v", i, resp.StatusCode, got)
		}
	}
	// A relay that set them aside would do it for a failing check once
	// it knew the consumer crowded: it asks the store at most once a
	// second, and the consumer is crowded from when it holds more than
	// half of max_ack_pending (the notifications, failing, stay in it).
	// So the judgement waits for that, the second the relay may go on
	// with an older answer, and then several failing checks: each of them
	// would have set its notification aside. Waiting for 12 failing checks
	// and 2 s from the start instead, a loaded machine could have made
	// them all before the crowding was known, and the test passed whatever
	// the relay did.
	// (A notification set aside on the way ends the waits: the relay
	// has done what it must not; one set aside as soon as the relay saw
	// the crowding kept the consumer from looking crowded to the test.)
	count := func(outcome string) float64 {
		return testutil.ToFloat64(h.metrics.Confirm.WithLabelValues("main", outcome))
	}
	cons, err := h.js.Consumer(t.Context(), event.StreamInbox, IntakeConsumer)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the consumer crowded", func() bool {
		info, err := cons.Info(t.Context())
		return count("set_aside") > 0 || err == nil && info.NumAckPending > 2
	})
	crowded := time.Now()
	eventually(t, "the relay's last answer from before the crowding outdated", func() bool {
		return count("set_aside") > 0 || time.Since(crowded) > time.Second
	})
	before := count("unavailable")
	eventually(t, "6 more confirmations failing", func() bool {
		return count("set_aside") > 0 || count("unavailable") >= before+6
	})
	if n := count("set_aside"); n != 0 {
		t.Fatalf("%v notifications of the only project set aside during its outage", n)
	}
	if n := h.msgs(event.StreamQuarantine); n != 0 {
		t.Fatalf("%d notifications of the only project quarantined during its outage", n)
	}
}

// Reconciliation fed the inbox the object SenGo listed, as listed. One with
// a QR image in it (megabytes) was larger than the server takes (1 MiB by
// default on an external NATS), and its failed publish ended the day's run:
// that payment, and every transaction listed after it, stayed missing at
// every run. An object over 64 KiB is fed as the fields the relay reads.
func TestReconcileFeedsAHugeListedObject(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var page []json.RawMessage
		if r.URL.Query().Get("page") == "1" && r.URL.Query().Get("status") == "success" {
			for _, id := range []string{"tx-huge", "tx-after"} {
				var env struct {
					ResponseData map[string]any `json:"responseData"`
				}
				_ = json.Unmarshal(callback(id, event.StatusSuccess), &env)
				if id == "tx-huge" {
					env.ResponseData["qrImage"] = strings.Repeat("iVBORw0KGgo", 150_000) // 1.6 MB
				}
				b, _ := json.Marshal(env.ResponseData)
				page = append(page, b)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": page})
	}))
	defer api.Close()
	client := sengo.NewClient(api.URL, apiKey, apiToken)
	sum, err := Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": client}, Window: time.Hour,
		Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if err != nil || sum.Fed != 2 {
		t.Fatalf("reconcile fed %d: %v; want both", sum.Fed, err)
	}
	poll.Within(t, 10*time.Second, "both successes published", func() bool { return len(h.events()) == 2 })
	for _, ev := range h.events() {
		if len(ev.Data.Raw) > 64<<10 || ev.Data.Amount == 0 {
			t.Fatalf("event of %s: raw of %d bytes, amount %d", ev.Data.TransactionID, len(ev.Data.Raw), ev.Data.Amount)
		}
	}
}

// Anyone who can reach the callback URL and knows a pending transaction's
// id (an order made on the merchant's site) could post forged "success"
// bodies for it, each made unique by a field of its own: SenGo's check
// says pending, and each was retried confirm_attempts times, holding one
// of intake's max_ack_pending slots (shared by every project) for each
// retry's delay, then again at every recheck. A few dozen a second
// filled them, and no genuine notification of any project was processed.
// The same check decides them all: one body of a claim (project,
// transaction, status) is retried at a time, the others are set aside
// at once, rechecked on the quarantine's schedule.
func TestAFloodOfOneForgedClaimHoldsOneSlot(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 5
		ic.RetryInitial, ic.RetryMax = 5*time.Second, 10*time.Second // a retry holds its slot 5 s
	})
	tx, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: "INV-FLOOD", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		forged := fmt.Appendf(nil, `{"id":%q,"merchantRef":"INV-FLOOD","status":"success","amount":%d,"fee":0,"totalAmount":%d,"qris":{},"nonce":%d}`, tx.ID, tx.Amount, tx.TotalAmount, i)
		if resp, got := h.post("/callbacks/sengo/main", forged); resp.StatusCode != 200 {
			t.Fatalf("forged %d: %d %v", i, resp.StatusCode, got)
		}
	}
	poll.Within(t, 4*time.Second, "all but one forged body set aside", func() bool { return h.intakeCount("main", "quarantined") >= n-1 })
	if len(h.events()) != 0 {
		t.Fatalf("a forged claim was published: %v", h.events())
	}
	// The genuine success, once SenGo has it, is published at once.
	genuine := payCallback(t, sb, client, tx.ID)
	if resp, got := h.post("/callbacks/sengo/main", genuine); resp.StatusCode != 200 {
		t.Fatalf("genuine: %d %v", resp.StatusCode, got)
	}
	poll.Within(t, 5*time.Second, "the genuine success published", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
}

// Forged claims of many real pending transactions (orders the attacker
// made), each retried confirm_attempts times, held a slot of the shared
// intake consumer each: claims SenGo does not confirm were no failed
// checks, and the per-project share did not count them. It does now, and
// the other project's payment goes through.
func TestOneProjectsUnconfirmedClaimsDoNotStallTheOthers(t *testing.T) {
	t.Parallel()
	_, client := startSandbox(t)
	h := twoProjects(t, client, func(ic *IntakeConfig) {
		ic.ConfirmAttempts = 5
		ic.RetryInitial, ic.RetryMax = 5*time.Second, 10*time.Second
	})
	for i := range 12 {
		tx, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: fmt.Sprint("INV-CLAIM-", i), Amount: 5000})
		if err != nil {
			t.Fatal(err)
		}
		forged := fmt.Appendf(nil, `{"id":%q,"merchantRef":%q,"status":"success","amount":%d,"fee":0,"totalAmount":%d,"qris":{}}`, tx.ID, tx.MerchantRef, tx.Amount, tx.TotalAmount)
		if resp, got := h.post("/callbacks/sengo/main", forged); resp.StatusCode != 200 {
			t.Fatalf("forged %d: %d %v", i, resp.StatusCode, got)
		}
	}
	eventually(t, "main's claims unconfirmed", func() bool {
		return testutil.ToFloat64(h.metrics.Confirm.WithLabelValues("main", "unconfirmed")) >= 8
	})
	othersPaymentGoesThrough(t, h, "main's claims wait")
	for _, e := range h.events() {
		if e.Source != "sengo/other" {
			t.Fatalf("a forged claim was published: %s", e.Data.TransactionID)
		}
	}
}

// A check SenGo refuses for the id itself (422 REQUEST_INVALID: an id no
// real one looks like) says nothing a retry would change: each such
// forged notification was retried confirm_attempts times, holding a slot
// for each retry. It is set aside at once, rechecked on the quarantine's
// schedule.
func TestARefusedCheckIsSetAsideAtOnce(t *testing.T) {
	t.Parallel()
	_, client := refusingSandbox(t, func(id string) bool { return strings.HasPrefix(id, "odd") })
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 5
		ic.RetryInitial, ic.RetryMax = 5*time.Second, 10*time.Second
	})
	if resp, got := h.post("/callbacks/sengo/main", callback("odd~id", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatalf("callback: %d %v", resp.StatusCode, got)
	}
	poll.Within(t, 4*time.Second, "set aside at once", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	if n := h.intakeCount("main", "retry"); n != 0 {
		t.Fatalf("retried %v times first", n)
	}
}

// SenGo refusing every check (a deploy that starts refusing the request
// with 422, a WAF's bare 400), its probe's too, is an outage, not one
// forged id: every genuine payment was set aside at first sight, and
// after the last recheck stayed quarantined. It is retried as an outage,
// and published once SenGo answers again.
func TestAllChecksRefusedIsAnOutage(t *testing.T) {
	t.Parallel()
	var refusing atomic.Bool
	refusing.Store(true)
	sb, client := refusingSandbox(t, func(string) bool { return refusing.Load() })
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 2
	})
	tx, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: "Q-R", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	paid, err := sb.Transition(tx.ID, event.StatusSuccess)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"responseData": paid})
	if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
		t.Fatalf("callback: %d %v", resp.StatusCode, got)
	}
	eventually(t, "retried", func() bool { return h.intakeCount("main", "retry") >= 3 })
	if n := h.msgs(event.StreamQuarantine); n != 0 {
		t.Fatalf("%d set aside while SenGo refused every check", n)
	}
	refusing.Store(false)
	eventually(t, "published once SenGo answers", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
}

// A project renamed in the configuration (main → shop, the same SenGo
// credentials): its transactions' state is kept under the old name, so
// reconciliation took every transaction SenGo listed for the window for
// one the relay never saw, and intake published each status change again
// under a new event id (the project is part of it). A transaction known
// under a project no longer configured is not fed; one known under
// another configured project still is (two projects' ids are theirs).
func TestReconcileDoesNotFeedARenamedProjectsTransactions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false) // no intake: what is fed stays in the inbox
	ctx := context.Background()
	sb, client := startSandbox(t)
	if _, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-RN", Amount: 5000}); err != nil {
		t.Fatal(err)
	}
	txs, err := client.ListTransactions(ctx, sengo.ListQuery{Page: 1, Status: event.StatusPending, Date: time.Now().In(wib).Format("2006-01-02")})
	if err != nil || len(txs) != 1 {
		t.Fatalf("listed %d (%v), want 1", len(txs), err)
	}
	tx := txs[0]
	ev := tx.Event("main", "", time.Now(), true)
	st := txState{Project: "main", TransactionID: tx.ID, Status: tx.Status, History: []txEvent{{Status: tx.Status, EventID: ev.ID}}}
	raw, _ := json.Marshal(st)
	kv, _ := h.js.KeyValue(ctx, event.BucketTx)
	if _, err := kv.Create(ctx, txKey("main", tx.ID), raw); err != nil {
		t.Fatal(err)
	}

	renamed := ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"shop": client}, Configured: []string{"shop"},
		Window: 24 * time.Hour, Metrics: h.metrics, Logger: h.cfgLogger()}
	sum, err := Reconcile(ctx, renamed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Missing != 0 || sum.Fed != 0 || h.msgs(event.StreamInbox) != 0 {
		t.Fatalf("missing %d, fed %d, inbox %d: a renamed project's transaction was fed again", sum.Missing, sum.Fed, h.msgs(event.StreamInbox))
	}
	if n := testutil.ToFloat64(h.metrics.Reconcile.WithLabelValues("shop", "elsewhere")); n != 1 {
		t.Fatalf("counted elsewhere %v, want 1", n)
	}
	if !strings.Contains(h.logs.String(), `"known_under":"main"`) {
		t.Fatalf("no warning names the old project: %s", h.logs.String())
	}

	both := renamed
	both.Configured = []string{"main", "shop"}
	if sum, err := Reconcile(ctx, both, nil); err != nil || sum.Fed != 1 {
		t.Fatalf("fed %d (%v): a transaction known under another configured project is its own, want 1", sum.Fed, err)
	}

	// Paid after the rename: the old name holds only its pending, so its
	// success was never published under any name, and is fed.
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	if sum, err := Reconcile(ctx, renamed, nil); err != nil || sum.Fed != 1 || sum.Elsewhere != 0 {
		t.Fatalf("fed %d, elsewhere %d (%v): a success the old name never published, want it fed", sum.Fed, sum.Elsewhere, err)
	}
	// Deleted under the old name: nothing of it is held. (The success
	// above is in the inbox already: not stored again.)
	created, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-RN2", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, txKey("main", created.ID), raw); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, txKey("main", created.ID)); err != nil {
		t.Fatal(err)
	}
	if sum, err := Reconcile(ctx, renamed, nil); err != nil || sum.Fed != 1 || sum.Elsewhere != 0 {
		t.Fatalf("fed %d, elsewhere %d (%v): a transaction deleted under the old name, want it fed", sum.Fed, sum.Elsewhere, err)
	}
}

// claimSuccess makes a pending QRIS transaction of project main in
// client's SenGo and posts a callback claiming it paid (as SenGo's own
// does before its API says so, or as a forger does), answered 200.
func (h *harness) claimSuccess(client *sengo.Client, ref string) sengo.Transaction {
	h.t.Helper()
	tx, err := client.CreateQRIS(context.Background(), sengo.QRISRequest{Reference: ref, Amount: 5000})
	if err != nil {
		h.t.Fatal(err)
	}
	body := strings.Replace(string(tx.Raw), `"status":"pending"`, `"status":"success"`, 1)
	if resp, _ := h.post("/callbacks/sengo/main", []byte(`{"responseData":`+body+`}`)); resp.StatusCode != 200 {
		h.t.Fatal(resp.StatusCode)
	}
	return tx
}

// stoppingLister is a SenGo client whose caller gives up (Ctrl-C, the
// relay stopping) right as a day's last list has ended.
type stoppingLister struct {
	*sengo.Client
	stop func()
}

func (l stoppingLister) ListTransactions(ctx context.Context, q sengo.ListQuery) ([]sengo.Transaction, error) {
	txs, err := l.Client.ListTransactions(ctx, q)
	if err == nil && len(txs) == 0 && q.Status == reconcileOrder[len(reconcileOrder)-1] { // the day's last list
		l.stop()
	}
	return txs, err
}

// A run stopped between two days (or two projects) left the rest of its
// window unchecked and said nothing: no error, a clean run in the
// console's record, and `sengo-relay reconcile` exited 0. It reports
// where it stopped.
func TestAStoppedReconciliationSaysSo(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	_, client := startSandbox(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sum, err := Reconcile(ctx, ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": stoppingLister{client, cancel}, "other": client},
		Window: 48 * time.Hour, Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if err == nil || !strings.Contains(err.Error(), "stopped before main ") || !strings.Contains(err.Error(), "stopped before the projects after main") {
		t.Fatalf("err = %v (%+v), want it to say the run stopped before its window's end, and before the other project", err, sum)
	}
	if n := testutil.ToFloat64(h.metrics.Reconcile.WithLabelValues("main", "failed")); n != 1 {
		t.Fatalf("failures counted %v, want the stopped run's", n)
	}
}

// A Confirmer that cannot check a project (sengo.Confirmer with no client
// for it: confirmed false, no error) publishes nothing marked confirmed,
// and nothing at all for a project that requires confirmation: taken for
// a check, its events went out `confirmed: true` unchecked.
func TestAProjectTheConfirmerCannotCheckIsNotConfirmed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true, withProjects(Project{Name: "main"}, Project{Name: "strict"}), func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{}) // no client for either
		ic.RequireConfirmation = map[string]bool{"strict": true}
	})
	for _, p := range []string{"main", "strict"} {
		if resp, _ := h.post("/callbacks/sengo/"+p, callback("tx-unchecked-"+p, event.StatusSuccess)); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
	eventually(t, "one published, one quarantined", func() bool {
		return h.msgs(event.StreamEvents) == 1 && h.msgs(event.StreamQuarantine) == 1
	})
	evs := h.events()
	if len(evs) != 1 || evs[0].Data.TransactionID != "tx-unchecked-main" || evs[0].Data.Confirmed {
		t.Fatalf("events %+v, want main's, not confirmed", evs)
	}
}

// A list SenGo fails to give (a page answered 500 at every try, one
// throttled, one too large to read) is reported, and the day's other
// lists are still read: a failure on the pending list ended the day, and
// a success of that day whose callback was lost was never fed, at any
// run. The final statuses are read first.
func TestAFailingListLeavesTheDaysOthersRead(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	var order []string
	var mu sync.Mutex
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		order = append(order, q.Get("status")+"/"+q.Get("page"))
		mu.Unlock()
		if q.Get("status") == "pending" || q.Get("status") == "expired" {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 500, "responseMessage": "internal error"})
			return
		}
		var page []json.RawMessage
		if st := event.Status(q.Get("status")); q.Get("page") == "1" && (st == event.StatusSuccess || st == event.StatusFailed) {
			page = append(page, listed("tx-lost-"+string(st), st))
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": page})
	}))
	defer api.Close()
	client := sengo.NewClient(api.URL, apiKey, apiToken)
	sum, err := Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": client}, Window: time.Minute,
		Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if err == nil || !strings.Contains(err.Error(), "pending page 1") {
		t.Fatalf("reconcile: %v; want the pending list's failure reported", err)
	}
	if sum.Fed != 2 {
		t.Fatalf("fed %d, want 2: the day's lists were not all read after one failed (requests %v)", sum.Fed, order)
	}
	poll.Within(t, 10*time.Second, "the success and the failure published", func() bool { return len(h.events()) == 2 })
	if mu.Lock(); !strings.HasPrefix(order[0], "success/") {
		t.Errorf("the day's lists were read in the order %v, want the final statuses first", order)
	}
	mu.Unlock()
	if got, want := slices.Sorted(slices.Values(reconcileOrder)), slices.Sorted(slices.Values(event.Statuses)); !slices.Equal(got, want) {
		t.Errorf("reconciliation reads %v, not every status %v", got, want)
	}
}

// A change reconciliation finds missing and cannot feed (the inbox
// refusing writes), or a transaction whose state cannot be read, fails the
// run and says why, in its error and in its record: taken for not missing,
// or left unfed without a word, the change reached no endpoint and the run
// said it was clean.
func TestReconcileReportsWhatItCouldNotFeed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	if _, err := h.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: history.StreamReconcile, Subjects: []string{history.SubjectsReconcile}}); err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var page []json.RawMessage
		if q := r.URL.Query(); q.Get("page") == "1" && q.Get("status") == "success" {
			page = append(page, listed("tx-unfed", event.StatusSuccess))
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": page})
	}))
	defer api.Close()
	runs, err := history.NewWriter(h.js.Conn(), history.WriterConfig{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	reconcile := func() (ReconcileSummary, error) {
		return Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": sengo.NewClient(api.URL, apiKey, apiToken)},
			Window: time.Minute, Runs: runs, Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	}
	kv, err := h.js.KeyValue(t.Context(), event.BucketTx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), txKey("main", "tx-unfed"), []byte("not a state")); err != nil {
		t.Fatal(err)
	}
	if sum, err := reconcile(); err == nil || !strings.Contains(err.Error(), "decode") || sum.Fed != 0 {
		t.Fatalf("a state that cannot be read: fed %d, %v; want an error saying so", sum.Fed, err)
	}
	if err := kv.Purge(t.Context(), txKey("main", "tx-unfed")); err != nil {
		t.Fatal(err)
	}
	restore := natstest.RefuseWrites(t, h.js, event.StreamInbox)
	if sum, err := reconcile(); err == nil || !strings.Contains(err.Error(), "feed evt_") || sum.Fed != 0 {
		t.Fatalf("a feed the inbox refused: fed %d, %v; want an error saying so", sum.Fed, err)
	}
	if err := runs.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	recs, err := history.Reconciliations(t.Context(), h.js, "main", 10)
	if err != nil || len(recs) != 2 || recs[0].Error == "" || recs[1].Error == "" {
		t.Fatalf("run records %+v (%v): want both runs recorded failed", recs, err)
	}
	restore()
	if sum, err := reconcile(); err != nil || sum.Fed != 1 {
		t.Fatalf("once the inbox takes writes: fed %d, %v", sum.Fed, err)
	}
	poll.Within(t, 10*time.Second, "the change published", func() bool { return len(h.events()) == 1 })
}

// A store error that ends a day keeps what the day had already found
// failing (a list SenGo did not give): reported alone, the run's record
// said nothing of the list left unread.
func TestAStoreErrorKeepsTheDaysOtherFailures(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("status") == "expired" {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 500, "responseMessage": "internal error"})
			return
		}
		var page []json.RawMessage
		if q.Get("page") == "1" && q.Get("status") == "failed" {
			page = append(page, listed("tx-failed-unfed", event.StatusFailed))
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": page})
	}))
	defer api.Close()
	natstest.RefuseWrites(t, h.js, event.StreamInbox)
	_, err := Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": sengo.NewClient(api.URL, apiKey, apiToken)},
		Window: time.Minute, Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if err == nil || !strings.Contains(err.Error(), "expired page 1") || !strings.Contains(err.Error(), "feed evt_") {
		t.Fatalf("reconcile: %v; want both the expired list's failure and the refused feed", err)
	}
}

// A relay stopped longer than reconcile.window (a long holiday, a store
// being moved) looked back only its window once started again: the
// callbacks SenGo sent in the first days of the stop, which it may never
// send again, were never fed though SenGo still listed them. A periodic
// run now looks back to what the project's last periodic run left: all
// since it started, and the days it did not read whole (Unread; a record
// of a failed run without them, its whole window), at most CatchUp. A run
// of the CLI is not counted (its --since says nothing of earlier days); a
// project with no periodic run looks back its window.
func TestAReconciliationAfterALongStopLooksBackToTheLastRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	if _, err := h.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: history.StreamReconcile, Subjects: []string{history.SubjectsReconcile}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	day := func(back time.Duration) string { return now.Add(-back).In(wib).Format("2006-01-02") }
	var mu sync.Mutex
	dates := map[string][]string{}
	api := func(project string) *sengo.Client {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			mu.Lock()
			if l := dates[project]; q.Get("status") == "success" && (len(l) == 0 || l[len(l)-1] != q.Get("date")) { // (a failed list is tried again)
				dates[project] = append(l, q.Get("date"))
			}
			mu.Unlock()
			if project == "main" && q.Get("date") == day(48*time.Hour) {
				w.WriteHeader(http.StatusInternalServerError) // this run leaves that day unread
				_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 500, "responseMessage": "internal error"})
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": []json.RawMessage{}})
		}))
		t.Cleanup(s.Close)
		return sengo.NewClient(s.URL, apiKey, apiToken)
	}
	runs, err := history.NewWriter(h.js.Conn(), history.WriterConfig{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []history.Reconciliation{
		// main's last periodic run, a day ago, left a day four days back
		// unread.
		{Project: "main", Trigger: TriggerPeriodic, Started: now.Add(-96 * time.Hour), Checked: 3},
		{Project: "main", Trigger: TriggerPeriodic, Started: now.Add(-24 * time.Hour), Error: "one day failed", Unread: []string{day(96 * time.Hour)}},
		// stopped's, four days ago, read all; a run of the CLI since
		// looked back an hour.
		{Project: "stopped", Trigger: TriggerPeriodic, Started: now.Add(-96 * time.Hour), Checked: 3},
		{Project: "stopped", Trigger: "cli", Started: now.Add(-time.Hour), Window: "1h0m0s", Checked: 1},
		// old's failed a day ago, recorded before Unread: its 72h window.
		{Project: "old", Trigger: TriggerPeriodic, Started: now.Add(-24 * time.Hour), Window: "72h0m0s", Error: "SenGo unreachable"},
		// marked's last run that caught up, two days ago, left a day five
		// days back unread (one that fails at every run); a relay that
		// does not catch up ran since, and read its own window.
		{Project: "marked", Trigger: TriggerPeriodic, CaughtUp: true, Started: now.Add(-48 * time.Hour), Error: "one day failed", Unread: []string{day(120 * time.Hour)}},
		{Project: "marked", Trigger: TriggerPeriodic, Started: now.Add(-time.Hour), Window: "48h0m0s", Checked: 1},
	} {
		runs.Reconciliation(r)
	}
	if err := runs.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	projects := map[string]Lister{}
	for _, p := range []string{"main", "stopped", "old", "fresh", "marked"} {
		projects[p] = api(p)
	}
	_, err = Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: projects, Window: 48 * time.Hour, CatchUp: ReconcileWindowMax,
		Trigger: TriggerPeriodic, Runs: runs, Now: func() time.Time { return now }, Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if err == nil {
		t.Fatal("main's failing day reported no error")
	}
	mu.Lock()
	span := func(back time.Duration) (out []string) {
		for d := midnight(now.Add(-back).In(wib)); !d.After(midnight(now.In(wib))); d = d.AddDate(0, 0, 1) {
			out = append(out, d.Format("2006-01-02"))
		}
		return out
	}
	for p, want := range map[string][]string{
		"main":    append([]string{day(96 * time.Hour)}, span(48*time.Hour)...), // its unread day, alone, then its window
		"stopped": span(96 * time.Hour),
		"old":     span(96 * time.Hour),
		"fresh":   span(48 * time.Hour),
		"marked":  append([]string{day(120 * time.Hour)}, span(48*time.Hour)...),
	} {
		if got := dates[p]; !slices.Equal(got, want) {
			t.Errorf("%s read the days %v, want %v", p, got, want)
		}
	}
	mu.Unlock()
	// This run's record names the day it left unread, for the next.
	if err := runs.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	last, err := history.Reconciliations(t.Context(), h.js, "main", 1)
	if err != nil || len(last) != 1 || !slices.Equal(last[0].Unread, []string{day(48 * time.Hour)}) || !last[0].CaughtUp {
		t.Fatalf("main's record: %v %+v", err, last)
	}
	// A project whose records cannot be read looks back as far as catching
	// up may (here, the store has no record stream).
	dates = map[string][]string{}
	bare := newHarness(t, true)
	if _, err := Reconcile(t.Context(), ReconcileConfig{JetStream: bare.js, Projects: map[string]Lister{"fresh": api("fresh")}, Window: 48 * time.Hour, CatchUp: ReconcileWindowMax,
		Trigger: TriggerPeriodic, Now: func() time.Time { return now }, Metrics: bare.metrics, Logger: bare.cfgLogger()}, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := dates["fresh"], span(ReconcileWindowMax); !slices.Equal(got, want) {
		t.Errorf("with its records unreadable, read the days %v, want %v", got, want)
	}
}

// The window's days are counted from when the run started, as its extra
// days were: a midnight passing while the extra days were read (minutes)
// moved the window's first day, which was then neither an extra day nor
// read, and the next run took it for read.
func TestAMidnightDuringARunSkipsNoDay(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	if _, err := h.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: history.StreamReconcile, Subjects: []string{history.SubjectsReconcile}}); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 7, 23, 59, 30, 0, wib)
	var calls atomic.Int32
	now := func() time.Time {
		if calls.Add(1) == 1 {
			return start
		}
		return start.Add(5 * time.Minute) // past midnight once the run is under way
	}
	var mu sync.Mutex
	var dates []string
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); q.Get("status") == "success" {
			mu.Lock()
			dates = append(dates, q.Get("date"))
			mu.Unlock()
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"responseCode": 200, "responseMessage": "success", "responseData": []json.RawMessage{}})
	}))
	defer s.Close()
	runs, err := history.NewWriter(h.js.Conn(), history.WriterConfig{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	runs.Reconciliation(history.Reconciliation{Project: "main", Trigger: TriggerPeriodic, CaughtUp: true, Started: start.Add(-72 * time.Hour), Error: "one day failed", Unread: []string{"2026-12-01"}})
	if err := runs.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"main": sengo.NewClient(s.URL, apiKey, apiToken)}, Window: 48 * time.Hour, CatchUp: ReconcileWindowMax,
		Trigger: TriggerPeriodic, Now: now, Metrics: h.metrics, Logger: h.cfgLogger()}, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"2026-12-01", "2026-12-04", "2026-12-05", "2026-12-06", "2026-12-07"}; !slices.Equal(dates, want) {
		t.Fatalf("read the days %v, want %v", dates, want)
	}
}
