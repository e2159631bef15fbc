package receiver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/sengo"
)

// callback returns a retail callback body for transaction id with status.
func callback(id string, s event.Status) []byte {
	paid := "null"
	if s == event.StatusSuccess {
		paid = `"2025-03-23T10:05:12+07:00"`
	}
	return fmt.Appendf(nil, `{"responseCode":200,"responseMessage":"success","responseData":{"id":%q,"merchantRef":"REF-%s","status":%q,"feePayer":"customer","amount":10000,"fee":85,"totalAmount":10085,"expiredDate":"2025-03-23T10:24:58+07:00","paidDate":%s,"retail":{"viewName":"M","channel":"alfamart","paymentCode":"123"}}}`, id, id, s, paid)
}

// listed is transaction id at status s as SenGo's API lists it: the
// object its callback carries.
func listed(id string, s event.Status) json.RawMessage {
	var env struct {
		ResponseData json.RawMessage `json:"responseData"`
	}
	_ = json.Unmarshal(callback(id, s), &env)
	return env.ResponseData
}

func statuses(evs []event.Event, txID string) []event.Status {
	var out []event.Status
	for _, e := range evs {
		if e.Data.TransactionID == txID {
			out = append(out, e.Data.Status)
		}
	}
	return out
}

// The same callback sent 50 times at once yields exactly one event.
func TestFiftyConcurrentDuplicatesOneEvent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	body := fixtures.Body("callback-retail-success")
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := h.post("/callbacks/sengo/main", body)
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a concurrent duplicate got %d", c)
		}
	}
	eventually(t, "intake idle", h.intakeIdle)
	evs := h.events()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	want := event.ID("main", "66e934f6-f5d6-4f1c-bb3d-450ec2873782", event.StatusSuccess)
	if evs[0].ID != want || evs[0].Data.PreviousStatus != nil || evs[0].Data.Confirmed {
		t.Fatalf("event %+v", evs[0])
	}
	// One info line for the one event published, with its id.
	published := 0
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(l, `"message":"event published"`) {
			published++
			if !strings.Contains(l, `"level":"info"`) || !strings.Contains(l, `"event_id":"`+want+`"`) || !strings.Contains(l, `"status":"success"`) {
				t.Errorf("published line %s", l)
			}
		}
	}
	if published != 1 {
		t.Errorf("%d \"event published\" lines, want 1", published)
	}
}

func TestStatusSequences(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		sends []event.Status
		want  []event.Status
	}{
		{"pending then success", []event.Status{event.StatusPending, event.StatusSuccess}, []event.Status{event.StatusPending, event.StatusSuccess}},
		{"success then pending", []event.Status{event.StatusSuccess, event.StatusPending}, []event.Status{event.StatusSuccess}},
		{"pending twice then expired", []event.Status{event.StatusPending, event.StatusPending, event.StatusExpired}, []event.Status{event.StatusPending, event.StatusExpired}},
		{"success then failed (conflict)", []event.Status{event.StatusSuccess, event.StatusFailed}, []event.Status{event.StatusSuccess}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, true)
			for _, s := range tt.sends {
				if resp, _ := h.post("/callbacks/sengo/main", callback("tx-1", s)); resp.StatusCode != 200 {
					t.Fatalf("%s: %d", s, resp.StatusCode)
				}
				// One at a time: the test is about order of arrival.
				eventually(t, "intake idle", h.intakeIdle)
			}
			evs := h.events()
			got := statuses(evs, "tx-1")
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("events %v, want %v", got, tt.want)
			}
			for i := 1; i < len(evs); i++ {
				if evs[i].Data.PreviousStatus == nil || *evs[i].Data.PreviousStatus != evs[i-1].Data.Status {
					t.Errorf("event %d previousStatus = %v, want %s", i, evs[i].Data.PreviousStatus, evs[i-1].Data.Status)
				}
			}
		})
	}
}

func TestConflictIsRecordedAndCounted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	for _, s := range []event.Status{event.StatusSuccess, event.StatusExpired, event.StatusPending} {
		h.post("/callbacks/sengo/main", callback("tx-c", s))
		eventually(t, "intake idle", h.intakeIdle)
	}
	if h.intakeCount("main", "conflict") != 1 || h.intakeCount("main", "stale") != 1 || h.intakeCount("main", "published") != 1 {
		t.Fatalf("counts: published %v conflict %v stale %v", h.intakeCount("main", "published"), h.intakeCount("main", "conflict"), h.intakeCount("main", "stale"))
	}
	kv, _ := h.js.KeyValue(t.Context(), event.BucketTx)
	entry, err := kv.Get(t.Context(), txKey("main", "tx-c"))
	if err != nil {
		t.Fatal(err)
	}
	var st txState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != event.StatusSuccess || len(st.Rejected) != 2 || st.Rejected[0].Decision != "conflict" || st.Rejected[1].Decision != "stale" {
		t.Fatalf("state %+v", st)
	}
	if len(st.History) != 1 || st.History[0].Seq == 0 || len(st.Outbox) != 0 {
		t.Fatalf("history %+v outbox %d", st.History, len(st.Outbox))
	}
}

// pending and success of many transactions arrive at once, in both
// orders, processed by racing workers. Whatever wins, each transaction's
// events are [success] or [pending, success] in stream order: never a
// pending after a success, never two events for one status.
func TestRacingStatusesKeepOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("race-%d", i)
		for _, s := range []event.Status{event.StatusPending, event.StatusSuccess} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if resp, _ := h.post("/callbacks/sengo/main", callback(id, s)); resp.StatusCode != 200 {
					t.Errorf("%s %s: %d", id, s, resp.StatusCode)
				}
			}()
		}
	}
	wg.Wait()
	eventually(t, "intake idle", h.intakeIdle)
	evs := h.events()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.ID] {
			t.Fatalf("event %s stored twice", e.ID)
		}
		seen[e.ID] = true
	}
	for i := range n {
		id := fmt.Sprintf("race-%d", i)
		got := fmt.Sprint(statuses(evs, id))
		if got != "[success]" && got != "[pending success]" {
			t.Errorf("%s: events %s", id, got)
		}
	}
}

// A worker that died between writing the state and publishing left an
// event in the outbox; the next notification of that transaction (here a
// duplicate) publishes it.
func TestOutboxIsFlushedAfterACrash(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	at := time.Date(2025, 3, 23, 3, 0, 0, 0, time.UTC)
	ev := h.leaveOutbox("tx-crash", at)
	if len(h.events()) != 0 {
		t.Fatal("event published before the redelivery")
	}
	// The crashed worker's own notification is redelivered; reconciliation
	// also feeds a transaction whose outbox is not empty. Either flushes
	// the outbox before anything else (here: reconciliation's feed).
	h.feed("tx-crash", SourceReconcile)
	eventually(t, "intake idle", h.intakeIdle)
	evs := h.events()
	if len(evs) != 1 || evs[0].ID != ev.ID || !evs[0].Time.Equal(at) {
		t.Fatalf("events %+v, want the one from the outbox", evs)
	}
	if h.intakeCount("main", "duplicate") != 1 {
		t.Fatalf("the notification should count as a duplicate")
	}
}

// A crash can lose the inbox consumer's delivery count (it is written
// without an fsync of its own) and keep the transaction's state with its
// outbox: the notification comes back as a callback's first delivery,
// which skips the leftover outbox, finds its status recorded, and was
// acknowledged as a duplicate, the event never published. An outbox
// older than intake's ack wait, which no worker is flushing any more, is
// published whatever the notification decides.
func TestALeftOutboxIsFlushedByAFirstDeliveryToo(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ev := h.leaveOutbox("tx-lost-count", time.Now().Add(-time.Hour).UTC())
	h.feed("tx-lost-count", SourceCallback)
	eventually(t, "intake idle", h.intakeIdle)
	if evs := h.events(); len(evs) != 1 || evs[0].ID != ev.ID {
		t.Fatalf("events %+v, want the one left in the outbox", evs)
	}
}

// The same after a restart quicker than the ack wait (the default: the
// embedded store restarts with the relay): the outbox is as recent as the
// notification, and was taken for a twin's being flushed by the worker
// processing it. But the notification that left it is this one, its
// worker gone: for a project that does not confirm, nothing else would
// ever publish the success SenGo had its 200 for.
func TestItsOwnLeftOutboxIsFlushedByAFirstDelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	info, err := h.js.Stream(t.Context(), event.StreamInbox)
	if err != nil {
		t.Fatal(err)
	}
	next := info.CachedInfo().State.LastSeq + 1 // the sequence feed stores it at
	ev := h.leaveOutboxOf("tx-quick-restart", time.Now().UTC(), next)
	h.feed("tx-quick-restart", SourceCallback)
	eventually(t, "intake idle", h.intakeIdle)
	if evs := h.events(); len(evs) != 1 || evs[0].ID != ev.ID {
		t.Fatalf("events %+v, want the one its own notification left in the outbox", evs)
	}
}

// The whole story with a real stop: a relay killed between storing a
// callback's decision and publishing its event, restarted with the inbox
// consumer's delivery count lost (the embedded store writes it without an
// fsync of its own; here the consumer is made anew, which loses it the
// same way), well within intake's ack wait.
func TestAKillBeforeItsEventIsPublishedLosesNothingAfterAQuickRestart(t *testing.T) {
	var kill atomic.Bool
	kill.Store(true)
	testKillAfterDecision = kill.Load
	t.Cleanup(func() { testKillAfterDecision = nil }) // after the harness's own
	h := newHarness(t, false)
	in, err := NewIntake(context.Background(), h.icfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = in.Run(ctx, 5*time.Second) }()
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-killed", event.StatusSuccess)); resp.StatusCode != http.StatusOK {
		t.Fatalf("callback answered %d", resp.StatusCode)
	}
	kv, err := h.js.KeyValue(t.Context(), event.BucketTx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the decision stored", func() bool { _, err := kv.Get(t.Context(), txKey("main", "tx-killed")); return err == nil })
	cancel()
	<-done
	kill.Store(false)
	if err := h.js.DeleteConsumer(t.Context(), event.StreamInbox, IntakeConsumer); err != nil {
		t.Fatal(err)
	}
	h.startIntake() // makes the consumer again: the notification comes back as a first delivery
	eventually(t, "intake idle", h.intakeIdle)
	if evs := h.events(); len(evs) != 1 || evs[0].Data.TransactionID != "tx-killed" || evs[0].Data.Status != event.StatusSuccess {
		t.Fatalf("events %+v, want tx-killed's success", evs)
	}
}

// leaveOutbox stores transaction id's state as a worker that died after
// deciding its success at leaves it: recorded, its event still in the
// outbox. It returns that event.
func (h *harness) leaveOutbox(id string, at time.Time) event.Event {
	h.t.Helper()
	return h.leaveOutboxOf(id, at, 0)
}

// leaveOutboxOf is leaveOutbox for the worker of inbox message seq.
func (h *harness) leaveOutboxOf(id string, at time.Time, seq uint64) event.Event {
	h.t.Helper()
	return h.leaveOutboxBody(callback(id, event.StatusSuccess), at, seq)
}

// leaveOutboxBody is leaveOutboxOf for the callback body given: its
// status decided unconfirmed, its event left in the outbox.
func (h *harness) leaveOutboxBody(body []byte, at time.Time, seq uint64) event.Event {
	h.t.Helper()
	tx, err := sengo.ParseCallback(body)
	if err != nil {
		h.t.Fatal(err)
	}
	ev := tx.Event("main", "", at, false)
	b, _ := event.Marshal(ev)
	raw, _ := json.Marshal(txState{
		Project: "main", TransactionID: tx.ID, MerchantRef: tx.MerchantRef, Product: tx.Product, Status: tx.Status, UpdatedAt: at,
		History: []txEvent{{Status: tx.Status, EventID: ev.ID, AcceptedAt: at}},
		Outbox:  []outboxItem{{EventID: ev.ID, Subject: event.EventSubject("main", tx.Product, tx.Status), Event: b, InboxSeq: seq}},
	})
	kv, err := h.js.KeyValue(context.Background(), event.BucketTx)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := kv.Create(context.Background(), txKey("main", tx.ID), raw); err != nil {
		h.t.Fatal(err)
	}
	return ev
}

// feed stores transaction id's success in the inbox as source sent it.
func (h *harness) feed(id, source string) {
	h.t.Helper()
	h.feedBody(id, callback(id, event.StatusSuccess), source)
}

// feedBody stores body, a notification of transaction id, in the inbox
// as source sent it.
func (h *harness) feedBody(id string, body []byte, source string) {
	h.t.Helper()
	if _, err := h.js.PublishMsg(context.Background(), &nats.Msg{Subject: event.InboxTxSubject("main", id), Data: body,
		Header: nats.Header{event.HeaderProject: []string{"main"}, event.HeaderSource: []string{source}}}); err != nil {
		h.t.Fatal(err)
	}
}

// A status decided unconfirmed and left in the outbox (its publish
// refused, its relay stopped) before its project was made to confirm
// (every relay stopped and started with require_confirmation, as the
// README says) was published by the next notification of its transaction
// before any check: a claim nobody confirmed, published for a project
// that confirms. It is withdrawn instead, the transaction's status put
// back, and the notification decided again under the check: a forged one
// is set aside, a genuine one published confirmed, under the same id.
func TestAnUnconfirmedLeftoverIsNotPublishedOnceItsProjectConfirms(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	var w *history.Writer
	h := newHarness(t, true, withHistory(&w), func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.RequireConfirmation = map[string]bool{"main": true}
	})
	at := time.Now().Add(-time.Hour).UTC()
	h.leaveOutbox("tx-forged-left", at)
	h.feed("tx-forged-left", SourceReconcile) // not a first delivery: the leftover is looked at first
	eventually(t, "the forged claim set aside", func() bool { return h.msgs(event.StreamQuarantine) == 1 && h.intakeIdle() })
	if evs := h.events(); len(evs) != 0 {
		t.Fatalf("%d events published, the first confirmed %v: an unconfirmed leftover went out for a project that confirms", len(evs), evs[0].Data.Confirmed)
	}
	// Nor is the forged claim's merchantRef indexed to the transaction.
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := h.msgs(history.StreamRefs); n != 0 {
		t.Fatalf("%d merchantRef index entries for a claim never published", n)
	}

	tx, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: "INV-LEFT", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"responseData":` + strings.Replace(string(tx.Raw), `"status":"pending"`, `"status":"success"`, 1) + `}`)
	left := h.leaveOutboxBody(body, at, 0)
	h.feedBody(tx.ID, body, SourceReconcile)
	eventually(t, "the genuine one published", func() bool { return len(h.events()) == 1 && h.intakeIdle() })
	if ev := h.events()[0]; ev.ID != left.ID || !ev.Data.Confirmed {
		t.Fatalf("published %s confirmed %v; want %s, confirmed", ev.ID, ev.Data.Confirmed, left.ID)
	}

	// A forged success left so, and SenGo's own callback of the payment's
	// failure on its first delivery: the failure was a conflict with the
	// forged success, never published, and the forged success went out.
	failing, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: "INV-LEFT-FAILED", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	h.leaveOutboxBody(callback(failing.ID, event.StatusSuccess), at, 0) // a retail payment, said the forger
	if _, err := sb.Transition(failing.ID, event.StatusFailed); err != nil {
		t.Fatal(err)
	}
	failed := []byte(`{"responseData":` + strings.Replace(string(failing.Raw), `"status":"pending"`, `"status":"failed"`, 1) + `}`)
	if resp, _ := h.post("/callbacks/sengo/main", failed); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the failure decided", func() bool { return len(h.events()) >= 2 && h.intakeIdle() })
	evs := h.events()
	if got := statuses(evs, failing.ID); len(evs) != 2 || !slices.Equal(got, []event.Status{event.StatusFailed}) || !evs[1].Data.Confirmed {
		t.Fatalf("%d events, of %s: %v; want its failure alone, confirmed", len(evs), failing.ID, got)
	}
	// What the forged claim said of the transaction went with it.
	if st, err := ReadTransaction(t.Context(), h.js, "main", failing.ID); err != nil || st.Product != event.ProductQRIS || st.MerchantRef != "INV-LEFT-FAILED" {
		t.Fatalf("the transaction's state %+v (%v): want SenGo's product and merchantRef", st, err)
	}

	// So did its merchantRef when a genuine change stays in the history: a
	// published pending, then a forged success left (merchantRef INV-EVIL),
	// and SenGo's pending fed again by reconciliation.
	paying, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: "INV-GOOD", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	pendingID, forgedID := event.ID("main", paying.ID, event.StatusPending), event.ID("main", paying.ID, event.StatusSuccess)
	forged, _ := json.Marshal(map[string]any{"id": forgedID, "data": map[string]any{"confirmed": false}})
	raw, _ := json.Marshal(txState{Project: "main", TransactionID: paying.ID, MerchantRef: "INV-EVIL", Product: event.ProductQRIS, Status: event.StatusSuccess, UpdatedAt: at,
		History: []txEvent{{Status: event.StatusPending, EventID: pendingID, AcceptedAt: at, Seq: 1, Confirmed: &yes}, {Status: event.StatusSuccess, EventID: forgedID, AcceptedAt: at, Confirmed: &no}},
		Outbox:  []outboxItem{{EventID: forgedID, Subject: event.EventSubject("main", event.ProductQRIS, event.StatusSuccess), Event: forged}}})
	kv, err := h.js.KeyValue(t.Context(), event.BucketTx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(t.Context(), txKey("main", paying.ID), raw); err != nil {
		t.Fatal(err)
	}
	h.feedBody(paying.ID, []byte(`{"responseData":`+string(paying.Raw)+`}`), SourceReconcile)
	eventually(t, "the pending fed", func() bool {
		st, err := ReadTransaction(t.Context(), h.js, "main", paying.ID)
		return err == nil && st.Status == event.StatusPending && h.intakeIdle()
	})
	if st, _ := ReadTransaction(t.Context(), h.js, "main", paying.ID); st.MerchantRef != "INV-GOOD" || len(st.Changes) != 1 {
		t.Fatalf("the transaction's state %+v: want the forged success gone, and SenGo's merchantRef", st)
	}
}

// Messages on the inbox that can never be processed are quarantined with
// the reason, acknowledged, and not retried.
func TestUnprocessableIsQuarantined(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ctx := context.Background()
	if _, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: "sengo.inbox.main", Data: []byte("not json"), Header: nats.Header{event.HeaderProject: []string{"main"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Publish(ctx, "sengo.inbox.main", callback("tx-q", event.StatusSuccess)); err != nil { // no project header
		t.Fatal(err)
	}
	eventually(t, "intake idle", h.intakeIdle)
	if n := h.msgs(event.StreamQuarantine); n != 2 {
		t.Fatalf("quarantine holds %d, want 2", n)
	}
	bySubject := map[string]*jetstream.RawStreamMsg{}
	for _, m := range natstest.Messages(t, h.js, event.StreamQuarantine) {
		bySubject[m.Subject] = m // processed concurrently: any order
	}
	m, unknown := bySubject["sengo.quarantine.main"], bySubject["sengo.quarantine.unknown"]
	if m == nil || unknown == nil {
		t.Fatalf("quarantined on %v, want sengo.quarantine.main and .unknown", bySubject)
	}
	if m.Header.Get(event.HeaderReason) == "" || string(m.Data) != "not json" {
		t.Fatalf("quarantined %v %q", m.Header, m.Data)
	}
	if !strings.Contains(unknown.Header.Get(event.HeaderReason), "Sengo-Project") {
		t.Fatalf("reason %q", unknown.Header.Get(event.HeaderReason))
	}
	if len(h.events()) != 0 {
		t.Fatal("an unprocessable notification produced an event")
	}
	cons, _ := h.js.Consumer(ctx, event.StreamInbox, IntakeConsumer)
	info, _ := cons.Info(ctx)
	if info.NumRedelivered != 0 {
		t.Fatalf("quarantined messages were redelivered %d times", info.NumRedelivered)
	}
}

func TestTxKey(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"66e934f6-f5d6-4f1c-bb3d-450ec2873782": "main.66e934f6-f5d6-4f1c-bb3d-450ec2873782",
		"a.b":                                  "main.b64_YS5i",
		"b64_x":                                "main.b64_YjY0X3g",
		"with space":                           "main.b64_d2l0aCBzcGFjZQ",
	}
	for id, want := range tests {
		if got := txKey("main", id); got != want {
			t.Errorf("txKey(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestRetryDelayGrowsAndIsBounded(t *testing.T) {
	t.Parallel()
	in := &Intake{cfg: IntakeConfig{RetryInitial: time.Second, RetryMax: time.Minute}}
	// Jitter is ±50%: attempt n lies within [0.5, 1.5] × 1.5^(n-1) seconds, capped.
	for attempt, base := range map[uint64]float64{1: 1, 2: 1.5, 3: 2.25, 5: 5.0625} {
		d := in.retryDelay(attempt).Seconds()
		if d < base*0.5 || d > base*1.5 {
			t.Errorf("attempt %d: %.2fs outside [%.2f, %.2f]", attempt, d, base*0.5, base*1.5)
		}
	}
	if d := in.retryDelay(1000); d > time.Minute+time.Minute/2 {
		t.Errorf("attempt 1000: %s exceeds the cap", d)
	}
}

// flush updates the state it just wrote without reading it back; when
// another worker changed the transaction in between, it reads it again
// and keeps both changes.
func TestFlushAfterAConcurrentChange(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	in, err := NewIntake(t.Context(), IntakeConfig{JetStream: h.js, Projects: []string{"main"}, Workers: 1, AckWait: 10 * time.Second, MaxAckPending: 1,
		RetryInitial: time.Second, RetryMax: time.Second, Metrics: h.metrics, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	tx, _ := sengo.ParseCallback(callback("tx-flush", event.StatusSuccess))
	at := time.Date(2025, 3, 23, 3, 0, 0, 0, time.UTC)
	ev := tx.Event("main", "", at, false)
	b, _ := event.Marshal(ev)
	key := txKey("main", tx.ID)
	for _, concurrent := range []bool{false, true} {
		st, rev, err := in.apply(t.Context(), key, func(s *txState) (bool, error) {
			*s = txState{Project: "main", TransactionID: tx.ID, Status: tx.Status,
				History: []txEvent{{Status: tx.Status, EventID: ev.ID, AcceptedAt: at}},
				Outbox:  []outboxItem{{EventID: ev.ID, Subject: event.EventSubject("main", tx.Product, tx.Status), Event: b}}}
			return true, nil
		})
		if err != nil || rev == 0 {
			t.Fatalf("apply: rev %d, %v", rev, err)
		}
		if concurrent { // another worker records a late pending in between
			if _, _, err := in.apply(t.Context(), key, func(s *txState) (bool, error) {
				return s.reject(event.StatusPending, event.Stale, at, 7), nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		conflicts := testutil.ToFloat64(h.metrics.KVConflicts)
		if err := in.flushDurably(t.Context(), key, st, rev); err != nil {
			t.Fatalf("flush: %v", err)
		}
		if got := testutil.ToFloat64(h.metrics.KVConflicts) - conflicts; got != map[bool]float64{false: 0, true: 1}[concurrent] {
			t.Fatalf("concurrent=%v: %v conflicts", concurrent, got)
		}
		kv, _ := h.js.KeyValue(t.Context(), event.BucketTx)
		entry, err := kv.Get(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		var stored txState
		_ = json.Unmarshal(entry.Value(), &stored)
		if len(stored.Outbox) != 0 || stored.History[0].Seq == 0 || concurrent != (len(stored.Rejected) == 1) {
			t.Fatalf("concurrent=%v: stored %+v", concurrent, stored)
		}
	}
}

// A callback of a new transaction is decided without reading the
// transaction's state first (it is taken to be empty when the inbox holds
// no earlier notification of it, and the compare-and-set creates it), and
// a final status without reading the inbox for earlier notifications (the
// callback stored it on condition that there were none): a new
// transaction costs intake the create, the event, the outbox clear, the
// ack and its share of a pull. Reading the state first cost one more, and
// so did the receipt-order read of a final status.
func TestNewTransactionIsNotReadFirst(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc, ijs := srv.Connect(t) // intake's own connection: its counters are intake's alone
	h := newHarnessOn(t, srv, true, func(_ *Config, ic *IntakeConfig) { ic.JetStream = ijs })
	const n = 20
	for _, tt := range []struct {
		status event.Status
		max    float64
	}{{event.StatusSuccess, 4.5}, {event.StatusPending, 4.5}} {
		eventually(t, "intake idle", h.intakeIdle)
		base := nc.Stats().OutMsgs
		for i := range n {
			if resp, _ := h.post("/callbacks/sengo/main", callback(fmt.Sprintf("new-%s-%d", tt.status, i), tt.status)); resp.StatusCode != 200 {
				t.Fatalf("callback %d: %d", i, resp.StatusCode)
			}
			eventually(t, "intake idle", h.intakeIdle)
		}
		per := float64(nc.Stats().OutMsgs-base) / n
		t.Logf("new %s: %.2f messages from intake per notification", tt.status, per)
		if per > tt.max {
			t.Errorf("new %s: %.2f messages from intake per notification, want at most %.1f", tt.status, per, tt.max)
		}
	}
	if got := h.intakeCount("main", "published"); got != 2*n {
		t.Fatalf("%v published, want %d", got, 2*n)
	}
}

// A transaction whose state exists while the inbox holds no earlier
// notification of it (they aged out of the inbox) is decided against its
// real state: the create that took it for new fails, the state is read and
// the notification decided again. A late pending and a conflicting final
// status publish nothing.
func TestStateFoundAfterTheInboxForgotIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	ctx := context.Background()
	h.post("/callbacks/sengo/main", callback("tx-old", event.StatusSuccess))
	eventually(t, "intake idle", h.intakeIdle)
	inbox, err := h.js.Stream(ctx, event.StreamInbox)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []event.Status{event.StatusExpired, event.StatusPending} {
		if err := inbox.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		if resp, _ := h.post("/callbacks/sengo/main", callback("tx-old", s)); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", s, resp.StatusCode)
		}
		eventually(t, "intake idle", h.intakeIdle)
	}
	if got := statuses(h.events(), "tx-old"); fmt.Sprint(got) != "[success]" {
		t.Fatalf("events %v, want [success]", got)
	}
	if h.intakeCount("main", "conflict") != 1 || h.intakeCount("main", "stale") != 1 {
		t.Fatalf("conflict %v stale %v, want 1 and 1", h.intakeCount("main", "conflict"), h.intakeCount("main", "stale"))
	}
	if c := testutil.ToFloat64(h.metrics.KVConflicts); c != 0 {
		t.Fatalf("%v compare-and-set conflicts counted: a create that took the transaction for new is no conflict between workers", c)
	}
}

// holdPending is a Confirmer that agrees with every notification, holding
// pendings until release is closed.
type holdPending struct{ release chan struct{} }

func (c holdPending) Confirm(ctx context.Context, _ string, tx sengo.Transaction) (sengo.Transaction, bool, error) {
	if tx.Status == event.StatusPending {
		select {
		case <-c.release:
		case <-ctx.Done():
			return tx, false, ctx.Err()
		}
	}
	return tx, true, nil
}

// A new transaction's success that overtakes its pending (still in
// confirmation, its state not yet written) waits for it: the state the
// success's first try does not read is empty, and the pending received
// before it goes first all the same.
func TestPendingStillConfirmingGoesFirst(t *testing.T) {
	t.Parallel()
	hold := holdPending{release: make(chan struct{})}
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) { ic.Confirmer = hold })
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-pc", event.StatusPending)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-pc", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the success waited", func() bool {
		return h.intakeCount("main", "waiting") >= 1 || len(statuses(h.events(), "tx-pc")) > 0
	})
	close(hold.release)
	eventually(t, "intake idle", h.intakeIdle)
	if got := statuses(h.events(), "tx-pc"); fmt.Sprint(got) != "[pending success]" {
		t.Fatalf("published %v, want [pending success]", got)
	}
}

// lagConfirmer is holdPending that answers a final status unconfirmed on
// its first check (SenGo's API lagging its own callback by a moment).
type lagConfirmer struct {
	holdPending
	checks atomic.Int64
}

func (c *lagConfirmer) Confirm(ctx context.Context, project string, tx sengo.Transaction) (sengo.Transaction, bool, error) {
	if tx.Status != event.StatusPending && c.checks.Add(1) == 1 {
		return sengo.Transaction{}, false, fmt.Errorf("%w: callback says %s, SenGo says pending", sengo.ErrUnconfirmed, tx.Status)
	}
	return c.holdPending.Confirm(ctx, project, tx)
}

// A final status that waited behind its pending spends none of its
// confirmation attempts waiting: NakWithDelay raises NumDelivered, which
// settle took for the confirmation attempt, so its first ErrUnconfirmed
// quarantined it at once instead of retrying it ConfirmAttempts times.
func TestWaitingForThePendingSpendsNoConfirmAttempts(t *testing.T) {
	t.Parallel()
	c := &lagConfirmer{holdPending: holdPending{release: make(chan struct{})}}
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) { ic.Confirmer, ic.ConfirmAttempts = c, 3 })
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-lag", event.StatusPending)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-lag", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the success waited 3 times", func() bool { return h.intakeCount("main", "waiting") >= 3 })
	close(c.release)
	eventually(t, "intake idle", h.intakeIdle)
	if n := h.msgs(event.StreamQuarantine); n != 0 {
		t.Fatalf("the success quarantined after %d confirmation(s) of ConfirmAttempts 3", c.checks.Load())
	}
	if got := statuses(h.events(), "tx-lag"); fmt.Sprint(got) != "[pending success]" {
		t.Fatalf("published %v, want [pending success]", got)
	}
}

// Two workers deciding two statuses of one transaction at once (its
// success and its expired, each checked while the other was) both read
// the pending. The compare-and-set lets the first write count; the second,
// finding the state changed, decides again against the success, and the
// expired never overwrites it. (The concurrent tests race new
// transactions, or identical bodies the inbox drops.)
func TestOfTwoDecisionsFromOneReadOnlyTheFirstIsWritten(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	in, err := NewIntake(t.Context(), h.icfg)
	if err != nil {
		t.Fatal(err)
	}
	key := txKey("main", "tx-cas")
	to := func(s event.Status) func(*txState) (bool, error) {
		return func(st *txState) (bool, error) {
			if event.Decide(st.Status, s) != event.Publish {
				return false, nil
			}
			st.Status = s
			return true, nil
		}
	}
	if _, _, err := in.apply(t.Context(), key, to(event.StatusPending)); err != nil {
		t.Fatal(err)
	}
	first, err := in.read(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	second := *first // both workers read the pending
	if _, _, err := in.applyFrom(t.Context(), key, first, to(event.StatusSuccess)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := in.applyFrom(t.Context(), key, &second, to(event.StatusExpired)); err != nil {
		t.Fatal(err)
	}
	if now, err := in.read(t.Context(), key); err != nil || now.state.Status != event.StatusSuccess {
		t.Fatalf("status %q (%v): the expired decided from the same read overwrote the success", now.state.Status, err)
	}
}

// A transaction's state keeps the last maxRejected stale or conflicting
// notifications, one entry per inbox message: forged bodies, each stored
// as an inbox message of its own, grew it without bound until its writes
// failed, and the genuine status with them.
func TestRejectedNotificationsAreBounded(t *testing.T) {
	t.Parallel()
	var s txState
	at := time.Date(2025, 3, 23, 3, 0, 0, 0, time.UTC)
	for seq := uint64(1); seq <= maxRejected+5; seq++ {
		if !s.reject(event.StatusFailed, event.Conflict, at, seq) {
			t.Fatalf("inbox message %d not recorded", seq)
		}
	}
	if s.reject(event.StatusFailed, event.Conflict, at, maxRejected+5) {
		t.Fatal("one inbox message recorded twice")
	}
	if len(s.Rejected) != maxRejected || s.Rejected[0].InboxSeq != 6 || s.Rejected[maxRejected-1].InboxSeq != maxRejected+5 {
		t.Fatalf("%d kept, from %d to %d; want the last %d", len(s.Rejected), s.Rejected[0].InboxSeq, s.Rejected[len(s.Rejected)-1].InboxSeq, maxRejected)
	}
}

// A first delivery that finds the outbox its own notification left (a
// relay killed before publishing) and whose publish of it fails is
// retried, not acked as a duplicate: acked, the event was never
// published, the state saying it was decided.
func TestAFailedFlushOfItsOwnLeftOutboxIsRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, true)
	info, err := h.js.Stream(t.Context(), event.StreamInbox)
	if err != nil {
		t.Fatal(err)
	}
	next := info.CachedInfo().State.LastSeq + 1 // the sequence feed stores it at
	ev := h.leaveOutboxOf("tx-flush-refused", time.Now().UTC(), next)
	restore := natstest.RefuseWrites(t, h.js, event.StreamEvents)
	h.feed("tx-flush-refused", SourceCallback)
	eventually(t, "the notification settled once (acked or retried)", func() bool {
		floor, _ := h.inboxAckFloor()
		return floor == next || strings.Contains(h.logs.String(), `"inbox_seq":`+strconv.FormatUint(next, 10)+`,"attempt":1,`)
	})
	if floor, _ := h.inboxAckFloor(); floor == next {
		t.Fatalf("acked although its left event was not published (%d events)", len(h.events()))
	}
	restore()
	eventually(t, "the left event published and the notification acked", func() bool {
		floor, _ := h.inboxAckFloor()
		return floor == next && h.msgs(event.StreamEvents) == 1
	})
	if evs := h.events(); len(evs) != 1 || evs[0].ID != ev.ID {
		t.Fatalf("events %+v, want the one its own notification left in the outbox", evs)
	}
}

// A final status waits for a pending received before it at most
// orderWaitMax after its own receipt: one whose pending never settles (its
// check never answered) is published once that is past, not held back
// for as long as the pending lasts.
func TestAFinalWaitsForItsPendingOnlySoLong(t *testing.T) {
	t.Parallel()
	hold := holdPending{release: make(chan struct{})}
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) { ic.Confirmer = hold })
	t.Cleanup(func() { close(hold.release) }) // before the harness's own
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-long-pending", event.StatusPending)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	// The success, received longer ago than a final waits.
	if _, err := h.js.PublishMsg(t.Context(), &nats.Msg{Subject: event.InboxTxSubject("main", "tx-long-pending"), Data: callback("tx-long-pending", event.StatusSuccess),
		Header: nats.Header{event.HeaderProject: []string{"main"}, event.HeaderSource: []string{SourceCallback},
			event.HeaderReceivedAt: []string{time.Now().Add(-orderWaitMax - time.Minute).UTC().Format(time.RFC3339Nano)}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the success published while its pending is still held", func() bool {
		return fmt.Sprint(statuses(h.events(), "tx-long-pending")) == "[success]"
	})
}
