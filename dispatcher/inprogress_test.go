package dispatcher

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
)

// Every relay sets the endpoint's shared consumer's ack wait to its own
// timeout plus 15 s when it starts. In a rolling deploy that lowered
// the timeout, the first new relay lowered the ack wait under the old
// relays' attempts still running: the server handed the event to a second
// worker, which posted it while the first post was still open (a
// consumer deduplicating check-then-insert ships twice). A worker now
// tells the server the event is in progress while its attempt runs,
// whatever the consumer's ack wait has become.
//
// The relay started later sets 3 s and the consumer takes 6 s to answer:
// a relay that sends no signal has the event handed out again halfway
// through the post. With 1 s, a signal every 200 ms had to be late by
// 800 ms for a correct relay to have it handed out again, which a loaded
// CI machine running the race detector was.
func TestALongAttemptIsNotHandedToASecondWorker(t *testing.T) {
	defer func(d time.Duration) { inProgressEvery = d }(inProgressEvery)
	inProgressEvery = 200 * time.Millisecond
	h := newHarness(t)
	var open, most atomic.Int32
	c := newConsumer(t, func(n int, _ *http.Request, w http.ResponseWriter) {
		k := open.Add(1)
		defer open.Add(-1)
		for m := most.Load(); k > m && !most.CompareAndSwap(m, k); m = most.Load() {
		}
		if n == 1 {
			<-time.After(6 * time.Second) // a slow consumer
		}
		w.WriteHeader(200)
	})
	ep := h.endpoint("orders", c.URL)
	ep.Timeout, ep.Concurrency = 10*time.Second, 2
	wk := h.start(ep)
	// A relay started later with a shorter timeout updates the consumer.
	natstest.SetAckWait(t, h.js, "SENGO_EVENTS", ConsumerName("orders"), 3*time.Second)
	h.publish("tx-slow", "success", "")
	// Its own deadline: the post takes 6 s, most of the mutants' 6 s.
	poll.Within(t, 30*time.Second, "the event delivered", func() bool { return len(c.got()) > 0 && h.settled(wk) })
	if m := most.Load(); m > 1 {
		t.Fatalf("the event was posted %d times at once (%d posts in all)", m, len(c.got()))
	}
	if n := len(c.got()); n != 1 {
		t.Fatalf("%d posts of one event the consumer answered 200", n)
	}
}

// The relay stored a dead letter, then marked the event's record done,
// then terminated it. Stopped between the first two (killed, the power
// gone), it found on redelivery a record saying nothing of the dead
// letter and posted the event again: to an endpoint that had answered 410
// (asking for no more), or, answered 2xx, an event acked while its dead
// letter stayed listed (a redrive then posted it a third time). The
// decision is recorded before the dead letter is stored: a redelivery
// stores the dead letter again (a duplicate the stream drops) and posts
// nothing.
func TestADeadLetterStoppedPartWayIsNotPostedAgain(t *testing.T) {
	var crashed atomic.Bool
	testCrashAfterDeadLetter = func() bool { return crashed.CompareAndSwap(false, true) }
	t.Cleanup(func() { testCrashAfterDeadLetter = nil })
	h := newHarness(t)
	c := newConsumer(t, status(http.StatusGone, http.StatusGone))
	ep := h.endpoint("orders", c.URL)
	wk := h.start(ep)
	natstest.SetAckWait(t, h.js, "SENGO_EVENTS", ConsumerName("orders"), time.Second) // the stopped relay's event comes back soon
	h.publish("tx-gone", "success", "")
	eventually(t, "the event settled", func() bool { return crashed.Load() && h.settled(wk) })
	if n := len(c.got()); n != 1 {
		t.Fatalf("%d posts of an event its endpoint answered 410", n)
	}
	if n := len(h.deadLetters()); n != 1 {
		t.Fatalf("%d dead letters", n)
	}
}
