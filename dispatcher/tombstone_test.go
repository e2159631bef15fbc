package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
)

// A retirer writes its tombstone and then deletes the consumer. A relay
// that starts (or reloads) between the two finds the consumer still there
// and updates it in place; it must leave the tombstone alone, or the
// consumer the retirer then deletes is created again at deliver_from
// instead of after the last event it settled: everything between is
// skipped. The old ensureConsumer removed any tombstone whenever the
// consumer it kept had a start sequence (as one created from an earlier
// tombstone has).
func TestTombstoneWrittenBeforeTheDeletionSurvivesAnUpdateOfTheConsumer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	ep := h.endpoint("held", "http://127.0.0.1:1/")
	ep.DeliverFrom = "new"
	kv, err := h.js.KeyValue(ctx, event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	key := retiredKey(event.StreamEvents, ConsumerName(ep.Name))
	bury := func(last uint64) {
		t.Helper()
		b, _ := json.Marshal(tombstone{Last: last, At: time.Now().UTC()})
		if _, err := kv.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	ensure := func() uint64 {
		t.Helper()
		c, err := ensureConsumer(ctx, h.js, event.StreamEvents, ep, ep.FilterSubjects, ep.DeliverFrom)
		if err != nil {
			t.Fatal(err)
		}
		return c.CachedInfo().Config.OptStartSeq
	}
	for i := range 6 {
		h.publish(fmt.Sprintf("tx-%d", i), event.StatusSuccess, "")
	}
	bury(2) // an earlier retirement: the consumer is created after event 2
	if got := ensure(); got != 3 {
		t.Fatalf("created at %d, want 3 (after the first tombstone)", got)
	}
	bury(4)  // a retirer's second tombstone, written before its deletion
	ensure() // a relay starting in between: the consumer is still there
	s, err := h.js.Stream(ctx, event.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteConsumer(ctx, ConsumerName(ep.Name)); err != nil { // the retirer's deletion
		t.Fatal(err)
	}
	if got := ensure(); got != 5 {
		t.Fatalf("created again at stream sequence %d, want 5 (after the tombstone's 4): events 5 and 6 would be skipped", got)
	}
}
