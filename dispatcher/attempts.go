package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// attempts is the delivery record of one event for one endpoint, in KV
// SENGO_DELIVERY. It counts real HTTP attempts: redeliveries that only
// wait (an ordered event behind its predecessor, an early redelivery) do
// not spend the retry budget.
type attempts struct {
	Count      int       `json:"count"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
	NextAt     time.Time `json:"nextAt,omitzero"`
	LastStatus int       `json:"lastStatus,omitempty"`
	LastError  string    `json:"lastError,omitempty"`
	Excerpt    string    `json:"excerpt,omitempty"`
	// Done: delivered or dead-lettered. Ordered endpoints read it to know
	// that a later status of the same transaction may go.
	Done bool `json:"done,omitempty"`
	// DeadLetter is the reason of a dead letter decided but not yet stored
	// (SENGO_DLQ refused it): a redelivery stores it without posting the
	// event again.
	DeadLetter string `json:"deadLetter,omitempty"`
	// Seq is the event's sequence in SENGO_EVENTS: an ordered successor
	// waits only for a record of an event stored before it.
	Seq uint64 `json:"seq,omitempty"`
	// Copy is when the replayed copy the record is of was stored in
	// SENGO_REPLAY (zero for a live event's): a record of another copy
	// that held the same sequence before the stream was made anew has
	// another.
	Copy time.Time `json:"copy,omitzero"`
}

// recordable reports whether id can name an attempt record: it can end a
// KV key (the relay's ids are evt_ and 32 hex digits). A message whose
// id cannot (not the relay's: another publisher's on sengo.events.>) is
// kept under its stream sequence instead (seqID).
func recordable(id string) bool {
	if id == "" || len(id) > 256 || strings.HasPrefix(id, ".") || strings.HasSuffix(id, ".") || strings.Contains(id, "..") {
		return false
	}
	for _, r := range id { // what a KV key may hold
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '=' || r == '.' || r == '/') {
			return false
		}
	}
	return true
}

// seqID is the id the attempt record of a message without a recordable
// id is kept under: "seq-" and its stream sequence.
func seqID(seq uint64) string { return "seq-" + strconv.FormatUint(seq, 10) }

// recordID is the id an event's attempt record is kept under: its own, or
// seqID of seq when it is not recordable.
func recordID(id string, seq uint64) string {
	if !recordable(id) {
		return seqID(seq)
	}
	return id
}

// attemptKey is the KV key of an event's record for an endpoint. Replayed
// and redriven copies (replaySeq > 0) get their own record: a fresh budget.
func attemptKey(endpoint, eventID string, replaySeq uint64) string {
	if replaySeq > 0 {
		return fmt.Sprintf("%s.%s.r%d", endpoint, eventID, replaySeq)
	}
	return endpoint + "." + eventID
}

type attemptStore struct {
	kv jetstream.KeyValue
	// refused, when not nil, holds when a write was last refused (Unix
	// nanoseconds of the host's clock): see refusedWithin.
	refused *atomic.Int64
}

// get reads key's record. For a replayed copy, copy is when it was stored
// in SENGO_REPLAY (zero for a live event), and the record returned is
// marked so (attempts.Copy). A record of another copy, one that held the
// same sequence before SENGO_REPLAY was made anew, is none of this one's
// (its done acknowledged the copy unposted, and removed a redriven copy's
// new dead letter): it names another copy, or, written before Copy was
// kept, it was written before this copy was stored.
func (s attemptStore) get(ctx context.Context, key string, copy time.Time) (attempts, bool, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return attempts{Copy: copy}, false, nil
	}
	if err != nil {
		return attempts{}, false, fmt.Errorf("read attempts %s: %w", key, err)
	}
	var a attempts
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return attempts{}, false, fmt.Errorf("decode attempts %s: %w", key, err)
	}
	if !copy.IsZero() && (!a.Copy.IsZero() && !a.Copy.Equal(copy) || a.Copy.IsZero() && e.Created().Before(copy)) {
		return attempts{Copy: copy}, false, nil
	}
	if !copy.IsZero() {
		a.Copy = copy
	}
	return a, true, nil
}

func (s attemptStore) put(ctx context.Context, key string, a attempts) error {
	b, _ := json.Marshal(a)
	if _, err := s.kv.Put(ctx, key, b); err != nil {
		if s.refused != nil {
			s.refused.Store(time.Now().UnixNano())
		}
		return fmt.Errorf("write attempts %s: %w", key, err)
	}
	return nil
}

// refusedWithin reports whether a write was refused in the last d: then a
// record that is missing may be one the store refused (a full account or
// disk), not one that was never written.
func (s attemptStore) refusedWithin(d time.Duration) bool {
	if s.refused == nil {
		return false
	}
	at := s.refused.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < d
}

// record adds a finished attempt to a.
func (a *attempts) record(r attemptResult, at time.Time) {
	a.Count++
	if a.First.IsZero() {
		a.First = at
	}
	a.Last = at
	a.LastStatus = r.Status
	a.LastError = ""
	if r.Err != nil {
		a.LastError = r.Err.Error()
	}
	a.Excerpt = r.Excerpt
}
