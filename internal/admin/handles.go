package admin

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
)

// handles keeps, per connection, the transactions' bucket and the events
// stream once opened. Opening either asks the server for the stream's
// info, a request through its JetStream API queue; a page that read 50
// transactions opened them 100 times. The handle's cached info is only
// used for the stream's name and its direct gets, which the relay always
// provisions.
type handles struct {
	mu     sync.Mutex
	tx     map[jetstream.JetStream]jetstream.KeyValue
	events map[jetstream.JetStream]jetstream.Stream
}

// txBucket is SENGO_TX on js.
func (h *handles) txBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	return opened(ctx, &h.mu, &h.tx, js, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.KeyValue(ctx, event.BucketTx)
	})
}

// eventStream is SENGO_EVENTS on js.
func (h *handles) eventStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	return opened(ctx, &h.mu, &h.events, js, func(ctx context.Context) (jetstream.Stream, error) {
		return js.Stream(ctx, event.StreamEvents)
	})
}

// opened is (*m)[js], opened with open the first time; a failed open is
// not kept.
func opened[T any](ctx context.Context, mu *sync.Mutex, m *map[jetstream.JetStream]T, js jetstream.JetStream, open func(context.Context) (T, error)) (T, error) {
	mu.Lock()
	v, ok := (*m)[js]
	mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := open(ctx)
	if err != nil {
		return v, err
	}
	mu.Lock()
	defer mu.Unlock()
	if *m == nil {
		*m = map[jetstream.JetStream]T{}
	}
	(*m)[js] = v
	return v, nil
}
