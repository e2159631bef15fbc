package stream_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

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

// fakeSubject answers batched direct gets of stream FAKE as the server
// does, from a subject of five messages (sequences 1 to 5), at most two
// messages an answer; drop, given the request's number (from 1) and its
// start, names the sequences that answer leaves out (a connection closed
// and replaced mid-batch), with every other message's count of those
// after it as the server has it.
func fakeSubject(t *testing.T, drop func(req int, from uint64) []uint64) jetstream.JetStream {
	t.Helper()
	reqs := 0
	return natstest.FakeDirectGet(t, "FAKE", func(body []byte) (out []natstest.Stored) {
		var req struct {
			Seq uint64 `json:"seq"`
		}
		_ = json.Unmarshal(body, &req)
		reqs++
		dropped := drop(reqs, req.Seq)
		for seq := req.Seq; seq <= 5 && len(out) < 2; seq++ {
			if !slices.Contains(dropped, seq) {
				out = append(out, natstest.Stored{Seq: seq, Subject: "tx.a", Data: []byte("m" + strconv.FormatUint(seq, 10)), Pending: 5 - seq})
			}
		}
		return out
	})
}

// ReadSubject never returns part of a transaction's messages as all of
// them (intake's receipt-order reads, a story's quarantined notifications):
// a message lost within an answer, or at the start of one, is asked for
// again; an answer with nothing while more were announced, and losses in
// every answer, are errors.
func TestReadSubjectNeverReturnsAPartAsAll(t *testing.T) {
	read := func(js jetstream.JetStream) ([]uint64, error) {
		var seen []uint64
		err := stream.ReadSubject(t.Context(), js, "FAKE", "tx.a", func(m *jetstream.RawStreamMsg) bool {
			seen = append(seen, m.Sequence)
			return true
		})
		return seen, err
	}
	all := []uint64{1, 2, 3, 4, 5}
	for _, tc := range []struct {
		name string
		drop func(req int, from uint64) []uint64
		err  bool
	}{
		// The first answer: 1, 2 (counts 4, 3); the second 3 lost within
		// it: 4 counts 1 after 2 counted 3 (the start of an answer may
		// count arrivals, never fewer).
		{"lost within an answer", func(req int, _ uint64) []uint64 {
			if req == 1 {
				return []uint64{2}
			}
			return nil
		}, false},
		{"lost at an answer's start, once", func(req int, _ uint64) []uint64 {
			if req == 2 {
				return []uint64{3}
			}
			return nil
		}, false},
		{"an empty answer while more were announced", func(req int, _ uint64) []uint64 {
			if req == 2 {
				return []uint64{3, 4, 5}
			}
			return nil
		}, true},
		// (A loss two answers agree on at an answer's start is taken for
		// messages removed meanwhile.)
		{"lost within every answer", func(_ int, from uint64) []uint64 { return []uint64{from + 1} }, true},
	} {
		got, err := read(fakeSubject(t, tc.drop))
		if tc.err && err == nil || !tc.err && (err != nil || !slices.Equal(got, all)) {
			t.Errorf("%s: read %v, %v", tc.name, got, err)
		}
	}
}

// A read of the oldest unsettled message that fails (the store stopped)
// is an error, never "none": provisioning would lower a max_age over
// messages no consumer has settled, and the expiry guard miss them. A
// consumer with nothing after its floor has none.
func TestOldestUnsettledReportsAFailedRead(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "O", Subjects: []string{"o.>"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, FilterSubjects: []string{"o.a", "o.b"}})
	if err != nil {
		t.Fatal(err)
	}
	ci := c.CachedInfo()
	if m, err := stream.OldestUnsettled(ctx, s, ci); m != nil || err != nil {
		t.Fatalf("an empty stream: %v, %v", m, err)
	}
	srv.Stop()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if m, err := stream.OldestUnsettled(short, s, ci); err == nil {
		t.Fatalf("a read of a stopped store: %v and no error", m)
	}
}
