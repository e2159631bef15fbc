package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/stream"
)

// ReasonRemoved: the endpoint was taken out of the configuration (or
// renamed) while events still waited for it; they are dead-lettered
// rather than left in a consumer no worker reads.
const ReasonRemoved = "endpoint_removed"

// RetireConfig configures RunRetirer.
type RetireConfig struct {
	JetStream jetstream.JetStream
	// Configured are the endpoints this relay delivers to.
	Configured []string
	Durable    Durability
	Metrics    *Metrics
	Logger     zerolog.Logger
	// Every is how often consumers are looked at (default 30s).
	Every time.Duration
	// Quiet is how long an abandoned consumer has had no delivery and
	// existed at least, and how long no relay has named its endpoint
	// before it is retired (default 1 minute; never less than three
	// heartbeats of any relay: unnamedFor).
	Quiet time.Duration
	// Beat is how often this relay writes its heartbeat (default, and at
	// most, beatEvery).
	Beat time.Duration
	// Instance names this relay in its heartbeat (random when empty; give
	// the workers the same: WorkerConfig.Instance).
	Instance string
	// Filters are the filter subjects of each endpoint in Configured, told
	// to the other relays in the heartbeat: an endpoint's consumer takes
	// what any running relay's filter takes, and narrows once the relays
	// with a wider one are gone (syncFilters). Nil: not told.
	Filters map[string][]string
	// Started, when set, is called once this relay's first heartbeat is
	// written: its workers (WorkerConfig.Instance) set their consumers'
	// filters only then.
	Started func()
}

// relayKey is the key, in SENGO_DELIVERY, of a relay's heartbeat: the
// endpoints it delivers, written at every look.
func relayKey(instance string) string { return "_relay." + instance }

// heartbeat is the value at relayKey.
type heartbeat struct {
	Endpoints []string      `json:"endpoints"`
	At        time.Time     `json:"at"`
	Every     time.Duration `json:"every"` // how often the relay writes it
	// Filters are each endpoint's filter subjects (absent: a relay from
	// before they were told).
	Filters map[string][]string `json:"filters,omitempty"`
}

// beatEvery is how often a relay writes its heartbeat at most (a relay
// whose retire_removed_after is short writes it more often: Beat);
// heartbeatFresh is the least age at which one is
// taken as its relay's last (a relay that writes less often gets three of
// its own intervals). Ages are measured on the server's clock: the
// relays' clocks may disagree.
var (
	beatEvery      = 10 * time.Second // variables for tests
	heartbeatFresh = 2 * time.Minute
)

// tombstoneFresh is how long a retired consumer's place is kept for its
// endpoint: a relay that delivers the endpoint and creates its consumer
// within that time continues where the retired one stopped.
const tombstoneFresh = 24 * time.Hour

// RunRetirer retires, until ctx ends, the endpoint consumers (webhook-*
// on SENGO_EVENTS and SENGO_REPLAY) of endpoints that are no longer
// configured. Without it a removed or renamed endpoint's backlog would
// wait for good in a consumer nothing reads: never delivered, never
// dead-lettered.
//
// Every relay writes a heartbeat every Beat, from its start: the
// endpoints it delivers. A consumer is taken as abandoned when no relay's
// recent heartbeat names its endpoint, no client waits on it, nothing was
// delivered from it for Quiet and it is older than Quiet; it is retired
// once that has held, unnamed all along, for Quiet (unnamedFor at
// least) by the server's clock. The time is counted from the shared
// sighting key, which any relay that names the endpoint deletes: a relay
// that restarts, or that could not write its heartbeat while the store
// refused writes, restarts the count. A relay still running another
// configuration that has the endpoint (during a rolling deploy that
// renames it, or one that adds an endpoint) names it in its heartbeat,
// held or paused or busy alike, and the consumer is left alone. (A relay
// too old to write heartbeats is seen only by its waiting pulls and
// deliveries: while its endpoint is held it looks abandoned. Upgrade every
// relay before removing endpoints.) Before each batch and before it
// deletes the consumer, a relay reads the heartbeats again.
//
// Retiring dead-letters, with ReasonRemoved, every event the consumer
// holds (delivered, in flight or waiting for a retry, and any stored
// meanwhile): nothing is acknowledged for it without a dead letter, so
// a retirement that turns out wrong (the endpoint's relay was away longer
// than Quiet) loses nothing that a redrive cannot bring back. Once nothing
// is pending it records where the consumer stopped (a tombstone) and
// deletes it: a relay that delivers the endpoint and creates the consumer
// again within tombstoneFresh continues from there (ensureConsumer). An
// event waiting for a retry is dead-lettered when its retry comes due, so
// a consumer can take up to the longest retry delay to go.
func RunRetirer(ctx context.Context, cfg RetireConfig) {
	if cfg.Every <= 0 {
		cfg.Every = 30 * time.Second
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = time.Minute
	}
	if cfg.Instance == "" {
		cfg.Instance = NewInstance()
	}
	if cfg.Beat <= 0 || cfg.Beat > beatEvery {
		cfg.Beat = beatEvery
	}
	r := &retirer{cfg: cfg, seen: map[string]retiring{}}
	kv, err := cfg.JetStream.KeyValue(ctx, event.BucketDelivery)
	for err != nil {
		sleepCtx(ctx, min(cfg.Every, time.Second)) // the workers wait for the first heartbeat
		if ctx.Err() != nil {
			return
		}
		kv, err = cfg.JetStream.KeyValue(ctx, event.BucketDelivery)
	}
	r.store = attemptStore{kv: kv}
	r.beat(ctx) // the first at once: the first look needs it
	// Returning waits for the heartbeats to end: a relay shutting down
	// closes its connection next, and its heartbeat must be gone first.
	beating := make(chan struct{})
	go func() { defer close(beating); r.heartbeats(ctx) }()
	defer func() { <-beating }()
	syncing := make(chan struct{})
	go func() { defer close(syncing); r.syncFilters(ctx) }()
	defer func() { <-syncing }()
	tick := time.NewTicker(cfg.Every)
	defer tick.Stop()
	for {
		used, now, err := r.used(ctx)
		if err != nil && ctx.Err() == nil {
			// Without every relay's heartbeat nothing is known abandoned.
			r.cfg.Logger.Warn().Err(err).Msg("relay heartbeats unavailable; not looking for consumers of removed endpoints")
		}
		for _, s := range []string{event.StreamEvents, event.StreamReplay} {
			if err != nil {
				break
			}
			if err := r.look(ctx, s, used, now); err != nil && ctx.Err() == nil {
				r.cfg.Logger.Warn().Err(err).Str("stream", s).Msg("looking for consumers of removed endpoints")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// heartbeats writes this relay's heartbeat every Beat until ctx
// ends, then deletes it. A look that takes long (a large backlog to
// dead-letter) never delays one.
func (r *retirer) heartbeats(ctx context.Context) {
	tick := time.NewTicker(r.cfg.Beat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if r.cfg.Filters != nil {
				// A last heartbeat naming no endpoint (its endpoints are no
				// longer delivered here), still telling its filters: the
				// consumers keep them while it is recent, so that a
				// restart of the only relay on a wider filter narrows
				// nothing meanwhile (heartbeatFresh: no interval, which
				// would also hold back retirements, unnamedFor). Removed
				// once a day old (used).
				b, _ := json.Marshal(heartbeat{At: time.Now().UTC(), Filters: r.cfg.Filters})
				if _, err := r.store.kv.Put(dctx, relayKey(r.cfg.Instance), b); err == nil {
					return
				}
			}
			// Not a delete: its marker, under a name used once, would be
			// listed and read by every look until the bucket's TTL.
			_ = stream.Forget(dctx, r.cfg.JetStream, event.BucketDelivery, relayKey(r.cfg.Instance))
			return
		case <-tick.C:
			r.beat(ctx)
		}
	}
}

// syncFilters sets, every Beat until ctx ends, the filter of each
// endpoint's consumer on SENGO_EVENTS that this relay tells in its
// heartbeat to what the running relays' filters take together
// (liveFilters): a relay on a wider filter that has started since widens
// it at once itself, and one that has gone (its heartbeat deleted as it
// stopped, or not written again for three of its intervals) no longer
// holds it wide. Not with the heartbeats: a store slow to answer these
// must never delay one.
func (r *retirer) syncFilters(ctx context.Context) {
	if r.cfg.Filters == nil {
		return
	}
	tick := time.NewTicker(r.cfg.Beat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p, err := readPeers(ctx, r.cfg.JetStream, r.cfg.Instance) // once for every endpoint
		if err != nil || !p.known {
			if ctx.Err() == nil {
				r.cfg.Logger.Warn().AnErr("error", err).Msg("the relays' filters unread; the endpoints' consumer filters left as they are")
			}
			continue
		}
		for _, name := range r.cfg.Configured {
			own, ok := r.cfg.Filters[name]
			if !ok {
				continue
			}
			if err := r.syncFilter(ctx, p, Endpoint{Name: name, FilterSubjects: own}); err != nil && ctx.Err() == nil {
				r.cfg.Logger.Warn().Err(err).Str("endpoint", name).Msg("the endpoint's consumer filter not set to the running relays' filters")
			}
		}
	}
}

// syncFilter is syncFilters for one endpoint, with p read.
func (r *retirer) syncFilter(ctx context.Context, p peers, ep Endpoint) error {
	cons, err := r.cfg.JetStream.Consumer(ctx, event.StreamEvents, ConsumerName(ep.Name))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil // its worker makes it
	} else if err != nil {
		return err
	}
	present := stream.ConsumerFilters(cons.CachedInfo())
	if slices.Equal(filterCover(present), liveFilters(p, ep, present)) {
		return nil
	}
	// A change: the consumer read again, then the heartbeats (p was read
	// before the pass, and a relay that widened the consumer since wrote
	// its heartbeat first: the consumer first, so that it is seen), and
	// the update writes the configuration read last: another relay's
	// change since (its ack wait) stays.
	cons, err = r.cfg.JetStream.Consumer(ctx, event.StreamEvents, ConsumerName(ep.Name))
	if err != nil {
		return err
	}
	present = stream.ConsumerFilters(cons.CachedInfo())
	if p, err = readPeers(ctx, r.cfg.JetStream, r.cfg.Instance); err != nil {
		return err
	} else if !p.known {
		return errNoHeartbeat
	}
	want := liveFilters(p, ep, present)
	if slices.Equal(filterCover(present), want) {
		return nil
	}
	cfg := cons.CachedInfo().Config
	cfg.FilterSubject, cfg.FilterSubjects = "", want
	if _, err := r.cfg.JetStream.UpdateConsumer(ctx, event.StreamEvents, cfg); err != nil {
		return err
	}
	r.cfg.Logger.Info().Str("endpoint", ep.Name).Strs("from", present).Strs("to", want).Msg("the endpoint's consumer filter set to what the running relays' filters take")
	return nil
}

// beat writes this relay's heartbeat.
func (r *retirer) beat(ctx context.Context) {
	b, _ := json.Marshal(heartbeat{Endpoints: r.cfg.Configured, At: time.Now().UTC(), Every: r.cfg.Beat, Filters: r.cfg.Filters})
	if _, err := r.store.kv.Put(ctx, relayKey(r.cfg.Instance), b); err != nil {
		if ctx.Err() == nil {
			r.cfg.Logger.Warn().Err(err).Msg("relay heartbeat not written")
		}
	} else if r.cfg.Started != nil {
		r.started.Do(r.cfg.Started)
	}
}

// used returns the consumer names of the endpoints that some relay
// delivers: this relay's and those of every recent heartbeat. A heartbeat
// is recent when it was stored less than three of its relay's intervals
// (heartbeatFresh at least) before this relay's own, both by the server's
// clock; without this relay's own nothing is known.
func (r *retirer) used(ctx context.Context) (map[string]bool, time.Time, error) {
	used := map[string]bool{}
	for _, n := range r.cfg.Configured {
		used[ConsumerName(n)] = true
	}
	longest := r.cfg.Beat
	defer func() { r.longestBeat.Store(int64(longest)) }()
	mine, err := r.store.kv.Get(ctx, relayKey(r.cfg.Instance))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("this relay's heartbeat: %w", err)
	}
	keys, err := stream.Keys(ctx, r.cfg.JetStream, event.BucketDelivery, relayKey("*"))
	if err != nil {
		return nil, time.Time{}, err
	}
	for _, k := range keys {
		e, err := r.store.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		} else if err != nil {
			return nil, time.Time{}, err
		}
		age := mine.Created().Sub(e.Created())
		var h heartbeat
		bad := json.Unmarshal(e.Value(), &h) != nil
		if !bad {
			longest = max(longest, h.Every) // stale ones too: their relays may come back
		}
		if bad || age > max(3*h.Every, heartbeatFresh) {
			switch {
			case !bad && h.Every == 0 && len(h.Endpoints) == 0:
				// A stopped relay's last (its filters told while recent),
				// under a name used once: no one reads it again, and kept
				// (or its delete marker) every read of the heartbeats
				// would read it until the bucket's TTL.
				_ = stream.Forget(ctx, r.cfg.JetStream, event.BucketDelivery, k)
			case age > staleHeartbeat: // a relay that stopped without deleting its own (unless it just wrote it again)
				_ = r.store.kv.Delete(ctx, k, jetstream.LastRevision(e.Revision()))
			}
			continue
		}
		for _, n := range h.Endpoints {
			used[ConsumerName(n)] = true
		}
	}
	// A cutoff stays only while its endpoint is removed: delivered again
	// by some relay, the endpoint gets a new one when it is next removed.
	cuts, err := stream.Keys(ctx, r.cfg.JetStream, event.BucketDelivery, retireKey("*", "*"))
	if err != nil {
		return nil, time.Time{}, err
	}
	for _, k := range cuts {
		if used[k[strings.LastIndexByte(k, '.')+1:]] {
			if _, err := r.store.kv.Get(ctx, k); errors.Is(err, jetstream.ErrKeyNotFound) {
				continue // deleted already
			}
			if err := r.store.kv.Delete(ctx, k); err != nil {
				return nil, time.Time{}, err
			}
		}
	}
	return used, mine.Created(), nil
}

// stillRemoved reports whether no relay delivers the endpoint of consumer
// now, and no client waits on it.
func (r *retirer) stillRemoved(ctx context.Context, cons jetstream.Consumer) (bool, error) {
	used, _, err := r.used(ctx)
	if err != nil {
		return false, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return false, err
	}
	return !used[info.Name] && info.NumWaiting == 0, nil
}

// gone reports an error of a consumer deleted meanwhile (a pull waiting
// when it was deleted ends with ErrConsumerDeleted).
func gone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, nats.ErrNoResponders)
}

// staleHeartbeat is the age at which a heartbeat is removed.
const staleHeartbeat = 24 * time.Hour

// NewInstance is a random name for a relay's heartbeat.
func NewInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type retirer struct {
	cfg     RetireConfig
	store   attemptStore
	started sync.Once // cfg.Started called
	// longestBeat is the longest interval of any heartbeat in the bucket
	// at the last look, this relay's own included.
	longestBeat atomic.Int64
	// seen: consumers found abandoned, by stream and name.
	seen map[string]retiring
}

// retiring is a consumer found abandoned.
type retiring struct {
	confirmed bool      // unnamed for long enough: being retired
	sighted   time.Time // when it was first found so, by the server's clock (its sighting key's)
}

// unnamedFor is how long an endpoint must have gone unnamed, abandoned,
// before its consumer is retired: Quiet, and three heartbeats of the relay
// that writes them least often at least (its heartbeat, stale ones too,
// says how often). After the store refused writes for a while every
// heartbeat looks old; the relays that name the endpoint write theirs
// within one of their intervals of the store taking writes again.
func (r *retirer) unnamedFor() time.Duration {
	return max(r.cfg.Quiet, 3*max(r.cfg.Beat, time.Duration(r.longestBeat.Load())))
}

// look retires the consumers of streamName that no relay in used names
// and that have been abandoned for unnamedFor; now is the server's time
// (this relay's latest heartbeat).
func (r *retirer) look(ctx context.Context, streamName string, used map[string]bool, now time.Time) error {
	s, err := r.cfg.JetStream.Stream(ctx, streamName)
	if err != nil {
		return err
	}
	names := s.ConsumerNames(ctx)
	var orphans []string
	for n := range names.Name() {
		if strings.HasPrefix(n, "webhook-") && !used[n] {
			orphans = append(orphans, n)
		}
	}
	if err := names.Err(); err != nil {
		return err
	}
	still := map[string]bool{}
	for _, n := range orphans {
		key := streamName + "/" + n
		still[key] = true
		cons, err := s.Consumer(ctx, n)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		} else if err != nil {
			return err
		}
		info := cons.CachedInfo()
		st, known := r.seen[key]
		if info.NumWaiting > 0 {
			// A client pulls from it (a relay too old to write a
			// heartbeat): what it holds is that relay's to deliver.
			delete(r.seen, key)
			if err := r.store.kv.Delete(ctx, retireKey(streamName, n)); err != nil {
				return err
			}
			continue
		}
		if !st.confirmed && !r.abandoned(info) {
			// Delivered from lately: by a relay, or by another relay
			// retiring it (whose cutoff stays).
			delete(r.seen, key)
			continue
		}
		// The sighting is read at every look: a relay that named the
		// endpoint meanwhile deleted it, and the count starts again.
		sighted, err := r.sighting(ctx, s, streamName, n)
		if err != nil {
			return err
		}
		if !known || !sighted.Equal(st.sighted) {
			st = retiring{sighted: sighted}
			r.seen[key] = st
			r.cfg.Logger.Warn().Str("consumer", n).Str("stream", streamName).Uint64("pending", info.NumPending+uint64(info.NumAckPending)).
				Str("retired_after", r.unnamedFor().String()).
				Msg("consumer of an endpoint that is not configured; its events are dead-lettered (endpoint_removed) unless a relay that has the endpoint names it meanwhile")
		}
		if now.Sub(st.sighted) < r.unnamedFor() {
			continue
		}
		st.confirmed = true
		r.seen[key] = st
		if err := r.retire(ctx, s, cons, streamName); err != nil {
			return err
		}
	}
	for key := range r.seen {
		if strings.HasPrefix(key, streamName+"/") && !still[key] {
			delete(r.seen, key)
		}
	}
	return nil
}

// retireKey is the key, in SENGO_DELIVERY, of the sighting of a consumer
// found abandoned (its value: the last sequence of its stream then). Its
// creation time, by the server's clock, is when the endpoint was first
// found unnamed; every relay retiring it uses the same one, and any relay
// that names the endpoint deletes it.
func retireKey(stream, consumer string) string { return "_retire." + stream + "." + consumer }

// sighting returns when consumer on stream was first found abandoned,
// by the server's clock: its sighting key's creation, made now if absent.
func (r *retirer) sighting(ctx context.Context, s jetstream.Stream, streamName, consumer string) (time.Time, error) {
	key := retireKey(streamName, consumer)
	e, err := r.store.kv.Get(ctx, key)
	if err == nil {
		return e.Created(), nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return time.Time{}, err
	}
	si, err := s.Info(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if _, err := r.store.kv.Create(ctx, key, []byte(strconv.FormatUint(si.State.LastSeq, 10))); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return time.Time{}, err
	}
	if e, err = r.store.kv.Get(ctx, key); err != nil {
		return time.Time{}, err
	}
	return e.Created(), nil
}

// retiredKey is the key, in SENGO_DELIVERY, of a consumer the retirer
// deleted: a tombstone saying where it stopped.
func retiredKey(stream, consumer string) string { return "_retired." + stream + "." + consumer }

// tombstone is the value at retiredKey.
type tombstone struct {
	// Last is the last stream sequence the consumer had delivered (and
	// dead-lettered): its endpoint's place in the stream.
	Last uint64    `json:"last"`
	At   time.Time `json:"at"`
}

// abandoned reports a consumer no client uses.
func (r *retirer) abandoned(info *jetstream.ConsumerInfo) bool {
	now := info.TimeStamp // the server's clock, as Created and Delivered.Last are
	if now.IsZero() {
		now = time.Now()
	}
	quiet := now.Add(-r.cfg.Quiet)
	if info.NumWaiting > 0 || info.Created.After(quiet) {
		return false
	}
	return info.Delivered.Last == nil || info.Delivered.Last.Before(quiet)
}

// retire dead-letters what cons holds and deletes it, leaving a
// tombstone, when nothing is left pending.
func (r *retirer) retire(ctx context.Context, s jetstream.Stream, cons jetstream.Consumer, streamName string) error {
	endpoint := strings.TrimPrefix(cons.CachedInfo().Name, "webhook-")
	replayed := streamName == event.StreamReplay
	var dead, skipped int
	for ctx.Err() == nil {
		// A relay that delivers the endpoint may have started meanwhile.
		if ok, err := r.stillRemoved(ctx, cons); gone(err) {
			return nil
		} else if err != nil {
			return err
		} else if !ok {
			r.cfg.Logger.Warn().Str("endpoint", endpoint).Str("stream", streamName).Msg("a relay delivers this endpoint again; not retiring it")
			return nil
		}
		batch, err := cons.FetchNoWait(100)
		if gone(err) {
			return nil // another relay retired it meanwhile
		} else if err != nil {
			return fmt.Errorf("fetch from %s: %w", cons.CachedInfo().Name, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			ok, err := r.settle(ctx, msg, endpoint, replayed)
			if err != nil {
				_ = msg.Nak()
				return err
			}
			if ok {
				dead++
			} else {
				skipped++
			}
		}
		if err := batch.Error(); gone(err) {
			return nil
		} else if err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("fetch from %s: %w", cons.CachedInfo().Name, err)
		}
		if n == 0 {
			break
		}
	}
	info, err := cons.Info(ctx)
	if gone(err) {
		return nil
	} else if err != nil {
		return err
	}
	log := r.cfg.Logger.Warn().Str("endpoint", endpoint).Str("stream", streamName).Int("dead_lettered", dead).Int("already_done", skipped)
	if info.NumPending > 0 || info.NumAckPending > 0 {
		if dead > 0 {
			log.Uint64("waiting_for_retry", uint64(info.NumAckPending)).Msg("removed endpoint: events dead-lettered; the rest go when their retry comes due")
		}
		return nil
	}
	if ok, err := r.stillRemoved(ctx, cons); gone(err) {
		return nil
	} else if err != nil || !ok {
		return err
	}
	b, _ := json.Marshal(tombstone{Last: info.Delivered.Stream, At: time.Now().UTC()})
	rev, err := r.store.kv.Put(ctx, retiredKey(streamName, info.Name), b)
	if err != nil {
		return err
	}
	if err := s.DeleteConsumer(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		// The consumer may stay (its relay back before the next look): a
		// tombstone left with it would send a later deletion by hand back
		// to this place. Unless a retirer wrote it again meanwhile.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, ierr := s.Consumer(dctx, info.Name); ierr == nil {
			_ = r.store.kv.Delete(dctx, retiredKey(streamName, info.Name), jetstream.LastRevision(rev))
		}
		return fmt.Errorf("delete consumer %s: %w", info.Name, err)
	}
	if err := r.store.kv.Delete(ctx, retireKey(streamName, info.Name)); err != nil {
		return err
	}
	log.Msg("removed endpoint retired: what waited for it is in the dead letters (reason endpoint_removed) and its consumer is deleted")
	return nil
}

// settle dead-letters msg (true), or acknowledges it (false) if its
// record says it was delivered or dead-lettered already.
func (r *retirer) settle(ctx context.Context, msg jetstream.Msg, endpoint string, replayed bool) (bool, error) {
	meta, err := msg.Metadata()
	if err != nil {
		return false, err
	}
	ev, _ := event.Unmarshal(msg.Data())
	var replaySeq uint64
	if replayed {
		replaySeq = meta.Sequence.Stream
	}
	key := attemptKey(endpoint, recordID(ev.ID, meta.Sequence.Stream), replaySeq)
	rec, _, err := r.store.get(ctx, key, copyStored(meta, replayed))
	if err != nil {
		return false, err
	}
	if rec.Done { // delivered or dead-lettered; its acknowledgement was lost
		// A redriven copy's dead letter goes too, as a worker removes it:
		// left listed, a redrive would post the event again.
		if replayed {
			if err := removeRedriven(ctx, r.cfg.JetStream, msg); err != nil {
				return false, err
			}
		}
		return false, msg.DoubleAck(ctx)
	}
	d := DeadLetter{
		Endpoint: endpoint, EventID: ev.ID, TransactionID: ev.Data.TransactionID, MerchantRef: ev.Data.MerchantRef,
		Reason: ReasonRemoved, Attempts: rec.Count, FirstAttemptAt: rec.First, LastAttemptAt: rec.Last,
		LastStatus: rec.LastStatus, LastError: rec.LastError, ResponseExcerpt: rec.Excerpt,
		StreamSeq: eventSeq(msg, meta, replayed), Subject: eventSubject(msg, replayed), Replayed: replayed, DeadAt: time.Now().UTC(),
	}
	if rec.DeadLetter != "" {
		// Decided before (its endpoint answered 410, say), its dead
		// letter not stored then: that reason, not the removal, is why.
		d.Reason = rec.DeadLetter
	}
	if err := publishDeadLetter(ctx, r.cfg.JetStream, key, d, msg.Data()); err != nil {
		return false, err
	}
	if r.cfg.Durable != nil {
		if err := r.cfg.Durable.Sync(ctx); err != nil {
			return false, err
		}
	}
	// Marked dead-lettered as a worker marks it: an ordered successor
	// waits for this record to say so (mustWait), once a relay delivers
	// the endpoint again.
	if ev.ID != "" {
		rec.Done, rec.NextAt, rec.DeadLetter = true, time.Time{}, ""
		if err := r.store.put(ctx, key, rec); err != nil {
			r.cfg.Logger.Warn().Err(err).Str("event_id", clip(ev.ID)).Msg("mark dead-lettered")
		}
	}
	if replayed {
		if err := removeRedriven(ctx, r.cfg.JetStream, msg); err != nil {
			return false, err
		}
	}
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.DeadLetters.WithLabelValues(endpoint, d.Reason).Inc()
	}
	return true, msg.DoubleAck(ctx)
}
