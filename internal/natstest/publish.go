package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishChunk is how many async publishes PublishMany keeps in flight:
// nats.go stalls a client with more than 4,000 unacknowledged ("stalled
// with too many outstanding async published messages" after 200 ms), which
// a busy CI store reached with 10,000 in flight.
const publishChunk = 1000

// PublishMany stores n messages, msg(i) for each i, publishing
// asynchronously a chunk at a time and failing the test on any publish the
// store did not acknowledge.
func PublishMany(t testing.TB, js jetstream.JetStream, n int, msg func(i int) *nats.Msg) {
	t.Helper()
	acks := make([]jetstream.PubAckFuture, 0, min(n, publishChunk))
	wait := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, a := range acks {
			select {
			case <-a.Ok():
			case err := <-a.Err():
				t.Fatalf("publish to %s: %v", a.Msg().Subject, err)
			case <-ctx.Done():
				t.Fatalf("publish to %s: no acknowledgement in 30s", a.Msg().Subject)
			}
		}
		acks = acks[:0]
	}
	for i := range n {
		a, err := js.PublishMsgAsync(msg(i))
		if err != nil {
			t.Fatal(err)
		}
		if acks = append(acks, a); len(acks) == publishChunk {
			wait()
		}
	}
	wait()
}
