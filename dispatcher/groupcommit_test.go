package dispatcher

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
)

// With group commit, an event is terminated only after the fsync that
// covers its dead letter: a Term that outlived the dead letter in a power
// loss would drop the event with no trace.
func TestDeadLetterTermedOnlyAfterFsync(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	gate := natstest.NewFSyncGate(t, h.nats.Dir(), nil)
	h.durable = gate.GroupSync
	c := newConsumer(t, status(410)) // dead-letters at once
	w := h.start(h.endpoint("orders", c.URL))
	h.publish("tx-dl", event.StatusSuccess, "")
	eventually(t, "the dead letter to be stored", func() bool { return len(h.deadLetters()) == 1 })
	eventually(t, "the worker waiting for the fsync", func() bool { return gate.GroupSync.Stats().Waiting == 1 })
	if _, _, floor, err := w.Pending(context.Background()); err != nil || floor != 0 {
		t.Fatalf("ack floor %d (%v) while the fsync is held, want 0: terminated before its dead letter was durable", floor, err)
	}
	gate.Open()
	eventually(t, "the event to be terminated", func() bool { _, _, floor, _ := w.Pending(context.Background()); return floor == 1 })
}

// On an ordered endpoint, a delivered event is acknowledged only once the
// record that releases its transaction's next status is durable: an
// acknowledgement that outlived the record in a power loss would leave
// the next status waiting for a predecessor with no record, and a
// failed fsync acknowledged nothing it covered (the event is redelivered,
// posted again under its id, and recorded again).
func TestAnOrderedEventIsAckedOnlyOnceItsRecordIsDurable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	gate := natstest.NewFSyncGate(t, h.nats.Dir(), nil)
	h.durable = gate.GroupSync
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	ep.Ordered = true
	w := h.start(ep)
	h.publish("tx-ordered", event.StatusPending, "")
	eventually(t, "the event posted and its record's fsync held", func() bool {
		return len(c.got()) == 1 && gate.GroupSync.Stats().Waiting == 1
	})
	if _, _, floor, err := w.Pending(context.Background()); err != nil || floor != 0 {
		t.Fatalf("ack floor %d (%v) while the record's fsync is held, want 0", floor, err)
	}
	gate.Fail(errors.New("input/output error"))
	eventually(t, "the delivery retried for its record", func() bool {
		return strings.Contains(h.logs.String(), "the record that releases the next status is not known durable")
	})
	if _, _, floor, err := w.Pending(context.Background()); err != nil || floor != 0 {
		t.Fatalf("ack floor %d (%v) after the record's fsync failed, want 0", floor, err)
	}
}
