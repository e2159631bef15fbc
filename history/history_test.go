package history

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/stream"
)

func setup(t *testing.T) (*natstest.Server, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	l := stream.Limits{MaxAge: time.Hour, Duplicates: time.Minute}
	err := stream.Provision(context.Background(), js, stream.Spec{Replicas: 1, Storage: jetstream.FileStorage, Streams: []stream.StreamSpec{
		{Name: StreamAttempts, Subjects: []string{SubjectsAttempts}, Limits: l},
		{Name: StreamRefs, Subjects: []string{SubjectsRefs}, Limits: stream.Limits{MaxAge: time.Hour, Duplicates: time.Minute, PerSubject: 1}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return srv, js
}

// Attempts of one event are read across endpoints, bounded, and other
// events' attempts are not mixed in; a reference is one entry however
// often it is written.
func TestRoundTrip(t *testing.T) {
	srv, js := setup(t)
	nc, _ := srv.Connect(t)
	var stored atomic.Int64
	w, err := NewWriter(nc, WriterConfig{OnResult: func(_ string, err error) {
		if err == nil {
			stored.Add(1)
		}
	}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		w.Attempt(Attempt{Endpoint: "orders", EventID: "evt_a", Number: i, Outcome: "retry"})
	}
	w.Attempt(Attempt{Endpoint: "ledger", EventID: "evt_a", Number: 1, Outcome: "delivered"})
	w.Attempt(Attempt{Endpoint: "orders", EventID: "evt_b", Number: 1, Outcome: "delivered"})
	for range 3 {
		w.Ref(Ref{Project: "main", MerchantRef: "INV.1 *>", TransactionID: "tx-1"})
	}
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := stored.Load(); n != 8 {
		t.Fatalf("%d records reported stored, want 8", n)
	}
	got, more, err := Attempts(context.Background(), js, "evt_a", 0)
	if err != nil || more || len(got) != 4 {
		t.Fatalf("evt_a: %d attempts (more %v) %v, want 4", len(got), more, err)
	}
	if got, more, _ := Attempts(context.Background(), js, "evt_a", 2); len(got) != 2 || !more {
		t.Errorf("limit 2: %d attempts, more %v", len(got), more)
	}
	if _, _, err := Attempts(context.Background(), js, "", 0); err == nil {
		t.Error("an empty event id read")
	}
	// An id that is no token is read under its hash: never as a wildcard
	// or as more tokens.
	for _, odd := range []string{"evt.a", "evt_*", ">"} {
		if got, _, err := Attempts(context.Background(), js, odd, 0); err != nil || len(got) != 0 {
			t.Errorf("event id %q: %d attempts, %v; want none", odd, len(got), err)
		}
	}
	refs, err := Lookup(context.Background(), js, "main", "INV.1 *>", 0)
	if err != nil || len(refs) != 1 || refs[0].TransactionID != "tx-1" {
		t.Fatalf("lookup: %v %v", refs, err)
	}
}

// A store that does not answer costs at most MaxPending records in
// memory: later records are dropped, counted, within StallWait each.
func TestWriterIsBoundedWhenTheStoreStops(t *testing.T) {
	srv, _ := setup(t)
	nc, _ := srv.Connect(t)
	var failed atomic.Int64
	w, err := NewWriter(nc, WriterConfig{MaxPending: 8, StallWait: 10 * time.Millisecond, OnResult: func(_ string, err error) {
		if err != nil {
			failed.Add(1)
		}
	}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	for i := range 40 {
		w.Attempt(Attempt{Endpoint: "orders", EventID: fmt.Sprintf("evt_%d", i), Number: 1})
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("40 records took %s with the store down", d)
	}
	if n := failed.Load(); n < 32 {
		t.Errorf("%d records counted failed at once, want at least the 32 past MaxPending", n)
	}
}

// A merchantRef naming more transactions than the server answers in one
// batched get (1,024) still finds the first limit of them.
func TestLookupOfAReferenceWithManyTransactions(t *testing.T) {
	_, js := setup(t)
	ctx := context.Background()
	natstest.PublishMany(t, js, 1100, func(i int) *nats.Msg {
		id := fmt.Sprintf("tx-%d", i)
		b, _ := json.Marshal(Ref{Project: "main", MerchantRef: "INV-MANY", TransactionID: id})
		return &nats.Msg{Subject: refPrefix("main", "INV-MANY") + "." + hash(id), Data: b}
	})
	refs, err := Lookup(ctx, js, "main", "INV-MANY", 20)
	if err != nil || len(refs) != 20 {
		t.Fatalf("lookup: %d refs, %v; want 20", len(refs), err)
	}
	if refs, err := Lookup(ctx, js, "main", "INV-NONE", 20); err != nil || len(refs) != 0 {
		t.Fatalf("lookup of nothing: %v, %v", refs, err)
	}
}

// A batched get that its deadline cuts short is not taken for the whole
// answer: the client library ends it quietly, as if the server had sent
// everything, and a console search showed the first few transactions of a
// merchantRef as all of them.
func TestLookupCutShortIsNotTakenAsComplete(t *testing.T) {
	_, js := setup(t)
	const n = 20
	natstest.PublishMany(t, js, n, func(i int) *nats.Msg {
		id := fmt.Sprintf("tx-%d", i)
		b, _ := json.Marshal(Ref{Project: "main", MerchantRef: "INV-CUT", TransactionID: id})
		return &nats.Msg{Subject: refPrefix("main", "INV-CUT") + "." + hash(id), Data: b}
	})
	if refs, err := Lookup(context.Background(), js, "main", "INV-CUT", 0); err != nil || len(refs) != n {
		t.Fatalf("lookup: %d refs, %v; want %d", len(refs), err, n)
	}
	kept := 0
	afterRef = func(ctx context.Context) {
		if kept++; kept == 3 {
			<-ctx.Done() // the deadline passes mid-batch
		}
	}
	t.Cleanup(func() { afterRef = func(context.Context) {} })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if refs, err := Lookup(ctx, js, "main", "INV-CUT", 0); err == nil && len(refs) != n {
		t.Fatalf("lookup cut short at its deadline: %d of %d refs and no error", len(refs), n)
	}
}

// An event id goes into an attempt's subject as it is only when it is one
// short token (128 bytes at most): any longer one is hashed, so that no
// id another publisher puts on an event makes a subject long enough to
// trouble the server's control line.
func TestAnEventIDOver128BytesIsHashedInItsSubject(t *testing.T) {
	for n, raw := range map[int]bool{36: true, 128: true, 129: false, 4000: false} {
		id := strings.Repeat("a", n)
		subj := AttemptSubject("orders", id)
		if got := strings.HasSuffix(subj, "."+id); got != raw || !raw && len(subj) > 64 {
			t.Errorf("an event id of %d bytes: subject %.80q", n, subj)
		}
	}
}

// A merchantRef lookup's batched get whose counts skip (a message lost on
// a replaced connection: 4, 3, then 0) is not taken as all the refs: the
// lookup scans instead (here: no stream behind the answers, an error).
func TestALookupWhoseCountsSkipIsNotAll(t *testing.T) {
	js := natstest.FakeDirectGet(t, StreamRefs, func([]byte) (out []natstest.Stored) {
		for i, left := range []uint64{4, 3, 0} {
			b, _ := json.Marshal(Ref{Project: "main", MerchantRef: "INV-1", TransactionID: fmt.Sprint("tx-", i)})
			out = append(out, natstest.Stored{Seq: uint64(i + 1), Subject: RefSubject("main", "INV-1", fmt.Sprint("tx-", i)), Data: b, Pending: left})
		}
		return out
	})
	refs, err := Lookup(t.Context(), js, "main", "INV-1", 50)
	if err == nil && len(refs) != 5 {
		t.Fatalf("a lookup with a count skipped: %d refs, no error", len(refs))
	}
}
