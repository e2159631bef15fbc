package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/stream"
)

// An endpoint's filter narrowed (a project or status taken out of it)
// takes effect for the events it already had: nats-server gives a
// consumer's redeliveries again whatever its new filter says, and each
// retry of an event the endpoint no longer takes, another project's
// payment say, went to it for days, then into its dead letters, where a
// redrive sent it again. Such an event is settled unposted ("filtered"),
// and a redriven copy of one removes its dead letter.
func TestANarrowedFilterStopsWhatTheEndpointNoLongerTakes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) { w.WriteHeader(500) })
	wide := h.endpoint("orders", c.URL, 10*time.Millisecond)
	w1 := h.worker(wide)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w1.Run(ctx) }()
	dead := h.publish("tx-dead", event.StatusFailed, "")
	eventually(t, "the failed event's dead letter", func() bool { return len(h.deadLetters()) == 1 })
	wide.Schedule = []time.Duration{300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}
	cancel()
	<-done
	w2 := h.worker(wide)
	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() { defer close(done); w2.Run(ctx) }()
	h.publish("tx-retried", event.StatusFailed, "")
	eventually(t, "the second event attempted", func() bool { return countFor(c, "tx-retried") >= 1 })
	cancel()
	<-done

	narrow := h.endpoint("orders", c.URL, 10*time.Millisecond)
	narrow.FilterSubjects = []string{event.EventSubject("main", event.ProductRetail, event.StatusSuccess)}
	w := h.start(narrow)
	attempts := len(c.got())
	eventually(t, "the event in retry settled", func() bool { return h.settled(w) })
	entries, err := ListDLQ(t.Context(), h.js, DLQFilter{Endpoint: "orders", TransactionID: "tx-dead"})
	if err != nil || len(entries) != 1 || entries[0].EventID != dead.ID {
		t.Fatalf("dead letters %+v: %v", entries, err)
	}
	if n, err := Redrive(t.Context(), h.js, entries); err != nil || n != 1 {
		t.Fatalf("redrive %d: %v", n, err)
	}
	eventually(t, "the redriven copy settled and its dead letter removed", func() bool {
		left, err := ListDLQ(t.Context(), h.js, DLQFilter{})
		return err == nil && len(left) == 0 && h.settled(w)
	})
	// A replay run with the old configuration (a CLI's stale file).
	if p, err := Replay(t.Context(), h.js, []Endpoint{wide}, ReplayRequest{Endpoints: []string{"orders"}, Since: time.Now().Add(-time.Hour)}, nil); err != nil || p.Queued != 2 {
		t.Fatalf("replay queued %d: %v", p.Queued, err)
	}
	eventually(t, "the replayed copies settled", func() bool { return h.settled(w) })
	if n := len(c.got()); n != attempts {
		t.Fatalf("%d more posts after the filter took the events out", n-attempts)
	}
	if n := testutil.ToFloat64(h.metrics.Deliveries.WithLabelValues("orders", "filtered")); n != 4 {
		t.Fatalf("filtered %v, want 4", n)
	}
	if !strings.Contains(h.logs.String(), "no longer matches the endpoint's filter") {
		t.Fatalf("no line says why: %s", h.logs.String())
	}
}

// countFor is how many posts of transaction txID c got.
func countFor(c *consumer, txID string) int {
	n := 0
	for _, a := range c.got() {
		if strings.Contains(string(a.Body), `"transactionId":"`+txID+`"`) {
			n++
		}
	}
	return n
}

// A live consumer deleted by hand (an operator clearing what looked
// stuck) was created again at deliver_from: with the default "new",
// every event it had not acknowledged, waiting or in retry, was skipped,
// neither posted nor dead-lettered. It is created again after the last
// event it is known to have acknowledged.
func TestADeletedConsumerIsCreatedAgainWhereItWas(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var up atomic.Bool
	var ok sync.Map // the attempts answered 200, by number
	c := newConsumer(t, func(n int, _ *http.Request, w http.ResponseWriter) {
		if up.Load() {
			ok.Store(n-1, true)
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(500)
	})
	h.publish("tx-before", event.StatusSuccess, "") // before the endpoint: not its
	ep := h.endpoint("orders", c.URL, 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond)
	ep.DeliverFrom = "new"
	w := h.start(ep)
	for _, tx := range []string{"tx-1", "tx-2", "tx-3"} {
		h.publish(tx, event.StatusSuccess, "")
	}
	eventually(t, "each attempted", func() bool { return countFor(c, "tx-1") > 0 && countFor(c, "tx-2") > 0 && countFor(c, "tx-3") > 0 })
	if err := h.js.DeleteConsumer(t.Context(), event.StreamEvents, ConsumerName("orders")); err != nil {
		t.Fatal(err)
	}
	up.Store(true)
	eventually(t, "each delivered after the consumer was created again", func() bool {
		for _, tx := range []string{"tx-1", "tx-2", "tx-3"} {
			if !answered(c, &ok, tx) {
				return false
			}
		}
		return h.settled(w)
	})
	if n := countFor(c, "tx-before"); n != 0 {
		t.Fatalf("an event from before the endpoint was posted %d times", n)
	}
	if n := len(h.deadLetters()); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
}

// answered reports whether one of c's posts of transaction txID was
// answered 200 (ok holds their indexes).
func answered(c *consumer, ok *sync.Map, txID string) bool {
	for i, a := range c.got() {
		if _, yes := ok.Load(i); yes && strings.Contains(string(a.Body), `"transactionId":"`+txID+`"`) {
			return true
		}
	}
	return false
}

// During a rolling deploy that widens an endpoint's filter, the relay
// started last sets the shared consumer's filter, and a relay still on
// the old, narrower configuration gets the events only the new filter
// takes: it posts them. What the consumer's filter takes now decides,
// not one relay's configuration.
func TestARelayOnAnOlderNarrowerFilterPostsWhatTheWiderOneTakes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	narrow := h.endpoint("orders", c.URL)
	narrow.FilterSubjects = []string{event.EventSubject("main", event.ProductRetail, event.StatusSuccess)}
	old := h.worker(narrow)               // the relay on the old configuration
	h.worker(h.endpoint("orders", c.URL)) // the new one, started and not (yet) pulling
	h.run(old)
	h.publish("tx-failed", event.StatusFailed, "")
	eventually(t, "the event the wider filter takes posted", func() bool { return countFor(c, "tx-failed") == 1 })
	if n := testutil.ToFloat64(h.metrics.Deliveries.WithLabelValues("orders", "filtered")); n != 0 {
		t.Fatalf("filtered %v", n)
	}
}

// A relay on the old configuration that started again during a rolling
// deploy widening a filter (a crash, a drained node) set the consumer's
// filter back to its narrower one: nats-server then skipped the events
// only the wider filter takes, and the consumer's position moved past
// them, so that no relay ever posted or dead-lettered them. A relay now
// gives the consumer the union of its filter and those the other relays'
// recent heartbeats give the endpoint. A relay that stops leaves its
// filter told while its heartbeat is recent, so that a restart of the
// only relay on the wider filter narrows nothing; then it narrows.
func TestARelayStartedAgainOnAnOlderFilterKeepsTheWiderOne(t *testing.T) {
	saved := heartbeatFresh
	heartbeatFresh = 2 * time.Second // a stopped relay's heartbeat is recent 2 s
	t.Cleanup(func() { heartbeatFresh = saved })
	h := newHarness(t)
	c := newConsumer(t, status())
	wide, narrow := h.filterPair(c.URL)
	relay, beating := h.runRelay, h.beating
	// A worker whose relay has written no heartbeat yet sets no filter:
	// the others could not tell why it is wide, and would narrow it again.
	if _, err := NewWorker(t.Context(), WorkerConfig{Endpoint: wide, JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs), Instance: "new"}); !errors.Is(err, errNoHeartbeat) {
		t.Fatalf("a worker started before its relay's heartbeat: %v, want %v", err, errNoHeartbeat)
	}
	stopNew := relay("new", wide) // the relay on the new, wider configuration
	eventually(t, "the new relay's heartbeat", beating("new"))
	h.workerAs("new", wide)
	relay("old", narrow) // the old one starts again: its heartbeat, then its worker
	eventually(t, "the old relay's heartbeat", beating("old"))
	h.run(h.workerAs("old", narrow))
	if got := h.liveFilter("orders"); !slices.Equal(got, wide.FilterSubjects) {
		t.Fatalf("the consumer's filter is %v once the old relay started again, want the new relay's %v", got, wide.FilterSubjects)
	}
	h.publish("tx-failed", event.StatusFailed, "")
	eventually(t, "the event only the wider filter takes posted", func() bool { return countFor(c, "tx-failed") == 1 })
	// The new relay stops: while its last heartbeat is recent, what its
	// filter takes is still posted (it may be restarting).
	stopNew()
	stopped := time.Now()
	h.publish("tx-failed-2", event.StatusFailed, "")
	eventually(t, "the event only the stopped relay's filter takes posted", func() bool { return countFor(c, "tx-failed-2") == 1 })
	if time.Since(stopped) < heartbeatFresh {
		if got := h.liveFilter("orders"); !slices.Equal(got, wide.FilterSubjects) {
			t.Fatalf("the consumer's filter narrowed to %v while the stopped relay's heartbeat was recent", got)
		}
	}
	// Then the old relay's filter is the only one left, and the
	// consumer's narrows to it.
	eventually(t, "the consumer's filter narrowed to the running relay's", func() bool {
		return slices.Equal(h.liveFilter("orders"), narrow.FilterSubjects)
	})
	h.publish("tx-failed-3", event.StatusFailed, "")
	h.publish("tx-success", event.StatusSuccess, "")
	eventually(t, "the success posted", func() bool { return countFor(c, "tx-success") == 1 })
	if n := countFor(c, "tx-failed-3"); n != 0 {
		t.Fatalf("an event no running relay's filter takes posted %d times", n)
	}
	// The stopped relay's last heartbeat, no longer recent, is removed
	// whole: under a name used once, kept (or its delete marker) it was read
	// at every read of the heartbeats until the bucket's TTL.
	eventually(t, "the stopped relay's last heartbeat removed", func() bool {
		keys, err := stream.Keys(t.Context(), h.js, event.BucketDelivery, relayKey("*"))
		return err == nil && !slices.Contains(keys, relayKey("new"))
	})
}

// A relay's pass over its endpoints reads the heartbeats once, before it:
// a relay that started since, wrote its heartbeat and widened a consumer
// was not among them, and the pass narrowed the consumer again. A change
// is decided on the consumer and the heartbeats read again, in that order.
func TestAPassDoesNotNarrowWhatARelayStartedSinceWidened(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	wide, narrow := h.filterPair(c.URL)
	kv, err := h.js.KeyValue(t.Context(), event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	old := &retirer{cfg: RetireConfig{JetStream: h.js, Configured: []string{"orders"}, Filters: map[string][]string{"orders": narrow.FilterSubjects},
		Instance: "old", Beat: time.Second, Logger: zerolog.New(h.logs)}, store: attemptStore{kv: kv}}
	old.beat(t.Context())
	h.workerAs("old", narrow)
	stale, err := readPeers(t.Context(), h.js, "old") // the pass's read, before the new relay
	if err != nil || !stale.known {
		t.Fatalf("peers %+v: %v", stale, err)
	}
	started := &retirer{cfg: RetireConfig{JetStream: h.js, Configured: []string{"orders"}, Filters: map[string][]string{"orders": wide.FilterSubjects},
		Instance: "new", Beat: time.Second, Logger: zerolog.New(h.logs)}, store: attemptStore{kv: kv}}
	started.beat(t.Context())
	h.workerAs("new", wide)
	if got := h.liveFilter("orders"); !slices.Equal(got, wide.FilterSubjects) {
		t.Fatalf("the new relay set %v, want %v", got, wide.FilterSubjects)
	}
	if err := old.syncFilter(t.Context(), stale, narrow); err != nil {
		t.Fatal(err)
	}
	if got := h.liveFilter("orders"); !slices.Equal(got, wide.FilterSubjects) {
		t.Fatalf("the pass narrowed the consumer to %v, which the relay started since had widened", got)
	}
}

// workerAs is worker for the relay whose heartbeat is instance's.
func (h *harness) workerAs(instance string, ep Endpoint) *Worker {
	h.t.Helper()
	w, err := NewWorker(context.Background(), WorkerConfig{
		Endpoint: ep, JetStream: h.js, Durable: h.durable, History: h.history, UserAgent: "sengo-relay/test", Metrics: h.metrics,
		Logger: zerolog.New(h.logs), Now: h.now, Instance: instance,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return w
}

// liveFilter is the filter of endpoint's consumer on SENGO_EVENTS.
func (h *harness) liveFilter(endpoint string) []string {
	h.t.Helper()
	cons, err := h.js.Consumer(h.t.Context(), event.StreamEvents, ConsumerName(endpoint))
	if err != nil {
		h.t.Fatal(err)
	}
	return stream.ConsumerFilters(cons.CachedInfo())
}

// The consumer's filter is one nats-server takes (no subject a subset of
// another) and takes every subject of the sets: a real server is given
// each cover.
func TestFilterCover(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for i, c := range []struct {
		sets [][]string
		want []string
	}{
		{[][]string{{"sengo.events.main.retail.success"}, {"sengo.events.>"}}, []string{"sengo.events.>"}},
		{[][]string{{"sengo.events.main.retail.success"}, {"sengo.events.main.retail.success", "sengo.events.main.retail.failed"}}, []string{"sengo.events.main.retail.failed", "sengo.events.main.retail.success"}},
		{[][]string{{"sengo.events.*.*.success"}, {"sengo.events.main.*.success"}}, []string{"sengo.events.*.*.success"}},
		{[][]string{{"sengo.events.main.*.success"}, {"sengo.events.*.*.success"}}, []string{"sengo.events.*.*.success"}},
		// Overlapping, neither within the other: both kept.
		{[][]string{{"sengo.events.*.*.success"}, {"sengo.events.main.>"}}, []string{"sengo.events.*.*.success", "sengo.events.main.>"}},
	} {
		got := filterCover(c.sets...)
		if !slices.Equal(got, c.want) {
			t.Errorf("filterCover(%v) = %v, want %v", c.sets, got, c.want)
		}
		if _, err := h.js.CreateConsumer(t.Context(), event.StreamEvents, jetstream.ConsumerConfig{Durable: fmt.Sprintf("cover-%d", i), FilterSubjects: got}); err != nil {
			t.Errorf("nats-server refuses the cover %v: %v", got, err)
		}
	}
}

// A relay whose heartbeat names the endpoint without its filter (a relay
// of a version before heartbeats told them) may take more than the
// consumer's filter says of the others: beside it, a relay narrows
// nothing, and posts what the consumer's filter takes.
func TestARelayThatDoesNotTellItsFilterNarrowsNothing(t *testing.T) {
	saved := heartbeatFresh
	heartbeatFresh = time.Minute
	t.Cleanup(func() { heartbeatFresh = saved })
	h := newHarness(t)
	c := newConsumer(t, status())
	wide, narrow := h.filterPair(c.URL)
	h.worker(wide) // the consumer, as the relay of the earlier version set it
	kv, err := h.js.KeyValue(t.Context(), event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	legacy, _ := json.Marshal(map[string]any{"endpoints": []string{"orders"}, "at": time.Now().UTC(), "every": time.Second})
	if _, err := kv.Put(t.Context(), relayKey("legacy"), legacy); err != nil {
		t.Fatal(err)
	}
	h.runRelay("narrow", narrow)
	eventually(t, "the relay's heartbeat", h.beating("narrow"))
	h.run(h.workerAs("narrow", narrow))
	if got := h.liveFilter("orders"); !slices.Equal(got, wide.FilterSubjects) {
		t.Fatalf("the consumer's filter is %v beside a relay that does not tell its own, want %v kept", got, wide.FilterSubjects)
	}
	h.publish("tx-failed", event.StatusFailed, "")
	eventually(t, "the event the consumer's filter takes posted", func() bool { return countFor(c, "tx-failed") == 1 })
}

// filterPair is the endpoint "orders" at url with a filter taking every
// event, and with one taking main's retail successes only.
func (h *harness) filterPair(url string) (wide, narrow Endpoint) {
	wide, narrow = h.endpoint("orders", url), h.endpoint("orders", url)
	narrow.FilterSubjects = []string{event.EventSubject("main", event.ProductRetail, event.StatusSuccess)}
	return wide, narrow
}

// runRelay runs the retirer (heartbeats, filter passes) of relay instance
// delivering ep, until stop is called or the test ends.
func (h *harness) runRelay(instance string, ep Endpoint) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunRetirer(ctx, RetireConfig{JetStream: h.js, Configured: []string{ep.Name}, Filters: map[string][]string{ep.Name: ep.FilterSubjects},
			Instance: instance, Beat: 50 * time.Millisecond, Every: 100 * time.Millisecond, Logger: zerolog.New(h.logs)})
	}()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	h.t.Cleanup(stop)
	return stop
}

// beating reports, when called, whether relay instance's heartbeat is
// stored.
func (h *harness) beating(instance string) func() bool {
	return func() bool {
		kv, err := h.js.KeyValue(h.t.Context(), event.BucketDelivery)
		if err != nil {
			return false
		}
		_, err = kv.Get(h.t.Context(), relayKey(instance))
		return err == nil
	}
}
