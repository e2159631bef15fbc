package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/stream"
)

// DLQFilter selects dead letters. Zero fields match everything.
type DLQFilter struct {
	Endpoint string
	// Project keeps the dead letters of this project's events only: one
	// transaction id may be used in two projects.
	Project       string
	TransactionID string
	MerchantRef   string
	Since, Until  time.Time // when the dead letter was stored
	Seq           uint64    // one dead letter by its SENGO_DLQ sequence
	// After skips the dead letters up to this sequence (a page's cursor).
	After uint64
	// Limit bounds how many are returned (0: all).
	Limit int
	// MaxBytes bounds the stored size of those returned together (0: no
	// bound); the one that reaches it is the last, so at least one is.
	// Each carries its event whole, up to http.max_body_bytes (16 MiB at
	// most): a page of 1,000 could otherwise hold gigabytes.
	MaxBytes int
}

// DLQEntry is a stored dead letter with its place in SENGO_DLQ.
type DLQEntry struct {
	Seq    uint64    `json:"seq"`
	Stored time.Time `json:"stored"`
	DeadLetter
	// Size is the dead letter's stored size in bytes.
	Size int `json:"-"`
}

// Full reports whether entries reached f's MaxBytes: more may follow
// them even when they are fewer than f's Limit.
func (f DLQFilter) Full(entries []DLQEntry) bool {
	if f.MaxBytes == 0 {
		return false
	}
	n := 0
	for _, e := range entries {
		n += e.Size
	}
	return n >= f.MaxBytes
}

func (f DLQFilter) match(e DLQEntry) bool {
	return (f.Endpoint == "" || e.Endpoint == f.Endpoint) && (f.TransactionID == "" || e.TransactionID == f.TransactionID) &&
		(f.MerchantRef == "" || e.MerchantRef == f.MerchantRef) &&
		(f.Until.IsZero() || !e.Stored.After(f.Until)) && (f.Since.IsZero() || !e.Stored.Before(f.Since)) &&
		(f.Project == "" || projectOf(e.Event) == f.Project)
}

// projectOf is the project of a dead letter's event ("" when unreadable).
func projectOf(ev json.RawMessage) string {
	var e struct {
		Source string `json:"source"`
	}
	if json.Unmarshal(ev, &e) != nil || e.Source == "" {
		return ""
	}
	return event.ProjectOf(e.Source)
}

// ListDLQ returns the dead letters matching f, oldest first.
func ListDLQ(ctx context.Context, js jetstream.JetStream, f DLQFilter) ([]DLQEntry, error) {
	s, err := js.Stream(ctx, event.StreamDLQ)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", event.StreamDLQ, err)
	}
	if f.Seq > 0 {
		m, err := s.GetMsg(ctx, f.Seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// Removed meanwhile (its redriven copy delivered, a purge): none
			// selected, so a purge or redrive run again touches nothing
			// instead of failing.
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("dead letter %d: %w", f.Seq, err)
		}
		if e := dlqEntry(m.Sequence, m.Time, m.Subject, m.Data); f.match(e) {
			return []DLQEntry{e}, nil
		}
		return nil, nil
	}
	// By subject: a transaction's dead letters are read alone (those
	// stored before subjects carried the transaction, all of them).
	var out []DLQEntry
	size := 0
	from := stream.From{Time: f.Since}
	if f.After > 0 {
		from = stream.From{Seq: f.After + 1}
	}
	err = stream.ScanFrom(ctx, js, event.StreamDLQ, event.DLQFilters(f.Endpoint, f.TransactionID), from, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		if !f.Until.IsZero() && meta.Timestamp.After(f.Until) {
			return false, nil
		}
		if e := dlqEntry(meta.Sequence.Stream, meta.Timestamp, m.Subject(), m.Data()); f.match(e) {
			out = append(out, e)
			size += e.Size
		}
		return (f.Limit == 0 || len(out) < f.Limit) && (f.MaxBytes == 0 || size < f.MaxBytes), nil
	}, nil)
	return out, err
}

// DLQPage is how many dead letters EachDLQPage holds at a time, and
// DLQPageBytes their stored size at most (past it, a page ends early).
const (
	DLQPage      = 1000
	DLQPageBytes = 32 << 20
)

// EachDLQPage calls fn with the dead letters matching f, oldest first, at
// most DLQPage at a time, so that acting on every dead letter of a long
// outage never holds them all in memory. It reaches none stored after it
// started, nor past upTo (0: no bound of its own): a redrive to an
// endpoint that dead-letters again at once (a 410) would otherwise meet
// its own new dead letters, page after page, and redrive them again.
// f.Limit and f.After are its own.
func EachDLQPage(ctx context.Context, js jetstream.JetStream, f DLQFilter, upTo uint64, fn func([]DLQEntry) error) error {
	st, err := js.Stream(ctx, event.StreamDLQ)
	if err != nil {
		return err
	}
	last := st.CachedInfo().State.LastSeq
	if last == 0 {
		return nil
	}
	if upTo == 0 || upTo > last {
		upTo = last
	}
	f.Limit, f.After, f.MaxBytes = DLQPage, 0, DLQPageBytes
	for {
		page, err := ListDLQ(ctx, js, f)
		if err != nil {
			return err
		}
		n := 0
		for n < len(page) && page[n].Seq <= upTo {
			n++
		}
		if n < len(page) {
			page = page[:n]
			f.Limit = 0 // nothing further is wanted: end after this page
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if len(page) < DLQPage && !f.Full(page) || f.Seq > 0 || f.Limit == 0 || len(page) == 0 {
			return nil
		}
		f.After = page[len(page)-1].Seq
	}
}

func dlqEntry(seq uint64, at time.Time, subject string, data []byte) DLQEntry {
	e := DLQEntry{Seq: seq, Stored: at.UTC(), Size: len(data)}
	if err := json.Unmarshal(data, &e.DeadLetter); err != nil {
		// Not a dead letter (another publisher's message on sengo.dlq.>):
		// listed as an undecodable one of the endpoint its subject names,
		// which no redrive sends and a purge removes. Failing the read
		// instead stopped every listing, redrive and purge that reached it,
		// a purge by its own sequence too.
		endpoint, _, _ := strings.Cut(strings.TrimPrefix(subject, event.DLQSubject("")), ".")
		e.DeadLetter = DeadLetter{Endpoint: endpoint, Reason: ReasonUndecodable, LastError: "stored on " + event.StreamDLQ + " but not a dead letter"}
	}
	return e
}

// Redrive puts each dead letter back into normal delivery for its endpoint
// with a fresh retry budget and the same webhook-id. The dead letter stays
// in SENGO_DLQ until the copy is delivered (or dead-lettered again, which
// stores a new one): the copy lives on SENGO_REPLAY, kept for less time,
// and an event must never be left with neither. Dead letters of an
// endpoint no relay delivers any more (its consumer is gone, or being
// retired: RunRetirer) are skipped and stay listed: their copy would wait
// where nothing reads it. It returns how many were redriven.
func Redrive(ctx context.Context, js jetstream.JetStream, entries []DLQEntry) (int, error) {
	n := 0
	delivered := map[string]bool{}
	var copies *redriveCopies
	for _, e := range entries {
		if e.Reason == ReasonUndecodable || e.EventTruncated {
			continue // nothing a consumer could accept, or not kept whole
		}
		ok, known := delivered[e.Endpoint]
		if !known {
			var err error
			if ok, err = redrivable(ctx, js, nil, e.Endpoint); err != nil {
				return n, err
			}
			delivered[e.Endpoint] = ok
		}
		if !ok {
			continue // its copy would wait where nothing reads it; the dead letter stays
		}
		if copies == nil {
			var err error
			if copies, err = openRedriveCopies(ctx, js); err != nil {
				return n, err
			}
		}
		if waits, err := copies.of(ctx, e); err != nil {
			return n, err
		} else if waits > 0 {
			continue // its copy from an earlier redrive is still stored: not sent twice
		}
		msg := &nats.Msg{Subject: event.ReplaySubject(e.Endpoint), Data: e.Event, Header: nats.Header{
			HeaderReplayKind:    []string{"redrive"},
			HeaderEventSeq:      []string{strconv.FormatUint(e.StreamSeq, 10)},
			event.HeaderEventID: []string{e.EventID},
			HeaderRedriveOf:     []string{strconv.FormatUint(e.Seq, 10)},
		}}
		if e.Subject != "" {
			msg.Header.Set(HeaderEventSubject, e.Subject)
		}
		if err := ctx.Err(); err != nil {
			return n, err // given up before this copy: not queued
		}
		opts := []jetstream.PublishOpt{jetstream.WithMsgID(redriveMsgID(e)), jetstream.WithExpectStream(event.StreamReplay)}
		if testCopyPublishing != nil {
			testCopyPublishing()
		}
		ack, err := js.PublishMsg(ctx, msg, opts...)
		if err != nil {
			// Stored maybe, its answer lost (the caller gone as it waited,
			// a timeout on a slow store). Left unrecorded, the copy escaped
			// a purge (the purged event was posted after all), and a
			// redrive after the duplicate window queued a second. The same
			// message id again answers with the copy's sequence, or queues
			// it: either way it is recorded below.
			first := err
			if err = settleAfter(ctx, func(ctx context.Context) error {
				var perr error
				ack, perr = js.PublishMsg(ctx, msg, opts...)
				return perr
			}); err != nil {
				return n, fmt.Errorf("redrive %d: %w", e.Seq, first)
			}
			// A duplicate now is most likely the first try's own copy (no
			// earlier one was recorded, of above): counted.
			ack.Duplicate = false
		}
		if !ack.Duplicate { // else its copy from an earlier redrive still waits: not sent twice, not counted twice
			n++
		}
		if testCopyQueued != nil {
			testCopyQueued()
		}
		// A duplicate's answer names the copy queued before: recorded now
		// if that redrive could not (or came before these records). Even
		// once the caller gave up (a client gone, Ctrl-C): the copy is
		// queued, and without its record a redrive after the duplicate
		// window queues a second one while the first still waits.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = copies.record(rctx, e.Seq, ack.Sequence)
		if err == nil {
			// Purged since it was listed (a purge beside this redrive that
			// looked for a copy before it was recorded): the copy goes too,
			// or the purged event is posted later after all. Looked up
			// after the record, so that a purge deleting the dead letter
			// after this look finds the copy (Purge).
			// (Gone because the copy was settled already, which removes
			// it, deleting the copy changes nothing.)
			err = settleAfter(rctx, func(ctx context.Context) error { return dropIfPurged(ctx, js, copies, e, ack.Sequence) })
		}
		cancel()
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// dropIfPurged deletes copy at of dead letter d if d is gone.
func dropIfPurged(ctx context.Context, js jetstream.JetStream, copies *redriveCopies, d DLQEntry, at uint64) error {
	if gone, err := purged(ctx, js, d); err != nil || !gone {
		return err
	}
	if _, err := stream.Delete(ctx, copies.replay, at); err != nil {
		return fmt.Errorf("redrive %d: purged meanwhile, its copy %d not deleted: %w", d.Seq, at, err)
	}
	return nil
}

// testCopyQueued, when set, is called as each redriven copy is queued,
// before it is recorded: for tests.
var testCopyQueued func()

// testCopyPublishing, when set, is called as each redriven copy is about
// to be published: for tests.
var testCopyPublishing func()

// testPurgeLooked, when set, is called as Purge has looked for a dead
// letter's copy, before it deletes the dead letter: for tests.
var testPurgeLooked func()

// redriveCopies finds the copy an earlier redrive queued for a dead
// letter. The copy's message id stops a second one only within
// SENGO_REPLAY's duplicate window (24 h), and a copy can wait for its
// retries for days (the dead letter stays listed until it settles): a
// record in SENGO_DELIVERY, redriveKey, names the copy's sequence, and a
// dead letter whose copy is still stored is not redriven again. (A
// settled copy removes its dead letter; one still stored beside its dead
// letter is waiting, or its dead letter's removal is being retried.)
type redriveCopies struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	replay jetstream.Stream
}

func openRedriveCopies(ctx context.Context, js jetstream.JetStream) (*redriveCopies, error) {
	kv, err := js.KeyValue(ctx, event.BucketDelivery)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", event.BucketDelivery, err)
	}
	replay, err := js.Stream(ctx, event.StreamReplay)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", event.StreamReplay, err)
	}
	return &redriveCopies{js: js, kv: kv, replay: replay}, nil
}

// redriveMsgID is the message id of dead letter d's redriven copy: its
// sequence and its event's (a SENGO_DLQ made anew starts its sequences
// again, and another dead letter's copy of the same sequence must not be
// taken for its own).
func redriveMsgID(d DLQEntry) string {
	sum := sha256.Sum256([]byte(d.EventID))
	return "redrive." + strconv.FormatUint(d.Seq, 10) + "." + hex.EncodeToString(sum[:8])
}

// redriveKey records the SENGO_REPLAY sequence of dead letter seq's
// redriven copy (no endpoint name starts with "_").
func redriveKey(seq uint64) string { return "_redrive." + strconv.FormatUint(seq, 10) }

// of is the SENGO_REPLAY sequence of dead letter d's copy from an
// earlier redrive while it is still stored (0: none): the message its
// record names, if it is a copy of d (a record left from a SENGO_DLQ made
// anew, whose sequences started again, names another's).
// Both reads are the leader's (stream.LeaderGet): in a cluster a replica
// not caught up would miss a record a redrive beside a purge just wrote,
// or its copy, and the purged event's copy would stay.
func (r *redriveCopies) of(ctx context.Context, d DLQEntry) (uint64, error) {
	e, err := stream.LeaderGetLast(ctx, r.js, "KV_"+event.BucketDelivery, "$KV."+event.BucketDelivery+"."+redriveKey(d.Seq))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", redriveKey(d.Seq), err)
	}
	at, err := strconv.ParseUint(string(e.Data), 10, 64)
	if err != nil || at == 0 || e.Header.Get("KV-Operation") != "" {
		return 0, nil // deleted, or not a record of ours: the dead letter is redriven
	}
	m, err := stream.LeaderGet(ctx, r.js, event.StreamReplay, at, "")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil // gone (aged out, purged): the dead letter is all there is
	} else if err != nil {
		return 0, fmt.Errorf("look up copy %d of dead letter %d: %w", at, d.Seq, err)
	}
	if m.Header.Get(HeaderRedriveOf) != strconv.FormatUint(d.Seq, 10) || m.Header.Get(event.HeaderEventID) != d.EventID ||
		m.Subject != event.ReplaySubject(d.Endpoint) {
		return 0, nil
	}
	return at, nil
}

// record names copySeq as dead letter seq's redriven copy. Not stored, a
// redrive after the duplicate window would queue a second copy: the
// redrive reports it failed.
func (r *redriveCopies) record(ctx context.Context, seq, copySeq uint64) error {
	if _, err := r.kv.Put(ctx, redriveKey(seq), []byte(strconv.FormatUint(copySeq, 10))); err != nil {
		return fmt.Errorf("redrive %d: its copy %d is queued, but not recorded: %w", seq, copySeq, err)
	}
	return nil
}

// redrivable reports whether a relay delivers endpoint's redriven copies:
// its consumer on SENGO_REPLAY exists and is not being retired (the
// endpoint was removed from the configuration). kv is SENGO_DELIVERY (nil:
// opened here, a stream info more).
func redrivable(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, endpoint string) (bool, error) {
	name := ConsumerName(endpoint)
	if _, err := js.Consumer(ctx, event.StreamReplay, name); errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("look up consumer %s: %w", name, err)
	}
	if kv == nil {
		var err error
		if kv, err = js.KeyValue(ctx, event.BucketDelivery); err != nil {
			return false, fmt.Errorf("open bucket %s: %w", event.BucketDelivery, err)
		}
	}
	if _, err := kv.Get(ctx, retireKey(event.StreamReplay, name)); errors.Is(err, jetstream.ErrKeyNotFound) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("read %s: %w", retireKey(event.StreamReplay, name), err)
	}
	return false, nil
}

// HeaderRedriveOf carries, on a redriven copy, the SENGO_DLQ sequence of
// the dead letter it came from; the dead letter is removed once the copy
// is settled.
const HeaderRedriveOf = "Sengo-Redrive-Of"

// removeRedriven deletes the dead letter a settled redriven copy came
// from, if it is still there: at its sequence, a SENGO_DLQ made anew since
// (its sequences started again) may hold another event's, which stays.
func removeRedriven(ctx context.Context, js jetstream.JetStream, msg jetstream.Msg) error {
	seq, err := strconv.ParseUint(msg.Headers().Get(HeaderRedriveOf), 10, 64)
	if err != nil || seq == 0 {
		return nil // not a redriven copy
	}
	s, err := js.Stream(ctx, event.StreamDLQ)
	if err != nil {
		return err
	}
	d, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // removed already
	} else if err != nil {
		return fmt.Errorf("look up redriven dead letter %d: %w", seq, err)
	}
	endpoint := strings.TrimPrefix(msg.Subject(), event.ReplaySubject(""))
	if d.Header.Get(event.HeaderEventID) != msg.Headers().Get(event.HeaderEventID) ||
		d.Subject != event.DLQSubject(endpoint) && !strings.HasPrefix(d.Subject, event.DLQSubject(endpoint)+".") {
		return nil // another's
	}
	if _, err := stream.Delete(ctx, s, seq); err != nil {
		return fmt.Errorf("remove redriven dead letter %d: %w", seq, err)
	}
	return nil
}

// Purge deletes the given dead letters for good, and the redriven copy of
// each that still waits for its retries: purged, its event is not posted
// later after all (nor dead-lettered again).
func Purge(ctx context.Context, js jetstream.JetStream, entries []DLQEntry) (int, error) {
	s, err := js.Stream(ctx, event.StreamDLQ)
	if err != nil {
		return 0, err
	}
	copies, err := openRedriveCopies(ctx, js)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if err := copies.drop(ctx, e); err != nil {
			return n, err
		}
		if testPurgeLooked != nil {
			testPurgeLooked()
		}
		// The delete is not given up with the caller (an API client gone,
		// Ctrl-C): done on the server and reported failed, it was followed
		// by no second look.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		deleted, derr := stream.Delete(dctx, s, e.Seq)
		cancel()
		// A redrive beside this purge may have queued a copy after the
		// look above, and found the dead letter still there: it recorded
		// the copy before it looked (Redrive), so it is found now. Tried
		// again on a failure: the dead letter is gone, and a purge run
		// again would not list it to look for its copy. (After a delete
		// that failed too: the dead letter may be gone all the same; if
		// not, it is listed, and its copy's absence changes nothing.)
		if err := settleAfter(ctx, func(ctx context.Context) error { return copies.drop(ctx, e) }); err != nil {
			return n, err
		}
		if derr != nil {
			return n, fmt.Errorf("purge %d: %w", e.Seq, derr)
		}
		if deleted { // else removed meanwhile (a redrive settled, another purge)
			n++
		}
	}
	return n, nil
}

// settleAfter runs op, a step that cannot be left for a later run (what
// it looks for is not listed again), up to three times a second apart
// while it fails, for 10 s at most, even once the caller gave up (an API
// client gone, Ctrl-C in the CLI).
func settleAfter(ctx context.Context, op func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return backoff.Retry(func() error { return op(ctx) }, backoff.WithContext(backoff.WithMaxRetries(backoff.NewConstantBackOff(time.Second), 2), ctx))
}

// drop deletes dead letter d's redriven copy, if one waits.
func (r *redriveCopies) drop(ctx context.Context, d DLQEntry) error {
	at, err := r.of(ctx, d)
	if err != nil {
		return fmt.Errorf("purge %d: %w", d.Seq, err)
	}
	if at > 0 {
		if _, err := stream.Delete(ctx, r.replay, at); err != nil {
			return fmt.Errorf("purge %d: its redriven copy %d: %w", d.Seq, at, err)
		}
	}
	return nil
}

// purged reports whether dead letter d is gone from SENGO_DLQ (or another
// dead letter holds its sequence, in a SENGO_DLQ made anew).
// It asks the leader (stream.LeaderGet): a replica not caught up would
// still have it.
func purged(ctx context.Context, js jetstream.JetStream, d DLQEntry) (bool, error) {
	m, err := stream.LeaderGet(ctx, js, event.StreamDLQ, d.Seq, "")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("redrive %d: look it up again: %w", d.Seq, err)
	}
	return m.Header.Get(event.HeaderEventID) != d.EventID, nil
}

// CountDLQ counts the dead letters matching f (its Endpoint or Seq; the
// other fields are not read) and returns the sequence of the last it
// counted: an action bounded by it (EachDLQPage's upTo) touches exactly
// what was counted. It reads their headers only, not the events they
// carry: counting a long outage's dead letters whole, as a listing reads
// them, outlasted the read bound, and the operator could act on none.
// The endpoint is the one their subject names (a dead letter's own).
func CountDLQ(ctx context.Context, js jetstream.JetStream, f DLQFilter) (int, uint64, error) {
	if f.Seq > 0 {
		one, err := ListDLQ(ctx, js, DLQFilter{Seq: f.Seq, Endpoint: f.Endpoint})
		if err != nil || len(one) == 0 {
			return 0, 0, err
		}
		return 1, one[0].Seq, nil
	}
	st, err := js.Stream(ctx, event.StreamDLQ)
	if err != nil {
		return 0, 0, fmt.Errorf("open %s: %w", event.StreamDLQ, err)
	}
	last := st.CachedInfo().State.LastSeq // none stored after the count began
	var count int
	var top uint64
	if last == 0 {
		return 0, 0, nil
	}
	err = stream.ScanFrom(ctx, js, event.StreamDLQ, event.DLQFilters(f.Endpoint, ""), stream.From{HeadersOnly: true}, func(_ jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		if meta.Sequence.Stream > last {
			return false, nil
		}
		count, top = count+1, meta.Sequence.Stream
		return true, nil
	}, nil)
	return count, top, err
}
