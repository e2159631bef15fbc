package dispatcher

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/stream"
)

// storeDeadLetter stores, as a worker would, the dead letter of ev for
// endpoint.
func (h *harness) storeDeadLetter(endpoint string, ev event.Event) {
	h.t.Helper()
	b, err := event.Marshal(ev)
	if err != nil {
		h.t.Fatal(err)
	}
	d, err := json.Marshal(DeadLetter{Endpoint: endpoint, EventID: ev.ID, TransactionID: ev.Data.TransactionID, MerchantRef: ev.Data.MerchantRef,
		Reason: ReasonExhausted, Subject: event.EventSubject(event.ProjectOf(ev.Source), ev.Data.Product, ev.Data.Status), DeadAt: time.Now().UTC(), Event: b})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.js.PublishMsg(h.t.Context(), &nats.Msg{Subject: event.DLQTxSubject(endpoint, ev.Data.TransactionID), Data: d,
		Header: nats.Header{event.HeaderEventID: []string{ev.ID}, "Sengo-Reason": []string{ReasonExhausted}}}); err != nil {
		h.t.Fatal(err)
	}
}

// A dead-letter filter selects its own and no other: a redrive or a
// purge by merchantRef, project, or one dead letter's number for one
// endpoint, acts on what an operator selected, never on every dead letter
// or another endpoint's.
func TestDeadLetterFiltersSelectOnlyTheirOwn(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.publish("tx-a", event.StatusSuccess, "")
	b := h.publish("tx-b", event.StatusSuccess, "")
	other := b
	other.ID, other.Source, other.Data.TransactionID, other.Data.MerchantRef = "evt_other_b", "sengo/other", "tx-c", "REF-tx-c"
	h.storeDeadLetter("orders", a)     // seq 1
	h.storeDeadLetter("orders", b)     // seq 2
	h.storeDeadLetter("shipping", b)   // seq 3
	h.storeDeadLetter("orders", other) // seq 4
	for name, c := range map[string]struct {
		f    DLQFilter
		want []uint64
	}{
		"merchantRef":              {DLQFilter{MerchantRef: "REF-tx-a"}, []uint64{1}},
		"project":                  {DLQFilter{Project: "other"}, []uint64{4}},
		"project and endpoint":     {DLQFilter{Project: "main", Endpoint: "orders"}, []uint64{1, 2}},
		"one number":               {DLQFilter{Seq: 3}, []uint64{3}},
		"one number, its endpoint": {DLQFilter{Seq: 3, Endpoint: "shipping"}, []uint64{3}},
		"one number, another's":    {DLQFilter{Seq: 3, Endpoint: "orders"}, nil},
	} {
		entries, err := ListDLQ(t.Context(), h.js, c.f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got []uint64
		for _, e := range entries {
			got = append(got, e.Seq)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: dead letters %v, want %v", name, got, c.want)
		}
	}
}

// A redrive, a purge or a replay whose write the store refuses says so,
// and a redrive or a purge keeps the dead letter: reported done, the
// operator took a dead letter for redriven (or gone) that was neither.
func TestARefusedRedrivePurgeOrReplaySaysSo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ep := h.endpoint("orders", "http://127.0.0.1:1")
	if _, err := NewWorker(t.Context(), WorkerConfig{Endpoint: ep, JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs)}); err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	ev := h.publish("tx-refused", event.StatusSuccess, "")
	h.storeDeadLetter("orders", ev)
	entries, err := ListDLQ(t.Context(), h.js, DLQFilter{})
	if err != nil || len(entries) != 1 {
		t.Fatalf("dead letters %v %v", entries, err)
	}

	restore := natstest.RefuseWrites(t, h.js, event.StreamReplay)
	if n, err := Redrive(t.Context(), h.js, entries); err == nil || n != 0 {
		t.Errorf("a redrive whose copy was refused: %d redriven, %v; want 0 and an error", n, err)
	}
	if p, err := Replay(t.Context(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"orders"}, Since: since}, nil); err == nil || p.Done {
		t.Errorf("a replay whose copy was refused: %+v, %v; want an error, not done", p, err)
	}
	restore()
	if n := len(natstest.Messages(t, h.js, event.StreamReplay)); n != 0 {
		t.Fatalf("%d copies queued while SENGO_REPLAY refused them", n)
	}

	// The record is the copy's sequence, and RefuseWrites lets a value of
	// one byte through: the copy goes past sequence 9.
	for range 9 {
		if _, err := h.js.Publish(t.Context(), event.ReplaySubject("elsewhere"), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	restore = natstest.RefuseWrites(t, h.js, "KV_"+event.BucketDelivery)
	if n, err := Redrive(t.Context(), h.js, entries); err == nil {
		t.Errorf("a redrive whose copy could not be recorded reported no error (%d redriven, %d copies)", n, len(natstest.Messages(t, h.js, event.StreamReplay)))
	}
	restore()

	h.reconfigure(event.StreamDLQ, func(cfg *jetstream.StreamConfig) { cfg.DenyDelete = true })
	if n, err := Purge(t.Context(), h.js, entries); err == nil || n != 0 {
		t.Errorf("a purge whose delete was refused: %d purged, %v; want 0 and an error", n, err)
	}
	if n := len(h.deadLetters()); n != 1 {
		t.Fatalf("%d dead letters, want the one neither redrive nor purge removed", n)
	}
}

// A replay to two endpoints queues a copy for each, and one by
// merchantRef alone copies that merchantRef's events only.
func TestAReplayByMerchantRefToTwoEndpoints(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var eps []Endpoint
	for _, name := range []string{"orders", "shipping"} {
		ep := h.endpoint(name, "http://127.0.0.1:1")
		if _, err := NewWorker(t.Context(), WorkerConfig{Endpoint: ep, JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs)}); err != nil {
			t.Fatal(err)
		}
		eps = append(eps, ep)
	}
	since := time.Now()
	mine := h.publish("tx-mine", event.StatusSuccess, "")
	h.publish("tx-other", event.StatusSuccess, "")
	p, err := Replay(t.Context(), h.js, eps, ReplayRequest{Endpoints: []string{"orders", "shipping"}, Since: since, MerchantRef: mine.Data.MerchantRef}, nil)
	if err != nil || p.Queued != 2 {
		t.Fatalf("replay: %+v, %v; want 2 queued", p, err)
	}
	got := map[string]string{}
	for _, m := range natstest.Messages(t, h.js, event.StreamReplay) {
		got[m.Subject] = m.Header.Get(event.HeaderEventID)
	}
	if want := map[string]string{event.ReplaySubject("orders"): mine.ID, event.ReplaySubject("shipping"): mine.ID}; !mapsEqual(got, want) {
		t.Fatalf("copies %v, want %v", got, want)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// An endpoint's answer is read up to what its excerpt keeps: a hostile
// endpoint streaming gigabytes in its answer was read whole into memory.
func TestAnAnswersBodyIsReadOnlySoFar(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var written atomic.Int64
	var finished atomic.Bool
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) {
		defer finished.Store(true)
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	w := h.start(h.endpoint("orders", c.URL))
	h.publish("tx-flood", event.StatusSuccess, "")
	eventually(t, "the event delivered", func() bool { return len(c.got()) == 1 && h.settled(w) })
	eventually(t, "the endpoint's answer ended", finished.Load)
	if n := written.Load(); n >= 32<<20 {
		t.Fatalf("the endpoint wrote %d MiB of its answer before the relay stopped reading, want a few", n>>20)
	}
}

// A SENGO_EVENTS made anew (deleted with its consumers and provisioned
// again: its sequences start again) gets the endpoint's consumer again from
// deliver_from, not from the old stream's place: from there, the new
// stream's first events were skipped for good.
func TestAnEventsStreamMadeAnewIsDeliveredFromItsStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	w := h.start(h.endpoint("orders", c.URL))
	for _, tx := range []string{"tx-old-1", "tx-old-2", "tx-old-3"} {
		h.publish(tx, event.StatusSuccess, "")
	}
	eventually(t, "the old stream's events delivered", func() bool { return len(c.got()) == 3 && h.settled(w) })
	if err := h.js.DeleteStream(t.Context(), event.StreamEvents); err != nil {
		t.Fatal(err)
	}
	if err := stream.Provision(t.Context(), h.js, testSpec()); err != nil {
		t.Fatal(err)
	}
	for _, tx := range []string{"tx-new-1", "tx-new-2", "tx-new-3", "tx-new-4"} {
		h.publish(tx, event.StatusSuccess, "")
	}
	eventually(t, "every event of the new stream delivered", func() bool {
		for _, tx := range []string{"tx-new-1", "tx-new-2", "tx-new-3", "tx-new-4"} {
			if countFor(c, tx) != 1 {
				return false
			}
		}
		return true
	})
}

// An answer whose body stops coming (cut after answerBodyWait) is kept
// without the start of a secret at its end: taken as complete, the part
// of the endpoint's signing secret it had sent stayed in the dead letter
// (the scrub removes a secret only whole).
func TestACutAnswerKeepsNoStartOfASecret(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	release := make(chan struct{})
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) {
		w.WriteHeader(http.StatusGone) // dead-lettered at once
		_, _ = io.WriteString(w, "refused, expected "+secretA[:14])
		w.(http.Flusher).Flush()
		select { // the rest never comes (until the test ends)
		case <-release:
		case <-time.After(time.Minute):
		}
	})
	h.start(h.endpoint("orders", c.URL))
	t.Cleanup(func() { close(release) }) // before the consumer's own, which waits for the answer
	h.publish("tx-cut", event.StatusSuccess, "")
	eventually(t, "the dead letter", func() bool { return len(h.deadLetters()) == 1 })
	if got := h.deadLetters()[0].ResponseExcerpt; got != "refused, expected " {
		t.Fatalf("the excerpt of a cut answer is %q, want it without the start of the secret", got)
	}
}

// The same, for the same event dead-lettered for another endpoint at
// that sequence: its event id matches, and only the endpoint tells it is
// not the copy's. Removed, the other endpoint's failed delivery was left
// with no trace and nothing to redrive.
func TestASettledCopyLeavesAnotherEndpointsDeadLetterOfItsEvent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	release, shipGo := make(chan struct{}), make(chan struct{})
	var releaseOnce, shipOnce sync.Once
	let := func() { releaseOnce.Do(func() { close(release) }) }
	ship := func() { shipOnce.Do(func() { close(shipGo) }) }
	orders := newConsumer(t, status())
	orders.answer = func(n int, _ *http.Request, w http.ResponseWriter) {
		if n == 1 {
			w.WriteHeader(http.StatusGone) // the live event: dead-lettered at once
			return
		}
		<-release // the redriven copy waits until the test has looked
		w.WriteHeader(http.StatusOK)
	}
	shipping := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) {
		<-shipGo // dead-lettered once SENGO_DLQ is made anew
		w.WriteHeader(http.StatusGone)
	})
	t.Cleanup(let) // before the consumers close: a test that failed first does not hang there
	t.Cleanup(ship)
	wo := h.start(h.endpoint("orders", orders.URL))
	ws := h.start(h.endpoint("shipping", shipping.URL))
	ev := h.publish("tx-both", event.StatusSuccess, "")
	eventually(t, "dead-lettered for orders", func() bool { return len(h.deadLetters()) == 1 && h.settled(wo) })
	entries, _ := ListDLQ(t.Context(), h.js, DLQFilter{Endpoint: "orders"})
	if n, err := Redrive(t.Context(), h.js, entries); err != nil || n != 1 {
		t.Fatalf("redrive %d %v", n, err)
	}
	eventually(t, "the copy posted", func() bool { return len(orders.got()) == 2 })
	h.remakeDLQ()
	ship()
	eventually(t, "dead-lettered for shipping in the new SENGO_DLQ", func() bool { return len(h.deadLetters()) == 1 && h.settled(ws) })
	let()
	eventually(t, "the copy settled", func() bool { return h.settled(wo) })
	got := h.deadLetters()
	if len(got) != 1 || got[0].Endpoint != "shipping" || got[0].EventID != ev.ID {
		t.Fatalf("dead letters %+v, want shipping's of %s", got, ev.ID)
	}
}
