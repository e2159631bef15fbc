package dispatcher

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/poll"
)

// A held endpoint's worker never pulls (worker.go pullOne: sleepCtx(holdPoll)
// while held), and recreate runs only from a failed pull. So when the
// endpoint's consumers were retired while its relay was away (partitioned
// for longer than retire_removed_after) and the relay is back, naming the
// endpoint again, the consumers stay deleted for as long as the hold lasts.
// Meanwhile the expiry guard (guardExpiry/sweepPaused, which pulls from the
// deleted consumer) cannot dead-letter an event about to age out of
// SENGO_EVENTS, and the tombstone the relay would continue from goes stale
// after tombstoneFresh (24h): an event stored while the endpoint is held is
// then neither delivered nor dead-lettered. README: a hold keeps events in
// the stream, "nothing is dead-lettered for it, except by the expiry guard
// before retention would drop an event", and "a running relay whose
// consumer was deleted under it creates it again".
//
// Here SENGO_EVENTS keeps events 12 s; with the consumer there, the expiry
// guard dead-letters tx-2 (expiring_while_paused) before it ages out.
func TestHeldEndpointRetiredWhileItsRelayWasAwayKeepsItsExpiryGuard(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	fastBeats(t)
	h := newHarness(t)
	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()
	// 12 s: the expiry guard dead-letters an event in its last 1.2 s, and a
	// held worker sweeps about once a second (its replay sweep waits 1 s).
	h.reconfigure(event.StreamEvents, func(cfg *jetstream.StreamConfig) { cfg.MaxAge, cfg.Duplicates = 12*time.Second, time.Second })
	if err := Hold(context.Background(), h.js, "elsewhere", "ops"); err != nil {
		t.Fatal(err)
	}
	c := newConsumer(t, status())
	ep := h.endpoint("elsewhere", c.URL)
	ep.DeliverFrom = "new"
	w := h.start(ep)
	eventually(t, "the worker sees the hold", func() bool { return w.Held().Held })
	h.publish("tx-1", event.StatusSuccess, "")
	// Its relay's heartbeat is not being written (partitioned away): the
	// retirer takes the endpoint for removed.
	h.relayRetirer("here", 100*time.Millisecond, nil, "current")
	// (Its live consumer is enough here: the test's worker, unlike a
	// partitioned one, keeps sweeping its replay consumer for the expiry
	// guard, a pull that waits.)
	eventually(t, "elsewhere's live consumer retired", func() bool { return !h.consumerExists(event.StreamEvents, "webhook-elsewhere") })
	// The relay is back: its heartbeat names elsewhere; the endpoint is
	// still held by the operator.
	h.relayRetirer("there", time.Hour, nil, "elsewhere")
	eventually(t, "there's heartbeat", func() bool { _, ok := h.heartbeatOf("there"); return ok })
	h.publish("tx-2", event.StatusSuccess, "")

	// tx-2 ages out of SENGO_EVENTS (12 s) unless something takes it.
	s, err := h.js.Stream(context.Background(), event.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	poll.Within(t, 30*time.Second, "tx-2 dead-lettered or aged out of SENGO_EVENTS", func() bool {
		if slices.Contains(h.deadFor("elsewhere"), "tx-2/"+ReasonExpiring) {
			return true
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
	if err := Release(context.Background(), h.js, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	// Released: the worker pulls, finds its consumer gone and creates it
	// again at the tombstone; tx-3 shows the endpoint delivers again.
	h.publish("tx-3", event.StatusSuccess, "")
	poll.Within(t, 20*time.Second, "tx-3 delivered once the hold is released", func() bool {
		return slices.Contains(c.statuses(), "tx-3/success")
	})
	if !slices.Contains(c.statuses(), "tx-2/success") && !slices.Contains(h.deadFor("elsewhere"), "tx-2/"+ReasonExpiring) {
		t.Fatalf("tx-2, stored for elsewhere while its running relay named it and it was held, was neither delivered (%v) nor dead-lettered (%v): its consumer was not created again while held, so the expiry guard could not take it before it aged out",
			c.statuses(), h.deadFor("elsewhere"))
	}
}

// flakyDeleteJS is the store as the retirer sees it, whose DeleteConsumer on
// SENGO_EVENTS fails once, as a request that times out does: it waits
// until release is closed and returns an error, the consumer not deleted.
type flakyDeleteJS struct {
	jetstream.JetStream
	once             sync.Once
	entered, release chan struct{}
	failed           bool
	mu               sync.Mutex
}

type flakyDeleteStream struct {
	jetstream.Stream
	js *flakyDeleteJS
}

func (f *flakyDeleteJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := f.JetStream.Stream(ctx, name)
	if err != nil || name != event.StreamEvents {
		return s, err
	}
	return flakyDeleteStream{Stream: s, js: f}, nil
}

func (s flakyDeleteStream) DeleteConsumer(ctx context.Context, name string) error {
	s.js.mu.Lock()
	fail := !s.js.failed
	s.js.failed = true
	s.js.mu.Unlock()
	if fail {
		close(s.js.entered)
		<-s.js.release
		return context.DeadlineExceeded
	}
	return s.Stream.DeleteConsumer(ctx, name)
}

// retire.go writes the tombstone, then deletes the consumer. When the delete
// fails (a timeout, the relay stopping) and the endpoint's relay is back
// before the next look, the consumer stays and delivers on, and the
// tombstone stayed too: nothing removed it (used() deletes the _retire.*
// sighting keys only; ensureConsumer only when it created the consumer
// from it). A later deletion of the consumer by hand ("its place is taken
// up: a later deletion by hand starts afresh", worker.go ensureConsumer)
// within tombstoneFresh then created it at the stale place, and every
// event delivered since was posted again. A failed delete now removes the
// tombstone it wrote.
func TestFailedRetirementLeavesNoTombstoneBehind(t *testing.T) {
	fastBeats(t)
	h := newHarness(t)
	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()
	c := newConsumer(t, status())
	ep := h.endpoint("elsewhere", c.URL)
	ep.DeliverFrom = "new"
	// Its consumers exist; its relay is away (nothing pulls, no heartbeat).
	if _, err := NewWorker(context.Background(), WorkerConfig{Endpoint: ep, JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs)}); err != nil {
		t.Fatal(err)
	}
	h.publish("tx-1", event.StatusSuccess, "")
	flaky := &flakyDeleteJS{JetStream: h.js, entered: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunRetirer(ctx, RetireConfig{JetStream: flaky, Configured: []string{"current"}, Instance: "here", Metrics: h.metrics,
			Logger: zerolog.New(h.logs).With().Str("instance", "here").Logger(), Every: 100 * time.Millisecond, Quiet: time.Millisecond})
	}()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "here deleting elsewhere's live consumer", func() bool { return closed(flaky.entered) })

	// The relay is back before the delete times out.
	h.relayRetirer("there", time.Hour, nil, "elsewhere")
	eventually(t, "there's heartbeat", func() bool { _, ok := h.heartbeatOf("there"); return ok })
	close(flaky.release)
	h.start(ep)
	h.publish("tx-2", event.StatusSuccess, "")
	h.publish("tx-3", event.StatusSuccess, "")
	eventually(t, "tx-2 and tx-3 delivered", func() bool {
		s := c.statuses()
		return slices.Contains(s, "tx-2/success") && slices.Contains(s, "tx-3/success")
	})
	if !h.consumerExists(event.StreamEvents, "webhook-elsewhere") {
		t.Fatal("the consumer was deleted: the scenario needs the failed delete")
	}
	// Its place is its own again: no tombstone may send a later creation
	// (after a deletion by hand) back to where the failed retirement was.
	kv, err := h.js.KeyValue(context.Background(), event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failed retirement's tombstone removed", func() bool {
		_, err := kv.Get(context.Background(), retiredKey(event.StreamEvents, "webhook-elsewhere"))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if got := c.statuses(); len(got) != 2 {
		t.Errorf("deliveries %v, want tx-2 and tx-3 once each", got)
	}
}

// A worker pulls all the time (stream.Puller keeps a 1 s pull waiting), so a
// consumer deleted under it (by hand, or by a retirer in the instant between
// its last look at NumWaiting and its DeleteConsumer) ends the waiting pull
// with jetstream.ErrConsumerDeleted (409 "Consumer Deleted"), which gone()
// does not recognise: the pull is logged as an ordinary warning and marks
// pullWarned, and the ErrNoResponders failures that follow are silenced for
// 10 s, recreate included. The endpoint delivers nothing for those 10 s.
func TestWorkerRecreatesAConsumerDeletedUnderItsWaitingPull(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()
	c := newConsumer(t, status())
	ep := h.endpoint("elsewhere", c.URL)
	ep.DeliverFrom = "new"
	h.start(ep)
	eventually(t, "a pull waiting on the live consumer", func() bool {
		cons, err := h.js.Consumer(context.Background(), event.StreamEvents, "webhook-elsewhere")
		if err != nil {
			return false
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.NumWaiting > 0
	})
	s, err := h.js.Stream(context.Background(), event.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteConsumer(context.Background(), "webhook-elsewhere"); err != nil {
		t.Fatal(err)
	}
	poll.Within(t, 5*time.Second, "the live consumer created again", func() bool {
		return h.consumerExists(event.StreamEvents, "webhook-elsewhere")
	})
}

// retire.go settle dead-letters an event but, unlike Worker.deadLetter,
// leaves its attempt record as it was (no record, or one "between
// retries"), never Done. On an ordered endpoint the next status of the
// transaction waits for its predecessor's record (mustWait): a predecessor
// the retirer dead-lettered while the endpoint's relay was away holds the
// successor back until the record is taken for stuck (staleRecord after
// the endpoint delivers again, 94 s here, 110 s with a 10 s timeout)
// instead of releasing it at once, as a dead letter does.
func TestOrderedSuccessorOfAnEventRetiredWhileItsRelayWasAwayIsNotHeldBack(t *testing.T) {
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
	ep.DeliverFrom, ep.Ordered = "new", true
	w := h.start(ep)
	eventually(t, "the worker sees the hold", func() bool { return w.Held().Held })
	h.publish("tx-1", event.StatusPending, "")
	h.relayRetirer("here", 100*time.Millisecond, nil, "current")
	eventually(t, "tx-1/pending dead-lettered", func() bool {
		return slices.Contains(h.deadFor("elsewhere"), "tx-1/"+ReasonRemoved)
	})
	eventually(t, "elsewhere's live consumer retired", func() bool { return !h.consumerExists(event.StreamEvents, "webhook-elsewhere") })
	h.relayRetirer("there", time.Hour, nil, "elsewhere")
	eventually(t, "there's heartbeat", func() bool { _, ok := h.heartbeatOf("there"); return ok })
	if err := Release(context.Background(), h.js, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	h.publish("tx-1", event.StatusSuccess, event.StatusPending)
	poll.Within(t, 20*time.Second, "tx-1/success delivered: its predecessor is dead-lettered", func() bool {
		return slices.Contains(c.statuses(), "tx-1/success")
	})
}
