package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
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
	t.Parallel()
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
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	ep.Breaker = BreakerPolicy{Failures: 3, ProbeInitial: time.Minute, ProbeMax: time.Minute}
	w := h.start(ep)
	for i := range 5 {
		ev := h.publish("tx-ok", event.StatusPending, "") // a template
		ev.ID = "evt_x\n" + string(rune('0'+i))
		h.publishAs(ev)
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

// Another publisher's message of 1.5 MB of "<" on sengo.events.> is no
// event: it is dead-lettered as undecodable, with the message kept as a
// JSON string. json.Marshal wrote each "<" as \u003c, six bytes: the dead
// letter outgrew what a NATS message may be, was never stored, and the
// message was retried every 5 s until retention dropped it, with no dead
// letter. It is now kept whole, unescaped; and a dead letter still too
// large for the server (control bytes are six each in any JSON) keeps the
// event's first 4 KiB, marked, with its size; its streamSeq names it.
func TestAnEventTooLargeForItsDeadLetterIsStillDeadLettered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	h.start(h.endpoint("orders", c.URL))
	angles, controls := bytes.Repeat([]byte("<"), 1500<<10), bytes.Repeat([]byte("\x01"), 1500<<10)
	for _, body := range [][]byte{angles, controls} {
		if _, err := h.js.PublishMsg(t.Context(), &nats.Msg{Subject: event.EventSubject("main", event.ProductRetail, event.StatusSuccess), Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	poll.Within(t, 15*time.Second, "two dead letters", func() bool { return len(h.deadLetters()) == 2 })
	for _, d := range h.deadLetters() {
		switch d.StreamSeq {
		case 1:
			if d.EventTruncated || len(d.Event) != len(angles)+2 {
				t.Errorf("1.5 MB of <: truncated %v, %d bytes kept", d.EventTruncated, len(d.Event))
			}
		case 2:
			var kept string
			if d.Reason != ReasonUndecodable || !d.EventTruncated || d.EventBytes != len(controls) || json.Unmarshal(d.Event, &kept) != nil ||
				len(kept) != deadLetterExcerpt || !bytes.HasPrefix(controls, []byte(kept)) {
				t.Errorf("1.5 MB of control bytes: reason %s, truncated %v, %d bytes of %d, kept %.40q (%d bytes)", d.Reason, d.EventTruncated, d.EventBytes, len(controls), kept, len(kept))
			}
		}
	}
	if len(c.got()) != 0 {
		t.Error("posted")
	}
}

// An event that is itself near the server's max_payload (another
// publisher's) is delivered as usual; refused by the endpoint, its dead
// letter keeps only its start, and a redrive leaves it alone: it would
// post those 4 KiB as the event.
func TestADeadLetterKeptInPartIsNeverRedriven(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) { w.WriteHeader(http.StatusGone) })
	h.start(h.endpoint("orders", c.URL))
	ev := h.publish("tx-big", event.StatusPending, "") // a template; refused as gone too
	ev.ID = event.ID("main", "tx-big", event.StatusSuccess)
	ev.Data.Status = event.StatusSuccess
	ev.Data.Raw = json.RawMessage(`"` + strings.Repeat("r", int(h.js.Conn().MaxPayload())-12<<10) + `"`)
	b := h.publishAs(ev)
	poll.Until(t, "two dead letters", func() bool { return len(h.deadLetters()) == 2 })
	entries, err := ListDLQ(t.Context(), h.js, DLQFilter{})
	if err != nil || len(entries) != 2 {
		t.Fatal(len(entries), err)
	}
	if big := entries[1]; !big.EventTruncated || big.EventBytes != len(b) || big.Reason != ReasonGone {
		t.Fatalf("dead letter of the large event: truncated %v, %d bytes of %d, reason %s", big.EventTruncated, big.EventBytes, len(b), big.Reason)
	}
	if n, err := Redrive(t.Context(), h.js, entries[1:]); n != 0 || err != nil {
		t.Fatalf("redrove %d (%v)", n, err)
	}
}

// Another publisher's event with an id of megabytes (under the server's
// max_payload, so stored) is dead-lettered like any: its id went whole
// into the dead letter twice (body and header), which cutting the event
// alone did not bring under the server's limit. The ids are cut too.
func TestADeadLetterOfHugeIDsIsStillStored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	h.start(h.endpoint("orders", c.URL))
	ev := h.publish("tx-ok", event.StatusPending, "") // a template, delivered
	ev.ID = "evt_" + strings.Repeat("i", int(h.js.Conn().MaxPayload())*5/8)
	ev.Data.TransactionID = "tx-huge"
	b := h.publishAs(ev)
	poll.Until(t, "its dead letter", func() bool { return len(h.deadLetters()) == 1 })
	d := h.deadLetters()[0]
	if !d.EventTruncated || d.EventBytes != len(b) || len(d.EventID) > 300 || d.TransactionID != "tx-huge" {
		t.Errorf("dead letter: truncated %v, %d bytes of %d, id of %d bytes, transaction %q", d.EventTruncated, d.EventBytes, len(b), len(d.EventID), d.TransactionID)
	}
}

// publishAs stores ev as another publisher would (no Nats-Msg-Id: its id
// may be anything) and returns its bytes.
func (h *harness) publishAs(ev event.Event) []byte {
	h.t.Helper()
	b, err := event.Marshal(ev)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.js.PublishMsg(context.Background(), &nats.Msg{Subject: event.EventSubject("main", ev.Data.Product, ev.Data.Status), Data: b}); err != nil {
		h.t.Fatal(err)
	}
	return b
}

// A replay goes on past an event it cannot queue a copy of: another
// publisher's event whose id of 400 KiB, carried twice by the copy,
// makes it too large for the server. The replay stopped at it, every
// run after stopped there again, no event after it was ever replayed,
// and its error quoted the whole id.
func TestAReplayGoesOnPastAnEventItCannotCopy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	// A relay delivers orders (its consumers exist), not running here: the
	// copies stay to be read.
	if _, err := NewWorker(context.Background(), WorkerConfig{Endpoint: ep, JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs)}); err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	huge := h.publish("huge", event.StatusSuccess, "") // a template, replayed too
	huge.ID = strings.Repeat("a", 400<<10)
	h.publishAs(huge)
	after := h.publish("after", event.StatusSuccess, "")
	p, err := Replay(context.Background(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"orders"}, Since: since}, nil)
	if err != nil || len(fmt.Sprint(err)) > 1<<10 {
		e := fmt.Sprint(err)
		t.Fatalf("replay: %.300s … %s (%d bytes of error)", e, e[max(0, len(e)-200):], len(e))
	}
	if !p.Done || p.Matched != 3 || p.Queued != 2 || p.Skipped != 1 {
		t.Fatalf("replay: %+v, want done, 3 matched, 2 queued, 1 skipped", p)
	}
	msgs := natstest.Messages(t, h.js, event.StreamReplay)
	if len(msgs) != 2 || msgs[1].Header.Get(event.HeaderEventID) != after.ID {
		t.Fatalf("%d copies queued, want the template's and %s", len(msgs), after.ID)
	}
}

// Go's HTTP client trims a header value's leading and trailing spaces
// when it writes it: an event id with such a space (another publisher's)
// was signed as it is and sent trimmed, so no receiver could verify it,
// and it spent its whole retry schedule before it was dead-lettered
// retries_exhausted. It is undecodable at once, like an id with a control
// character. So is one with a byte outside ASCII: Go sends it as it is,
// but the Standard Webhooks libraries of Python and Node read header
// values as Latin-1 and encode them again as UTF-8 before the HMAC, so
// their signature check failed at every attempt.
func TestAnEventIDTheClientWouldTrimIsUndecodable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	h.start(h.endpoint("orders", c.URL))
	ids := []string{" evt_lead", "evt_trail ", "evt_tab\t", "pedido-\u00e91"}
	for _, id := range ids {
		ev := h.publish("tx-template", event.StatusPending, "")
		ev.ID = id
		h.publishAs(ev)
	}
	poll.Until(t, "every event settled", func() bool { return len(c.got())+len(h.deadLetters()) >= 1+len(ids) })
	for _, a := range c.got() {
		if id := a.Header.Get("Webhook-Id"); id != event.ID("main", "tx-template", event.StatusPending) {
			t.Errorf("posted with webhook-id %q, which a receiver cannot verify", id)
		}
	}
	for _, d := range h.deadLetters() {
		if d.Reason != ReasonUndecodable {
			t.Errorf("dead letter %q: %s, want %s", d.EventID, d.Reason, ReasonUndecodable)
		}
	}
}
