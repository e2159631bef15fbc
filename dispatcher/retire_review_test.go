package dispatcher

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
)

// relayRetirer runs RunRetirer for a relay named instance that delivers
// endpoints, looks every every and syncs its dead letters with d (nil:
// none), until the returned stop is called or the test ends. Its log lines
// carry the instance.
func (h *harness) relayRetirer(instance string, every time.Duration, d Durability, endpoints ...string) (stop func()) {
	return h.relayRetirerBeat(instance, every, 0, d, endpoints...)
}

// relayRetirerBeat is relayRetirer writing its heartbeat every beat (0:
// beatEvery).
func (h *harness) relayRetirerBeat(instance string, every, beat time.Duration, d Durability, endpoints ...string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunRetirer(ctx, RetireConfig{JetStream: h.js, Configured: endpoints, Instance: instance, Durable: d, Metrics: h.metrics,
			Logger: zerolog.New(h.logs).With().Str("instance", instance).Logger(), Every: every, Quiet: time.Millisecond, Beat: beat})
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	h.t.Cleanup(stop)
	return stop
}

// heartbeatOf returns instance's heartbeat entry, or nil.
func (h *harness) heartbeatOf(instance string) (created time.Time, ok bool) {
	kv, err := h.js.KeyValue(context.Background(), event.BucketDelivery)
	if err != nil {
		h.t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), relayKey(instance))
	if err != nil {
		return time.Time{}, false
	}
	return e.Created(), true
}

// deadFor returns the transactions dead-lettered for endpoint.
func (h *harness) deadFor(endpoint string) []string {
	var out []string
	for _, d := range h.deadLetters() {
		if d.Endpoint == endpoint {
			out = append(out, d.TransactionID+"/"+d.Reason)
		}
	}
	return out
}

// gateSync is a Durability whose first Sync blocks until release is
// closed: it holds a retiring relay in the middle of a batch.
type gateSync struct {
	entered, release chan struct{}
	once             sync.Once
}

func newGateSync() *gateSync {
	return &gateSync{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateSync) Sync(ctx context.Context) error {
	g.once.Do(func() { close(g.entered) })
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A relay retiring a removed endpoint reads the heartbeats once per batch
// of up to 100 events (retire.go: stillRemoved, then FetchNoWait(100), then
// settle each). A relay that delivers the endpoint again (a rollback of
// the removal) and starts while a batch is being settled has the batch's
// later events acknowledged for it without a dead letter: delivered
// nowhere, recorded nowhere. The README says the heartbeats are read again
// "before dropping a later event".
func TestRetireRechecksHeartbeatsBeforeDroppingEachLaterEvent(t *testing.T) {
	fastBeats(t)
	h := newHarness(t)
	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()
	// "orders" was removed from every relay's configuration: its consumer
	// holds tx-1.
	if _, err := NewWorker(context.Background(), WorkerConfig{Endpoint: h.endpoint("orders", "http://127.0.0.1:1"), JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs)}); err != nil {
		t.Fatal(err)
	}
	h.publish("tx-1", event.StatusSuccess, "")
	// A relay found it abandoned while only tx-1 was stored (the shared
	// cutoff), then stopped.
	stopFirst := h.relayRetirer("first", time.Hour, nil, "current")
	eventually(t, "orders found abandoned", func() bool {
		return strings.Contains(h.logs.String(), `"consumer":"webhook-orders","stream":"SENGO_EVENTS"`)
	})
	stopFirst()
	h.publish("tx-2", event.StatusSuccess, "")
	h.publish("tx-3", event.StatusSuccess, "")

	// "here" retires it: it dead-letters tx-1, with tx-2 and tx-3 in the
	// same batch. Its dead letter's sync is held up.
	gate := newGateSync()
	h.relayRetirer("here", 100*time.Millisecond, gate, "current")
	eventually(t, "here retiring orders", func() bool { return closed(gate.entered) })

	// Meanwhile the removal is rolled back: a relay delivering orders starts.
	c := newConsumer(t, status())
	h.relayRetirer("back", time.Hour, nil, "orders")
	eventually(t, "back's heartbeat", func() bool { _, ok := h.heartbeatOf("back"); return ok })
	w := h.start(h.endpoint("orders", c.URL))
	close(gate.release)

	eventually(t, "here sees orders delivered again", func() bool {
		return strings.Contains(h.logs.String(), "a relay delivers this endpoint again")
	})
	eventually(t, "orders has nothing pending", func() bool {
		live, replay, _, err := w.Pending(context.Background())
		return err == nil && live == 0 && replay == 0
	})
	delivered, dead := c.statuses(), h.deadFor("orders")
	for _, tx := range []string{"tx-2", "tx-3"} {
		if !slices.Contains(delivered, tx+"/success") && !slices.Contains(dead, tx+"/"+ReasonRemoved) {
			t.Errorf("%s was acknowledged for orders while a relay delivered orders: neither delivered (%v) nor dead-lettered (%v)", tx, delivered, dead)
		}
	}
}

// A relay that stops deletes its heartbeat at once (retire.go heartbeats),
// and an endpoint held or paused has been idle for longer than
// retire_removed_after already: the relays that do not have it retire it
// at their next two looks (30 s apart in production). So a relay that
// delivers a held endpoint and restarts, away for a few look intervals, has
// the endpoint's held backlog dead-lettered (and what arrives meanwhile
// acknowledged without a dead letter), where a relay that crashed would
// have been covered for two minutes (heartbeatFresh). "Events wait in the
// stream, nothing is lost or dead-lettered" is what a hold promises.
func TestHeldEndpointIsNotRetiredWhileItsRelayRestarts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()
	if err := Hold(context.Background(), h.js, "elsewhere", "ops"); err != nil {
		t.Fatal(err)
	}
	c := newConsumer(t, status())
	w, stopWorker := h.runWorker(h.endpoint("elsewhere", c.URL))
	eventually(t, "the worker sees the hold", func() bool { return w.Held().Held })
	h.publish("tx-1", event.StatusSuccess, "")
	h.publish("tx-2", event.StatusSuccess, "")
	stopThere := h.relayRetirer("there", time.Hour, nil, "elsewhere")
	eventually(t, "there's heartbeat", func() bool { _, ok := h.heartbeatOf("there"); return ok })
	h.relayRetirer("here", 100*time.Millisecond, nil, "current")
	eventually(t, "here's heartbeat", func() bool { _, ok := h.heartbeatOf("here"); return ok })

	// "there" restarts: it is away for one second (ten of here's look
	// intervals, a 60th of heartbeatFresh).
	stopWorker()
	stopThere()
	away := time.Now().Add(time.Second)
	for time.Now().Before(away) && len(h.deadFor("elsewhere")) == 0 {
		time.Sleep(10 * time.Millisecond) // polling, as poll.Within
	}
	h.relayRetirer("there-2", time.Hour, nil, "elsewhere")
	eventually(t, "there-2's heartbeat", func() bool { _, ok := h.heartbeatOf("there-2"); return ok })
	if dead := h.deadFor("elsewhere"); len(dead) != 0 {
		t.Fatalf("the held endpoint's backlog was dead-lettered while its relay restarted: %v", dead)
	}
	if !h.consumerExists(event.StreamEvents, "webhook-elsewhere") {
		t.Fatal("the held endpoint's consumer was deleted while its relay restarted")
	}
}

// While SENGO_DELIVERY refuses writes every heartbeat ages alike, and
// judging them against this relay's own keeps them current. But once it
// takes writes again, the first relay to write sees every other heartbeat
// as old as the outage, and its two looks in a row are Every apart:
// min(30s, retire_removed_after/2), shorter than the 10 s between two
// heartbeats when retire_removed_after is under 20 s. It retires the held
// endpoint of a relay that simply had not written yet.
func TestRetireWaitsForHeartbeatsAfterTheStoreTakesWritesAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	savedEvery, savedFresh := beatEvery, heartbeatFresh
	beatEvery, heartbeatFresh = 2*time.Second, time.Second // a heartbeat is current for 6 s
	t.Cleanup(func() { beatEvery, heartbeatFresh = savedEvery, savedFresh })
	h := newHarness(t)
	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()
	if err := Hold(context.Background(), h.js, "elsewhere", "ops"); err != nil {
		t.Fatal(err)
	}
	c := newConsumer(t, status())
	w := h.start(h.endpoint("elsewhere", c.URL))
	eventually(t, "the worker sees the hold", func() bool { return w.Held().Held })
	h.publish("tx-1", event.StatusSuccess, "")
	h.publish("tx-2", event.StatusSuccess, "")
	h.relayRetirer("there", time.Hour, nil, "elsewhere")
	var last time.Time
	eventually(t, "there's heartbeat", func() bool { var ok bool; last, ok = h.heartbeatOf("there"); return ok })

	// The store refuses writes for longer than a heartbeat stays current.
	restore := natstest.RefuseWrites(t, h.js, "KV_"+event.BucketDelivery)
	failed := func() int { return strings.Count(h.logs.String(), "relay heartbeat not written") }
	poll.Within(t, 20*time.Second, "an outage longer than a heartbeat stays current", func() bool {
		return time.Since(last) > 3*beatEvery+time.Second
	})
	n := failed()
	eventually(t, "there's next heartbeat refused", func() bool { return failed() > n })
	restore()
	// A relay that does not have "elsewhere" writes first after the
	// outage (it starts now; one already running whose tick comes first
	// does the same). It writes its own heartbeat ten times as often
	// (a shorter retire_removed_after): the time it waits is three of the
	// slowest relay's heartbeats, not three of its own.
	h.relayRetirerBeat("here", 100*time.Millisecond, 200*time.Millisecond, nil, "current")
	eventually(t, "there's heartbeat written again", func() bool { at, ok := h.heartbeatOf("there"); return ok && at.After(last) })
	if dead := h.deadFor("elsewhere"); len(dead) != 0 {
		t.Fatalf("the held endpoint of a running relay was retired after the store recovered: %v", dead)
	}
	if !h.consumerExists(event.StreamEvents, "webhook-elsewhere") {
		t.Fatal("the held endpoint's consumer of a running relay was deleted after the store recovered")
	}
}

// A relay whose heartbeat has not been written for longer than an endpoint
// may go unnamed (its NATS node partitioned away, a long pause) is taken
// for gone, and its endpoint's consumer is retired and deleted. When it is
// back and its heartbeat names the endpoint again, its worker pulled from
// the deleted consumer for good (worker.go pullOne: "deleted by hand:
// restart the relay"), and a restart created the consumer at deliver_from
// (new by default), skipping every event in between. The worker now
// creates it again where the retired one stopped: what was dead-lettered
// is not sent again, what came after is delivered.
func TestEndpointRetiredWhileItsRelayWasAwayIsDeliveredWhenItIsBack(t *testing.T) {
	fastBeats(t)
	h := newHarness(t)
	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()
	if err := Hold(context.Background(), h.js, "elsewhere", "ops"); err != nil {
		t.Fatal(err)
	}
	c := newConsumer(t, status())
	ep := h.endpoint("elsewhere", c.URL)
	ep.DeliverFrom = "new"
	w := h.start(ep)
	eventually(t, "the worker sees the hold", func() bool { return w.Held().Held })
	h.publish("tx-1", event.StatusSuccess, "")
	// Its relay's heartbeat is not being written: the retirer takes it for
	// gone.
	h.relayRetirer("here", 100*time.Millisecond, nil, "current")
	eventually(t, "elsewhere retired", func() bool {
		return !h.consumerExists(event.StreamEvents, "webhook-elsewhere") && !h.consumerExists(event.StreamReplay, "webhook-elsewhere")
	})
	if dead := h.deadFor("elsewhere"); !slices.Equal(dead, []string{"tx-1/" + ReasonRemoved}) {
		t.Fatalf("dead letters of elsewhere %v, want tx-1's", dead)
	}
	h.publish("tx-2", event.StatusSuccess, "") // while its relay is still away

	// The relay is back: its heartbeat names elsewhere, the hold is released.
	h.relayRetirer("there", time.Hour, nil, "elsewhere")
	eventually(t, "there's heartbeat", func() bool { _, ok := h.heartbeatOf("there"); return ok })
	if err := Release(context.Background(), h.js, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, 10*time.Second, "tx-2 delivered to elsewhere, whose relay runs and names it", func() bool {
		return slices.Contains(c.statuses(), "tx-2/success")
	})
	if slices.Contains(c.statuses(), "tx-1/success") {
		t.Error("tx-1, dead-lettered when elsewhere was retired, was sent again: the consumer was created again before its place")
	}
}
