package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/stream"
)

// A consumer created again (deleted by its retirement, or by hand) starts
// after the last event the retired one handled, which its tombstone in
// SENGO_DELIVERY keeps. When that read failed (here the bucket's node is
// down, SENGO_EVENTS' is up), it was taken for no tombstone: the consumer
// was created at deliver_from ("new"), and every event between was skipped
// for good. The creation now fails, and is tried again.
func TestATombstoneThatCannotBeReadCreatesNoConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster: not with -short (.ci/run runs it)")
	}
	t.Parallel()
	cl := natstest.StartCluster(t, 3)
	nc, err := nats.Connect(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	if err := stream.Provision(ctx, js, testSpec()); err != nil {
		t.Fatal(err)
	}
	// The bucket on another node than SENGO_EVENTS: created again there.
	node := func(name string) string {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Cluster.Leader
	}
	bucket := "KV_" + event.BucketDelivery
	other := "n1"
	if node(event.StreamEvents) == other {
		other = "n2"
	}
	s, _ := js.Stream(ctx, bucket)
	cfg := s.CachedInfo().Config
	cfg.Placement = &jetstream.Placement{Tags: []string{"node:" + other}}
	if err := js.DeleteStream(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if node(bucket) != other {
		t.Fatalf("SENGO_DELIVERY on %s, want %s", node(bucket), other)
	}
	kv, err := js.KeyValue(ctx, event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	ep := Endpoint{Name: "orders", FilterSubjects: []string{"sengo.events.>"}, Timeout: time.Second}
	b, _ := json.Marshal(tombstone{Last: 7, At: time.Now()})
	if _, err := kv.Put(ctx, retiredKey(event.StreamEvents, ConsumerName(ep.Name)), b); err != nil {
		t.Fatal(err)
	}
	down := node(bucket)
	i, _ := strconv.Atoi(strings.TrimPrefix(down, "n"))
	cl.Stop(i - 1)
	// Asked while SENGO_EVENTS answers: its node is up.
	poll.Until(t, "SENGO_EVENTS answering", func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := js.Consumer(c, event.StreamEvents, ConsumerName(ep.Name))
		return errors.Is(err, jetstream.ErrConsumerNotFound)
	})
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := ensureConsumer(c, js, event.StreamEvents, ep, ep.FilterSubjects, "new"); err == nil {
		cons, _ := js.Consumer(ctx, event.StreamEvents, ConsumerName(ep.Name))
		t.Fatalf("created with its tombstone unread: deliver policy %v, from %d (want an error, and none created)", cons.CachedInfo().Config.DeliverPolicy, cons.CachedInfo().Config.OptStartSeq)
	}
}
