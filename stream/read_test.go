package stream_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/stream"
)

// The oldest message a consumer of several filter subjects has not
// settled is the oldest on any of them: the newest of their first ones was
// taken for it, and a lowered max_age (keptAge) or the expiry guard went
// by a younger message, deleting or missing the older one unsettled. An
// endpoint's consumer has several whenever its filter lists statuses, and
// whenever the relays' filters are joined.
func TestOldestUnsettledOfSeveralFilters(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"a.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"a.x", "a.y", "a.z"} {
		if _, err := js.Publish(ctx, subj, []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", FilterSubjects: []string{"a.y", "a.x"}, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.OldestUnsettled(ctx, s, cons.CachedInfo())
	if err != nil || m == nil || m.Sequence != 1 {
		t.Fatalf("oldest unsettled %+v (%v), want the message at sequence 1", m, err)
	}
}
