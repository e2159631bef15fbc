package stream_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/stream"
)

func spec(maxAge time.Duration) stream.Spec {
	return stream.Spec{
		Replicas: 1,
		Storage:  jetstream.FileStorage,
		Streams: []stream.StreamSpec{{
			Name: "T_INBOX", Subjects: []string{"t.inbox.>"},
			Limits: stream.Limits{MaxAge: maxAge, Duplicates: time.Minute},
		}},
		Buckets: []stream.BucketSpec{{Name: "T_TX", History: 1}},
	}
}

// Re-provisioning with a changed limit updates the stream in place: its
// messages survive.
func TestProvisionUpdatesInPlace(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()

	if err := stream.Check(ctx, js, spec(time.Hour)); err == nil {
		t.Fatal("Check passed before provisioning")
	}
	if err := stream.Provision(ctx, js, spec(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.inbox.x", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := stream.Provision(ctx, js, spec(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "T_INBOX")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 48*time.Hour {
		t.Errorf("MaxAge = %v, want 48h", info.Config.MaxAge)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream has %d messages after update, want 1", info.State.Msgs)
	}
	if err := stream.Check(ctx, js, spec(48*time.Hour)); err != nil {
		t.Errorf("Check after provisioning: %v", err)
	}
}

func TestProvisionReportsEveryFailure(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	bad := spec(time.Hour)
	bad.Replicas = 3 // a single server cannot hold R3
	bad.Streams = append(bad.Streams, stream.StreamSpec{Name: "T_OTHER", Subjects: []string{"t.other.>"}, Limits: stream.Limits{MaxAge: time.Hour}})
	err := stream.Provision(context.Background(), js, bad)
	if err == nil {
		t.Fatal("R3 on one server accepted")
	}
	for _, name := range []string{"T_INBOX", "T_OTHER", "T_TX"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}

// In a cluster, a consumer whose leader does not answer (its one replica
// on a node down) is not in the stream's consumer list as it is:
// nats-server names it as missing, and nats.go lists it with no state at all, no
// name, nothing pending, which read as settled. A lower max_age was then
// given over its backlog, and nats-server deleted the undelivered
// messages at once. The age is kept while a consumer has no leader.
func TestProvisionKeepsTheAgeOverAConsumerItCannotRead(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	c := natstest.StartCluster(t, 3)
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	sp := spec(time.Hour)
	sp.Replicas = 3
	if err := stream.Provision(ctx, js, sp); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "T_INBOX", jetstream.ConsumerConfig{Durable: "behind", AckPolicy: jetstream.AckExplicitPolicy, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.inbox.x", []byte("answered 200")); err != nil {
		t.Fatal(err)
	}
	stored := time.Now()
	ci, err := cons.Info(ctx)
	if err != nil || ci.Cluster == nil || len(ci.Cluster.Leader) < 2 {
		t.Fatalf("consumer info %v %+v", err, ci)
	}
	node := int(ci.Cluster.Leader[1] - '1') // "n1".."n3"
	poll.Until(t, "the message older than the lower age", func() bool { return time.Since(stored) > 2300*time.Millisecond })
	c.Stop(node)
	poll.Within(t, 30*time.Second, "the stream answering with its consumer's node down", func() bool {
		_, err := js.Stream(ctx, "T_INBOX")
		return err == nil
	})
	lower := spec(2 * time.Second)
	lower.Streams[0].Limits.Duplicates = time.Second
	lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	age, why, err := stream.KeptAge(lctx, js, lower.Streams[0])
	if err != nil || age != time.Hour || !strings.Contains(why, "consumer") {
		t.Fatalf("max_age %s (%q, %v) with consumer behind unreadable on node n%d: want the old one kept", age, why, err, node+1)
	}
}

// Two relays starting together on a cluster both provision the same R3
// streams and buckets; both must succeed promptly.
func TestConcurrentProvisionOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	c := natstest.StartCluster(t, 3)
	sp := spec(time.Hour)
	sp.Replicas = 3
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			nc, err := nats.Connect(c.URL())
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			errs <- stream.Provision(context.Background(), js, sp)
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent provisioning: %v", err)
		}
	}
	// A relay whose configuration lost nats.replicas (1 by default) took
	// every stream and bucket of the cluster down to one copy, silently.
	// Lowering them is refused, naming how to do it by hand.
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	sp.Replicas = 1
	err = stream.Provision(context.Background(), js, sp)
	if err == nil || !strings.Contains(err.Error(), "T_INBOX") || !strings.Contains(err.Error(), "T_TX") || !strings.Contains(err.Error(), "3 replicas") {
		t.Fatalf("provisioning at 1 replica over 3: %v", err)
	}
	for _, name := range []string{"T_INBOX", "KV_T_TX"} {
		s, err := js.Stream(context.Background(), name)
		if err != nil || s.CachedInfo().Config.Replicas != 3 {
			t.Fatalf("%s after the refused downgrade: %v %+v", name, err, s)
		}
	}
}

// A stream made by hand without direct gets fails the check (the console
// and the merchantRef index read with them), naming the fix.
func TestCheckWantsDirectGets(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	if err := stream.Provision(ctx, js, spec(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := stream.Check(ctx, js, spec(time.Hour)); err != nil {
		t.Fatalf("Check after Provision: %v", err)
	}
	s, _ := js.Stream(ctx, "T_INBOX")
	cfg := s.CachedInfo().Config
	cfg.AllowDirect = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := stream.Check(ctx, js, spec(time.Hour)); err == nil || !strings.Contains(err.Error(), "allow_direct is off") {
		t.Fatalf("Check of a stream without direct gets: %v", err)
	}
}

// A bucket's MaxValueSize bounds each value: the store refuses a larger one.
func TestProvisionBoundsBucketValues(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	sp := spec(time.Hour)
	sp.Buckets[0].MaxValueSize = 64
	if err := stream.Provision(ctx, js, sp); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "T_TX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "fits", make([]byte, 64)); err != nil {
		t.Fatalf("a value of 64 bytes: %v", err)
	}
	if _, err := kv.Put(ctx, "too.big", make([]byte, 65)); err == nil {
		t.Fatal("a value of 65 bytes was taken by a bucket bounded at 64")
	}
}

// A file stream without a per-subject limit is stored in 4 MB blocks, not
// the 8 MB nats-server gives a stream with no limit at all: the console
// reads single messages at random, and the server loads a whole block for
// each. Its per-subject limit is one no subject reaches.
func TestFileStreamsUse4MBBlocks(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	if err := stream.Provision(ctx, js, spec(time.Hour)); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 100<<10)
	natstest.PublishMany(t, js, 60, func(int) *nats.Msg { return &nats.Msg{Subject: "t.inbox.x", Data: body} }) // 6 MB
	blocks, err := filepath.Glob(filepath.Join(srv.Dir(), "jetstream", "*", "streams", "T_INBOX", "msgs", "*.blk"))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) < 2 {
		t.Errorf("6 MB stored in %d block files, want at least 2 (4 MB blocks)", len(blocks))
	}
	s, err := js.Stream(ctx, "T_INBOX")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 60 {
		t.Errorf("stream holds %d messages of one subject, want all 60: the per-subject limit bound", info.State.Msgs)
	}
}

// Lowering a stream's max_age deletes, at once, every message older than
// the new age, settled or not: a lowered streams.events.max_age deleted an
// endpoint's backlog (events never delivered, never dead-lettered), a
// lowered streams.inbox.max_age notifications answered 200 and not yet
// processed. The stream keeps its age while a consumer holds a message
// older than the new one unsettled, and says so; once none does, the
// lower age applies.
func TestProvisionDoesNotLowerAnAgeOverUnsettledMessages(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	if err := stream.Provision(ctx, js, spec(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A consumer that settled everything, and one with a backlog.
	for _, name := range []string{"settled", "behind"} {
		if _, err := js.CreateOrUpdateConsumer(ctx, "T_INBOX", jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, "t.inbox.x", []byte("answered 200")); err != nil {
		t.Fatal(err)
	}
	settle := func(name string) {
		t.Helper()
		c, err := js.Consumer(ctx, "T_INBOX", name)
		if err != nil {
			t.Fatal(err)
		}
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	settle("settled")
	stored := time.Now()
	poll.Until(t, "the message older than the lower age", func() bool { return time.Since(stored) > 2300*time.Millisecond })

	var warned []string
	lower := spec(2 * time.Second) // a fresh message has 2 s to be read in (Settle 0)
	lower.Streams[0].Limits.Duplicates = time.Second
	lower.Warn = func(_, msg string) { warned = append(warned, msg) }
	kept := map[string]bool{}
	lower.Kept = func(stream string, k bool) { kept[stream] = k }
	if err := stream.Provision(ctx, js, lower); err != nil {
		t.Fatal(err)
	}
	info := streamInfo(t, js, "T_INBOX")
	if info.State.Msgs != 1 || info.Config.MaxAge != time.Hour {
		t.Fatalf("max_age %s with %d messages: the unsettled message was deleted", info.Config.MaxAge, info.State.Msgs)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "behind") || !strings.Contains(warned[0], "T_INBOX") {
		t.Fatalf("warnings %q, want one naming the stream and the consumer behind", warned)
	}
	if !kept["T_INBOX"] {
		t.Fatal("the stream keeping its age is not told (sengo_relay_stream_max_age_kept)")
	}
	settle("behind")
	// A message younger than the lower age, not yet settled, keeps nothing.
	if _, err := js.Publish(ctx, "t.inbox.x", []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	if err := stream.Provision(ctx, js, lower); err != nil {
		t.Fatal(err)
	}
	if info := streamInfo(t, js, "T_INBOX"); info.Config.MaxAge != 2*time.Second || kept["T_INBOX"] {
		t.Fatalf("max_age %s (kept told %v) once everything is settled, want the lower 2s", info.Config.MaxAge, kept["T_INBOX"])
	}
}

// A message younger than a lowered max_age may still be waiting for a
// retry scheduled under the old one, later than the new age: lowered, it
// was deleted before that retry. The age is kept while an unsettled
// message is within the stream's Settle of the new one. A bucket whose
// entries speak of the stream's messages keeps them as long as the stream
// keeps its own.
func TestProvisionKeepsAnAgeForRetriesAndItsBucketsTTL(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	withBucket := func(age, settle time.Duration) stream.Spec {
		sp := spec(age)
		sp.Streams[0].Limits.Duplicates = min(age, time.Minute)
		sp.Streams[0].Settle = settle
		sp.Streams[0].Retries = func(consumer string) bool { return strings.HasPrefix(consumer, "webhook-") }
		sp.Buckets[0].TTL, sp.Buckets[0].TTLAtLeast = age, []string{"T_INBOX"}
		return sp
	}
	if err := stream.Provision(ctx, js, withBucket(time.Hour, 0)); err != nil {
		t.Fatal(err)
	}
	consumer := func(name string) {
		t.Helper()
		if _, err := js.CreateOrUpdateConsumer(ctx, "T_INBOX", jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	consumer("orders-service") // a subscriber's: the relay schedules no retry for it
	if _, err := js.Publish(ctx, "t.inbox.x", []byte("its retry comes in 9 s")); err != nil {
		t.Fatal(err)
	}
	stored := time.Now()
	poll.Until(t, "the message a second old", func() bool { return time.Since(stored) > time.Second })
	// 10 s asked, and a message may wait 9.5 s for its next look: one a
	// second old might not be looked at before it is 10 s old. Only for the
	// relay's own consumers: a subscriber's holds only what is older.
	if err := stream.Provision(ctx, js, withBucket(10*time.Second, 9500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if info := streamInfo(t, js, "T_INBOX"); info.Config.MaxAge != 10*time.Second {
		t.Fatalf("max_age %s with only a subscriber's consumer behind, want the 10s asked", info.Config.MaxAge)
	}
	if err := stream.Provision(ctx, js, withBucket(time.Hour, 0)); err != nil {
		t.Fatal(err)
	}
	consumer("webhook-orders") // an endpoint's, whose retry may come in 9 s
	if err := stream.Provision(ctx, js, withBucket(10*time.Second, 9500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if info := streamInfo(t, js, "T_INBOX"); info.Config.MaxAge != time.Hour {
		t.Fatalf("max_age %s, want the hour kept for the message waiting for its retry", info.Config.MaxAge)
	}
	if ttl := bucketTTL(t, js, "T_TX"); ttl != time.Hour {
		t.Fatalf("the bucket's ttl %s, want the hour its stream keeps", ttl)
	}
}

func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// A bucket whose TTL follows a stream's kept age took its configured TTL
// when that stream failed to provision in the same pass (here JetStream
// refuses to change its storage), below the age the stream still keeps:
// the older entries went at once. It takes the stream's age as it is.
func TestABucketKeepsItsStreamsAgeWhenTheStreamFails(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T_INBOX", Subjects: []string{"t.inbox.>"}, Storage: jetstream.MemoryStorage, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	sp := spec(2 * time.Second) // file storage: refused
	sp.Streams[0].Limits.Duplicates = time.Second
	sp.Buckets[0].TTL, sp.Buckets[0].TTLAtLeast = 2*time.Second, []string{"T_INBOX"}
	if err := stream.Provision(ctx, js, sp); err == nil {
		t.Fatal("a change of storage was not refused")
	}
	if ttl := bucketTTL(t, js, "T_TX"); ttl != time.Hour {
		t.Fatalf("the bucket's ttl %s, want the hour its stream still keeps", ttl)
	}
}

func bucketTTL(t *testing.T, js jetstream.JetStream, name string) time.Duration {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st.TTL()
}
