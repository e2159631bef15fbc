package receiver

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sengo-relay/sengo-relay/event"
)

// A quarantine purge or redrive with a stale list (entries removed
// meanwhile) handles what is left, counts only that, and does not fail
// on the ones already gone.
func TestQuarantineStaleEntries(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	for _, id := range []string{"tx-a", "tx-b", "tx-c"} {
		msg := &nats.Msg{Subject: event.QuarantineTxSubject("main", id), Data: []byte(`{"id":"` + id + `"}`), Header: nats.Header{event.HeaderProject: []string{"main"}}}
		if _, err := h.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := ListQuarantine(ctx, h.js, QuarantineFilter{})
	if err != nil || len(entries) != 3 {
		t.Fatalf("list: %v %d", err, len(entries))
	}
	if n, err := PurgeQuarantine(ctx, h.js, entries[:1]); err != nil || n != 1 {
		t.Fatalf("first purge: %d, %v", n, err)
	}
	if n, err := PurgeQuarantine(ctx, h.js, entries[:2]); err != nil || n != 1 {
		t.Fatalf("purge of a stale list: %d, %v; want 1 and no error", n, err)
	}
	if n, err := RedriveQuarantine(ctx, h.js, entries); err != nil || n != 1 {
		t.Fatalf("redrive of a stale list: %d, %v; want 1 and no error", n, err)
	}
}
