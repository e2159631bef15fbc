package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/stream"
)

// An endpoint down for every attempt ends in the DLQ; once it is back,
// redrive delivers the event with the same webhook-id and a fresh budget.
func TestRedriveDelivers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var up atomic.Bool
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) {
		if up.Load() {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(500)
	})
	w := h.start(h.endpoint("orders", c.URL, 10*time.Millisecond))
	ev := h.publish("tx-dlq", event.StatusSuccess, "")
	h.publish("tx-other", event.StatusSuccess, "")
	eventually(t, "two dead letters", func() bool { return len(h.deadLetters()) == 2 && h.settled(w) })

	ctx := context.Background()
	entries, err := ListDLQ(ctx, h.js, DLQFilter{Endpoint: "orders", TransactionID: "tx-dlq"})
	if err != nil || len(entries) != 1 || entries[0].EventID != ev.ID {
		t.Fatalf("list by transaction: %v %+v", err, entries)
	}
	if all, _ := ListDLQ(ctx, h.js, DLQFilter{Endpoint: "elsewhere"}); len(all) != 0 {
		t.Fatalf("endpoint filter ignored: %d", len(all))
	}
	if one, _ := ListDLQ(ctx, h.js, DLQFilter{Seq: entries[0].Seq}); len(one) != 1 {
		t.Fatal("show by seq")
	}
	if none, _ := ListDLQ(ctx, h.js, DLQFilter{Since: time.Now().Add(time.Hour)}); len(none) != 0 {
		t.Fatal("since filter ignored")
	}

	up.Store(true)
	before := len(c.got())
	n, err := Redrive(ctx, h.js, entries)
	if err != nil || n != 1 {
		t.Fatalf("redrive: %d %v", n, err)
	}
	eventually(t, "the redriven delivery", func() bool { return len(c.got()) == before+1 && h.settled(w) })
	a := c.got()[before]
	if a.Header.Get("webhook-id") != ev.ID || a.Header.Get("webhook-replay") != "" || a.Header.Get("sengo-event-sequence") != "1" {
		t.Fatalf("redrive headers %v", a.Header)
	}
	left, _ := ListDLQ(ctx, h.js, DLQFilter{})
	if len(left) != 1 || left[0].TransactionID != "tx-other" {
		t.Fatalf("after redrive the DLQ holds %+v", left)
	}
	if n, err := Purge(ctx, h.js, left); err != nil || n != 1 {
		t.Fatalf("purge %d %v", n, err)
	}
	if left, _ := ListDLQ(ctx, h.js, DLQFilter{}); len(left) != 0 {
		t.Fatal("purge left entries")
	}
}

// A replay by time window re-delivers exactly the matching events, with
// webhook-replay: true and progress, beside live traffic; running it
// again queues nothing new.
func TestReplayWindow(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	ep.FilterSubjects = []string{"sengo.events.*.*.success"}
	w := h.start(ep)
	h.publish("old", event.StatusSuccess, "")
	eventually(t, "live delivery", func() bool { return len(c.got()) == 1 })
	since := time.Now()
	in1 := h.publish("in-1", event.StatusSuccess, "")
	h.publish("in-2", event.StatusPending, "") // outside the endpoint's filter
	in3 := h.publish("in-3", event.StatusSuccess, "")
	until := time.Now()
	h.publish("late", event.StatusSuccess, "")
	eventually(t, "live deliveries", func() bool { return len(c.got()) == 4 && h.settled(w) })

	var reports []ReplayProgress
	req := ReplayRequest{Endpoints: []string{"orders"}, Since: since, Until: until}
	dry := req
	dry.DryRun = true
	p, err := Replay(context.Background(), h.js, []Endpoint{ep}, dry, nil)
	if err != nil || p.Matched != 2 || p.Queued != 0 {
		t.Fatalf("dry run: %+v %v", p, err)
	}
	p, err = Replay(context.Background(), h.js, []Endpoint{ep}, req, func(p ReplayProgress) { reports = append(reports, p) })
	if err != nil || p.Matched != 2 || p.Queued != 2 || !p.Done || p.Scanned < 3 {
		t.Fatalf("replay: %+v %v", p, err)
	}
	if len(reports) < 3 || reports[0].Total < 3 {
		t.Fatalf("progress reports %+v", reports)
	}
	// The total is the window's events: it counted those stored after
	// until too, and a job ended done short of its total.
	if p.Total != 3 || p.Scanned != 3 {
		t.Errorf("replay of 3 events in its window: total %d, scanned %d", p.Total, p.Scanned)
	}
	eventually(t, "replayed deliveries", func() bool { return len(c.got()) == 6 && h.settled(w) })
	got := c.got()[4:]
	ids := map[string]bool{}
	for _, a := range got {
		if a.Header.Get("webhook-replay") != "true" {
			t.Errorf("replayed delivery without webhook-replay: %v", a.Header)
		}
		ids[a.Header.Get("webhook-id")] = true
		if seq := a.Header.Get("sengo-event-sequence"); seq != "2" && seq != "4" {
			t.Errorf("replayed copy carries sequence %q, want its place in SENGO_EVENTS (2 or 4)", seq)
		}
	}
	if !ids[in1.ID] || !ids[in3.ID] {
		t.Fatalf("replayed %v, want %s and %s", ids, in1.ID, in3.ID)
	}
	// Same request again: resumable, nothing queued twice.
	if _, err := Replay(context.Background(), h.js, []Endpoint{ep}, req, nil); err != nil {
		t.Fatal(err)
	}
	s, _ := h.js.Stream(context.Background(), event.StreamReplay)
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 2 {
		t.Fatalf("replay stream holds %d after a repeat, want 2", info.State.Msgs)
	}
	if _, err := Replay(context.Background(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"nope"}}, nil); err == nil {
		t.Fatal("unknown endpoint accepted")
	}
}

// A purge with a stale list (entries removed meanwhile by a redrive or
// another purge) removes what is left, counts only that, and does not
// fail on the ones already gone.
func TestPurgeStaleEntries(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	for _, tx := range []string{"tx-a", "tx-b"} {
		if _, err := h.js.Publish(ctx, event.DLQSubject("orders"), []byte(`{"event":{"id":"`+tx+`"}}`)); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := ListDLQ(ctx, h.js, DLQFilter{})
	if err != nil || len(entries) != 2 {
		t.Fatalf("list: %v %d", err, len(entries))
	}
	if n, err := Purge(ctx, h.js, entries[:1]); err != nil || n != 1 {
		t.Fatalf("first purge: %d, %v", n, err)
	}
	if n, err := Purge(ctx, h.js, entries); err != nil || n != 1 {
		t.Fatalf("purge of a stale list: %d, %v; want 1 and no error", n, err)
	}
}

// A dead letter's subject carries its transaction, so one transaction's
// dead letters are read alone (a story among thousands of dead letters
// reads its own, not all of them); those stored before, on the endpoint's
// subject alone, are still found.
func TestDeadLettersOfATransactionAreReadBySubject(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) { w.WriteHeader(500) })
	w := h.start(h.endpoint("orders", c.URL, 10*time.Millisecond))
	ev := h.publish("tx-mine", event.StatusSuccess, "")
	h.publish("tx-other", event.StatusSuccess, "")
	eventually(t, "two dead letters", func() bool { return len(h.deadLetters()) == 2 && h.settled(w) })
	ctx := context.Background()
	for _, m := range natstest.Messages(t, h.js, event.StreamDLQ) {
		var d DeadLetter
		if err := json.Unmarshal(m.Data, &d); err != nil {
			t.Fatal(err)
		}
		if want := event.DLQTxSubject("orders", d.TransactionID); m.Subject != want {
			t.Fatalf("dead letter of %s on %s, want %s", d.TransactionID, m.Subject, want)
		}
	}
	// One stored the old way, on the endpoint's subject alone.
	old, _ := json.Marshal(DeadLetter{Endpoint: "orders", EventID: "old-event", TransactionID: "tx-mine", Reason: ReasonExhausted})
	if _, err := h.js.Publish(ctx, event.DLQSubject("orders"), old); err != nil {
		t.Fatal(err)
	}
	var matched uint64
	if err := stream.ScanFrom(ctx, h.js, event.StreamDLQ, event.DLQFilters("", "tx-mine"), stream.From{}, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) {
		return true, nil
	}, func(n uint64) { matched = n }); err != nil {
		t.Fatal(err)
	}
	if matched != 2 {
		t.Fatalf("a transaction's filter matched %d dead letters, want 2 (its own and the old-style one, not the other transaction's)", matched)
	}
	mine, err := ListDLQ(ctx, h.js, DLQFilter{TransactionID: "tx-mine"})
	if err != nil || len(mine) != 2 || mine[0].EventID != ev.ID || mine[1].EventID != "old-event" {
		t.Fatalf("tx-mine's dead letters: %v %+v", err, mine)
	}
	if all, err := ListDLQ(ctx, h.js, DLQFilter{Endpoint: "orders"}); err != nil || len(all) != 3 {
		t.Fatalf("the endpoint's dead letters: %v %d, want 3", err, len(all))
	}
}

// EachDLQPage reaches only the dead letters stored when it started: a
// redrive of every dead letter to an endpoint that dead-letters again at
// once (a 410) met its own new dead letters on its next page and
// redrove them again, for as long as the command ran.
func TestEachDLQPageStopsAtWhatWasStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	store := func(n int) {
		natstest.PublishMany(t, h.js, n, func(int) *nats.Msg {
			return &nats.Msg{Subject: event.DLQTxSubject("orders", "tx"), Data: []byte(`{"endpoint":"orders","event":{}}`)}
		})
	}
	const n = DLQPage + 5
	store(n)
	seen := 0
	err := EachDLQPage(ctx, h.js, DLQFilter{}, 0, func(page []DLQEntry) error {
		if seen == 0 {
			store(DLQPage) // dead-lettered again while the first page is acted on
		}
		seen += len(page)
		return nil
	})
	if err != nil || seen != n {
		t.Fatalf("EachDLQPage reached %d dead letters (%v), want the %d stored when it started", seen, err, n)
	}
}

// A redrive or purge of every dead letter held a page of 1,000 at a time,
// each with its event whole: up to 16 GiB with 16 MiB notifications. A
// page now ends at DLQPageBytes, and the pages still reach every one.
func TestEachDLQPageIsBoundedInBytes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const n = 40
	data := []byte(`{"endpoint":"orders","event":{"raw":"` + strings.Repeat("x", 1<<20) + `"}}`)
	natstest.PublishMany(t, h.js, n, func(int) *nats.Msg {
		return &nats.Msg{Subject: event.DLQTxSubject("orders", "tx"), Data: data}
	})
	seen, pages := 0, 0
	err := EachDLQPage(context.Background(), h.js, DLQFilter{}, 0, func(page []DLQEntry) error {
		size := 0
		for _, e := range page {
			size += e.Size
		}
		if size > DLQPageBytes+len(data) {
			t.Errorf("a page of %d dead letters, %d MiB", len(page), size>>20)
		}
		seen += len(page)
		pages++
		return nil
	})
	if err != nil || seen != n || pages < 2 {
		t.Fatalf("EachDLQPage reached %d of %d dead letters in %d pages (%v)", seen, n, pages, err)
	}
}

// A redrive counted a copy JetStream dropped as a duplicate (one queued by
// an earlier redrive, still waiting) as redriven: twice "1 redriven" for
// one copy queued.
func TestRedriveCountsOnlyWhatItQueued(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	down := newConsumer(t, status(http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusServiceUnavailable))
	h.start(h.endpoint("orders", down.URL, 10*time.Millisecond))
	h.publish("tx-r", event.StatusSuccess, "")
	eventually(t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 })
	hold := Hold(context.Background(), h.js, "orders", "test") // the copy waits
	if hold != nil {
		t.Fatal(hold)
	}
	entries, err := ListDLQ(context.Background(), h.js, DLQFilter{Endpoint: "orders"})
	if err != nil || len(entries) != 1 {
		t.Fatalf("%d dead letters (%v)", len(entries), err)
	}
	for i, want := range []int{1, 0} {
		if n, err := Redrive(context.Background(), h.js, entries); err != nil || n != want {
			t.Fatalf("redrive %d: %d redriven (%v), want %d", i+1, n, err, want)
		}
	}
	if n := len(natstest.Messages(t, h.js, event.StreamReplay)); n != 1 {
		t.Fatalf("%d copies queued", n)
	}
}

// A redriven copy is the event's JSON as stored, byte for byte, whatever
// it holds. The dead letter embedded it through json.Marshal, which
// rewrote &, < and > (\u0026…) in data.raw and the reference, and Redrive
// posted those bytes.
func TestARedrivenCopyIsTheEventAsStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var up atomic.Bool
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) {
		if !up.Load() {
			w.WriteHeader(410)
		}
	})
	w := h.start(h.endpoint("orders", c.URL))
	h.publish("PO&1<a>", event.StatusSuccess, "")
	eventually(t, "the dead letter", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	entries, err := ListDLQ(t.Context(), h.js, DLQFilter{})
	if err != nil || len(entries) != 1 {
		t.Fatalf("dead letters %d: %v", len(entries), err)
	}
	up.Store(true)
	if n, err := Redrive(t.Context(), h.js, entries); err != nil || n != 1 {
		t.Fatalf("redrive %d: %v", n, err)
	}
	eventually(t, "the redriven copy", func() bool { return len(c.got()) == 2 && h.settled(w) })
	if got := c.got(); !bytes.Equal(got[1].Body, got[0].Body) {
		t.Errorf("the redriven body differs from the event as stored:\n%s\n%s", got[1].Body, got[0].Body)
	}
}

// A message on sengo.dlq.> that is no dead letter (another publisher's)
// stops no listing, redrive or purge: it is listed as an undecodable dead
// letter of the endpoint its subject names, no redrive sends it, and a
// purge removes it. Its decoding error failed every read that reached it,
// a purge by its own sequence too, for as long as the stream kept it.
func TestAMessageThatIsNoDeadLetterStopsNoAction(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status(410))
	w := h.start(h.endpoint("orders", c.URL))
	if _, err := h.js.Publish(t.Context(), event.DLQSubject("orders")+".x", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	h.publish("tx-after", event.StatusSuccess, "")
	eventually(t, "the real dead letter", func() bool {
		s, err := h.js.Stream(t.Context(), event.StreamDLQ)
		if err != nil {
			return false
		}
		info, err := s.Info(t.Context())
		return err == nil && info.State.Msgs == 2 && h.settled(w)
	})
	entries, err := ListDLQ(t.Context(), h.js, DLQFilter{Endpoint: "orders"})
	if err != nil || len(entries) != 2 || entries[0].Reason != ReasonUndecodable || entries[1].TransactionID != "tx-after" {
		t.Fatalf("list: %v %+v", err, entries)
	}
	if n, err := Redrive(t.Context(), h.js, entries[:1]); err != nil || n != 0 {
		t.Errorf("redrive of the message that is no dead letter: %d %v, want 0", n, err)
	}
	one, err := ListDLQ(t.Context(), h.js, DLQFilter{Seq: entries[0].Seq})
	if err != nil || len(one) != 1 {
		t.Fatalf("by its sequence: %v %+v", err, one)
	}
	if n, err := Purge(t.Context(), h.js, one); err != nil || n != 1 {
		t.Fatalf("purge by its sequence: %d %v", n, err)
	}
	if left, err := ListDLQ(t.Context(), h.js, DLQFilter{}); err != nil || len(left) != 1 || left[0].TransactionID != "tx-after" {
		t.Errorf("after the purge: %v %+v", err, left)
	}
}

// The console's confirmation of "Redrive all" or "Purge all" counted the
// dead letters by reading each whole, its event too: after a long outage
// (hundreds of thousands) the count outlasted the read bound and the
// confirmation answered 503, so the operator could act on none. CountDLQ
// reads their headers only, and still counts exactly those up to the
// sequence it names.
func TestCountingDeadLettersReadsNoBodies(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const n = 40
	letter := func(ep string) []byte {
		return []byte(`{"endpoint":"` + ep + `","event":{"raw":"` + strings.Repeat("x", 256<<10) + `"}}`)
	}
	natstest.PublishMany(t, h.js, n, func(i int) *nats.Msg {
		ep := "orders"
		if i%4 == 0 {
			ep = "fulfilment"
		}
		return &nats.Msg{Subject: event.DLQTxSubject(ep, fmt.Sprint("tx", i)), Data: letter(ep)}
	})
	nc, js := h.nats.Connect(t)
	for _, c := range []struct {
		endpoint string
		want     int
	}{{"", n}, {"orders", n - n/4}, {"fulfilment", n / 4}, {"nobody", 0}} {
		before := nc.Stats().InBytes
		count, top, err := CountDLQ(t.Context(), js, DLQFilter{Endpoint: c.endpoint})
		if err != nil || count != c.want {
			t.Fatalf("%q: counted %d (%v), want %d", c.endpoint, count, err, c.want)
		}
		if read := nc.Stats().InBytes - before; read > 256<<10 {
			t.Errorf("%q: counting %d dead letters read %d KiB", c.endpoint, count, read>>10)
		}
		if c.want > 0 && top == 0 {
			t.Errorf("%q: counted %d up to sequence 0", c.endpoint, count)
		}
	}
	// What is stored after the count is not in it: its top bounds the
	// action to what the operator confirmed.
	count, top, err := CountDLQ(t.Context(), js, DLQFilter{Endpoint: "orders"})
	natstest.PublishMany(t, h.js, 3, func(i int) *nats.Msg {
		return &nats.Msg{Subject: event.DLQTxSubject("orders", fmt.Sprint("late", i)), Data: letter("orders")}
	})
	acted := 0
	if err == nil {
		err = EachDLQPage(t.Context(), js, DLQFilter{Endpoint: "orders"}, top, func(page []DLQEntry) error {
			acted += len(page)
			return nil
		})
	}
	if err != nil || acted != count {
		t.Fatalf("acting up to %d reached %d dead letters (%v), the count said %d", top, acted, err, count)
	}
	// One by its sequence: as the listing, whatever the body.
	if count, top, err := CountDLQ(t.Context(), js, DLQFilter{Seq: 2}); err != nil || count != 1 || top != 2 {
		t.Fatalf("dead letter #2: counted %d up to %d (%v)", count, top, err)
	}
	if count, _, err := CountDLQ(t.Context(), js, DLQFilter{Seq: 999}); err != nil || count != 0 {
		t.Fatalf("no dead letter #999: counted %d (%v)", count, err)
	}
}

// A dead letter stays listed while its redriven copy waits for a retry,
// and its copy's message id kept a second redrive from queuing another
// only for SENGO_REPLAY's duplicate window (24 h), shorter than a retry
// schedule (3 days): redriven again later, two copies ran, each with a
// budget of its own, the event was posted by both and, both dead, listed
// twice. A copy still stored is found by its dead letter's record.
func TestARedriveAfterTheDuplicateWindowQueuesNoSecondCopy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reconfigure(event.StreamReplay, func(cfg *jetstream.StreamConfig) { cfg.Duplicates = 200 * time.Millisecond })
	entries := h.redrivenWaiting("tx-r")
	h.waitOutDuplicateWindow()
	if n, err := Redrive(t.Context(), h.js, entries); err != nil || n != 0 {
		t.Fatalf("second redrive while the first copy waits: %d redriven (%v), want 0", n, err)
	}
	copies := 0
	for _, m := range natstest.Messages(t, h.js, event.StreamReplay) {
		if m.Subject == event.ReplaySubject("orders") {
			copies++
		}
	}
	if copies != 1 {
		t.Fatalf("%d copies of one dead letter queued", copies)
	}
}

// The record of a redrive names its dead letter by sequence: one left from
// a SENGO_DLQ made anew (deleted by hand and provisioned again), whose
// sequences start again, named another dead letter's copy, and the new
// dead letter of that sequence was never redriven while that copy waited.
// A copy counts only if it is the dead letter's own.
func TestARedriveRecordOfAnotherDeadLetterIsIgnored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(n int, _ *http.Request, w http.ResponseWriter) {
		if n == 2 {
			w.WriteHeader(http.StatusServiceUnavailable) // tx-a's copy waits
			return
		}
		w.WriteHeader(http.StatusGone) // the two events' first attempts
	})
	h.start(h.endpoint("orders", c.URL, 10*time.Minute)) // within SENGO_REPLAY's hour: the copy waits
	h.publish("tx-a", event.StatusSuccess, "")
	eventually(t, "tx-a dead-lettered", func() bool { return len(h.deadLetters()) == 1 })
	first, err := ListDLQ(t.Context(), h.js, DLQFilter{Endpoint: "orders"})
	if err != nil || len(first) != 1 {
		t.Fatalf("%d dead letters (%v)", len(first), err)
	}
	if n, err := Redrive(t.Context(), h.js, first); err != nil || n != 1 {
		t.Fatalf("redrive of tx-a: %d (%v)", n, err)
	}
	// SENGO_DLQ made anew: its sequences start again.
	h.remakeDLQ()
	h.publish("tx-b", event.StatusSuccess, "")
	eventually(t, "tx-b dead-lettered", func() bool { return len(h.deadLetters()) == 1 })
	second, err := ListDLQ(t.Context(), h.js, DLQFilter{Endpoint: "orders"})
	if err != nil || len(second) != 1 || second[0].Seq != first[0].Seq || second[0].TransactionID != "tx-b" {
		t.Fatalf("dead letters after the new stream: %+v (%v)", second, err)
	}
	if n, err := Redrive(t.Context(), h.js, second); err != nil || n != 1 {
		t.Fatalf("redrive of tx-b, whose sequence an old record names: %d (%v), want 1", n, err)
	}
}

// A purge deleted the dead letter and left its redriven copy waiting for
// its retries: the event the operator purged "for good" was posted later
// all the same, or, dead again, listed again. The copy goes with it.
func TestAPurgeTakesTheWaitingCopyWithIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	entries := h.redrivenWaiting("tx-p")
	if n, err := Purge(t.Context(), h.js, entries); err != nil || n != 1 {
		t.Fatalf("purge: %d (%v)", n, err)
	}
	for _, m := range natstest.Messages(t, h.js, event.StreamReplay) {
		if m.Subject == event.ReplaySubject("orders") {
			t.Fatalf("the redriven copy of a purged dead letter still waits (#%d)", m.Sequence)
		}
	}
}

// A replay to an endpoint no relay delivers any more (removed from the
// relays' configuration and retired: its consumer is gone, or being
// retired) reported its copies queued, and they waited where nothing read
// them until SENGO_REPLAY dropped them, with no dead letter. It is refused,
// as a redrive to such an endpoint is.
func TestAReplayToAnEndpointNoRelayDeliversIsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("crm", c.URL)
	_, stop := h.runWorker(ep)
	stop()
	h.publish("tx-1", event.StatusSuccess, "")
	for _, retire := range []func(){
		func() { // being retired
			if _, err := mustKV(t, h).Put(t.Context(), retireKey(event.StreamReplay, ConsumerName("crm")), []byte("x")); err != nil {
				t.Fatal(err)
			}
		},
		func() { // retired
			if err := h.js.DeleteConsumer(t.Context(), event.StreamReplay, ConsumerName("crm")); err != nil {
				t.Fatal(err)
			}
		},
	} {
		retire()
		_, err := Replay(t.Context(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"crm"}}, nil)
		if err == nil || !strings.Contains(err.Error(), "crm") {
			t.Fatalf("replay to a retired endpoint: %v, want it refused", err)
		}
		if n := len(natstest.Messages(t, h.js, event.StreamReplay)); n != 0 {
			t.Fatalf("%d copies queued where no relay reads them", n)
		}
	}
}

// A redrive that found its copy already queued (a duplicate the stream
// dropped) did not record it: a copy queued by a redrive that could not
// record it, or by a relay before these records, had none, and a redrive
// after the duplicate window queued a second one. The duplicate's answer
// names the copy, and it is recorded then.
func TestADuplicateRedriveRecordsTheCopy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reconfigure(event.StreamReplay, func(cfg *jetstream.StreamConfig) { cfg.Duplicates = 200 * time.Millisecond })
	entries := h.redrivenWaiting("tx-d")
	// Its record lost (not stored, or a copy from before records).
	if err := mustKV(t, h).Delete(t.Context(), redriveKey(entries[0].Seq)); err != nil {
		t.Fatal(err)
	}
	if n, err := Redrive(t.Context(), h.js, entries); err != nil || n != 0 {
		t.Fatalf("redrive within the duplicate window: %d (%v), want 0", n, err)
	}
	h.waitOutDuplicateWindow()
	if n, err := Redrive(t.Context(), h.js, entries); err != nil || n != 0 {
		t.Fatalf("redrive after the window while the copy waits: %d (%v), want 0", n, err)
	}
}

// A replay by merchantRef or transaction id could not be held to one
// project, and ids repeat across projects: the other project's event of
// the same merchantRef was replayed too. A replay may name its project.
func TestAReplayOfOneProjectLeavesTheOthersAlone(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	if _, err := NewWorker(t.Context(), WorkerConfig{Endpoint: ep, JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs)}); err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	mine := h.publish("tx-same", event.StatusSuccess, "")
	other := mine
	other.ID, other.Source = "evt_other_tx_same", "sengo/other"
	b, err := event.Marshal(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Publish(t.Context(), event.EventSubject("other", other.Data.Product, other.Data.Status), b); err != nil {
		t.Fatal(err)
	}
	req := ReplayRequest{Endpoints: []string{"orders"}, Since: since, MerchantRef: mine.Data.MerchantRef, Project: "main"}
	p, err := Replay(t.Context(), h.js, []Endpoint{ep}, req, nil)
	if err != nil || p.Queued != 1 {
		t.Fatalf("replay of main's %s: %+v (%v), want 1 queued", mine.Data.MerchantRef, p, err)
	}
	msgs := natstest.Messages(t, h.js, event.StreamReplay)
	if len(msgs) != 1 || msgs[0].Header.Get(event.HeaderEventID) != mine.ID {
		t.Fatalf("%d copies queued, want main's %s alone", len(msgs), mine.ID)
	}
	if req.JobID() == (ReplayRequest{Endpoints: req.Endpoints, Since: since, MerchantRef: req.MerchantRef}).JobID() {
		t.Error("a replay of one project has the job id of the same replay of every project")
	}
}

// redrivenWaiting dead-letters tx's success for "orders" (a 410) and
// redrives it; the copy's attempts answer 503 and wait 10 minutes, within
// SENGO_REPLAY's hour. It returns the dead letters redriven once the
// copy's first attempt has failed.
func (h *harness) redrivenWaiting(tx string) []DLQEntry {
	h.t.Helper()
	c := newConsumer(h.t, func(n int, _ *http.Request, w http.ResponseWriter) {
		if n == 1 {
			w.WriteHeader(http.StatusGone)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	h.start(h.endpoint("orders", c.URL, 10*time.Minute))
	h.publish(tx, event.StatusSuccess, "")
	eventually(h.t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 })
	entries, err := ListDLQ(h.t.Context(), h.js, DLQFilter{Endpoint: "orders"})
	if err != nil || len(entries) != 1 {
		h.t.Fatalf("%d dead letters (%v)", len(entries), err)
	}
	if n, err := Redrive(h.t.Context(), h.js, entries); err != nil || n != 1 {
		h.t.Fatalf("first redrive: %d (%v)", n, err)
	}
	eventually(h.t, "the copy's first attempt failed", func() bool { return len(c.got()) == 2 })
	return entries
}

// waitOutDuplicateWindow returns once SENGO_REPLAY's duplicate window has
// passed for what is stored now: a probe's id, sent now, is new again (on
// a subject no endpoint reads).
func (h *harness) waitOutDuplicateWindow() {
	h.t.Helper()
	probe := &nats.Msg{Subject: event.ReplaySubject("nobody"), Data: []byte("probe")}
	if _, err := h.js.PublishMsg(h.t.Context(), probe, jetstream.WithMsgID("probe")); err != nil {
		h.t.Fatal(err)
	}
	eventually(h.t, "the duplicate window passed", func() bool {
		ack, err := h.js.PublishMsg(h.t.Context(), probe, jetstream.WithMsgID("probe"))
		return err == nil && !ack.Duplicate
	})
}

// A redriven copy settling removes the dead letter it came from by its
// sequence in SENGO_DLQ. Made anew (an operator deleted it to clear it),
// SENGO_DLQ starts its sequences again: the copy removed another event's
// dead letter stored at that sequence since, and that event, never
// delivered, was left with no trace. A dead letter is removed only if it
// is the copy's.
func TestASettledCopyRemovesOnlyItsOwnDeadLetter(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	let := func() { releaseOnce.Do(func() { close(release) }) }
	var firstPosted atomic.Bool
	c := newConsumer(t, status())
	t.Cleanup(let) // before the consumer closes: a test that failed first does not hang there
	c.answer = func(n int, _ *http.Request, w http.ResponseWriter) {
		ev, _ := event.Unmarshal(c.got()[n-1].Body)
		if ev.Data.TransactionID != "tx-first" || !firstPosted.Swap(true) {
			w.WriteHeader(http.StatusGone) // each live event: dead-lettered at once
			return
		}
		<-release // the redriven copy waits until the test has looked
		w.WriteHeader(http.StatusOK)
	}
	w := h.start(h.endpoint("orders", c.URL))
	h.publish("tx-first", event.StatusSuccess, "")
	eventually(t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	entries, _ := ListDLQ(t.Context(), h.js, DLQFilter{})
	if n, err := Redrive(t.Context(), h.js, entries); err != nil || n != 1 {
		t.Fatalf("redrive %d %v", n, err)
	}
	eventually(t, "the copy posted", func() bool { return len(c.got()) == 2 })
	h.remakeDLQ()
	h.publish("tx-second", event.StatusSuccess, "")
	eventually(t, "the second dead-lettered", func() bool { return len(h.deadLetters()) == 1 })
	let()
	eventually(t, "the copy settled", func() bool { return h.settled(w) })
	var got []string
	for _, d := range h.deadLetters() {
		got = append(got, d.TransactionID)
	}
	if len(got) != 1 || got[0] != "tx-second" {
		t.Fatalf("dead letters of %v, want tx-second's, which the copy of tx-first's did not come from", got)
	}
}

// A redrive given up (its API client gone, Ctrl-C in the CLI) between
// queuing a copy and recording it left the copy unrecorded: a redrive
// after SENGO_REPLAY's duplicate window (24 h), while the copy still
// waited for its retries, queued a second one, and the event was posted
// by both. The record is written whatever the caller does.
func TestARedriveGivenUpRecordsTheCopyItQueued(t *testing.T) {
	h := newHarness(t)
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) { w.WriteHeader(http.StatusGone) })
	w := h.start(h.endpoint("orders", c.URL))
	h.publish("tx-given-up", event.StatusSuccess, "")
	eventually(t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	entries, _ := ListDLQ(t.Context(), h.js, DLQFilter{})
	ctx, cancel := context.WithCancel(t.Context())
	testCopyQueued = cancel // the caller gives up right as the copy is queued
	t.Cleanup(func() { testCopyQueued = nil })
	_, _ = Redrive(ctx, h.js, entries)
	// The record itself, not copies.of: the running worker may deliver
	// the copy (410 again) and settle it before this look, and of finds
	// no copy still stored then.
	kv, err := h.js.KeyValue(t.Context(), event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := kv.Get(t.Context(), redriveKey(entries[0].Seq))
	if err != nil {
		t.Fatalf("the queued copy is not recorded (%v): a redrive after the duplicate window queues a second", err)
	}
	if at, err := strconv.ParseUint(string(rec.Value()), 10, 64); err != nil || at == 0 {
		t.Fatalf("the queued copy's record is %q", rec.Value())
	}
}

// A redrive whose copy is stored but whose answer never comes (the caller
// gone as it waited, a publish timing out on a slow store) recorded no
// copy: a purge of the dead letter then left the copy queued, and the
// purged event was posted after all. The answer is held on the wire here,
// the caller gives up once the copy is stored, and the redrive must still
// record it.
func TestARedriveWhoseAnswerIsLostRecordsItsCopy(t *testing.T) {
	h := newHarness(t)
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) { w.WriteHeader(http.StatusGone) })
	w, stop := h.runWorker(h.endpoint("orders", c.URL))
	h.publish("tx-answer-lost", event.StatusSuccess, "")
	eventually(t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	stop() // its consumer stays; no worker takes the copy before the purge looks
	entries, err := ListDLQ(t.Context(), h.js, DLQFilter{})
	if err != nil {
		t.Fatal(err)
	}
	gate := &answerGate{}
	nc, err := nats.Connect(h.nats.URL(), nats.SetCustomDialer(gate), nats.CustomInboxPrefix("_SENGO_RELAY_INBOX"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gate.release(); nc.Close() })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	testCopyPublishing = func() {
		testCopyPublishing = nil
		gate.holdAnswers()
		go func() {
			// Stored: the caller gives up, its answer still on the wire.
			poll.Within(t, 10*time.Second, "the copy stored", func() bool {
				s, err := h.js.Stream(t.Context(), event.StreamReplay)
				return err == nil && s.CachedInfo().State.Msgs == 1
			})
			cancel()
		}()
	}
	t.Cleanup(func() { testCopyPublishing = nil })
	// The retry's answer says "duplicate" (the copy is the first try's):
	// counted all the same, as this redrive queued it. Not counted, a
	// slow store made a redrive that did its work say it redrove none.
	if n, err := Redrive(ctx, js, entries); n != 1 {
		t.Errorf("redrive: %d, %v; want the copy counted", n, err)
	}
	if _, err := Purge(t.Context(), h.js, entries); err != nil {
		t.Fatal(err)
	}
	s, err := h.js.Stream(t.Context(), event.StreamReplay)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("%d copies left after the purge: the purged event is posted after all", n)
	}
}

// answerGate, a dialer for a test's connection, holds what the server
// sends from holdAnswers until the connection's second write after it
// (the first is the request whose answer is held; the second its retry).
type answerGate struct {
	mu     sync.Mutex
	writes int
	held   chan struct{}
}

func (g *answerGate) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	return gatedConn{Conn: c, g: g}, err
}

func (g *answerGate) holdAnswers() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes, g.held = 2, make(chan struct{})
}

func (g *answerGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		close(g.held)
		g.held = nil
	}
}

type gatedConn struct {
	net.Conn
	g *answerGate
}

func (c gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.g.mu.Lock()
	held := c.g.held
	c.g.mu.Unlock()
	if held != nil {
		<-held
	}
	return n, err
}

func (c gatedConn) Write(p []byte) (int, error) {
	c.g.mu.Lock()
	if c.g.held != nil {
		if c.g.writes--; c.g.writes == 0 {
			close(c.g.held)
			c.g.held = nil
		}
	}
	c.g.mu.Unlock()
	return c.Conn.Write(p)
}

// An endpoint's rate limit goes to live events first: a replay gets the
// turns they leave. Taken in arrival order by every worker, and before a
// pull (an empty pull of the replay's consumer spent one), the replay's
// workers had a third of the limit while live events waited.
//
// The limit is 2 a second, not 10: a live event reserves its turn, and
// with two live workers each reserving the next one the replay finds a
// turn free only when a live worker takes longer than two turns (1 s
// here) to post, record, acknowledge and pull again. At 10 a second that
// was 200 ms, which a loaded CI machine running the race detector
// exceeded, and the replay's workers took the turns that freed on a
// correct relay.
func TestAReplayGetsTheTurnsLiveEventsLeave(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	ep.RateLimit, ep.Concurrency = 2, 2
	const n = 12
	for i := range n {
		h.publish(fmt.Sprintf("tx-rate-%d", i), event.StatusSuccess, "")
	}
	// The same 12 queued again as a replay before the endpoint starts:
	// its live consumer and its replay consumer each hold 12.
	w := h.worker(ep)
	if _, err := Replay(t.Context(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"orders"}}, nil); err != nil {
		t.Fatal(err)
	}
	h.run(w)
	// 12 live events at 2 a second take 5 s, and a relay that lets the
	// replay take every third turn about 8 s: longer than the mutants'
	// 6 s deadline, which would fail the test before the count below
	// could tell why. Their own deadline lets the count say it.
	poll.Within(t, 30*time.Second, "every live event delivered", func() bool {
		live := 0
		for _, a := range c.got() {
			if a.Header.Get("webhook-replay") == "" {
				live++
			}
		}
		return live == n
	})
	copies := 0
	for _, a := range c.got() {
		if a.Header.Get("webhook-replay") != "" {
			copies++
		}
	}
	t.Logf("%d copies delivered before the %d live events", copies, n)
	// The limit's burst (2 turns) is free at the start and goes to whoever
	// asks first: both to the replay when its worker has its copies before
	// the live workers have their events (0 to 2 in runs under load).
	// After that, none while live events wait, but for a live worker
	// stalled over a second: one more is allowed for it. (Taking turns in
	// arrival order, the replay took a third of all: 6 while the 12 live
	// events waited, in every run.)
	if copies > 3 {
		t.Fatalf("%d replayed copies delivered before the %d live events were: the replay took turns they waited for", copies, n)
	}
	// Then the replay has the whole limit: its 12 copies take 6 s. A relay
	// whose idle live workers spend a turn on each empty pull (one a
	// second each, the whole limit) left the replay a trickle: about 30 s.
	poll.Within(t, 15*time.Second, "the replay delivered too", func() bool { return len(c.got()) == 2*n && h.settled(w) })
}

// With no live events to deliver, a replay gets the whole rate limit. The
// turn was taken before the pull, and an empty pull (a second, waiting for
// a live event) spent one: idle live workers spent the limit, and a
// replay under a limit smaller than the endpoint's concurrency got none.
func TestAReplayAloneGetsTheWholeLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	const n = 6
	for i := range n {
		h.publish(fmt.Sprintf("tx-alone-%d", i), event.StatusSuccess, "")
	}
	_, stop := h.runWorker(h.endpoint("orders", c.URL))
	eventually(t, "delivered live", func() bool { return len(c.got()) == n })
	stop()
	ep := h.endpoint("orders", c.URL)
	ep.RateLimit, ep.Concurrency = 2, 4
	w := h.start(ep)
	if _, err := Replay(t.Context(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"orders"}}, nil); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, 15*time.Second, "the replay delivered at 2 a second", func() bool { return len(c.got()) == 2*n && h.settled(w) })
}

// A replay whose window ends later than it starts copies no event stored
// while it scans: that is live traffic, delivered already, and the scan
// (which reads on while events keep coming) posted it a second time, and
// under steady traffic never ended.
func TestAReplayEndsWhereItStarted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	h.start(ep)
	// More than a scan pulls at once (256): the event published at the
	// first one is stored before the scan asks for the rest, which it then
	// reaches. With two, both came in the first pull, its end counted
	// without the new one, and the test passed with the end not checked
	// (M339 survived a loaded CI run).
	const before = 300
	for i := range before {
		h.publish(fmt.Sprintf("tx-before-%d", i), event.StatusSuccess, "")
	}
	var once sync.Once
	req := ReplayRequest{Endpoints: []string{"orders"}, Until: time.Now().Add(time.Hour), DryRun: true}
	p, err := Replay(t.Context(), h.js, []Endpoint{ep}, req, func(ReplayProgress) {
		once.Do(func() { h.publish("tx-during", event.StatusSuccess, "") }) // stored while the replay scans
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Matched != before || p.Scanned != before {
		t.Fatalf("the replay scanned %d and selected %d events, want the %d stored before it started", p.Scanned, p.Matched, before)
	}
}

// A replayed copy waiting for a turn that live events keep taking was held
// by its worker for as long, unseen by the expiry guard: past
// SENGO_REPLAY's retention it was gone, with no dead letter. It goes back
// to SENGO_REPLAY after replayTurnMax, and comes again later.
func TestAReplayedCopyWithNoTurnFreeGoesBack(t *testing.T) {
	defer func(d time.Duration) { replayTurnMax = d }(replayTurnMax)
	replayTurnMax = 300 * time.Millisecond
	h := newHarness(t)
	c := newConsumer(t, status())
	h.publish("tx-copied", event.StatusSuccess, "")
	_, stop := h.runWorker(h.endpoint("orders", c.URL))
	eventually(t, "delivered live", func() bool { return len(c.got()) == 1 })
	stop()
	ep := h.endpoint("orders", c.URL)
	ep.RateLimit, ep.Concurrency = 2, 2
	const n = 12 // 6 s of live turns
	for i := range n {
		h.publish(fmt.Sprintf("tx-busy-%d", i), event.StatusSuccess, "")
	}
	w := h.start(ep)
	eventually(t, "live delivery under way", func() bool { return len(c.got()) > 1 })
	if _, err := Replay(t.Context(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"orders"}, TransactionID: "tx-copied"}, nil); err != nil {
		t.Fatal(err)
	}
	cons, err := h.js.Consumer(t.Context(), event.StreamReplay, ConsumerName("orders"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the copy put back while live events take every turn", func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.NumRedelivered > 0
	})
	poll.Within(t, 30*time.Second, "all delivered", func() bool { return len(c.got()) == n+2 && h.settled(w) })
}

// A replayed copy live events keep from every turn is dead-lettered
// before it ages out of SENGO_REPLAY: put back and taken again, it was
// never among the events the expiry guard looks at (those no worker was
// given yet), and was dropped with no dead letter.
func TestAReplayedCopyStarvedOfTurnsIsDeadLetteredBeforeItAgesOut(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	defer func(d time.Duration) { replayTurnMax = d }(replayTurnMax)
	replayTurnMax = 300 * time.Millisecond
	h := newHarness(t)
	c := newConsumer(t, status())
	h.publish("tx-starved", event.StatusSuccess, "")
	_, stop := h.runWorker(h.endpoint("orders", c.URL))
	eventually(t, "delivered live", func() bool { return len(c.got()) == 1 })
	stop()
	h.reconfigure(event.StreamReplay, func(cfg *jetstream.StreamConfig) { cfg.MaxAge, cfg.Duplicates = 4*time.Second, time.Second })
	ep := h.endpoint("orders", c.URL)
	ep.RateLimit, ep.Concurrency = 2, 2
	for i := range 16 { // 8 s of live turns
		h.publish(fmt.Sprintf("tx-busy-%d", i), event.StatusSuccess, "")
	}
	h.start(ep)
	eventually(t, "live delivery under way", func() bool { return len(c.got()) > 1 })
	if _, err := Replay(t.Context(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"orders"}, TransactionID: "tx-starved"}, nil); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, 15*time.Second, "the starved copy dead-lettered", func() bool {
		d := h.deadLetters()
		return len(d) == 1 && d[0].TransactionID == "tx-starved" && d[0].Replayed && d[0].Reason == ReasonExpiringInBacklog
	})
}

// Copies in SENGO_REPLAY stay there (7 days) after they are delivered. An
// endpoint's replay consumer made again from the start (the endpoint put
// back more than a day after its retirement, whose place is then
// forgotten; a consumer deleted by hand) posted each of them again: a
// first delivery read no record. A copy's record is read on every
// delivery, and one settled is not posted again.
func TestASettledCopyIsNotPostedAgainByAConsumerMadeAnew(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	h.deliverACopy(ep, c, "tx-copied")
	if err := h.js.DeleteConsumer(t.Context(), event.StreamReplay, ConsumerName("orders")); err != nil {
		t.Fatal(err)
	}
	h.publish("tx-later", event.StatusSuccess, "")
	h.runWorker(ep)
	eventually(t, "the later event delivered", func() bool { return len(c.got()) >= 3 })
	eventually(t, "the copy consumer made anew has read the copy", func() bool {
		s, err := h.js.Stream(t.Context(), event.StreamReplay)
		if err != nil {
			return false
		}
		info, err := s.Consumer(t.Context(), ConsumerName("orders"))
		if err != nil {
			return false
		}
		ci, err := info.Info(t.Context())
		return err == nil && ci.AckFloor.Stream >= 1
	})
	if n := len(c.got()); n != 3 {
		t.Fatalf("%d posts, want 3: the settled copy was posted again", n)
	}
}

// A replayed copy's record is kept under its sequence in SENGO_REPLAY.
// That stream made anew (an operator deleting it), its sequences start
// again, and the next copies took the sequences of the old ones: a copy's
// first delivery read the old one's done, and was acknowledged unposted.
// A record written before the copy was stored is another copy's.
func TestACopyIsNotTakenForAnOldCopyAtItsSequence(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	h.deliverACopy(ep, c, "tx-again")
	if err := h.js.DeleteStream(t.Context(), event.StreamReplay); err != nil {
		t.Fatal(err)
	}
	if err := stream.Provision(t.Context(), h.js, testSpec()); err != nil {
		t.Fatal(err)
	}
	h.runWorker(ep)
	if _, err := Replay(t.Context(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"orders"}}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new copy posted", func() bool { return len(c.got()) == 3 })
}

// deliverACopy has a worker of ep deliver txID's event to c, then a
// replayed copy of it, and stops once the copy is settled.
func (h *harness) deliverACopy(ep Endpoint, c *consumer, txID string) {
	h.t.Helper()
	h.publish(txID, event.StatusSuccess, "")
	w, stop := h.runWorker(ep)
	defer stop()
	eventually(h.t, "the live event delivered", func() bool { return len(c.got()) == 1 })
	if _, err := Replay(h.t.Context(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{ep.Name}}, nil); err != nil {
		h.t.Fatal(err)
	}
	eventually(h.t, "the copy delivered and settled", func() bool {
		_, replay, _, err := w.Pending(h.t.Context())
		return len(c.got()) == 2 && err == nil && replay == 0
	})
}

// A redrive and a purge of the same dead letter at once (two operators,
// or "Redrive all" beside "Purge all" over a long backlog) left the
// redriven copy of a purged dead letter waiting, and it was posted later
// after all: the purge found no copy recorded yet, and the redrive
// queued one for a dead letter no longer there. Whichever comes first,
// the copy goes with the dead letter.
func TestARedriveBesideAPurgeLeavesNoCopy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		order func(h *harness, entries []DLQEntry)
	}{
		{"purged while the copy is queued", func(h *harness, entries []DLQEntry) {
			testCopyQueued = func() {
				testCopyQueued = nil
				if _, err := Purge(h.t.Context(), h.js, entries); err != nil {
					h.t.Error(err)
				}
			}
			_, _ = Redrive(h.t.Context(), h.js, entries)
		}},
		{"redriven while the purge deletes, its caller gone", func(h *harness, entries []DLQEntry) {
			ctx, cancel := context.WithCancel(h.t.Context())
			testPurgeLooked = func() {
				testPurgeLooked = nil
				if _, err := Redrive(h.t.Context(), h.js, entries); err != nil {
					h.t.Error(err)
				}
				cancel() // the API client leaves, Ctrl-C in the CLI
			}
			_, _ = Purge(ctx, h.js, entries)
		}},
		{"redriven while the purge deletes", func(h *harness, entries []DLQEntry) {
			testPurgeLooked = func() {
				testPurgeLooked = nil
				if _, err := Redrive(h.t.Context(), h.js, entries); err != nil {
					h.t.Error(err)
				}
			}
			if _, err := Purge(h.t.Context(), h.js, entries); err != nil {
				h.t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { testCopyQueued, testPurgeLooked = nil, nil })
			h := newHarness(t)
			c := newConsumer(t, func(n int, _ *http.Request, w http.ResponseWriter) {
				if n == 1 {
					w.WriteHeader(http.StatusGone)
					return
				}
				w.WriteHeader(http.StatusServiceUnavailable) // a copy waits 10 minutes for its retry
			})
			h.start(h.endpoint("orders", c.URL, 10*time.Minute))
			h.publish("tx-rp", event.StatusSuccess, "")
			eventually(t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 })
			entries, err := ListDLQ(t.Context(), h.js, DLQFilter{Endpoint: "orders"})
			if err != nil || len(entries) != 1 {
				t.Fatalf("%d dead letters (%v)", len(entries), err)
			}
			// In a cluster a replica not caught up answers a direct get
			// without what was just written: the looks are the leader's.
			var direct, leader atomic.Int64
			for subject, n := range map[string]*atomic.Int64{
				"$JS.API.DIRECT.GET." + event.StreamDLQ: &direct, "$JS.API.DIRECT.GET." + event.StreamReplay: &direct,
				"$JS.API.DIRECT.GET.KV_" + event.BucketDelivery + ".$KV." + event.BucketDelivery + "._redrive.>": &direct,
				"$JS.API.STREAM.MSG.GET.>": &leader,
			} {
				sub, err := h.js.Conn().Subscribe(subject, func(*nats.Msg) { n.Add(1) })
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = sub.Unsubscribe() })
			}
			_ = h.js.Conn().Flush()
			tc.order(h, entries)
			if direct.Load() != 0 || leader.Load() == 0 {
				t.Errorf("%d direct gets, %d from the leader: want every look the leader's", direct.Load(), leader.Load())
			}
			if n := len(h.deadLetters()); n != 0 {
				t.Fatalf("%d dead letters left after the purge", n)
			}
			for _, m := range natstest.Messages(t, h.js, event.StreamReplay) {
				if m.Subject == event.ReplaySubject("orders") {
					t.Fatalf("the redriven copy of a purged dead letter still waits (#%d): it is posted later after all", m.Sequence)
				}
			}
		})
	}
}
