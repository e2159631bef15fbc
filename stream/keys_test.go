package stream_test

import (
	"context"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/stream"
)

// Keys lists the keys a filter matches, a deleted one too (its last entry
// is the delete), sorted; another bucket's keys are not among them.
func TestKeysListsWhatTheFilterMatches(t *testing.T) {
	js, kv := bucketB(t)
	ctx := context.Background()
	other, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "B2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"_relay.b", "_relay.a", "_relay.c", "_retire.x.y", "other"} {
		if _, err := kv.PutString(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.PutString(ctx, "_relay.z", "v"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "_relay.c"); err != nil {
		t.Fatal(err)
	}
	for filter, want := range map[string][]string{
		"_relay.*": {"_relay.a", "_relay.b", "_relay.c"},
		">":        {"_relay.a", "_relay.b", "_relay.c", "_retire.x.y", "other"},
		"none.*":   {},
	} {
		got, err := stream.Keys(ctx, js, "B", filter)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("Keys(%q) = %v, want %v", filter, got, want)
		}
	}
	if _, err := stream.Keys(ctx, js, "NONE", ">"); err == nil {
		t.Error("a missing bucket's keys: no error")
	}
}

// Forget leaves nothing of a key, not even the marker a delete leaves.
func TestForgetLeavesNoMarker(t *testing.T) {
	js, kv := bucketB(t)
	ctx := context.Background()
	for _, k := range []string{"_relay.a", "_relay.b"} {
		if _, err := kv.PutString(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Forget(ctx, js, "B", "_relay.a"); err != nil {
		t.Fatal(err)
	}
	if got, err := stream.Keys(ctx, js, "B", ">"); err != nil || !slices.Equal(got, []string{"_relay.b"}) {
		t.Fatalf("keys after Forget: %v, %v", got, err)
	}
}

// bucketB is a KV bucket "B" on a server of the test's own.
func bucketB(t *testing.T) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "B"})
	if err != nil {
		t.Fatal(err)
	}
	return js, kv
}
