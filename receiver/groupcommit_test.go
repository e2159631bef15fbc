package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
)

// withDurable makes the receiver wait on d after its writes.
func withDurable(d Durability) option {
	return func(c *Config, _ *IntakeConfig) { c.Durable = d }
}

// withIntakeDurable makes intake wait on d after its writes.
func withIntakeDurable(d Durability) option {
	return func(_ *Config, ic *IntakeConfig) { ic.Durable = d }
}

// answer is one callback's HTTP answer.
type answer struct {
	id     string
	status int
	code   string
}

// postConcurrently sends one success callback per id at once and returns a
// channel that receives each answer as it comes.
func (h *harness) postConcurrently(ids []string) <-chan answer {
	out := make(chan answer, len(ids))
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := h.post("/callbacks/sengo/main", callback(id, event.StatusSuccess))
			a := answer{id: id, status: resp.StatusCode}
			if e, ok := body["error"].(map[string]any); ok {
				a.code, _ = e["code"].(string)
			}
			out <- a
		}()
	}
	go func() { wg.Wait(); close(out) }()
	return out
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}

// Group commit: no callback is answered 200 before the fsync covering its
// write has completed. Twenty callbacks are stored (the inbox holds them,
// so every PubAck came) while the fsync is held: none may be answered.
// Let through, the fsyncs are shared: far fewer than twenty.
func TestNoCallbackAnsweredBeforeItsFsync(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	gate := natstest.NewFSyncGate(t, srv.Dir(), nil)
	h := newHarnessOn(t, srv, false, withDurable(gate.GroupSync))

	answers := h.postConcurrently(ids("gc", 20))
	eventually(t, "20 callbacks stored in the inbox", func() bool { return h.msgs(event.StreamInbox) == 20 })
	eventually(t, "20 callbacks waiting for an fsync", func() bool { return gate.GroupSync.Stats().Waiting == 20 })
	select {
	case a := <-answers:
		t.Fatalf("callback %s answered %d while its fsync was held: a 200 before durable", a.id, a.status)
	default:
	}
	gate.Open()
	n := 0
	for a := range answers {
		if a.status != http.StatusOK {
			t.Errorf("callback %s: %d %s, want 200", a.id, a.status, a.code)
		}
		n++
	}
	if n != 20 {
		t.Fatalf("%d answers, want 20", n)
	}
	if f := gate.Started(); f > 3 {
		t.Fatalf("%d fsyncs for 20 concurrent callbacks, want them shared (at most 3)", f)
	}
}

// When the fsync of a group fails, every callback of that group gets 503
// (SenGo retries), later callbacks too, and the relay is told to stop.
// After the restart, SenGo's retries are answered from what the inbox
// holds: each callback is stored once, none twice, none lost.
func TestFailedFsyncAnswers503ToItsWholeGroup(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	failed := make(chan error, 1)
	gate := natstest.NewFSyncGate(t, srv.Dir(), func(err error) { failed <- err })
	h := newHarnessOn(t, srv, false, withDurable(gate.GroupSync))

	answers := h.postConcurrently(ids("fail", 20))
	eventually(t, "20 callbacks waiting for an fsync", func() bool { return gate.GroupSync.Stats().Waiting == 20 })
	errIO := errors.New("input/output error")
	gate.Fail(errIO)
	for a := range answers {
		if a.status != http.StatusServiceUnavailable || a.code != "store_unavailable" {
			t.Errorf("callback %s: %d %s, want 503 store_unavailable", a.id, a.status, a.code)
		}
	}
	if err := <-failed; !errors.Is(err, errIO) {
		t.Fatalf("OnFail got %v", err)
	}
	if resp, _ := h.post("/callbacks/sengo/main", callback("after-failure", event.StatusSuccess)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a callback after the failed fsync got %d, want 503: nothing is durable any more", resp.StatusCode)
	}

	// The relay restarts with a working disk and SenGo retries.
	srv.Restart()
	_, js := srv.Connect(t)
	cfg := h.cfg
	working := natstest.NewFSyncGate(t, srv.Dir(), nil)
	working.Open()
	cfg.JetStream, cfg.Durable = js, working.GroupSync
	after := &harness{t: t, nats: srv, js: js, metrics: h.metrics, logs: h.logs, cfg: cfg}
	after.serve()
	for a := range after.postConcurrently(ids("fail", 20)) {
		if a.status != http.StatusOK {
			t.Errorf("retry of %s: %d %s, want 200", a.id, a.status, a.code)
		}
	}
	if n := after.msgs(event.StreamInbox); n != 20 && n != 21 {
		t.Fatalf("inbox holds %d messages, want the 20 callbacks once each (and at most the one after the failure)", n)
	}
	seen := map[string]int{}
	for _, m := range natstest.Messages(t, js, event.StreamInbox) {
		seen[m.Header.Get(jetstream.MsgIDHeader)]++
	}
	for id, n := range seen {
		if n > 1 {
			t.Fatalf("%s stored %d times", id, n)
		}
	}
}

// Intake acknowledges an inbox message only after the fsync that covers
// the state and the event it wrote: an ack that outlived them in a power
// loss would lose the event.
func TestIntakeAcksOnlyAfterFsync(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	gate := natstest.NewFSyncGate(t, srv.Dir(), nil)
	h := newHarnessOn(t, srv, true, withIntakeDurable(gate.GroupSync)) // the callback itself is not held
	if resp, _ := h.post("/callbacks/sengo/main", callback("ack-after-fsync", event.StatusSuccess)); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the event to be published", func() bool { return h.msgs(event.StreamEvents) == 1 })
	eventually(t, "intake waiting for the fsync", func() bool { return gate.GroupSync.Stats().Waiting == 1 })
	if floor, _ := h.inboxAckFloor(); floor != 0 {
		t.Fatalf("inbox ack floor %d while the fsync is held, want 0: acked before durable", floor)
	}
	gate.Open()
	eventually(t, "the inbox message to be acked", func() bool { floor, _ := h.inboxAckFloor(); return floor == 1 })
}

// An intake worker does not wait for the disk: once its writes are stored
// it takes the next notification, and its ack waits for the group fsync
// beside it. Two workers process ten notifications while the fsync is
// held; none is acked until it completes. (Issue 11: a worker that waited
// for its own round of fsync held the pipeline at about 1,060/s.)
func TestIntakeWorkersDoNotWaitForTheDisk(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	gate := natstest.NewFSyncGate(t, srv.Dir(), nil)
	h := newHarnessOn(t, srv, true, withIntakeDurable(gate.GroupSync), func(_ *Config, ic *IntakeConfig) { ic.Workers = 2 })
	const n = 10
	for _, a := range collect(h.postConcurrently(ids("disk", n))) {
		if a.status != http.StatusOK {
			t.Fatalf("%s: %d", a.id, a.status)
		}
	}
	eventually(t, "all ten events published by two workers while the fsync is held", func() bool { return h.msgs(event.StreamEvents) == n })
	if floor, _ := h.inboxAckFloor(); floor != 0 {
		t.Fatalf("inbox ack floor %d while the fsync is held, want 0: acked before durable", floor)
	}
	gate.Open()
	eventually(t, "every inbox message acked", func() bool { floor, _ := h.inboxAckFloor(); return floor == n })
	if got := h.intakeCount("main", "published"); got != n {
		t.Fatalf("%v published, want %d", got, n)
	}
}

// A failed fsync acknowledges nothing it covered, though the workers had
// moved on: every notification that waited on it is retried (and, the
// store's fsync having failed for good, never acked until a restart).
func TestIntakeFsyncFailureAcksNothingItCovered(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	gate := natstest.NewFSyncGate(t, srv.Dir(), nil)
	h := newHarnessOn(t, srv, true, withIntakeDurable(gate.GroupSync), func(_ *Config, ic *IntakeConfig) { ic.Workers = 2 })
	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()
	const n = 6
	for _, a := range collect(h.postConcurrently(ids("fail", n))) {
		if a.status != http.StatusOK {
			t.Fatalf("%s: %d", a.id, a.status)
		}
	}
	eventually(t, "all events published while the fsync is held", func() bool { return h.msgs(event.StreamEvents) == n })
	eventually(t, "every notification waiting for the fsync", func() bool { return gate.GroupSync.Stats().Waiting == n })
	gate.Fail(errors.New("input/output error"))
	eventually(t, "every notification retried, not acked", func() bool {
		logs := h.logs.String()
		for seq := 1; seq <= n; seq++ {
			if !strings.Contains(logs, fmt.Sprintf(`"inbox_seq":%d,"attempt":1,"error":"fsync of the store failed`, seq)) {
				return false
			}
		}
		return true
	})
	if floor, pending := h.inboxAckFloor(); floor != 0 || pending != n {
		t.Fatalf("inbox ack floor %d, %d pending after the failed fsync, want 0 and %d", floor, pending, n)
	}
	if got := h.msgs(event.StreamEvents); got != n {
		t.Fatalf("%d events, want %d", got, n)
	}
}

func collect(ch <-chan answer) []answer {
	var out []answer
	for a := range ch {
		out = append(out, a)
	}
	return out
}

// A redriven notification leaves quarantine only once its copy in the
// inbox is durable: with group commit the store writes without fsync, and
// a power loss could keep the removal and lose the copy. While the fsync
// is held the notification is in both; when it fails, it stays in
// quarantine and the redrive says so.
func TestRedriveLeavesQuarantineOnlyWhenDurable(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	gate := natstest.NewFSyncGate(t, srv.Dir(), nil)
	h := newHarnessOn(t, srv, false, withDurable(gate.GroupSync))
	ctx := context.Background()
	entries := h.quarantineOne("tx-q")
	done := make(chan error, 1)
	go func() {
		_, err := RedriveQuarantine(ctx, h.js, entries, gate.GroupSync)
		done <- err
	}()
	eventually(t, "the copy stored and its fsync held", func() bool { return h.msgs(event.StreamInbox) == 1 && gate.Started() > 0 })
	if n := h.msgs(event.StreamQuarantine); n != 1 {
		t.Fatalf("removed from quarantine while its copy's fsync was held (%d left)", n)
	}
	gate.Fail(errors.New("input/output error"))
	if err := <-done; err == nil {
		t.Fatal("the redrive reported success after its fsync failed")
	}
	if n := h.msgs(event.StreamQuarantine); n != 1 {
		t.Fatalf("removed from quarantine although its copy is not known durable (%d left)", n)
	}
}

// An event leaves its transaction's outbox only once an fsync covers it.
// With group commit the store writes without fsync, in files of their
// own: the state with its outbox emptied could reach the disk without
// the event, and after a power loss the redelivered notification found
// its status recorded, answered duplicate, and the event was gone for
// good. While the fsync is held the outbox keeps the published event;
// when it fails, the outbox still holds it for the retry.
func TestTheOutboxKeepsAnEventUntilAnFsyncCoversIt(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	gate := natstest.NewFSyncGate(t, srv.Dir(), nil)
	h := newHarnessOn(t, srv, true, withIntakeDurable(gate.GroupSync))
	if resp, _ := h.post("/callbacks/sengo/main", callback("held-1", event.StatusSuccess)); resp.StatusCode != http.StatusOK {
		t.Fatalf("callback: %d", resp.StatusCode)
	}
	eventually(t, "the event published while the fsync is held", func() bool { return h.msgs(event.StreamEvents) == 1 })
	eventually(t, "the notification waiting for the fsync", func() bool { return gate.GroupSync.Stats().Waiting == 1 })
	if n := h.outbox("held-1"); n != 1 {
		t.Fatalf("outbox of %d while no fsync covers the event, want 1: the state could reach the disk without it", n)
	}
	gate.Fail(errors.New("input/output error"))
	eventually(t, "the notification retried", func() bool { return strings.Contains(h.logs.String(), "fsync of the store failed") })
	if n := h.outbox("held-1"); n != 1 {
		t.Fatalf("outbox of %d after the fsync failed, want 1", n)
	}
}

// An outbox a crash left behind is published on the redelivery, and
// cleared only once an fsync covers what was published.
func TestALeftOutboxIsClearedOnlyOnceDurable(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	gate := natstest.NewFSyncGate(t, srv.Dir(), nil)
	h := newHarnessOn(t, srv, true, withIntakeDurable(gate.GroupSync))
	h.leaveOutbox("left-1", time.Date(2025, 3, 23, 3, 0, 0, 0, time.UTC))
	h.feed("left-1", SourceReconcile)
	eventually(t, "the left event published while the fsync is held", func() bool { return h.msgs(event.StreamEvents) == 1 })
	eventually(t, "intake waiting for the fsync", func() bool { return gate.GroupSync.Stats().Waiting >= 1 })
	if n := h.outbox("left-1"); n != 1 {
		t.Fatalf("outbox of %d while no fsync covers the event, want 1", n)
	}
	gate.Open()
	eventually(t, "the outbox cleared once durable", func() bool { return h.outbox("left-1") == 0 })
}

// outbox is the length of transaction id's outbox in SENGO_TX.
func (h *harness) outbox(id string) int {
	h.t.Helper()
	kv, err := h.js.KeyValue(context.Background(), event.BucketTx)
	if err != nil {
		h.t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), txKey("main", id))
	if err != nil {
		h.t.Fatal(err)
	}
	var st txState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		h.t.Fatal(err)
	}
	return len(st.Outbox)
}

// A notification set aside is acknowledged only once an fsync covers its
// copy in quarantine: with group commit the store writes without fsync,
// and a power loss could keep the inbox's ack and lose the copy, the
// notification then in neither stream. While the fsync is held nothing
// is acked; when it fails, the notification is retried.
func TestAQuarantinedNotificationIsAckedOnlyOnceDurable(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	gate := natstest.NewFSyncGate(t, srv.Dir(), nil)
	h := newHarnessOn(t, srv, true, withIntakeDurable(gate.GroupSync), func(_ *Config, ic *IntakeConfig) {
		ic.RequireConfirmation = map[string]bool{"main": true} // and no confirmer: set aside at once
	})
	if resp, _ := h.post("/callbacks/sengo/main", callback("q-held", event.StatusSuccess)); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the copy in quarantine stored, its fsync held", func() bool {
		return h.msgs(event.StreamQuarantine) == 1 && gate.GroupSync.Stats().Waiting == 1
	})
	if floor, _ := h.inboxAckFloor(); floor != 0 {
		t.Fatalf("inbox ack floor %d while the quarantine copy's fsync is held, want 0: acked before durable", floor)
	}
	gate.Fail(errors.New("input/output error"))
	eventually(t, "the notification retried", func() bool { return strings.Contains(h.logs.String(), "fsync of the store failed") })
	if floor, _ := h.inboxAckFloor(); floor != 0 {
		t.Fatalf("inbox ack floor %d after the quarantine copy's fsync failed, want 0", floor)
	}
}

// A redrive whose copy the inbox refuses leaves the notification in
// quarantine and says so: removed, it would be in neither stream.
func TestARefusedRedriveLeavesTheNotificationQuarantined(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	entries := h.quarantineOne("tx-refused")
	restore := natstest.RefuseWrites(t, h.js, event.StreamInbox)
	n, err := RedriveQuarantine(ctx, h.js, entries, nil)
	if err == nil || n != 0 {
		t.Fatalf("a redrive the inbox refused: %d redriven, %v; want 0 and an error", n, err)
	}
	if q := h.msgs(event.StreamQuarantine); q != 1 {
		t.Fatalf("quarantine holds %d after a refused redrive, want 1", q)
	}
	restore()
	if n, err := RedriveQuarantine(ctx, h.js, entries, nil); err != nil || n != 1 {
		t.Fatalf("the redrive once the inbox takes it again: %d, %v", n, err)
	}
	if q, i := h.msgs(event.StreamQuarantine), h.msgs(event.StreamInbox); q != 0 || i != 1 {
		t.Fatalf("after the redrive: quarantine %d, inbox %d; want 0 and 1", q, i)
	}
	// On its transaction's subject, where a final status received after it
	// finds it and waits for it.
	if got := natstest.Messages(t, h.js, event.StreamInbox)[0].Subject; got != event.InboxTxSubject("main", "tx-refused") {
		t.Fatalf("redriven onto %s, want its transaction's subject", got)
	}
}

// A notification whose published event cannot be cleared from its
// transaction's outbox (the state's write refused once the fsync came) is
// retried, not acked: the state would go on saying the event was never
// published, for the next notification of the transaction to publish
// again, past the events' duplicate window a second copy.
func TestAFailedOutboxClearIsNotAcked(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	gate := natstest.NewFSyncGate(t, srv.Dir(), nil)
	h := newHarnessOn(t, srv, true, withIntakeDurable(gate.GroupSync))
	if resp, _ := h.post("/callbacks/sengo/main", callback("clear-refused", event.StatusSuccess)); resp.StatusCode != http.StatusOK {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the event published, its fsync held", func() bool {
		return h.msgs(event.StreamEvents) == 1 && gate.GroupSync.Stats().Waiting == 1
	})
	restore := natstest.RefuseWrites(t, h.js, "KV_"+event.BucketTx)
	gate.Open()
	eventually(t, "the clear refused and the notification retried", func() bool {
		return strings.Contains(h.logs.String(), "published events not cleared from the outbox")
	})
	if floor, _ := h.inboxAckFloor(); floor != 0 {
		t.Fatalf("inbox ack floor %d after its outbox clear was refused, want 0", floor)
	}
	restore()
	eventually(t, "the outbox cleared and the notification acked", func() bool {
		floor, _ := h.inboxAckFloor()
		return floor == 1 && h.outbox("clear-refused") == 0
	})
	if n := h.msgs(event.StreamEvents); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

// quarantineOne quarantines a success of transaction id, as intake would
// have, and returns the quarantine's one entry.
func (h *harness) quarantineOne(id string) []QuarantineEntry {
	h.t.Helper()
	m := &nats.Msg{Subject: event.QuarantineTxSubject("main", id), Data: callback(id, event.StatusSuccess), Header: nats.Header{}}
	m.Header.Set(event.HeaderProject, "main")
	m.Header.Set(event.HeaderReason, "SenGo's API disagrees")
	if _, err := h.js.PublishMsg(context.Background(), m); err != nil {
		h.t.Fatal(err)
	}
	entries, err := ListQuarantine(context.Background(), h.js, QuarantineFilter{})
	if err != nil || len(entries) != 1 {
		h.t.Fatalf("quarantined: %v %v", entries, err)
	}
	return entries
}
