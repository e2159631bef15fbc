package stream

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Keys returns, sorted, the keys of the KV bucket that match filter (a key
// with KV wildcards, "*" or ">"), those whose last entry deletes them too:
// a caller that wants values reads each and skips jetstream.ErrKeyNotFound.
//
// It reads them from the bucket stream's subject state, which the server
// answers from one snapshot, so a key stored before the call is never
// missing. jetstream.KeyValue.ListKeys is a watcher that stops at the
// first entry the server reports nothing pending after, and while keys are
// being written that count can reach zero early (nats-io/nats.py#995): a
// listing of heartbeats that relays rewrite all the time missed some.
// (Past 100,000 keys the server answers in pages, each its own snapshot.)
func Keys(ctx context.Context, js jetstream.JetStream, bucket, filter string) ([]string, error) {
	s, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("keys of %s: %w", bucket, err)
	}
	prefix := "$KV." + bucket + "."
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+filter))
	if err != nil {
		return nil, fmt.Errorf("keys of %s: %w", bucket, err)
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subject, prefix))
	}
	slices.Sort(keys)
	return keys, nil
}

// Forget removes every entry of key from the KV bucket, leaving no delete
// marker: a key no one watches, written under a name used once (a relay's
// heartbeat under its instance name), would otherwise leave a marker that
// every listing returns until the bucket's TTL removes it.
func Forget(ctx context.Context, js jetstream.JetStream, bucket, key string) error {
	s, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return fmt.Errorf("forget %s: %w", bucket, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject("$KV."+bucket+"."+key)); err != nil {
		return fmt.Errorf("forget %s: %w", bucket, err)
	}
	return nil
}
