package stream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Limits bounds one stream.
type Limits struct {
	// MaxAge is how long messages are kept.
	MaxAge time.Duration
	// Duplicates is the window in which a repeated Nats-Msg-Id is dropped.
	Duplicates time.Duration
	// MaxBytes caps the stream's size; zero or negative means no cap.
	MaxBytes int64
	// PerSubject keeps only the newest n messages of each subject; zero keeps all.
	PerSubject int64
}

// StreamSpec is one stream to provision.
type StreamSpec struct {
	Name        string
	Subjects    []string
	Description string
	Limits      Limits
	// Settle is how long before the end of its age a message not settled
	// may still be waiting for its next look (a retry scheduled under the
	// stream's age as it was, the guard that dead-letters or quarantines
	// it in time), for the consumers Retries names (the relay's own): a
	// lowered max_age waits while such a consumer holds a message that
	// old unsettled (keptAge). Another consumer (a subscriber's) gets no
	// retry of the relay's: only a message older than the age holds it.
	Settle  time.Duration
	Retries func(consumer string) bool
}

// BucketSpec is one KV bucket to provision.
type BucketSpec struct {
	Name        string
	Description string
	// TTL is how long an entry lives after its last write; zero keeps it forever.
	TTL time.Duration
	// History is how many revisions of each key are kept (1 to 64).
	History uint8
	// MaxBytes bounds the bucket (a write beyond it is refused); zero is
	// unlimited.
	MaxBytes int64
	// MaxValueSize bounds one value, in bytes (a larger one is refused);
	// zero is unlimited.
	MaxValueSize int32
	// TTLAtLeast names streams whose entries the bucket's speak of: its
	// TTL is at least the max_age each keeps (which keptAge may hold above
	// the one asked; 0, unlimited, keeps the entries forever).
	TTLAtLeast []string
}

// Spec is everything to provision, with the settings they share.
type Spec struct {
	Replicas int
	Storage  jetstream.StorageType
	Streams  []StreamSpec
	Buckets  []BucketSpec
	// Warn is told why a stream keeps a setting other than the one asked
	// (a max_age not lowered over messages not yet settled); nil: not told.
	Warn func(stream, msg string)
	// Kept is told, for each stream provisioned, whether it keeps a max_age
	// above the one asked (keptAge); nil: not told.
	Kept func(stream string, kept bool)
}

// itemTimeouts are the deadlines of the tries of one create-or-update
// call. On a cluster, two relays creating the same R3 stream at the same
// moment can leave one request unanswered; a short first deadline keeps
// that cheap, and the retry finds the stream and updates it at once.
// Longer later deadlines leave room for a genuinely slow cluster.
var itemTimeouts = []time.Duration{2 * time.Second, 5 * time.Second, 10 * time.Second}

// Provision creates each stream and bucket of spec, or updates it in place
// when it exists: messages and consumers survive a configuration change.
// Each item has its own deadline and a few tries, so relays starting
// together converge. It reports every failure, not only the first.
func Provision(ctx context.Context, js jetstream.JetStream, spec Spec) error {
	var errs []error
	ages := map[string]time.Duration{} // as provisioned
	for _, s := range spec.Streams {
		cfg := jetstream.StreamConfig{
			Name:              s.Name,
			Description:       s.Description,
			Subjects:          s.Subjects,
			Retention:         jetstream.LimitsPolicy,
			Storage:           spec.Storage,
			Replicas:          spec.Replicas,
			MaxAge:            s.Limits.MaxAge,
			Duplicates:        s.Limits.Duplicates,
			MaxBytes:          orUnlimited(s.Limits.MaxBytes),
			MaxMsgs:           -1,
			MaxMsgsPerSubject: perSubjectLimit(spec.Storage, s.Limits.PerSubject),
			// A full stream refuses new writes (the callback gets 503, SenGo
			// may retry) instead of silently dropping its oldest messages,
			// which could be notifications not yet processed or events not
			// yet delivered. Age limits still expire old messages.
			Discard:     jetstream.DiscardNew,
			AllowDirect: true,
		}
		err := try(ctx, func(ctx context.Context) error {
			if err := keepsReplicas(ctx, js, s.Name, spec.Replicas); err != nil {
				return err
			}
			age, why, err := keptAge(ctx, js, s)
			if err != nil {
				return err
			}
			if why != "" && spec.Warn != nil {
				spec.Warn(s.Name, why)
			}
			cfg := cfg
			cfg.MaxAge = age
			if _, err = js.CreateOrUpdateStream(ctx, cfg); err == nil {
				ages[s.Name] = age
				if spec.Kept != nil { // what the stream has now
					spec.Kept(s.Name, why != "")
				}
			}
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("provision stream %s: %w", s.Name, err))
		}
	}
buckets:
	for _, b := range spec.Buckets {
		ttl := b.TTL
		for _, name := range b.TTLAtLeast {
			age, ok := ages[name]
			if !ok {
				// Not provisioned in this pass: the age it keeps now. A
				// bucket given its configured ttl below it lost at once
				// the entries of messages still kept.
				st, err := js.Stream(ctx, name)
				switch {
				case errors.Is(err, jetstream.ErrStreamNotFound):
					continue
				case err != nil:
					errs = append(errs, fmt.Errorf("provision bucket %s: the age of %s: %w", b.Name, name, err))
					continue buckets
				}
				age = st.CachedInfo().Config.MaxAge
			}
			if ttl != 0 {
				if age == 0 {
					ttl = 0
				} else {
					ttl = max(ttl, age)
				}
			}
		}
		if ttl != b.TTL && spec.Warn != nil {
			spec.Warn("KV_"+b.Name, fmt.Sprintf("bucket %s keeps its entries %s, not the %s configured: as long as %s keep what they speak of", b.Name, fmtTTL(ttl), b.TTL, strings.Join(b.TTLAtLeast, " and ")))
		}
		cfg := jetstream.KeyValueConfig{
			Bucket:       b.Name,
			Description:  b.Description,
			History:      b.History,
			TTL:          ttl,
			MaxBytes:     orUnlimited(b.MaxBytes),
			MaxValueSize: int32(orUnlimited(int64(b.MaxValueSize))),
			Storage:      spec.Storage,
			Replicas:     spec.Replicas,
		}
		err := try(ctx, func(ctx context.Context) error {
			if err := keepsReplicas(ctx, js, "KV_"+b.Name, spec.Replicas); err != nil {
				return err
			}
			_, err := js.CreateOrUpdateKeyValue(ctx, cfg)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("provision bucket %s: %w", b.Name, err))
		}
	}
	return errors.Join(errs...)
}

// ErrFewerReplicas: the configuration asks for fewer replicas than a
// stream has. A relay whose configuration lost nats.replicas (1 by
// default) would take every stream and bucket of the cluster down to one
// copy, silently; lowering them is left to an operator.
var ErrFewerReplicas = errors.New("fewer replicas than the stream has")

// keepsReplicas refuses to provision stream name (that exists) with fewer
// than its replicas.
func keepsReplicas(ctx context.Context, js jetstream.JetStream, name string, replicas int) error {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if has := s.CachedInfo().Config.Replicas; has > max(replicas, 1) {
		return fmt.Errorf("%w: it has %d replicas, nats.replicas says %d (a configuration that lost its nats.replicas?); to lower them, run `nats stream edit %s --replicas %d` by hand", ErrFewerReplicas, has, replicas, name, replicas)
	}
	return nil
}

// keptAge is the max_age to give stream name (that may exist) when asked
// for asked: asked, unless that is lower than the stream's and one of its
// consumers holds a message not settled (not yet delivered, or delivered
// and not acknowledged) older than asked, less StreamSpec.Settle for the
// consumers StreamSpec.Retries names.
// nats-server deletes every message older than a lowered max_age at once,
// settled or not, and a message waiting for a retry scheduled under the
// old age goes when it reaches the new one, before that retry: an
// endpoint's backlog would be gone with no dead letter, notifications
// answered 200 before they were processed. why says which consumer keeps
// the old age. The relay's scans (ScanConsumerPrefix) are not counted. A
// consumer or message that cannot be read keeps the old age too (why says
// so): provisioning, and the callbacks that wait for it, go on.
func keptAge(ctx context.Context, js jetstream.JetStream, spec StreamSpec) (time.Duration, string, error) {
	name, asked := spec.Name, spec.Limits.MaxAge
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return asked, "", nil
	}
	if err != nil {
		return 0, "", err
	}
	has := s.CachedInfo().Config.MaxAge
	if asked == 0 || (has != 0 && asked >= has) {
		return asked, "", nil // not lower
	}
	kept := func(why string) (time.Duration, string, error) {
		return has, fmt.Sprintf("stream %s keeps max_age %s, not the %s configured: %s; a lower max_age deletes every older message at once (checked at each start)", name, has, asked, why), nil
	}
	list := s.ListConsumers(ctx)
	for ci := range list.Info() {
		if ci.Cluster != nil && ci.Cluster.Name != "" && ci.Cluster.Leader == "" {
			// In a cluster, a consumer whose leader does not answer (its
			// replicas on nodes down) is listed with no state, its name
			// too at times: what it has settled is not known.
			return kept(fmt.Sprintf("consumer %s has no leader to say what it has settled", ci.Name))
		}
		if strings.HasPrefix(ci.Name, ScanConsumerPrefix) || ci.NumPending == 0 && ci.NumAckPending == 0 {
			continue
		}
		cutoff := time.Now().Add(-asked)
		if spec.Retries != nil && spec.Retries(ci.Name) {
			cutoff = time.Now().Add(-max(asked-spec.Settle, 0))
		}
		m, err := OldestUnsettled(ctx, s, ci)
		if err != nil {
			return kept(fmt.Sprintf("consumer %s's oldest message not settled could not be read (%v)", ci.Name, err))
		}
		if m != nil && m.Time.Before(cutoff) {
			return kept(fmt.Sprintf("consumer %s has not settled messages stored before then, or that may wait for a retry until after it (the oldest %s, sequence %d); it applies once they are delivered, dead-lettered or its consumer deleted",
				ci.Name, m.Time.UTC().Format(time.RFC3339), m.Sequence))
		}
	}
	if err := list.Err(); err != nil {
		return kept(fmt.Sprintf("its consumers could not be listed (%v)", err))
	}
	return asked, "", nil
}

// fmtTTL says ttl, 0 as forever.
func fmtTTL(ttl time.Duration) string {
	if ttl == 0 {
		return "forever"
	}
	return ttl.String()
}

// try runs op with growing deadlines, again after a timeout.
func try(ctx context.Context, op func(context.Context) error) error {
	var err error
	for _, d := range itemTimeouts {
		ictx, cancel := context.WithTimeout(ctx, d)
		err = op(ictx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	return err
}

// Check reports whether every stream and bucket of spec exists.
func Check(ctx context.Context, js jetstream.JetStream, spec Spec) error {
	for _, s := range spec.Streams {
		st, err := js.Stream(ctx, s.Name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", s.Name, err)
		}
		if !st.CachedInfo().Config.AllowDirect {
			// The console, the admin API and the merchantRef index read
			// with direct gets, which such a stream refuses.
			return fmt.Errorf("stream %s: allow_direct is off; the relay reads it with direct gets (nats stream edit %s --allow-direct)", s.Name, s.Name)
		}
	}
	for _, b := range spec.Buckets {
		if _, err := js.KeyValue(ctx, b.Name); err != nil {
			return fmt.Errorf("bucket %s: %w", b.Name, err)
		}
	}
	return nil
}

// ErrStoreFull: the stream or the account's storage cannot take another
// message of the given size.
var ErrStoreFull = errors.New("store full")

// Room reports ErrStoreFull when stream, or JetStream's storage for the
// account, has less than need bytes left: a relay in that state answers
// every callback 503, so it must not report ready. serverMax is a cap the
// account's limits do not show (the embedded server's max_store_bytes,
// server-wide: its account's limits say "none"; 0: no such cap); an
// account with tiered limits (an operator's) has them in its tier.
func Room(ctx context.Context, js jetstream.JetStream, stream string, need, serverMax int64) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info := s.CachedInfo() // fresh: js.Stream just fetched it
	if max := info.Config.MaxBytes; max > 0 && info.State.Bytes+uint64(need) > uint64(max) {
		return fmt.Errorf("%w: %s holds %d of its %d bytes", ErrStoreFull, stream, info.State.Bytes, max)
	}
	acct, err := js.AccountInfo(ctx)
	if err != nil {
		return fmt.Errorf("account info: %w", err)
	}
	// r: a tier's usage counts every replica's bytes, and nats-server
	// scales its limit by the replicas to compare (jsAccount's
	// wouldExceedLimits); the account's and the server's are flat.
	full := func(used uint64, max int64, r int, what string) error {
		if max > 0 && used+uint64(need*int64(r)) > uint64(max*int64(r)) {
			return fmt.Errorf("%w: %s holds %d of its %d bytes", ErrStoreFull, what, used, max*int64(r))
		}
		return nil
	}
	r := max(1, info.Config.Replicas)
	tier := fmt.Sprintf("R%d", r)
	return errors.Join(
		full(acct.Store, acct.Limits.MaxStore, 1, "JetStream storage"),
		full(acct.Tiers[tier].Store, acct.Tiers[tier].Limits.MaxStore, r, "JetStream storage of tier "+tier),
		full(acct.Store, serverMax, 1, "JetStream storage (the embedded server's max_store_bytes)"))
}

// smallBlocks is the per-subject limit of a file stream that keeps every
// message of a subject: no subject ever holds that many, so it never
// binds, and any per-subject limit makes nats-server store the stream in
// 4 MB blocks where it gives a stream without one 8 MB blocks (its
// autoTuneFileStorageBlockSize; the block size cannot be set through the
// JetStream API). The console reads single messages at random (a
// transaction's notification, event and attempts), and the server loads
// and indexes a whole block to answer one of them: half the block is half
// that work and half the memory it allocates, which is what makes the
// garbage collector run and what a read pays while it marks. Measured with
// a million stored transactions in BENCHMARKS.md.
const smallBlocks = math.MaxInt64

// perSubjectLimit is the stream's MaxMsgsPerSubject: n when set, else
// smallBlocks for a file stream.
func perSubjectLimit(storage jetstream.StorageType, n int64) int64 {
	if n <= 0 && storage == jetstream.FileStorage {
		return smallBlocks
	}
	return orUnlimited(n)
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}
