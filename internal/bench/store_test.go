package bench

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/stream"
)

// The report names the store it measured, and is meant to be pasted into
// BENCHMARKS.md: --nats-url's credentials were printed in it as given.
func TestReportNamesTheStoreWithoutCredentials(t *testing.T) {
	for _, url := range []string{"nats://bench:S3cretPass@n1:4222", "nats://S3cretToken@n1:4222", "bench:S3cretPass@n1:4222,nats://n2:4222"} {
		got := storeName(Config{NATSURL: url})
		if strings.Contains(got, "S3cret") || !strings.HasPrefix(got, "external ") || !strings.Contains(got, "n1:4222") {
			t.Errorf("store of %q named %q", url, got)
		}
	}
}

// "Measure against this cluster" purged every stream of the relay it found
// there and reset their limits: the README's own command pointed at a
// production cluster emptied its inbox, events and dead letters. A store
// that holds any of them is refused unless --wipe-store says so.
func TestAStoreInUseIsRefused(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	spec := stream.Spec{Replicas: 1, Storage: jetstream.FileStorage, Streams: []stream.StreamSpec{
		{Name: event.StreamEvents, Subjects: []string{event.SubjectsEvents}, Limits: stream.Limits{MaxAge: 90 * 24 * time.Hour}},
	}}
	if err := stream.Provision(t.Context(), js, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), "sengo.events.main.retail.success", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	spec.Streams[0].Limits.MaxAge = 30 * 24 * time.Hour
	_, err := Run(t.Context(), Config{NATSURL: srv.URL(), Spec: spec, Scenarios: []string{"publish"}, Duration: 100 * time.Millisecond, Concurrency: 1})
	if !errors.Is(err, ErrStoreInUse) || !strings.Contains(err.Error(), event.StreamEvents) {
		t.Fatalf("run against a store in use: %v", err)
	}
	info, err := js.Stream(t.Context(), event.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if st := info.CachedInfo(); st.State.Msgs != 1 || st.Config.MaxAge != 90*24*time.Hour {
		t.Fatalf("the stream holds %d messages, keeps them %s", st.State.Msgs, st.Config.MaxAge)
	}
}
