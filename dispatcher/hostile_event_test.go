package dispatcher

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/poll"
)

// Another publisher's events name any previousStatus. An ordered endpoint
// waited for the event the previous status names, even when that was the
// event itself (success after success) or one that waited for it in turn
// (a pending "after" a success, and the success after that pending):
// each rewrote its own record while waiting, so none was ever stuck long
// enough to be released, and none was posted until retention dropped it.
// Only a final status waits, and only for its pending.
func TestAnOrderedEventNeverWaitsForItselfOrInACycle(t *testing.T) {
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	ep.Ordered = true
	h.start(ep)
	h.publish("tx-self", event.StatusSuccess, event.StatusSuccess)
	h.publish("tx-cycle", event.StatusPending, event.StatusSuccess)
	h.publish("tx-cycle", event.StatusSuccess, event.StatusPending)
	poll.Within(t, 15*time.Second, "all three posted", func() bool { return len(c.got()) >= 3 })
}

// An event id with a control character cannot be a Webhook-Id header: Go's
// client refuses the request before sending it. Each attempt counted as
// the endpoint's failure, so a few such events paused a healthy endpoint,
// and every other event waited for probes. Such an event is dead-lettered
// as undecodable at once, and the endpoint goes on.
func TestAnEventIDThatCannotBeAHeaderDoesNotPauseTheEndpoint(t *testing.T) {
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	ep.Breaker = BreakerPolicy{Failures: 3, ProbeInitial: time.Minute, ProbeMax: time.Minute}
	w := h.start(ep)
	for i := range 5 {
		ev := h.publish("tx-ok", event.StatusPending, "") // a template
		ev.ID = "evt_x\n" + string(rune('0'+i))
		b, err := event.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.js.PublishMsg(t.Context(), &nats.Msg{Subject: event.EventSubject("main", ev.Data.Product, ev.Data.Status), Data: b}); err != nil {
			t.Fatal(err)
		}
	}
	h.publish("tx-after", event.StatusSuccess, "")
	poll.Within(t, 10*time.Second, "the valid events posted", func() bool {
		n := 0
		for _, a := range c.got() {
			if a.Header.Get("Webhook-Id") == event.ID("main", "tx-after", event.StatusSuccess) {
				n++
			}
		}
		return n == 1
	})
	if w.State().Paused {
		t.Error("the endpoint paused")
	}
	poll.Until(t, "five dead letters", func() bool { return len(h.deadLetters()) == 5 })
	for _, d := range h.deadLetters() {
		if d.Reason != ReasonUndecodable {
			t.Errorf("dead letter %+v", d)
		}
	}
}
