package dispatcher

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
	"github.com/sengo-relay/sengo-relay/stream"
)

// An operator's hold stops deliveries (events wait in the stream, none is
// dead-lettered) until it is released; then they go out. A test send goes
// through the hold and reports the answer.
func TestHoldStopsDeliveriesUntilReleased(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	w := h.start(h.endpoint("orders", c.URL))
	if err := Hold(context.Background(), h.js, "orders", "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the worker sees the hold", func() bool { return w.Held().Held && w.Held().By == "test" })
	h.publish("tx-held", "success", "")
	waits := func() float64 { return testutil.ToFloat64(h.metrics.HeldWaits.WithLabelValues("orders")) }
	before := waits()
	// Every pulling goroutine has skipped at least twice since the event
	// was stored: a delivery would have had its chance.
	eventually(t, "held workers skipping pulls", func() bool { return waits() >= before+float64(2*(4+2)) })
	if n := len(c.got()); n != 0 {
		t.Fatalf("%d deliveries while held", n)
	}
	if testutil.ToFloat64(h.metrics.Held.WithLabelValues("orders")) != 1 {
		t.Error("sengo_relay_endpoint_held is not 1")
	}
	res := w.TestSend(context.Background())
	if !res.OK || res.Status != http.StatusOK || len(c.got()) != 1 || c.got()[0].Header.Get("webhook-id") != res.EventID {
		t.Fatalf("test send %+v, consumer got %d", res, len(c.got()))
	}
	if err := Release(context.Background(), h.js, "orders"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivered after release", func() bool { return len(c.got()) == 2 && h.settled(w) })
	if len(h.deadLetters()) != 0 {
		t.Error("a hold dead-lettered an event")
	}
}

// A hold lasts until released or for SENGO_DELIVERY's TTL; but a key the
// TTL removes leaves no delete marker, so running relays never saw it go
// and stayed held until restarted. A held worker reads its key again.
func TestHoldThatExpiresIsLifted(t *testing.T) {
	saved := holdRecheck
	holdRecheck = 50 * time.Millisecond
	t.Cleanup(func() { holdRecheck = saved })
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	spec := testSpec()
	spec.Buckets[0].TTL = 3 * time.Second // the worker must see the hold before it expires, even on a loaded machine
	if err := stream.Provision(context.Background(), js, spec); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, nats: srv, js: js, metrics: NewMetrics(prometheus.NewRegistry()), logs: &syncbuf.Buffer{}}
	c := newConsumer(t, status())
	w := h.start(h.endpoint("orders", c.URL))
	if err := Hold(context.Background(), h.js, "orders", "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the worker sees the hold", func() bool { return w.Held().Held })
	h.publish("tx-ttl", "success", "")
	eventually(t, "delivered once the hold expired", func() bool { return len(c.got()) == 1 && !w.Held().Held })
}

// A relay that starts while its endpoint is held (a deploy during the
// consumer's maintenance) pulled at once, and learned of the hold only
// when its watch of the hold key first answered: a pull on a backlog is
// answered sooner, so the held endpoint got up to a batch of events (a
// 410 from it, under maintenance, dead-lettered them). A worker delivers
// only once it knows whether its endpoint is held.
func TestAWorkerStartingWhileHeldDeliversNothing(t *testing.T) {
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	if _, err := NewWorker(context.Background(), WorkerConfig{Endpoint: ep, JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs)}); err != nil {
		t.Fatal(err) // its consumers exist: the backlog below waits in them
	}
	if err := Hold(context.Background(), h.js, "orders", "test"); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		h.publish(fmt.Sprintf("tx-held-%d", i), "success", "")
	}
	// The watch answers late, as a slow store's would: the pulls, which
	// the store answers at once on a backlog, must wait for it. A worker
	// stopped lets the attempts it made finish, so each made is counted.
	saved := holdWatchDelay
	holdWatchDelay = 300 * time.Millisecond
	t.Cleanup(func() { holdWatchDelay = saved })
	for start := range 3 {
		w, stop := h.runWorker(ep)
		eventually(t, "the worker sees the hold", func() bool { return w.Held().Held })
		stop()
		if n := len(c.got()); n != 0 {
			t.Fatalf("start %d: %d deliveries to a held endpoint from a worker started while it was held", start+1, n)
		}
	}
	w := h.start(ep)
	if err := Release(context.Background(), h.js, "orders"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivered after release", func() bool { return len(c.got()) == 8 && h.settled(w) })
}

// An event a worker holds while it waits for its turn under the rate limit
// is not attempted once the endpoint is held meanwhile: it goes back to
// the stream.
func TestAHoldStopsAnEventWaitingForItsTurn(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	// A turn every 2 s: the first event goes at once (the burst), and the
	// two live workers then wait for their turns, 2 s and 4 s later.
	ep.RateLimit, ep.Concurrency = 0.5, 2
	w := h.start(ep)
	for i := range 4 {
		h.publish(fmt.Sprintf("tx-turn-%d", i), "success", "")
	}
	eventually(t, "the first delivered", func() bool { return len(c.got()) >= 1 })
	first := c.got()[0].At
	if err := Hold(context.Background(), h.js, "orders", "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the worker sees the hold", func() bool { return w.Held().Held })
	seen := time.Now()
	waits := func() float64 { return testutil.ToFloat64(h.metrics.HeldWaits.WithLabelValues("orders")) }
	before := waits()
	// The workers skip pulls while held (the replay consumer's every
	// 200 ms, the live ones' once they hold no event), and the window
	// lasts past both turns.
	eventually(t, "held past both turns", func() bool { return waits() >= before+30 && time.Since(first) > 5*time.Second })
	// Only posts that reach the consumer over a second after the worker
	// saw the hold are judged: one that passed its last look at the hold
	// just before may still arrive after it, and on a loaded machine it
	// did, after posted was counted, failing a correct relay. An event
	// that waited for its turn goes at the turn, a second or more later.
	var late []time.Time
	for _, a := range c.got() {
		if a.At.After(seen.Add(time.Second)) {
			late = append(late, a.At)
		}
	}
	if len(late) > 0 {
		t.Fatalf("%d posted while held (the hold seen %s after the first post, the first of them %s after the hold): an event waiting for its turn went anyway",
			len(late), seen.Sub(first), late[0].Sub(seen))
	}
}
