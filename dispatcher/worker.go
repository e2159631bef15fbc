package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/time/rate"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/tracing"
	"github.com/sengo-relay/sengo-relay/stream"
)

// Replay headers on SENGO_REPLAY messages.
const (
	HeaderReplayKind = "Sengo-Replay-Kind" // "replay" or "redrive"
	HeaderReplayJob  = "Sengo-Replay-Job"
	// HeaderEventSeq carries the event's sequence in SENGO_EVENTS on
	// replayed copies, and on every webhook as "sengo-event-sequence".
	HeaderEventSeq = "Sengo-Event-Seq"
	// HeaderEventSubject carries the event's subject in SENGO_EVENTS on
	// replayed copies: what the endpoint's filter is matched against.
	HeaderEventSubject = "Sengo-Event-Subject"
)

// WorkerConfig configures the worker of one endpoint.
type WorkerConfig struct {
	Endpoint  Endpoint
	JetStream jetstream.JetStream
	UserAgent string
	// Durable, when set, is waited on after writing a dead letter or an
	// attempt record and before the Term or Ack that relies on it.
	Durable Durability
	Metrics *Metrics
	// History, when set, keeps every attempt (SENGO_ATTEMPTS), written
	// asynchronously: a record that cannot be stored never holds back or
	// fails a delivery.
	History *history.Writer
	Logger  zerolog.Logger
	// Now is the clock for signatures and attempt times; time.Now when nil.
	Now func() time.Time
	// Instance names this relay's heartbeat (RetireConfig.Instance): the
	// consumer's filter takes what the other relays' recent heartbeats
	// give the endpoint too (liveFilters). Empty: this relay's filter only.
	Instance string
}

// Durability makes writes the store acknowledged durable
// (stream.GroupSync). Sync blocks until every write acknowledged before
// the call is on disk, or ctx ends; it is safe for concurrent use, and an
// error means those writes may not survive a power loss.
type Durability interface {
	Sync(ctx context.Context) error
}

// durable waits for the writes made so far to be on disk (group commit).
func (w *Worker) durable(ctx context.Context) error {
	if w.cfg.Durable == nil {
		return nil
	}
	return w.cfg.Durable.Sync(ctx)
}

// Worker delivers one endpoint's events. Several relay instances may run a
// worker for the same endpoint: they share its durable consumers.
type Worker struct {
	cfg    WorkerConfig
	ep     Endpoint
	live   jetstream.Consumer
	replay jetstream.Consumer
	store  attemptStore
	httpc  *http.Client
	// hide is what the worker scrubs from what it keeps of an answer
	// (endpointSecrets, worked out once).
	hide     []string
	breaker  *breaker
	limiter  *rate.Limiter
	log      zerolog.Logger
	inflight sync.WaitGroup
	// hold is the operator's hold (nil: none), from watchHold.
	hold atomic.Pointer[HoldState]
	// holdKnown is closed once watchHold has read the hold key: nothing
	// is pulled before (a relay starting while its endpoint is held
	// delivered a batch to it).
	holdKnown     chan struct{}
	holdKnownOnce sync.Once
	// active is when the worker last began delivering (w.cfg.Now, Unix
	// nanoseconds): its start, or the end of an operator's hold.
	active atomic.Int64
	// pullWarned is when a failed pull was last logged (Unix nanoseconds).
	pullWarned atomic.Int64
	// liveStart is one past the highest ack floor (a SENGO_EVENTS
	// sequence) the live consumer was seen with, from its creation on
	// (noteFloor), and eventsCreated when that SENGO_EVENTS was created:
	// a live consumer deleted by hand is created again there (recreate).
	liveStart     atomic.Uint64
	eventsCreated time.Time
	// recreated is when the consumers were last created again (Unix nanoseconds).
	recreated atomic.Int64
	// maxAge is SENGO_EVENTS' retention (0: none): events of a paused
	// endpoint older than maxAge-expiryGuard are dead-lettered.
	maxAge time.Duration
	// replayMaxAge is SENGO_REPLAY's (0: none), for replayed and redriven
	// copies the same way.
	replayMaxAge time.Duration
	// events and replays are SENGO_EVENTS and SENGO_REPLAY, where the
	// expiry guard reads the age of the first event the endpoint has not
	// been given.
	events, replays jetstream.Stream
	// unrecorded are the redriven copies this worker delivered whose
	// record it could not store (by attempt key), until they are settled:
	// a copy retried for its dead letter's removal finds no record saying
	// delivered, and would be posted again at each retry.
	unrecordedMu sync.Mutex
	unrecorded   map[string]bool
}

// maxUnrecorded bounds Worker.unrecorded; past it, it starts again (those
// forgotten are posted again: at least once).
const maxUnrecorded = 10_000

// delivered remembers (done) or forgets redriven copy key as delivered
// without its record.
func (w *Worker) delivered(key string, done bool) {
	w.unrecordedMu.Lock()
	defer w.unrecordedMu.Unlock()
	switch {
	case !done:
		delete(w.unrecorded, key)
	case w.unrecorded == nil || len(w.unrecorded) >= maxUnrecorded:
		w.unrecorded = map[string]bool{key: true}
	default:
		w.unrecorded[key] = true
	}
}

// deliveredUnrecorded reports whether redriven copy key was delivered by
// this worker without its record.
func (w *Worker) deliveredUnrecorded(key string) bool {
	w.unrecordedMu.Lock()
	defer w.unrecordedMu.Unlock()
	return w.unrecorded[key]
}

// NewWorker creates or updates the endpoint's durable consumers. The
// streams and the SENGO_DELIVERY bucket must be provisioned.
func NewWorker(ctx context.Context, cfg WorkerConfig) (*Worker, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ep := cfg.Endpoint
	kv, err := cfg.JetStream.KeyValue(ctx, event.BucketDelivery)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", event.BucketDelivery, err)
	}
	filters, err := consumerFilters(ctx, cfg.JetStream, cfg.Instance, ep)
	if err != nil {
		return nil, err
	}
	live, err := ensureConsumer(ctx, cfg.JetStream, event.StreamEvents, ep, filters, ep.DeliverFrom)
	if err != nil {
		return nil, err
	}
	replay, err := ensureConsumer(ctx, cfg.JetStream, event.StreamReplay, ep, []string{event.ReplaySubject(ep.Name)}, "all")
	if err != nil {
		return nil, err
	}
	w := &Worker{
		cfg: cfg, ep: ep, live: live, replay: replay, store: attemptStore{kv: kv, refused: new(atomic.Int64)},
		httpc:     newClient(ep.Concurrency),
		hide:      endpointSecrets(ep),
		holdKnown: make(chan struct{}),
		breaker:   newBreaker(ep.Breaker, cfg.Now),
		log:       cfg.Logger.With().Str("endpoint", ep.Name).Logger(),
	}
	w.active.Store(cfg.Now().UnixNano())
	if ep.RateLimit > 0 {
		w.limiter = rate.NewLimiter(rate.Limit(ep.RateLimit), max(1, int(ep.RateLimit)))
	}
	// The streams' retention arms the expiry guard: a failed read must not
	// leave it off for the process's life (the caller retries the start).
	s, err := cfg.JetStream.Stream(ctx, event.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", event.StreamEvents, err)
	}
	w.maxAge, w.events, w.eventsCreated = s.CachedInfo().Config.MaxAge, s, s.CachedInfo().Created
	w.noteFloor(live, live.CachedInfo())
	if s, err = cfg.JetStream.Stream(ctx, event.StreamReplay); err != nil {
		return nil, fmt.Errorf("stream %s: %w", event.StreamReplay, err)
	}
	w.replayMaxAge, w.replays = s.CachedInfo().Config.MaxAge, s
	return w, nil
}

// ensureConsumer creates the durable consumer of ep on stream, or updates
// its filter and limits in place. The start position of an existing
// consumer is kept: a restart or config change never loses its place. A
// consumer the retirer deleted less than tombstoneFresh ago (its endpoint
// taken for removed: its relay away, or put back in the configuration)
// starts after the last event the retired one delivered or dead-lettered,
// not at from: nothing between is skipped.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, stream string, ep Endpoint, filters []string, from string) (jetstream.Consumer, error) {
	return ensureConsumerAt(ctx, js, stream, ep, filters, from, 0)
}

// ensureConsumerAt is ensureConsumer whose consumer, when it does not
// exist and no tombstone says where it was, starts at stream sequence
// start (a consumer deleted by hand, recreate), not at from; 0: at from.
func ensureConsumerAt(ctx context.Context, js jetstream.JetStream, stream string, ep Endpoint, filters []string, from string, start uint64) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:     ConsumerName(ep.Name),
		Description: "sengo-relay webhook endpoint " + ep.Name,
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     ackWait(ep),
		MaxDeliver:  -1, // the dispatcher dead-letters; JetStream must never drop silently
		// No bound: an event waiting for its retry (NakWithDelay) stays
		// ack pending, and a bound would let a few events the consumer
		// keeps refusing hold back all the others for days. What is in
		// flight is bounded by the workers: the Puller fetches only for a
		// worker that waits.
		MaxAckPending:  -1,
		FilterSubjects: filters,
	}
	var buried uint64 // the revision of the tombstone the consumer is created from
	existing, err := js.Consumer(ctx, stream, cfg.Durable)
	switch {
	case err == nil:
		info := existing.CachedInfo()
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = info.Config.DeliverPolicy, info.Config.OptStartTime, info.Config.OptStartSeq
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		last, rev, ok, err := retiredPlace(ctx, js, stream, cfg.Durable)
		if err != nil {
			// Unread, a tombstone would be taken for none, and the
			// consumer would start at from, past what came meanwhile.
			return nil, fmt.Errorf("read where consumer %s on %s was retired: %w", cfg.Durable, stream, err)
		}
		if ok {
			cfg.DeliverPolicy, cfg.OptStartSeq, buried = jetstream.DeliverByStartSequencePolicy, last+1, rev
			break
		}
		if start > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
			break
		}
		switch from {
		case "all":
			cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		case "new", "":
			cfg.DeliverPolicy = jetstream.DeliverNewPolicy
		default:
			t, err := time.Parse(time.RFC3339, from)
			if err != nil {
				return nil, fmt.Errorf("endpoint %s deliver_from: %w", ep.Name, err)
			}
			cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		}
	default:
		return nil, fmt.Errorf("look up consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	// The tombstone's place is taken up: a later deletion by hand starts
	// afresh. Only the tombstone just used, at the revision read: one a
	// retirer writes while the consumer still exists (before it deletes
	// it) is the place of that deletion.
	if buried > 0 {
		if kv, err := js.KeyValue(ctx, event.BucketDelivery); err == nil {
			_ = kv.Delete(ctx, retiredKey(stream, cfg.Durable), jetstream.LastRevision(buried))
		}
	}
	return c, nil
}

// retiredPlace returns the last stream sequence of consumer, deleted by
// the retirer less than tombstoneFresh ago, and its tombstone's revision;
// ok is false when there is none. A read that fails is an error, never
// none.
func retiredPlace(ctx context.Context, js jetstream.JetStream, stream, consumer string) (last, rev uint64, ok bool, err error) {
	kv, err := js.KeyValue(ctx, event.BucketDelivery)
	if err != nil {
		return 0, 0, false, err
	}
	e, err := kv.Get(ctx, retiredKey(stream, consumer))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	var t tombstone
	if json.Unmarshal(e.Value(), &t) != nil || time.Since(e.Created()) > tombstoneFresh {
		return 0, 0, false, nil
	}
	return t.Last, e.Revision(), true, nil
}

// ackWait exceeds the delivery timeout by a margin, so an event is never
// handed to a second worker while its attempt can still be running.
// Relays share the consumer, and the last one started sets it: one with a
// shorter timeout lowers it under the others' attempts, which
// stream.KeepInProgress covers.
func ackWait(ep Endpoint) time.Duration { return ep.Timeout + 15*time.Second }

// inProgressEvery is how often a worker tells the server that an event it
// handles is in progress, once handling it lasts that long: well inside
// any ack wait a relay sets (15 s or more).
var inProgressEvery = 5 * time.Second

// Run delivers until ctx ends, then lets attempts in flight finish (each
// is bounded by the endpoint timeout) and returns.
func (w *Worker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	// The workers waiting at one moment share one pull request
	// (stream.Puller): one per event cost the server a message each.
	live, replay := stream.NewPuller(w.live, time.Second), stream.NewPuller(w.replay, time.Second)
	wg.Add(2)
	go func() { defer wg.Done(); live.Run(ctx) }()
	go func() { defer wg.Done(); replay.Run(ctx) }()
	pull := func(p sources) {
		defer wg.Done()
		select {
		case <-w.holdKnown:
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil {
			w.pullOne(ctx, p)
		}
	}
	for range w.ep.Concurrency {
		wg.Add(1)
		go pull(sources{own: live, other: replay})
	}
	for range max(1, w.ep.Concurrency/2) {
		wg.Add(1)
		go pull(sources{own: replay, other: live, replayed: true})
	}
	if w.maxAge > 0 || w.replayMaxAge > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); w.guardExpiry(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); w.watchHold(ctx) }()
	w.log.Info().Int("concurrency", w.ep.Concurrency).Bool("ordered", w.ep.Ordered).Msg("endpoint worker started")
	wg.Wait()
	w.log.Info().Msg("endpoint worker stopped")
}

// expiryGuard is how long before a stream of maxAge would drop an event
// that a paused endpoint has not taken the event is dead-lettered instead.
func expiryGuard(maxAge time.Duration) time.Duration { return min(24*time.Hour, maxAge/10) }

// tooLate reports whether an attempt at next of a message stored at
// stored comes too close to the end of its stream's retention (SENGO_REPLAY's
// for a replayed copy): later than a minute and the attempt's timeout
// before it (at most expiryGuard), it might not be made, or fail with no
// time left to dead-letter the event.
func (w *Worker) tooLate(stored, next time.Time, replayed bool) bool {
	maxAge := w.maxAge
	if replayed {
		maxAge = w.replayMaxAge
	}
	if maxAge <= 0 {
		return false
	}
	return next.After(stored.Add(maxAge - min(expiryGuard(maxAge), w.ep.Timeout+time.Minute)))
}

// guardExpiry runs beside the workers: while the endpoint is paused (its
// workers do not pull), an event about to age out of SENGO_EVENTS would be
// lost for this endpoint without a trace, and so would a replayed or
// redriven copy about to age out of SENGO_REPLAY, which keeps them for
// less time (a redriven one's dead letter may have aged out meanwhile).
// Such events are dead-lettered with ReasonExpiring, oldest first, so
// they can be redriven later.
func (w *Worker) guardExpiry(ctx context.Context) {
	every := time.Minute
	for _, age := range []time.Duration{w.maxAge, w.replayMaxAge} {
		if age > 0 {
			every = min(every, max(expiryGuard(age)/4, 10*time.Millisecond))
		}
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	paused := func() bool { return (w.breaker.state().Paused || w.hold.Load() != nil) && ctx.Err() == nil }
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if w.maxAge > 0 && paused() {
			w.sweepPaused(ctx, w.live, w.events, w.maxAge, false, paused)
		}
		if w.replayMaxAge > 0 && paused() {
			w.sweepPaused(ctx, w.replay, w.replays, w.replayMaxAge, true, paused)
		}
		if !paused() && ctx.Err() == nil {
			if w.maxAge > 0 {
				w.sweepBacklog(ctx, w.live, w.events, w.maxAge, false)
			}
			if w.replayMaxAge > 0 {
				w.sweepBacklog(ctx, w.replay, w.replays, w.replayMaxAge, true)
			}
		}
	}
}

// backlogBatch is how many waiting messages sweepBacklog takes at a time.
const backlogBatch = 64

// sweepBacklog guards an endpoint that is not paused but slower than its
// events come (a rate limit, a slow consumer, a backfill): when its
// backlog's first event is about to age out of its stream (s, kept for
// maxAge), the events that are are dead-lettered with
// ReasonExpiringInBacklog, backlogBatch at a time, before the stream drops
// them without a trace; the others are put back for the workers. When
// nothing is due it costs two reads: the consumer's info and the first
// event it has not given out.
func (w *Worker) sweepBacklog(ctx context.Context, cons jetstream.Consumer, s jetstream.Stream, maxAge time.Duration, replayed bool) {
	for ctx.Err() == nil && w.backlogDue(ctx, cons, s, maxAge) {
		if _, dead, _ := w.sweepBatch(ctx, cons, maxAge, replayed, ReasonExpiringInBacklog, nil); !dead {
			return
		}
	}
}

// backlogDue reports whether the first message of s that cons has not
// given out yet is about to age out (its own subject aside: no message
// cons has not given out is older).
func (w *Worker) backlogDue(ctx context.Context, cons jetstream.Consumer, s jetstream.Stream, maxAge time.Duration) bool {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := cons.Info(rctx)
	if err != nil {
		return false
	}
	w.noteFloor(cons, info)
	if info.NumPending == 0 {
		return false
	}
	m, err := s.GetMsg(rctx, info.Delivered.Stream+1, jetstream.WithGetMsgSubject(">"))
	return err == nil && time.Since(m.Time) >= maxAge-expiryGuard(maxAge)
}

// sweepBatch takes the next messages waiting on cons, dead-letters those
// about to age out (for reason) and puts the others back; it reports how
// many it took, and whether it dead-lettered any.
//
// With seen (a sweep of a paused endpoint's), it also reports done: a
// message it put back earlier in the sweep came again (the server hands
// out those put back before the others), or one never given out before
// is not due (those come in the stream's order: none after it is).
func (w *Worker) sweepBatch(ctx context.Context, cons jetstream.Consumer, maxAge time.Duration, replayed bool, reason string, seen map[uint64]bool) (took int, dead, done bool) {
	batch, err := cons.FetchNoWait(backlogBatch)
	if err != nil {
		if gone(err) { // a held endpoint's worker does not pull: this is where it finds out
			w.recreateSoon(ctx)
		}
		return 0, false, true
	}
	type taken struct {
		msg  jetstream.Msg
		meta *jetstream.MsgMetadata
	}
	var due []taken
	for msg := range batch.Messages() {
		took++
		meta, err := msg.Metadata()
		if err == nil && seen != nil {
			if seen[meta.Sequence.Stream] {
				done = true
				_ = msg.Nak()
				continue
			}
			seen[meta.Sequence.Stream] = true
		}
		if err != nil || time.Since(meta.Timestamp) < maxAge-expiryGuard(maxAge) {
			_ = msg.Nak() // not due: back to the workers at once
			if err == nil && seen != nil && meta.NumDelivered == 1 {
				done = true
			}
			continue
		}
		due = append(due, taken{msg, meta})
	}
	// Each dead letter may take a while (the store's write and fsync): the
	// ones still waiting are kept in progress, so that none outlives its
	// ack wait here and goes to a worker too.
	progressed := time.Now()
	for i, d := range due {
		if time.Since(progressed) > ackWait(w.ep)/3 {
			for _, rest := range due[i:] {
				_ = rest.msg.InProgress()
			}
			progressed = time.Now()
		}
		if w.expire(ctx, d.msg, d.meta, replayed, reason) {
			dead = true
		}
	}
	if err := batch.Error(); gone(err) {
		w.recreateSoon(ctx)
	}
	return took, dead, done
}

// sweepPaused guards a paused or held endpoint's waiting messages (cons,
// the live or the replay consumer: replayed; of s, kept for maxAge): when
// the oldest one not settled is about to age out, every waiting one is
// looked at, backlogBatch at a time, those due dead-lettered with
// ReasonExpiring and the others put back. Looking at the first waiting
// one a tick, the guard put a message not due at the end of the server's
// redelivery queue, and a due one behind many younger ones (their retries
// come due first) waited a tick for each: it aged out without a trace.
// When nothing is due it costs two reads, or one per filter.
//
// A sweep looks at each waiting message once (the server hands out those
// it puts back first again: it stops there), and at most pausedSweepMax a
// tick: a paused endpoint's backlog of a million events looked at whole
// every minute (its oldest due but waiting for its retry) loaded the
// store for the whole pause. One due behind more is reached a later tick:
// each sweep puts the ones it looked at behind the others.
func (w *Worker) sweepPaused(ctx context.Context, cons jetstream.Consumer, s jetstream.Stream, maxAge time.Duration, replayed bool, paused func() bool) {
	n := min(w.pausedDue(ctx, cons, s, maxAge), pausedSweepMax)
	seen := make(map[uint64]bool, min(n, 1024))
	for looked := 0; looked < n && paused(); {
		took, _, done := w.sweepBatch(ctx, cons, maxAge, replayed, ReasonExpiring, seen)
		if took == 0 || done {
			return
		}
		looked += took
	}
}

// pausedSweepMax bounds the messages one sweep of a paused endpoint looks
// at: with one a minute, a due message behind 5.9 million others is still
// reached within the guard's day.
const pausedSweepMax = 4096

// pausedDue is how many messages cons holds not settled (waiting, or
// given out and not acknowledged) when the oldest of them is about to age
// out of s, kept for maxAge; 0 when none is.
func (w *Worker) pausedDue(ctx context.Context, cons jetstream.Consumer, s jetstream.Stream, maxAge time.Duration) int {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := cons.Info(rctx)
	if err != nil {
		if gone(err) { // a held endpoint's worker does not pull: this is where it finds out
			w.recreateSoon(ctx)
		}
		return 0
	}
	w.noteFloor(cons, info)
	n := info.NumAckPending + int(info.NumPending)
	if n == 0 {
		return 0
	}
	if m, err := stream.OldestUnsettled(rctx, s, info); err == nil && m != nil && time.Since(m.Time) >= maxAge-expiryGuard(maxAge) {
		return n
	}
	return 0
}

// copyStored is when a replayed copy was stored in SENGO_REPLAY (a record
// written before it is another copy's); zero for a live event.
func copyStored(meta *jetstream.MsgMetadata, replayed bool) time.Time {
	if !replayed {
		return time.Time{}
	}
	return meta.Timestamp
}

// expire dead-letters msg, about to age out of its stream, for reason (or
// acknowledges it if its record says it is done); it puts it back when its
// attempt record cannot be read, and reports whether it took it.
func (w *Worker) expire(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, replayed bool, reason string) bool {
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ev, _ := event.Unmarshal(msg.Data())
	var replaySeq uint64
	if replayed {
		replaySeq = meta.Sequence.Stream // a copy has a record of its own
	}
	// As handle keeps it: an empty id made "orders.", no key, and the guard
	// took the message again at every look.
	key := attemptKey(w.ep.Name, recordID(ev.ID, meta.Sequence.Stream), replaySeq)
	rec, _, err := w.store.get(mctx, key, copyStored(meta, replayed))
	if err != nil {
		_ = msg.Nak()
		return false
	}
	if rec.Done {
		// Delivered or dead-lettered before, its acknowledgement lost, as
		// handle finds it: a dead letter now would be redriven and post
		// a delivered event again.
		if replayed && !w.settleRedriven(mctx, msg, ev.ID) {
			return false
		}
		_ = msg.Ack()
		return true
	}
	if rec.DeadLetter != "" {
		// Decided before (its endpoint answered 410, say), its dead
		// letter not stored then: that reason, not aging out, is why.
		reason = rec.DeadLetter
	}
	w.deadLetter(mctx, msg, meta, ev, key, rec, reason, replayed)
	return true
}

// noteFloor keeps one past the live consumer's ack floor in info
// (liveStart): every event up to the floor is acknowledged.
func (w *Worker) noteFloor(cons jetstream.Consumer, info *jetstream.ConsumerInfo) {
	if cons != w.live || info == nil || info.Stream != event.StreamEvents {
		return
	}
	for {
		cur := w.liveStart.Load()
		if info.AckFloor.Stream+1 <= cur || w.liveStart.CompareAndSwap(cur, info.AckFloor.Stream+1) {
			return
		}
	}
}

// State reports the endpoint's breaker state.
func (w *Worker) State() BreakerState { return w.breaker.state() }

// Pending reports events not yet delivered: waiting in the stream plus in
// flight, for live events and for replays.
func (w *Worker) Pending(ctx context.Context) (live, replay uint64, ackFloor uint64, err error) {
	li, err := w.live.Info(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	w.noteFloor(w.live, li)
	ri, err := w.replay.Info(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	return li.NumPending + uint64(li.NumAckPending), ri.NumPending + uint64(ri.NumAckPending), li.AckFloor.Stream, nil
}

// sources are what one worker pulls from: its own consumer (live events
// or replayed copies) and, for a probe, the other.
type sources struct {
	own, other *stream.Puller
	replayed   bool // own is the replay consumer
}

// pullOne waits for the breaker and the rate limit, pulls at most one
// message and handles it.
func (w *Worker) pullOne(ctx context.Context, src sources) {
	replayed := src.replayed
	if w.hold.Load() != nil {
		w.cfg.Metrics.HeldWaits.WithLabelValues(w.ep.Name).Inc()
		sleepCtx(ctx, holdPoll) // held by an operator: events wait in the stream
		return
	}
	probe, ok := w.breaker.acquire(ctx)
	if !ok {
		return
	}
	msg, err := src.own.Next()
	if probe && idle(err) && src.other != nil {
		// The probe is the paused endpoint's one attempt. Given back after
		// an empty pull, it went to whichever worker asked first, often
		// the one that gave it back: a replay worker finding SENGO_REPLAY
		// empty took it again and again, and live events waited while the
		// endpoint stayed paused. The probe looks at the other consumer
		// before it is given back.
		msg, err = src.other.Next()
		replayed = !replayed
	}
	if err != nil {
		w.breaker.release(probe)
		if !idle(err) && ctx.Err() == nil {
			// Every pulling goroutine fails alike: one line every 10s says it.
			if last := w.pullWarned.Load(); time.Since(time.Unix(0, last)) > 10*time.Second && w.pullWarned.CompareAndSwap(last, time.Now().UnixNano()) {
				l := w.log.Warn()
				if gone(err) {
					l = w.log.Error()
				}
				l.Err(err).Msg("pull failed")
			}
			if gone(err) {
				w.recreateSoon(ctx)
			}
			sleepCtx(ctx, time.Second) // pacing while NATS is unavailable
		}
		return
	}
	if w.hold.Load() != nil { // held while this pull was waiting: not attempted
		w.breaker.release(probe)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	w.handle(ctx, msg, replayed, probe)
}

// recreateSoon recreates the endpoint's consumers, at most once every
// recreateEvery: deleted by hand, or by a retirer that took this endpoint
// for removed while this relay was away, a consumer is created again where
// the retired one stopped (ensureConsumer).
func (w *Worker) recreateSoon(ctx context.Context) {
	if last := w.recreated.Load(); time.Since(time.Unix(0, last)) > recreateEvery && w.recreated.CompareAndSwap(last, time.Now().UnixNano()) {
		w.recreate(ctx)
	}
}

// recreateEvery bounds how often a worker creates its consumers again.
const recreateEvery = time.Second

// recreate creates the endpoint's consumers again (those that exist are
// left as they are); the pullers ask for them by name, so they pull again.
// The live consumer, deleted by hand, starts after the last event it is
// known to have acknowledged (liveStart), not at deliver_from: with the
// default "new", every event it had not acknowledged, waiting or in
// retry, was skipped, neither posted nor dead-lettered. Some it had
// acknowledged since it was last seen are posted again (at least once).
// Not so for a SENGO_EVENTS made anew (its sequences started again).
func (w *Worker) recreate(ctx context.Context) {
	s, err := w.cfg.JetStream.Stream(ctx, event.StreamEvents)
	if err != nil {
		// Not at deliver_from for want of a reading: later (recreateSoon).
		w.log.Warn().Err(err).Msg("the endpoint's consumers could not be created again: SENGO_EVENTS unread")
		return
	}
	var start uint64
	if s.CachedInfo().Created.Equal(w.eventsCreated) {
		start = w.liveStart.Load()
	}
	filters, err := consumerFilters(ctx, w.cfg.JetStream, w.cfg.Instance, w.ep)
	if err != nil {
		w.log.Warn().Err(err).Msg("the endpoint's consumers could not be created again: the relays' filters unread")
		return
	}
	for _, c := range []struct {
		stream, from string
		filters      []string
		start        uint64
	}{{event.StreamEvents, w.ep.DeliverFrom, filters, start}, {event.StreamReplay, "all", []string{event.ReplaySubject(w.ep.Name)}, 0}} {
		if _, err := ensureConsumerAt(ctx, w.cfg.JetStream, c.stream, w.ep, c.filters, c.from, c.start); err != nil && ctx.Err() == nil {
			w.log.Error().Err(err).Str("stream", c.stream).Msg("the endpoint's consumer could not be created again")
			return
		}
	}
	w.log.Warn().Uint64("live_from_sequence", start).Msg("the endpoint's consumers are there again (a deleted one was created again, where its retirement left it, or after the last event it was seen to acknowledge)")
}

// idle reports a pull that ended without a message and without failing.
// A pull that expires empty is idle, not a failure: nats.go reports it as
// ErrNoMessages or, when the server's answer races the client's deadline,
// as nats.ErrTimeout.
func idle(err error) bool {
	return errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, stream.ErrPullerStopped)
}

// holdPoll is how often a held worker looks at its hold again.
const holdPoll = 200 * time.Millisecond

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// action is what to do with a message after an attempt (or instead of one).
type action struct {
	kind   actionKind
	delay  time.Duration
	reason string // dead-letter reason
}

type actionKind int

const (
	actAck actionKind = iota + 1
	actRetry
	actDeadLetter
	actWait // not attempted: NakWithDelay without spending an attempt
)

// waitTurn waits for the endpoint's rate limit (rate_limit), if it has
// one, and reports whether it waited. It is taken for an attempt about to
// be made: an empty pull, or an event acknowledged or put back without
// one, spends nothing. A replayed copy takes a turn only when one is free,
// never reserving one ahead as a live event does, so that a replay gets
// what live traffic leaves: taking turns in arrival order, the replay's
// workers had a third of the limit while the live backlog waited. A live
// event's wait is known when its turn is reserved: held is told it first.
func (w *Worker) waitTurn(ctx context.Context, replayed bool, held func(time.Duration)) (bool, error) {
	if w.limiter == nil || w.limiter.Allow() {
		return false, nil
	}
	if !replayed {
		r := w.limiter.Reserve()
		if held != nil {
			held(r.Delay())
		}
		t := time.NewTimer(r.Delay())
		defer t.Stop()
		select {
		case <-ctx.Done():
			r.Cancel()
			return true, ctx.Err()
		case <-t.C:
			return true, nil
		}
	}
	every := min(100*time.Millisecond, max(time.Millisecond, time.Duration(float64(time.Second)/float64(w.limiter.Limit()))))
	for start := time.Now(); !w.limiter.Allow(); {
		sleepCtx(ctx, every) // when the next turn could be free
		if err := ctx.Err(); err != nil {
			return true, err
		}
		if time.Since(start) > replayTurnMax {
			return true, errNoTurn
		}
	}
	return true, nil
}

// replayTurnMax bounds how long a worker holds a replayed copy waiting for
// a free turn (live events taking them all): then it goes back to
// SENGO_REPLAY for as long, or is dead-lettered if it would come back too
// late (held, or put back and taken again, it is never among the copies
// the expiry guard looks at). A variable for tests.
var replayTurnMax = 30 * time.Second

// errNoTurn: no turn was free for a replayed copy within replayTurnMax.
var errNoTurn = errors.New("no turn free")

// decide is the one place that turns an attempt's result into Ack,
// NakWithDelay or a dead letter. attempt is 1-based.
func decide(ep Endpoint, r attemptResult, attempt int) action {
	switch {
	case r.ok():
		return action{kind: actAck}
	case r.Abort && r.Status == 410:
		return action{kind: actDeadLetter, reason: ReasonGone}
	case r.Abort:
		return action{kind: actDeadLetter, reason: ReasonAborted}
	case attempt >= ep.MaxAttempts():
		return action{kind: actDeadLetter, reason: ReasonExhausted}
	case r.HasRetry:
		// Retry-After says when at the earliest: a shorter one than the
		// schedule's would spend the budget (about 3 days by default) in
		// seconds against a consumer that answers it to everything.
		return action{kind: actRetry, delay: max(r.RetryAfter, retryDelay(ep.Schedule, ep.Jitter, attempt))}
	default:
		return action{kind: actRetry, delay: retryDelay(ep.Schedule, ep.Jitter, attempt)}
	}
}

// handle delivers one message and settles it. Every network call has a
// deadline; the message's own context is independent of shutdown so an
// attempt in flight completes.
func (w *Worker) handle(runCtx context.Context, msg jetstream.Msg, replayed, probe bool) {
	// The attempt's deadline plus room for the KV and stream calls around
	// it, all inside AckWait.
	ctx, cancel := context.WithTimeout(context.Background(), w.ep.Timeout+10*time.Second)
	defer cancel()
	msg, stop := stream.KeepInProgress(msg, inProgressEvery)
	defer stop()
	meta, err := msg.Metadata()
	if err != nil {
		w.breaker.release(probe)
		_ = msg.Nak()
		return
	}
	var replaySeq uint64
	if replayed {
		replaySeq = meta.Sequence.Stream
	}
	ev, err := event.Unmarshal(msg.Data())
	if err != nil || !deliverableID(ev.ID) {
		w.breaker.release(probe)
		w.deadLetter(ctx, msg, meta, event.Event{}, attemptKey(w.ep.Name, seqID(meta.Sequence.Stream), replaySeq), attempts{Copy: copyStored(meta, replayed)}, ReasonUndecodable, replayed)
		return
	}
	switch w.takes(ctx, msg, replayed) {
	case filterLeaves:
		w.breaker.release(probe)
		w.notTaken(ctx, msg, ev, replayed)
		return
	case filterUnknown:
		w.breaker.release(probe)
		_ = msg.NakWithDelay(filterRetry)
		return
	}
	key := attemptKey(w.ep.Name, recordID(ev.ID, meta.Sequence.Stream), replaySeq)
	var rec attempts
	var res attemptResult
	log := func() *zerolog.Logger { // built only for the lines written
		c := w.log.With().Str("event_id", clip(ev.ID)).Str("transaction_id", clip(ev.Data.TransactionID)).Str("merchant_ref", clip(ev.Data.MerchantRef))
		if rec.Count > 0 {
			c = c.Int("attempt", rec.Count)
			if res.Status > 0 {
				c = c.Int("http_status", res.Status)
			}
			if res.Err != nil {
				c = c.Str("attempt_error", res.Err.Error())
			}
			c = c.Stringer("duration", res.Duration)
		}
		l := c.Logger()
		return &l
	}

	// A first delivery of a live event has no record yet: nothing was
	// attempted for this consumer's copy. Only a redelivery reads it. (A
	// consumer deleted by hand and created again after the last event it
	// was seen to acknowledge, recreate, posts those acknowledged since
	// again: at least once, and consumers deduplicate on webhook-id.) A
	// replayed or redriven copy (a key of its own) is
	// read on every delivery: copies stay in SENGO_REPLAY once settled,
	// and the endpoint's replay consumer, made again from the start (put
	// back after its retirement's place was forgotten), posted each again.
	if meta.NumDelivered > 1 || replayed {
		rec, _, err = w.store.get(ctx, key, copyStored(meta, replayed))
		if err == nil && !rec.Done && replayed && w.deliveredUnrecorded(key) {
			rec.Done = true
		}
	}
	if err != nil {
		w.breaker.release(probe)
		log().Warn().Err(err).Msg("attempt record unavailable; retrying")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if !replayed {
		rec.Seq = meta.Sequence.Stream // what an ordered successor compares
	}
	now := w.cfg.Now()
	switch {
	case rec.Done:
		w.breaker.release(probe)
		// Finished before: an acknowledgement was lost, or a redriven
		// copy's dead letter could not be removed then.
		if replayed && !w.settleRedriven(ctx, msg, ev.ID) {
			return
		}
		if replayed {
			w.delivered(key, false)
		}
		_ = msg.Ack()
		return
	case rec.DeadLetter != "":
		// Decided before; its dead letter could not be stored then.
		w.breaker.release(probe)
		w.deadLetter(ctx, msg, meta, ev, key, rec, rec.DeadLetter, replayed)
		return
	case rec.NextAt.After(now.Add(time.Second)):
		w.breaker.release(probe)
		_ = msg.NakWithDelay(rec.NextAt.Sub(now)) // redelivered early (e.g. after a restart)
		return
	}
	if w.ep.Ordered && !replayed {
		if wait, d := w.mustWait(ctx, ev, meta, log); wait {
			w.breaker.release(probe)
			if rec.Count == 0 {
				// Never attempted: a record says when it comes back, so a
				// later status waiting for this one waits as long (with no
				// record it would take this one as never sent here).
				if err := w.store.put(ctx, key, attempts{NextAt: now.Add(d), Seq: rec.Seq}); err != nil {
					log().Warn().Err(err).Msg("record wait")
				}
			}
			w.cfg.Metrics.Deliveries.WithLabelValues(w.ep.Name, "waiting").Inc()
			_ = msg.NakWithDelay(d)
			return
		}
	}

	var held func(time.Duration)
	if w.ep.Ordered && !replayed {
		held = func(d time.Duration) {
			// Held for its turn, with no record (a first delivery) or one
			// whose retry is due, it looked to a later status of its
			// transaction like one never attempted here, or stuck, and
			// that went first: a record says when it is attempted.
			due := rec
			due.NextAt = now.Add(d + w.ep.Timeout)
			if err := w.store.put(ctx, key, due); err != nil {
				log().Warn().Err(err).Msg("record the turn it waits for")
			}
		}
	}
	if waited, err := w.waitTurn(runCtx, replayed, held); errors.Is(err, errNoTurn) {
		w.breaker.release(probe)
		if w.tooLate(meta.Timestamp, w.cfg.Now().Add(replayTurnMax), replayed) {
			// Put back and taken again, it is never among the copies the
			// expiry guard looks at (those not given to a worker yet):
			// dead-lettered before SENGO_REPLAY drops it (with time of its
			// own: the wait may have outlasted handle's).
			dctx, dcancel := context.WithTimeout(context.Background(), w.ep.Timeout+10*time.Second)
			defer dcancel()
			w.deadLetter(dctx, msg, meta, ev, key, rec, ReasonExpiringInBacklog, replayed)
			return
		}
		_ = msg.NakWithDelay(replayTurnMax) // live traffic takes every turn: later
		return
	} else if err != nil {
		w.breaker.release(probe)
		_ = msg.Nak() // stopping: back to the stream for the next relay
		return
	} else if waited && w.hold.Load() != nil { // held while it waited: not attempted
		w.breaker.release(probe)
		_ = msg.NakWithDelay(time.Second)
		return
	} else if waited {
		// The attempt and what follows it get their whole time from here.
		cancel()
		var renewed context.CancelFunc
		ctx, renewed = context.WithTimeout(context.Background(), w.ep.Timeout+10*time.Second)
		defer renewed()
		now = w.cfg.Now()
	}
	actx, span := tracing.Tracer().Start(tracing.Extract(ctx, msg.Headers()), "sengo.deliver", trace.WithSpanKind(trace.SpanKindClient))
	res = post(actx, w.httpc, w.ep, delivery{userAgent: w.cfg.UserAgent, hide: w.hide, eventID: ev.ID, seq: eventSeq(msg, meta, replayed), body: msg.Data(),
		replay: msg.Headers().Get(HeaderReplayKind) == "replay", now: now, record: w.cfg.History != nil})
	w.cfg.Metrics.AttemptSeconds.WithLabelValues(w.ep.Name).Observe(res.Duration.Seconds())
	rec.record(res, now)
	act := decide(w.ep, res, rec.Count)
	if act.kind == actRetry && w.tooLate(meta.Timestamp, now.Add(act.delay), replayed) {
		// Put back, the event would age out of its stream before its next
		// attempt, which the expiry guard (only while paused) never sees.
		act = action{kind: actDeadLetter, reason: ReasonExpiringBeforeRetry}
	}
	w.recordAttempt(ev, msg, replayed, rec.Count, now, res, act)
	if span.IsRecording() { // tracing off: no attribute is built
		span.SetAttributes(attribute.String("sengo.endpoint", w.ep.Name), attribute.String("sengo.event_id", ev.ID),
			attribute.String("sengo.transaction_id", ev.Data.TransactionID), attribute.Int("sengo.attempt", rec.Count), attribute.Bool("sengo.replay", replayed),
			attribute.Int("http.response.status_code", res.Status))
		if !res.ok() {
			tracing.Fail(span, errors.New(res.describe()))
		}
	}
	span.End()

	if res.ok() {
		w.breaker.success(probe)
	} else if res.Abort {
		// The consumer refused this event for good (410, abort message):
		// it answered, so the endpoint is not what failed. The probe slot
		// goes back and the next event probes at once.
		w.breaker.release(probe)
	} else if w.breaker.failure(probe, res.describe()) {
		log().Warn().Int("failures", w.ep.Breaker.Failures).Msg("endpoint paused: events wait in the stream until a probe succeeds")
	}
	w.updateHealth()

	switch act.kind {
	case actAck:
		// A redriven copy's record says done before its dead letter is
		// removed: if the removal fails, the copy is retried for it alone.
		// Every copy's says done: it stays in SENGO_REPLAY, and a replay
		// consumer made again from the start reads it (above).
		redriven := replayed && msg.Headers().Get(HeaderRedriveOf) != ""
		if w.ep.Ordered || rec.Count > 1 || replayed {
			rec.Done, rec.NextAt = true, time.Time{}
			if err := w.store.put(ctx, key, rec); err != nil && w.ep.Ordered {
				// The next status of this transaction waits for this
				// record: acknowledging without it would hold that one
				// back. Redelivered, the event is posted again (consumers
				// deduplicate on webhook-id) and the record retried.
				log().Warn().Err(err).Msg("delivered, but the record that releases the next status was not stored; retrying")
				w.cfg.Metrics.Deliveries.WithLabelValues(w.ep.Name, "record_failed").Inc()
				_ = msg.NakWithDelay(time.Second)
				return
			} else if err != nil {
				log().Warn().Err(err).Msg("mark delivered")
				if redriven {
					w.delivered(key, true) // retried for its dead letter's removal alone, not posted again
				}
			} else if err := w.durable(ctx); err != nil && w.ep.Ordered {
				log().Warn().Err(err).Msg("delivered, but the record that releases the next status is not known durable; retrying")
				w.cfg.Metrics.Deliveries.WithLabelValues(w.ep.Name, "record_failed").Inc()
				_ = msg.NakWithDelay(time.Second)
				return
			}
		}
		w.cfg.Metrics.Deliveries.WithLabelValues(w.ep.Name, "delivered").Inc()
		log().Info().Msg("delivered")
		if replayed && !w.settleRedriven(ctx, msg, ev.ID) {
			return
		}
		if redriven {
			w.delivered(key, false)
		}
		_ = msg.Ack()
	case actRetry:
		rec.NextAt = now.Add(act.delay)
		delay := act.delay
		if err := w.store.put(ctx, key, rec); err != nil {
			log().Warn().Err(err).Msg("record attempt")
			if w.ep.Ordered {
				// The stored record is the attempt's before, its next
				// attempt due long ago: a successor would take it for
				// stuck (staleRecord) and go first. Back soon instead, to
				// be attempted and recorded then. (Only where order is
				// kept: elsewhere the delay, a Retry-After too, stands.)
				delay = min(delay, unrecordedRetryMax)
			}
		}
		w.cfg.Metrics.Deliveries.WithLabelValues(w.ep.Name, "retry").Inc()
		w.cfg.Metrics.RetriesScheduled.WithLabelValues(w.ep.Name).Inc()
		log().Warn().Stringer("delay", delay).Msg("delivery failed; retry scheduled")
		_ = msg.NakWithDelay(delay)
	case actDeadLetter:
		w.deadLetter(ctx, msg, meta, ev, key, rec, act.reason, replayed)
	}
}

// recordAttempt keeps the attempt in SENGO_ATTEMPTS, off the critical path.
func (w *Worker) recordAttempt(ev event.Event, msg jetstream.Msg, replayed bool, n int, at time.Time, res attemptResult, act action) {
	if w.cfg.History == nil {
		return
	}
	a := history.Attempt{
		Endpoint: w.ep.Name, EventID: ev.ID, Project: event.ProjectOf(ev.Source), TransactionID: ev.Data.TransactionID, MerchantRef: ev.Data.MerchantRef,
		Number: n, At: at.UTC(), DurationMs: float64(res.Duration.Microseconds()) / 1000, Status: res.Status,
		Copy: "live", RequestHeaders: res.Sent, ResponseHeaders: res.Received, ResponseExcerpt: res.Excerpt,
	}
	if replayed {
		a.Copy = msg.Headers().Get(HeaderReplayKind)
	}
	if res.Err != nil {
		a.Error = res.Err.Error()
	}
	switch act.kind {
	case actAck:
		a.Outcome = "delivered"
	case actRetry:
		a.Outcome = "retry"
	case actDeadLetter:
		a.Outcome = "dead_letter"
	}
	w.cfg.History.Attempt(a)
}

// deadLetter stores the event in SENGO_DLQ with why, then terminates it
// for this endpoint. If the store fails, the message is retried instead:
// an event is never dropped without its dead letter.
func (w *Worker) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, ev event.Event, key string, rec attempts, reason string, replayed bool) {
	d := DeadLetter{
		Endpoint: w.ep.Name, EventID: ev.ID, TransactionID: ev.Data.TransactionID, MerchantRef: ev.Data.MerchantRef,
		Reason: reason, Attempts: rec.Count, FirstAttemptAt: rec.First, LastAttemptAt: rec.Last,
		LastStatus: rec.LastStatus, LastError: rec.LastError, ResponseExcerpt: rec.Excerpt,
		StreamSeq: eventSeq(msg, meta, replayed), Subject: eventSubject(msg, replayed), Replayed: replayed, DeadAt: w.cfg.Now().UTC(),
	}
	if rec.DeadLetter != reason && ev.ID != "" {
		// Decided, and recorded before the dead letter is stored: a retry
		// (the store refused it) or a redelivery (the relay stopped before
		// the record below) stores the dead letter again, a duplicate the
		// stream drops, and posts nothing. Best effort: without the record
		// the event is attempted again, as before.
		rec.DeadLetter = reason
		if err := w.store.put(ctx, key, rec); err != nil {
			w.log.Warn().Err(err).Str("event_id", clip(ev.ID)).Msg("record the dead letter to store")
		}
	}
	err := publishDeadLetter(ctx, w.cfg.JetStream, key, d, msg.Data())
	if err == nil {
		err = w.durable(ctx) // the Term below relies on it
	}
	if err == nil && testCrashAfterDeadLetter != nil && testCrashAfterDeadLetter() {
		return // stopped here, as a relay killed between two writes
	}
	if err != nil {
		// Counted (alert SengoRelayDeadLettersNotStored): while SENGO_DLQ
		// refuses writes the event is neither delivered nor dead-lettered,
		// and ages out with its stream.
		w.cfg.Metrics.Deliveries.WithLabelValues(w.ep.Name, "dead_letter_failed").Inc()
		w.log.Error().Err(err).Str("event_id", clip(ev.ID)).Msg("dead letter not stored; retrying it later")
		_ = msg.NakWithDelay(deadLetterRetry)
		return
	}
	rec.Done, rec.NextAt, rec.DeadLetter = true, time.Time{}, ""
	if err := w.store.put(ctx, key, rec); err != nil {
		// The dead letter holds the event, so terminating loses nothing;
		// an ordered successor waiting for this record is released by
		// mustWait's bound on a record that stopped moving.
		w.log.Warn().Err(err).Msg("mark dead-lettered")
	}
	w.cfg.Metrics.Deliveries.WithLabelValues(w.ep.Name, "dead_letter").Inc()
	w.cfg.Metrics.DeadLetters.WithLabelValues(w.ep.Name, reason).Inc()
	l := w.log.Error().Str("event_id", clip(ev.ID)).Str("transaction_id", clip(ev.Data.TransactionID)).Str("merchant_ref", clip(ev.Data.MerchantRef)).
		Str("reason", reason).Int("attempt", rec.Count)
	if rec.LastStatus > 0 {
		l = l.Int("http_status", rec.LastStatus)
	}
	if rec.LastError != "" {
		l = l.Str("attempt_error", rec.LastError)
	}
	l.Msg("event dead-lettered")
	// A redriven copy dead-lettered again: the new dead letter replaces
	// the one it came from.
	if replayed && !w.settleRedriven(ctx, msg, ev.ID) {
		return
	}
	_ = msg.Term()
}

// settleRedriven deletes the dead letter a settled redriven copy came
// from (removeRedriven), and reports whether msg may be settled. If the
// deletion fails, it retries msg later instead: acknowledged, the copy
// would leave its dead letter listed for good, and a second redrive of it
// would post the event again. Its attempt record says done, so the retry
// only removes.
func (w *Worker) settleRedriven(ctx context.Context, msg jetstream.Msg, eventID string) bool {
	if err := removeRedriven(ctx, w.cfg.JetStream, msg); err != nil {
		w.log.Warn().Err(err).Str("event_id", clip(eventID)).Stringer("delay", deadLetterRetry).Msg("redriven event settled; its dead letter could not be removed, retrying")
		_ = msg.NakWithDelay(deadLetterRetry)
		return false
	}
	return true
}

// deadLetterRetry is how soon an event whose dead letter could not be
// stored is tried again.
var deadLetterRetry = 5 * time.Second // a variable for tests

// testCrashAfterDeadLetter, when it reports true, stops deadLetter right
// after the dead letter is stored, as a relay killed there would: for
// tests.
var testCrashAfterDeadLetter func() bool

// eventSeq is the event's sequence in SENGO_EVENTS (0 if unknown).
func eventSeq(msg jetstream.Msg, meta *jetstream.MsgMetadata, replayed bool) uint64 {
	if !replayed {
		return meta.Sequence.Stream
	}
	seq, _ := strconv.ParseUint(msg.Headers().Get(HeaderEventSeq), 10, 64)
	return seq
}

// eventSubject is the event's subject in SENGO_EVENTS ("" if unknown).
func eventSubject(msg jetstream.Msg, replayed bool) string {
	if !replayed {
		return msg.Subject()
	}
	return msg.Headers().Get(HeaderEventSubject)
}

// rawOrString keeps an event as JSON, or as a JSON string if it is not JSON.
func rawOrString(b []byte) []byte {
	if json.Valid(b) {
		return b
	}
	return stringJSON(string(b))
}

func (w *Worker) updateHealth() {
	s := w.breaker.state()
	paused := 0.0
	if s.Paused {
		paused = 1
	}
	w.cfg.Metrics.Paused.WithLabelValues(w.ep.Name).Set(paused)
	w.cfg.Metrics.ConsecutiveFailures.WithLabelValues(w.ep.Name).Set(float64(s.ConsecutiveFailures))
	held := 0.0
	if w.hold.Load() != nil {
		held = 1
	}
	w.cfg.Metrics.Held.WithLabelValues(w.ep.Name).Set(held)
}

// filterVerdict is what takes says of an event.
type filterVerdict int

const (
	filterTakes   filterVerdict = iota // post it
	filterLeaves                       // settle it unposted (notTaken)
	filterUnknown                      // the filter could not be read: later
)

// filterRetry is how soon an event whose filter could not be read comes
// back.
const filterRetry = 5 * time.Second

// takes tells whether the endpoint's filter, as it is now, takes the
// event of msg. A consumer's filter changed (the endpoint's narrowed, a
// project or a status taken out) leaves the messages it had given out as
// they are: nats-server redelivers them whatever the new filter says. A
// copy (a replay's, a redrive's) is matched by the subject its event had
// in SENGO_EVENTS (HeaderEventSubject); one without it, queued before
// copies carried it, is taken as before.
//
// Relays share the consumer, whose filter takes what any recent relay's
// takes (liveFilters): during a rolling deploy that widens the filter, a
// relay still on the older configuration gets events only the new filter
// takes. So an event this relay's filter leaves out is left only when the
// consumer's filter, read from the server now, leaves it out too, or no
// recent heartbeat of another relay gives the endpoint a filter that
// takes it (when those are all told: see readPeers).
func (w *Worker) takes(ctx context.Context, msg jetstream.Msg, replayed bool) filterVerdict {
	subject := msg.Subject()
	if replayed {
		if subject = msg.Headers().Get(HeaderEventSubject); subject == "" {
			return filterTakes
		}
	}
	if w.ep.Matches(subject) {
		return filterTakes
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := w.live.Info(rctx)
	if err != nil {
		return filterUnknown
	}
	if !slices.ContainsFunc(stream.ConsumerFilters(info), func(f string) bool { return event.SubjectMatches(f, subject) }) {
		return filterLeaves
	}
	// The consumer's filter may take more than the recent relays' (set
	// while one that has gone since was recent): what none of theirs
	// takes is left. Read now, not remembered: a
	// relay that started since with a wider filter wrote its heartbeat
	// before it widened the consumer's.
	p, err := readPeers(rctx, w.cfg.JetStream, w.cfg.Instance)
	if err != nil {
		return filterUnknown
	}
	subjects, known := p.of(w.ep.Name)
	if known && !slices.ContainsFunc(subjects, func(f string) bool { return event.SubjectMatches(f, subject) }) {
		return filterLeaves
	}
	return filterTakes
}

// notTaken settles, unposted, an event the endpoint's filter no longer
// takes (takes): nothing is owed to an endpoint for an event its filter
// leaves out. A redriven copy's dead letter goes with it.
func (w *Worker) notTaken(ctx context.Context, msg jetstream.Msg, ev event.Event, replayed bool) {
	if replayed && !w.settleRedriven(ctx, msg, ev.ID) {
		return
	}
	w.log.Info().Str("event_id", clip(ev.ID)).Str("transaction_id", clip(ev.Data.TransactionID)).Bool("copy", replayed).
		Msg("event no longer matches the endpoint's filter; settled without posting it")
	w.cfg.Metrics.Deliveries.WithLabelValues(w.ep.Name, "filtered").Inc()
	_ = msg.Ack()
}

// deliverableID reports whether id can be sent as the Webhook-Id header:
// not empty, and a value Go's client sends (it refuses one with a control
// character before sending, and each attempt counted against the endpoint)
// as it is (it trims leading and trailing spaces and tabs, and the
// signature covers the id untrimmed: no receiver could verify it), in
// ASCII (the Standard Webhooks libraries of Python and Node read a header
// as Latin-1 and sign it again as UTF-8: they could not verify one
// outside ASCII).
func deliverableID(id string) bool {
	return id != "" && httpguts.ValidHeaderFieldValue(id) && textproto.TrimString(id) == id && !strings.ContainsFunc(id, func(r rune) bool { return r >= utf8.RuneSelf })
}

// mustWait implements ordered delivery: an event waits while the event
// before it in its transaction (its previousStatus), if this endpoint
// receives that one, is neither delivered nor dead-lettered.
func (w *Worker) mustWait(ctx context.Context, ev event.Event, meta *jetstream.MsgMetadata, log func() *zerolog.Logger) (bool, time.Duration) {
	prev := ev.Data.PreviousStatus
	if prev == nil {
		return false, 0
	}
	project := event.ProjectOf(ev.Source)
	if !w.ep.Matches(event.EventSubject(project, ev.Data.Product, *prev)) {
		return false, 0
	}
	prevID := event.ID(project, ev.Data.TransactionID, *prev)
	rec, found, err := w.store.get(ctx, attemptKey(w.ep.Name, prevID, 0), time.Time{})
	switch {
	case err != nil:
		return true, time.Second
	case found && rec.Done:
		return false, 0
	case found && rec.Seq >= meta.Sequence.Stream:
		// The record is of an event stored with or after this one: no
		// predecessor (the relay publishes a transaction's statuses in
		// order), but this event itself (another publisher's success
		// "after" success) or one waiting for it in turn (a cycle), which
		// would each wait for the other for ever.
		return false, 0
	case found && rec.DeadLetter != "":
		// Decided: the predecessor is dead-lettered (or its dead letter is
		// being stored), and never posted; its last record may not say done.
		return false, 0
	case found && meta.NumDelivered > uint64(staleWaits) && w.deliveringFor() > staleRecord(w.ep) && rec.NextAt.Before(w.cfg.Now().Add(-staleRecord(w.ep))) &&
		!w.store.refusedWithin(staleRecord(w.ep)) && w.settledHere(ctx, rec.Seq):
		// The predecessor's next attempt is long overdue, this event has
		// waited many times, and the endpoint has been delivering for
		// long enough that the predecessor would have had its attempt:
		// its record stopped moving (it could not be written when the
		// predecessor finished). Do not wait forever. (Not while the
		// store refuses this worker's writes: the predecessor's retries
		// go on, unrecorded.) (Overdue because
		// the endpoint was paused, held or its relays down is not stuck:
		// its redelivery comes first.)
		log().Warn().Str("previous_event_id", prevID).Time("previous_next_at", rec.NextAt).Msg("predecessor's record stopped moving; delivering")
		w.cfg.Metrics.Deliveries.WithLabelValues(w.ep.Name, "order_released").Inc()
		return false, 0
	case found:
		// The predecessor is between retries: wait until its next attempt.
		return true, min(max(rec.NextAt.Sub(w.cfg.Now())+time.Second, time.Second), 5*time.Minute)
	case meta.NumDelivered <= 3 || w.deliveringFor() <= staleRecord(w.ep):
		// No record: its first attempt is in flight, or due now that the
		// endpoint delivers again. Give it a timeout; after that, an ack
		// wait: the relay holding it may have died before its attempt,
		// and the server gives it out again only once the ack wait ends
		// (three timeouts were over before, and this event went first).
		if meta.NumDelivered > 1 {
			return true, ackWait(w.ep) + time.Second
		}
		return true, w.ep.Timeout + time.Second
	case w.store.refusedWithin(staleRecord(w.ep)):
		// No record, but the store refused this worker's writes lately
		// (this event's own wait record, at each wait): the predecessor's
		// records may be ones it refused, its attempts going on meanwhile.
		// Taken for never attempted, this event went first.
		return true, w.ep.Timeout + time.Second
	default:
		// Still no record after three waits: the predecessor never reached
		// this endpoint (it predates the endpoint). Do not wait forever.
		log().Warn().Str("previous_event_id", prevID).Msg("predecessor never attempted on this endpoint; delivering")
		return false, 0
	}
}

// settledHere reports whether the live consumer no longer holds the
// event at stream sequence seq: acknowledged or terminated (at or below
// its ack floor), or gone from the stream (aged out, purged). A
// predecessor whose record says its retry is long overdue may only wait
// behind a backlog of others (its record says when its attempt was due,
// the server gives it out later): not stuck while the consumer holds it.
// A record without its sequence (from before records had one), or a
// reading that fails, counts as settled: the release as before.
func (w *Worker) settledHere(ctx context.Context, seq uint64) bool {
	if seq == 0 {
		return true
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := w.live.Info(rctx)
	if err != nil || seq <= info.AckFloor.Stream {
		return true
	}
	_, err = w.events.GetMsg(rctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}

// deliveringFor is how long the endpoint has been delivering without a
// pause or hold (0 while paused or held).
func (w *Worker) deliveringFor() time.Duration {
	ok, resumed := w.breaker.delivering()
	if !ok || w.hold.Load() != nil {
		return 0
	}
	since := time.Unix(0, w.active.Load())
	if resumed.After(since) {
		since = resumed
	}
	return w.cfg.Now().Sub(since)
}

// staleWaits and staleRecord bound how long an ordered event waits for a
// predecessor whose record says it is between retries: beyond staleWaits
// redeliveries and a next attempt overdue by staleRecord, the record is
// taken as stuck.
var staleWaits int64 = 10 // a variable for tests

// unrecordedRetryMax bounds the delay of a retry whose attempt record
// could not be written: below staleRecord, after which an ordered
// successor stops waiting for a record that does not move (a variable for
// tests).
var unrecordedRetryMax = 30 * time.Second

func staleRecord(ep Endpoint) time.Duration { return 2*ackWait(ep) + time.Minute }
