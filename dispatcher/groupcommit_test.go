package dispatcher

import (
	"context"
	"testing"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
)

// With group commit, an event is terminated only after the fsync that
// covers its dead letter: a Term that outlived the dead letter in a power
// loss would drop the event with no trace.
func TestDeadLetterTermedOnlyAfterFsync(t *testing.T) {
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
