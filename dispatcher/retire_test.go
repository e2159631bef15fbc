package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/stream"
)

// runWorker runs a worker for ep until the returned stop is called.
func (h *harness) runWorker(ep Endpoint) (*Worker, func()) {
	h.t.Helper()
	w, err := NewWorker(context.Background(), WorkerConfig{Endpoint: ep, JetStream: h.js, UserAgent: "sengo-relay/test", Metrics: h.metrics, Logger: zerolog.New(h.logs)})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	stop := func() { cancel(); <-done }
	h.t.Cleanup(stop)
	return w, stop
}

// retirer runs RunRetirer for a relay named instance that delivers
// endpoints and looks every every, until the test ends.
func (h *harness) retirer(instance string, every time.Duration, endpoints ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunRetirer(ctx, RetireConfig{JetStream: h.js, Configured: endpoints, Instance: instance, Metrics: h.metrics, Logger: zerolog.New(h.logs),
			Every: every, Quiet: time.Millisecond})
	}()
	h.t.Cleanup(func() { cancel(); <-done })
}

// fastBeats makes relays write their heartbeat every 100ms for the test,
// so that an endpoint unnamed for three of them (unnamedAtLeast) is
// retired within a second.
func fastBeats(t *testing.T) {
	saved := beatEvery
	beatEvery = 100 * time.Millisecond
	t.Cleanup(func() { beatEvery = saved })
}

func (h *harness) consumerExists(stream, name string) bool {
	_, err := h.js.Consumer(context.Background(), stream, name)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		h.t.Fatal(err)
	}
	return err == nil
}

// An endpoint taken out of the configuration (or renamed) left its backlog
// in a consumer no worker read: never delivered, never dead-lettered. Its
// events, those waiting for a retry too and those stored while it is
// retired, now go to the dead letters with reason endpoint_removed (none
// is acknowledged for it without one) and its consumers are deleted; a
// consumer a relay still delivers from (a relay running a configuration
// that has the endpoint) is left alone, and so are configured endpoints.
func TestRemovedEndpointsBacklogIsDeadLettered(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	fastBeats(t)
	h := newHarness(t)
	down := newConsumer(t, func(int, *http.Request, http.ResponseWriter) {})
	down.answer = func(_ int, _ *http.Request, w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }
	// "old" fails its first attempts and is removed while they wait for
	// their retry; two more events arrive after its relay stopped. The
	// retry is 3 s away so that the retirer finds them still waiting even
	// on a loaded machine (with 1.5 s, one CI run's retirer came after the
	// retry was due, and M89, a retirer that does not wait for them,
	// survived).
	_, stopOld := h.runWorker(h.endpoint("old", down.URL, 3*time.Second, time.Hour))
	h.publish("tx-1", event.StatusSuccess, "")
	h.publish("tx-2", event.StatusSuccess, "")
	eventually(t, "old's first attempts failed", func() bool { return len(down.got()) == 2 })
	stopOld()
	h.publish("tx-3", event.StatusSuccess, "")
	h.publish("tx-4", event.StatusExpired, "")

	// "elsewhere" is not configured here, but another relay, running
	// another configuration, delivers it; it is held there, so no pull
	// waits on its consumer: only that relay's heartbeat tells.
	ok := newConsumer(t, status())
	if _, err := NewWorker(context.Background(), WorkerConfig{Endpoint: h.endpoint("elsewhere", ok.URL), JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs)}); err != nil {
		t.Fatal(err)
	}
	kept := newConsumer(t, status())
	current := h.start(h.endpoint("current", kept.URL))
	// "there" looks seldom (a long retire_removed_after): its heartbeat
	// is written as often all the same. It has run for a while: its
	// heartbeat is there before "here" first looks.
	h.retirer("there", time.Hour, "elsewhere", "current")
	kv, err := h.js.KeyValue(context.Background(), event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "there's heartbeat", func() bool { _, err := kv.Get(context.Background(), relayKey("there")); return err == nil })
	h.retirer("here", 100*time.Millisecond, "current")
	eventually(t, "old found abandoned", func() bool {
		return strings.Contains(h.logs.String(), `"consumer":"webhook-old"`)
	})
	// Stored after the endpoint was found removed: dead-lettered too,
	// never dropped (the endpoint may be back: a redrive brings it).
	h.publish("tx-5", event.StatusSuccess, "")

	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()
	eventually(t, "old's consumers deleted", func() bool {
		return !h.consumerExists(event.StreamEvents, "webhook-old") && !h.consumerExists(event.StreamReplay, "webhook-old")
	})
	got := map[string]string{}
	for _, d := range h.deadLetters() {
		if d.Endpoint != "old" || d.Reason != ReasonRemoved {
			t.Errorf("dead letter %s for %s: %s", d.EventID, d.Endpoint, d.Reason)
		}
		got[d.TransactionID] = d.Reason
	}
	for _, tx := range []string{"tx-1", "tx-2", "tx-3", "tx-4", "tx-5"} {
		if got[tx] != ReasonRemoved {
			t.Errorf("%s was not dead-lettered for the removed endpoint (dead letters %v)", tx, got)
		}
	}
	if strings.Contains(h.logs.String(), `"consumer":"webhook-elsewhere"`) {
		t.Error("elsewhere, which another relay delivers, was taken as abandoned")
	}
	for _, name := range []string{"webhook-elsewhere", "webhook-current"} {
		if !h.consumerExists(event.StreamEvents, name) || !h.consumerExists(event.StreamReplay, name) {
			t.Errorf("%s was retired", name)
		}
	}
	eventually(t, "current delivers everything", func() bool { return h.settled(current) && len(kept.got()) == 5 })

	// A redrive to the removed endpoint would queue copies nothing reads.
	entries, err := ListDLQ(context.Background(), h.js, DLQFilter{Endpoint: "old"})
	if err != nil || len(entries) != 5 {
		t.Fatalf("listed %d dead letters of old: %v", len(entries), err)
	}
	if n, err := Redrive(context.Background(), h.js, entries); err != nil || n != 0 {
		t.Fatalf("redrove %d to a removed endpoint (%v)", n, err)
	}
	if msgs := natstest.Messages(t, h.js, event.StreamReplay); len(msgs) != 0 {
		t.Fatalf("%d copies queued for a removed endpoint", len(msgs))
	}
}

// A heartbeat was judged by the reading relay's own look interval (and
// clock): a relay looking every 100ms took the heartbeat of one that
// writes it every 10s for stale half a second later, and retired the
// endpoints that relay delivers. It is judged by its writer's interval, two
// minutes at least, on the server's clock.
func TestHeartbeatsAreJudgedByTheirWritersInterval(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	kv, err := h.js.KeyValue(context.Background(), event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	theirs, _ := json.Marshal(heartbeat{Endpoints: []string{"elsewhere"}, At: time.Now().Add(-time.Hour), Every: 10 * time.Second}) // a clock an hour behind
	if _, err := kv.Put(context.Background(), relayKey("there"), theirs); err != nil {
		t.Fatal(err)
	}
	there, err := kv.Get(context.Background(), relayKey("there"))
	if err != nil {
		t.Fatal(err)
	}
	r := &retirer{cfg: RetireConfig{JetStream: h.js, Configured: []string{"current"}, Instance: "here", Every: 100 * time.Millisecond, Logger: zerolog.New(h.logs)},
		store: attemptStore{kv: kv}, seen: map[string]retiring{}}
	eventually(t, "a second on the server's clock", func() bool {
		r.beat(context.Background())
		mine, err := kv.Get(context.Background(), relayKey("here"))
		return err == nil && mine.Created().Sub(there.Created()) > time.Second
	})
	used, _, err := r.used(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !used["webhook-elsewhere"] || !used["webhook-current"] {
		t.Fatalf("used %v: the other relay's endpoint is missing", used)
	}
}

// The heartbeats were listed with the KV's key lister, a watcher that
// ends at the first message the server reports nothing pending after. While
// relays rewrite their heartbeats that count can reach zero early (the
// server's pending of a last-per-subject consumer is not monotonic under
// writes: nats-io/nats.py#995), so a listing missed a live relay's
// heartbeat and its endpoints looked abandoned (one CI run's
// TestRemovedEndpointsBacklogIsDeadLettered). Every relay writing its
// heartbeat all the time, each look must still see every one of them.
func TestEveryHeartbeatIsSeenWhileRelaysRewriteThem(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	kv, err := h.js.KeyValue(context.Background(), event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	r := &retirer{cfg: RetireConfig{JetStream: h.js, Configured: []string{"current"}, Instance: "here", Beat: time.Second, Logger: zerolog.New(h.logs)},
		store: attemptStore{kv: kv}, seen: map[string]retiring{}}
	r.beat(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const relays = 8
	for i := range relays {
		name := fmt.Sprintf("relay-%d", i)
		other := &retirer{cfg: RetireConfig{Configured: []string{name}, Instance: name, Beat: time.Second, Logger: zerolog.Nop()}, store: attemptStore{kv: kv}}
		other.beat(ctx)
		go func() {
			for ctx.Err() == nil {
				other.beat(ctx)
				r.beat(ctx)
			}
		}()
	}
	for look := range 300 {
		used, _, err := r.used(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range relays {
			if name := ConsumerName(fmt.Sprintf("relay-%d", i)); !used[name] {
				t.Fatalf("look %d: %s, whose relay writes its heartbeat all along, was not named (named: %v)", look, name, used)
			}
		}
	}
}

// A relay's heartbeat is written under its instance name, a new one at
// every start. Deleted when the relay stopped, it left a marker that every
// look of every relay listed and read until the bucket's TTL (days): a
// relay that restarts often made every look slower. A stopping relay
// leaves nothing of it.
func TestAStoppedRelayLeavesNothingOfItsHeartbeat(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	kv := mustKV(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunRetirer(ctx, RetireConfig{JetStream: h.js, Configured: []string{"current"}, Instance: "gone", Metrics: h.metrics, Logger: zerolog.New(h.logs), Every: time.Hour})
	}()
	eventually(t, "its heartbeat", func() bool { _, err := kv.Get(context.Background(), relayKey("gone")); return err == nil })
	cancel()
	<-done
	keys, err := stream.Keys(context.Background(), h.js, event.BucketDelivery, relayKey("*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("a stopped relay left %v", keys)
	}
}

// A redriven copy delivered (its record says done) whose dead letter was
// not removed then (its relay stopped first, or the removal failed) was
// acknowledged by the retirer once its endpoint was removed, and its dead
// letter left listed for the SENGO_DLQ's retention: a redrive after the
// endpoint came back posted a delivered event again. The retirer removes
// it, as a worker does.
func TestTheRetirerRemovesTheDeadLetterOfADeliveredCopy(t *testing.T) {
	fastBeats(t)
	h := newHarness(t)
	gone := newConsumer(t, status(http.StatusGone))
	_, stop := h.runWorker(h.endpoint("old", gone.URL))
	h.publish("tx-1", event.StatusSuccess, "")
	eventually(t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 })
	stop()
	entries, err := ListDLQ(t.Context(), h.js, DLQFilter{Endpoint: "old"})
	if err != nil || len(entries) != 1 {
		t.Fatalf("%d dead letters (%v)", len(entries), err)
	}
	if n, err := Redrive(t.Context(), h.js, entries); err != nil || n != 1 {
		t.Fatalf("redrove %d (%v)", n, err)
	}
	copies := natstest.Messages(t, h.js, event.StreamReplay)
	if len(copies) != 1 {
		t.Fatalf("%d copies queued", len(copies))
	}
	// Delivered by a relay that stopped before it removed the dead letter.
	key := attemptKey("old", entries[0].EventID, copies[0].Sequence)
	if err := (attemptStore{kv: mustKV(t, h)}).put(t.Context(), key, attempts{Count: 1, Done: true}); err != nil {
		t.Fatal(err)
	}
	h.retirer("here", 100*time.Millisecond)
	eventually(t, "old's consumers deleted", func() bool {
		return !h.consumerExists(event.StreamEvents, "webhook-old") && !h.consumerExists(event.StreamReplay, "webhook-old")
	})
	if left := h.deadLetters(); len(left) != 0 {
		t.Fatalf("the dead letter of a delivered copy is still listed: %+v", left)
	}
}

// An event whose dead letter was decided (its endpoint answered 410) but
// could not be stored then, and that the retirer took when the endpoint
// was removed, was dead-lettered endpoint_removed: an operator who puts
// the endpoint back redrives that reason, posting an event it refused
// for good. The decided reason stands, as the expiry guard keeps it.
func TestTheRetirerKeepsADecidedReason(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	fastBeats(t)
	h := newHarness(t)
	c := newConsumer(t, status())
	_, stop := h.runWorker(h.endpoint("old", c.URL))
	stop() // removed from the configuration: its consumers stay for the retirer
	ev := h.publish("tx-refused", event.StatusSuccess, "")
	h.publish("tx-waiting", event.StatusSuccess, "")
	if err := (attemptStore{kv: mustKV(t, h)}).put(t.Context(), attemptKey("old", ev.ID, 0), attempts{Count: 1, LastStatus: http.StatusGone, DeadLetter: ReasonGone}); err != nil {
		t.Fatal(err)
	}
	h.retirer("here", 100*time.Millisecond)
	poll.Within(t, 30*time.Second, "both dead-lettered", func() bool { return len(h.deadLetters()) == 2 })
	got := map[string]string{}
	for _, d := range h.deadLetters() {
		got[d.TransactionID] = d.Reason
	}
	if got["tx-refused"] != ReasonGone || got["tx-waiting"] != ReasonRemoved {
		t.Fatalf("dead letters %v: want tx-refused %s (decided), tx-waiting %s", got, ReasonGone, ReasonRemoved)
	}
}
