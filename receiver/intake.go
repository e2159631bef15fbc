package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/tracing"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/stream"
	"github.com/sengo-relay/sengo-relay/verify"
)

// IntakeConsumer is the durable consumer name on SENGO_INBOX shared by
// every relay instance.
const IntakeConsumer = "intake"

// ErrPermanent marks a notification that can never be processed; it is
// quarantined instead of retried. A Confirmer wraps it to reject a
// notification SenGo disagrees with.
var ErrPermanent = errors.New("permanent failure")

// Confirmer checks a notification against SenGo's API before anything is
// published (sengo.Confirmer). Confirm blocks and must be safe for
// concurrent use. It returns SenGo's view of the transaction, which wins
// where it differs (SenGo is the truth), and confirmed=false for a project
// it cannot check. Errors wrapping sengo.ErrMismatch quarantine the
// notification; sengo.ErrUnconfirmed is retried ConfirmAttempts times and
// then quarantined; anything else is retried with backoff.
type Confirmer interface {
	Confirm(ctx context.Context, project string, tx sengo.Transaction) (sengo.Transaction, bool, error)
}

// CheckProber is what a Confirmer may also do (sengo.Confirmer): tell
// whether SenGo's API answers a project's checks at all. With it, a check
// that keeps failing for one notification while SenGo answers others is
// that notification's own problem: after ConfirmAttempts tries (at once
// for a check not answered in time) it is quarantined as unconfirmed (and
// rechecked), not retried as an outage holding one of intake's slots for
// the inbox's retention.
type CheckProber interface {
	ChecksAnswered(ctx context.Context, project string, since time.Time) bool
}

// IntakeConfig configures the intake workers.
type IntakeConfig struct {
	JetStream     jetstream.JetStream
	Workers       int
	AckWait       time.Duration
	MaxAckPending int
	RetryInitial  time.Duration
	RetryMax      time.Duration
	// Confirmer checks notifications with SenGo's API; nil publishes them
	// unconfirmed (confirmed: false).
	Confirmer Confirmer
	// Projects are this relay's configured projects. Every relay's intake
	// reads the one inbox, and each knows only its own projects' checks: a
	// notification of another project (added on another relay first, or
	// removed) is never decided here. It is retried, for a relay that has
	// the project, and set aside when the inbox would drop it.
	Projects []string
	// RequireConfirmation lists projects whose notifications must be
	// confirmed: one that was not (no client for it) is quarantined, never
	// published with confirmed: false.
	RequireConfirmation map[string]bool
	// CallbackTokens are the projects' callback_tokens, taken out of
	// SenGo's objects (which echo the callback URL, the token in it)
	// before they are kept in an event or a quarantined notification.
	CallbackTokens map[string]string
	// ConfirmAttempts bounds retries of a notification whose claimed final
	// status SenGo's API does not report (default 5).
	ConfirmAttempts int
	// Durable, when set, is waited on before a notification is acked: the
	// state, event and quarantine writes it caused must be on disk first.
	Durable Durability
	// History, when set, indexes each published transaction under its
	// merchantRef (SENGO_REFS), written asynchronously: a record that cannot
	// be stored never holds back or fails a notification.
	History *history.Writer
	Metrics *Metrics
	Logger  zerolog.Logger
}

// Intake turns inbox notifications into events.
type Intake struct {
	cfg   IntakeConfig
	kv    jetstream.KeyValue
	inbox jetstream.Stream
	cons  jetstream.Consumer
	log   zerolog.Logger
	// tokens take each project's callback_token out of its SenGo objects
	// (IntakeConfig.CallbackTokens).
	tokens map[string]verify.Redactor
	// waited counts, per inbox sequence, the redeliveries spent waiting
	// for an earlier pending, which are no attempts: they must not spend
	// a notification's confirmations nor grow its retry delay. Known to
	// this process only (another relay, or a restart, counts them as
	// attempts, as before), bounded at maxWaited entries (waitCredit).
	waitedMu sync.Mutex
	waited   map[uint64]waits
	// inboxMaxAge is SENGO_INBOX's retention (0: none).
	inboxMaxAge time.Duration
	// awaiting holds a slot for each notification waiting for its fsync
	// beside its worker, acks for each of their goroutines
	// (ackWhenDurable).
	awaiting chan struct{}
	acks     sync.WaitGroup
	// delayed holds, per project, the notifications this relay put back
	// because SenGo's API did not answer their check (an outage), and
	// when each comes back: each holds one of the consumer's
	// max_ack_pending slots meanwhile (delayedShare).
	delayedMu sync.Mutex
	delayed   map[string]map[uint64]time.Time
	// crowd is whether the consumer was crowded when last asked, at
	// crowdAt (crowded).
	crowdMu     sync.Mutex
	crowd       bool
	crowdAt     time.Time
	crowdAsking bool // a worker asks the store now
	// claims holds, per claim SenGo's API did not confirm, the one
	// notification of it retried now (retryClaim).
	claimsMu sync.Mutex
	claims   map[string]claimRetry
}

// maxWaited bounds Intake.waited (entries of notifications another relay
// settled are never removed otherwise).
const maxWaited = 4096

// claimRetry is the notification retried for a claim (retryClaim), and
// until when its retry holds the claim.
type claimRetry struct {
	seq   uint64
	until time.Time
}

// maxClaims bounds Intake.claims; past it (the entries not expired), a
// claim is retried as before.
const maxClaims = 4096

// releaseClaim gives up claim if the notification at seq holds it.
func (in *Intake) releaseClaim(claim string, seq uint64) {
	in.claimsMu.Lock()
	defer in.claimsMu.Unlock()
	if c, ok := in.claims[claim]; ok && c.seq == seq {
		delete(in.claims, claim)
	}
}

// retryClaim reports whether the notification at inbox sequence seq may
// be retried for claim (unconfirmed): no other notification of the claim
// is retried meanwhile on this relay. Its retry holds the claim until.
func (in *Intake) retryClaim(claim string, seq uint64, until time.Time) bool {
	in.claimsMu.Lock()
	defer in.claimsMu.Unlock()
	now := time.Now()
	if c, ok := in.claims[claim]; ok && c.seq != seq && now.Before(c.until) {
		return false
	}
	if _, known := in.claims[claim]; !known && len(in.claims) >= maxClaims {
		for k, c := range in.claims {
			if !now.Before(c.until) {
				delete(in.claims, k)
			}
		}
		if len(in.claims) >= maxClaims {
			return true
		}
	}
	in.claims[claim] = claimRetry{seq: seq, until: until}
	return true
}

// waits is how many redeliveries of one notification waited, and when
// the last did.
type waits struct {
	n    uint64
	last time.Time
}

// waitCredit returns attempt less the waits counted for inbox message
// seq, and counts one more if it waits again (wait). Full, the map first
// forgets the notifications that last waited longer ago than any wait
// lasts (orderWaitMax, and a redelivery's ack wait): settled, here or by
// another relay. Only if none is, it starts again; it was wiped whole,
// which took their credit from the notifications waiting then.
func (in *Intake) waitCredit(seq, attempt uint64, wait bool, now time.Time) uint64 {
	in.waitedMu.Lock()
	defer in.waitedMu.Unlock()
	if w := in.waited[seq].n; w < attempt {
		attempt -= w
	}
	if !wait {
		return attempt
	}
	if _, known := in.waited[seq]; !known && len(in.waited) >= maxWaited {
		for s, w := range in.waited {
			if now.Sub(w.last) > orderWaitMax+in.cfg.AckWait {
				delete(in.waited, s)
			}
		}
		if len(in.waited) >= maxWaited {
			clear(in.waited)
		}
	}
	in.waited[seq] = waits{n: in.waited[seq].n + 1, last: now}
	return attempt
}

// NewIntake creates or updates the durable intake consumer and opens the
// transaction bucket. Streams must be provisioned.
func NewIntake(ctx context.Context, cfg IntakeConfig) (*Intake, error) {
	if gs, ok := cfg.Durable.(*stream.GroupSync); ok && gs == nil {
		cfg.Durable = nil // no group commit (serve passes its nil *GroupSync): acks are sent by the worker
	}
	kv, err := cfg.JetStream.KeyValue(ctx, event.BucketTx)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", event.BucketTx, err)
	}
	cons, err := cfg.JetStream.CreateOrUpdateConsumer(ctx, event.StreamInbox, jetstream.ConsumerConfig{
		Durable:       IntakeConsumer,
		Description:   "sengo-relay intake: notifications to events",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1, // retried for as long as the inbox keeps it
		MaxAckPending: cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", IntakeConsumer, err)
	}
	inbox, err := cfg.JetStream.Stream(ctx, event.StreamInbox)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", event.StreamInbox, err)
	}
	if _, err := cfg.JetStream.Stream(ctx, event.StreamQuarantine); err != nil { // read for the pendings set aside
		return nil, fmt.Errorf("open stream %s: %w", event.StreamQuarantine, err)
	}
	tokens := make(map[string]verify.Redactor, len(cfg.CallbackTokens))
	for project, token := range cfg.CallbackTokens {
		tokens[project] = verify.NewRedactor(token)
	}
	return &Intake{cfg: cfg, kv: kv, inbox: inbox, cons: cons, log: cfg.Logger, tokens: tokens, waited: map[uint64]waits{}, claims: map[string]claimRetry{},
		inboxMaxAge: inbox.CachedInfo().Config.MaxAge, awaiting: make(chan struct{}, max(1, cfg.Workers)*awaitingPerWorker)}, nil
}

// ErrExpiring: a notification intake could not finish was about to age
// out of SENGO_INBOX (after its 200 to SenGo, which will not send it
// again); it is quarantined, where it stays 30 days to be redriven.
var ErrExpiring = errors.New("about to age out of the inbox unprocessed")

// inboxGuard is how long before SENGO_INBOX (kept maxAge) would drop a
// notification that intake keeps failing it is quarantined instead: a
// tenth of the retention, at most a day (as the dispatcher guards its
// events).
func inboxGuard(maxAge time.Duration) time.Duration { return min(24*time.Hour, maxAge/10) }

// expiring reports a notification stored so long ago that the inbox is
// about to drop it.
func (in *Intake) expiring(meta *jetstream.MsgMetadata) bool {
	return in.inboxMaxAge > 0 && meta != nil && time.Since(meta.Timestamp) > in.inboxMaxAge-inboxGuard(in.inboxMaxAge)
}

// Pending returns how many inbox notifications wait for intake (not yet
// delivered plus delivered and not yet acknowledged).
func (in *Intake) Pending(ctx context.Context) (uint64, error) {
	info, err := in.cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// Run processes notifications until ctx is done, then stops pulling,
// finishes what is in flight (at most drainTimeout) and returns.
// Unfinished notifications are redelivered to another worker or after a
// restart.
func (in *Intake) Run(ctx context.Context, drainTimeout time.Duration) error {
	// Each worker pulls one notification when it is free to start it: a
	// notification is never delivered to wait behind others, so its
	// ack_wait covers its own processing only and it is never redelivered
	// to a second worker (and confirmed with SenGo twice) while the first
	// still has it.
	// The workers waiting at one moment share one pull request
	// (stream.Puller): one per notification cost the server a message each.
	var busy sync.RWMutex // each notification in progress holds a read lock
	puller := stream.NewPuller(in.cons, 5*time.Second)
	go puller.Run(ctx)
	for range in.cfg.Workers {
		go func() {
			for ctx.Err() == nil {
				m, err := puller.Next()
				switch {
				case err == nil:
					busy.RLock()
					if ctx.Err() != nil { // pulled while stopping: leave it to the next run
						_ = m.Nak()
					} else {
						in.handle(m)
					}
					busy.RUnlock()
				case errors.Is(err, jetstream.ErrNoMessages), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, stream.ErrPullerStopped):
					// nothing to do: not an error
				case ctx.Err() == nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionDraining):
					in.log.Warn().Err(err).Msg("intake pull failed; retrying")
					select { // pacing while NATS is unavailable
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			}
		}()
	}
	in.log.Info().Int("workers", in.cfg.Workers).Msg("intake started")
	<-ctx.Done()
	// Wait for the notifications in progress (each bounded by its own
	// deadline), not for idle pulls: those end with the connection.
	done := make(chan struct{})
	go func() { busy.Lock(); in.acks.Wait(); close(done); busy.Unlock() }() // and the acks waiting for their fsync
	select {
	case <-done:
	case <-time.After(drainTimeout):
		in.log.Warn().Msg("intake stopped with notifications in progress; they are redelivered")
	}
	in.log.Info().Msg("intake stopped")
	return nil
}

// result is the outcome of processing one notification.
type result struct {
	project string
	outcome string // published, duplicate, stale, conflict
	err     error
	// wait: an earlier notification of the transaction must go first;
	// redeliver this one shortly without spending an attempt.
	wait bool
	// checkFailed: err is SenGo's API failing this notification's check
	// (an error, a timeout), not an answer; checkTimedOut: no answer in
	// time; checkOutage: an answer asking to try again (ErrTryAgain: 429,
	// CREATE_FAILED), an outage whatever a probe says; checkAt: when that
	// check ended (failed).
	checkFailed, checkTimedOut, checkOutage bool
	checkAt                                 time.Time
	// setAside: quarantine now, whatever the attempt.
	setAside bool
	// claim names what the notification claims (project, transaction,
	// status) once SenGo's API was asked about it (retryClaim).
	claim string
	// clear removes the events this notification published from its
	// transaction's outbox; with group commit it runs only once an fsync
	// covers the events (see flush).
	clear func(context.Context) error
	// killed: stopped where testKillAfterDecision said, as a relay killed
	// there; nothing settles the message.
	killed bool
}

// testKillAfterDecision, when it reports true, stops a notification's
// processing right after its decision is stored and before its event is
// published, as a relay killed there would: for tests.
var testKillAfterDecision func() bool

// intakeInProgressEvery is how often a worker tells the server that the
// notification it works on is in progress: well inside any
// intake.ack_wait a relay sets (5 s or more).
var intakeInProgressEvery = time.Second

// handle processes one inbox message and settles it.
func (in *Intake) handle(m jetstream.Msg) {
	m, stop := stream.KeepInProgress(m, intakeInProgressEvery)
	defer stop()
	// Each attempt has its own deadline, well inside AckWait, so a stuck
	// call cannot let JetStream hand the message to a second worker while
	// this one still works on it.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.AckWait*2/3)
	r := in.processSafely(ctx, m)
	cancel()
	if r.killed {
		return
	}
	// Settling has its own time, still inside AckWait: a notification
	// whose processing ran out of time (a check SenGo never answered) can
	// still be quarantined or retried.
	sctx, scancel := context.WithDeadline(context.Background(), start.Add(in.cfg.AckWait*9/10))
	defer scancel()
	in.settle(sctx, m, r)
}

// processSafely is process, with a panic turned into a permanent failure:
// a notification that crashes processing is quarantined, never retried in
// a loop that takes a worker down each time.
func (in *Intake) processSafely(ctx context.Context, m jetstream.Msg) (r result) {
	defer func() {
		if p := recover(); p != nil {
			in.log.Error().Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).Msg("intake panicked on a notification; quarantining it")
			r = result{project: m.Headers().Get(event.HeaderProject), err: fmt.Errorf("%w: processing panicked: %v", ErrPermanent, p)}
		}
	}()
	return in.process(ctx, m)
}

// settle is the one place that decides Ack, NakWithDelay or quarantine.
func (in *Intake) settle(ctx context.Context, m jetstream.Msg, r result) {
	meta, _ := m.Metadata()
	var attempt uint64 = 1
	var seq uint64
	if meta != nil {
		attempt, seq = meta.NumDelivered, meta.Sequence.Stream
	}
	attempt = in.waitCredit(seq, attempt, r.wait, time.Now())
	log := func() *zerolog.Logger { // built only for the lines written
		l := in.log.With().Str("project", r.project).Uint64("inbox_seq", seq).Uint64("attempt", attempt).Logger()
		return &l
	}
	// A check that failed for this notification alone (SenGo answers a
	// check of a made-up id) is unconfirmed: after confirm_attempts tries,
	// or at once when SenGo did not answer it in time, since each such try
	// holds a worker for the whole check timeout.
	if r.checkFailed && !r.checkOutage && (r.checkTimedOut || int(attempt) >= max(in.cfg.ConfirmAttempts, 1)) && in.checksAnswered(ctx, r.project, r.checkAt) {
		r.err = fmt.Errorf("%w: SenGo's API failed this transaction's check (attempt %d) while it answers others: %v", sengo.ErrUnconfirmed, attempt, r.err)
		r.setAside = true
		in.cfg.Metrics.Confirm.WithLabelValues(r.project, "failing_alone").Inc()
	}
	// SenGo refused to check the id itself (a 4xx for it): a retry
	// changes nothing, and each such forged notification held a slot of
	// the shared consumer for every retry. Set aside at once, rechecked.
	// Unless SenGo refuses its probe too (a deploy refusing every check,
	// a WAF's bare 400): an outage, not this id, and every genuine
	// payment was set aside at first sight. A probe's answer of the last
	// few seconds stands (since: zero), so a flood of forged ids costs one
	// probe each few seconds, not one each.
	var mismatch *sengo.MismatchError
	if errors.As(r.err, &mismatch) && mismatch.Refused {
		if in.checksAnswered(ctx, r.project, time.Time{}) {
			r.setAside = true
		} else {
			r.err = fmt.Errorf("SenGo's API refuses every check now, a probe's too (an outage; retried): %v", r.err)
			r.checkFailed = true
		}
	}
	// A claim SenGo's API does not (yet) confirm is retried for one body
	// at a time: the same check decides every body of it. Forged bodies
	// of one real transaction, each unique, held a slot of the shared
	// consumer each for every retry, and a few dozen a second stopped
	// every project's intake. The others are set aside, rechecked on the
	// quarantine's schedule.
	unconfirmed := errors.Is(r.err, sengo.ErrUnconfirmed) && !r.setAside && int(attempt) < max(in.cfg.ConfirmAttempts, 1)
	if unconfirmed && r.claim != "" && !in.retryClaim(r.claim, seq, time.Now().Add(in.retryDelay(attempt)+in.cfg.AckWait)) {
		r.err = fmt.Errorf("%w: set aside: another notification of the same claim (transaction and status) is being confirmed: %v", sengo.ErrUnconfirmed, r.err)
		r.setAside = true
		unconfirmed = false
		in.cfg.Metrics.Confirm.WithLabelValues(r.project, "set_aside").Inc()
	}
	// SenGo's API not answering one project's checks (its key revoked,
	// its allowlist refusing the relay), or not confirming its claims
	// (forged ones of many real transactions), put back every
	// notification of it, each holding a slot of the one consumer all
	// projects share: once they filled max_ack_pending, no project's was
	// processed. A project holds at most a share of them; past it, a
	// notification is set aside as unconfirmed, rechecked on the
	// quarantine's schedule.
	waiting := (r.checkFailed || unconfirmed) && !r.setAside
	if held := in.undelay(r.project, seq); waiting && held >= in.delayedShare() && in.crowded(ctx) {
		r.err = fmt.Errorf("%w: set aside: %d of project %s's notifications wait for SenGo's API already (max_ack_pending is shared by every project): %v", sengo.ErrUnconfirmed, held, r.project, r.err)
		r.setAside, waiting = true, false
		in.releaseClaim(r.claim, seq) // not retried: another body of the claim may be
		in.cfg.Metrics.Confirm.WithLabelValues(r.project, "set_aside").Inc()
	}
	// Retried (or waiting) until the inbox would drop it: set aside
	// instead, with why it could not be finished.
	if (r.wait || r.err != nil && !r.setAside) && in.expiring(meta) {
		cause := r.err
		if r.wait {
			cause = errors.New("it waited for an earlier notification of its transaction that never came")
		}
		r.err = fmt.Errorf("%w: stored %s ago, the inbox keeps %s: %v", ErrExpiring, time.Since(meta.Timestamp).Round(time.Second), in.inboxMaxAge, cause)
		r.wait, r.setAside = false, true
	}
	switch {
	case r.wait:
		in.count(r.project, "waiting")
		_ = m.NakWithDelay(orderWaitDelay)
	case r.err == nil:
		in.ackWhenDurable(ctx, func(ctx context.Context) {
			if !in.durableOrNak(ctx, m, attempt, log) {
				return
			}
			if r.clear != nil {
				if err := r.clear(ctx); err != nil {
					// Left in the outbox: the redelivery publishes it
					// again under its event id, a duplicate the stream
					// drops, and clears it then.
					delay := in.retryDelay(attempt)
					log().Warn().Err(err).Stringer("delay", delay).Msg("published events not cleared from the outbox; not acked, retrying")
					_ = m.NakWithDelay(delay)
					return
				}
			}
			in.count(r.project, r.outcome)
			in.settled(seq)
			if err := m.Ack(); err != nil {
				log().Warn().Err(err).Msg("ack inbox message; it will be redelivered and found done")
			}
		})
	case r.setAside || errors.Is(r.err, ErrPermanent) || errors.Is(r.err, sengo.ErrMismatch) ||
		errors.Is(r.err, sengo.ErrUnconfirmed) && int(attempt) >= max(in.cfg.ConfirmAttempts, 1):
		if err := in.quarantine(ctx, m, r); err != nil {
			delay := in.retryDelay(attempt)
			log().Warn().Err(err).Stringer("delay", delay).Msg("quarantine failed; retrying")
			_ = m.NakWithDelay(delay)
			return
		}
		if !in.durableOrNak(ctx, m, attempt, log) {
			return
		}
		in.count(r.project, "quarantined")
		log().Error().Err(r.err).Msg("notification quarantined")
		in.settled(seq)
		_ = m.Ack()
	default:
		delay := in.retryDelay(attempt)
		in.count(r.project, "retry")
		log().Warn().Err(r.err).Stringer("delay", delay).Msg("intake failed; retrying")
		if waiting {
			in.delay(r.project, seq, time.Now().Add(delay))
		}
		_ = m.NakWithDelay(delay)
	}
}

// delayedShare is how many notifications of one project put back for an
// outage of its checks a relay lets wait at once, once the consumer is
// crowded: a quarter of max_ack_pending shared by the projects.
func (in *Intake) delayedShare() int {
	return max(1, in.cfg.MaxAckPending/(4*max(1, len(in.cfg.Projects))))
}

// crowded reports whether setting a notification aside leaves room for
// another project's: there is another project, and the consumer (shared
// by every relay) holds more than half of max_ack_pending. Asked of the
// store at most once a second.
func (in *Intake) crowded(ctx context.Context) bool {
	if len(in.cfg.Projects) < 2 {
		return false // nobody else to make room for
	}
	in.crowdMu.Lock()
	if in.crowdAsking || time.Since(in.crowdAt) < time.Second {
		// Another worker asks meanwhile (the store may be slow): the last
		// answer, not a wait for it.
		c := in.crowd
		in.crowdMu.Unlock()
		return c
	}
	in.crowdAsking = true
	in.crowdMu.Unlock()
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := in.cons.Info(ictx)
	c := err == nil && info.NumAckPending > in.cfg.MaxAckPending/2
	in.crowdMu.Lock()
	in.crowd, in.crowdAt, in.crowdAsking = c, time.Now(), false
	in.crowdMu.Unlock()
	return c
}

// undelay forgets notification seq of project (it is back) and those
// whose time to come back has passed (back here or on another relay),
// and returns how many of project's still wait.
func (in *Intake) undelay(project string, seq uint64) int {
	in.delayedMu.Lock()
	defer in.delayedMu.Unlock()
	waiting := in.delayed[project]
	delete(waiting, seq)
	now := time.Now()
	for s, due := range waiting {
		if !due.After(now) {
			delete(waiting, s)
		}
	}
	return len(waiting)
}

// delay notes notification seq of project put back until due.
func (in *Intake) delay(project string, seq uint64, due time.Time) {
	in.delayedMu.Lock()
	defer in.delayedMu.Unlock()
	if in.delayed == nil {
		in.delayed = map[string]map[uint64]time.Time{}
	}
	if in.delayed[project] == nil {
		in.delayed[project] = map[uint64]time.Time{}
	}
	in.delayed[project][seq] = due
}

// probeTimeout bounds the wait for the turn to probe (the check of a
// made-up id that tells one transaction's failing check from an outage).
const probeTimeout = 5 * time.Second

// checksAnswered reports whether SenGo's API answers project's checks (the
// Confirmer's CheckProber); false when it cannot tell.
func (in *Intake) checksAnswered(ctx context.Context, project string, since time.Time) bool {
	p, ok := in.cfg.Confirmer.(CheckProber)
	if !ok {
		return false
	}
	// Its turn (one probe per project at a time) and the probe's own
	// time, sengo.ProbeTimeout: a probe cut short by this bound tells
	// nothing, and the notification is retried.
	ctx, cancel := context.WithTimeout(ctx, probeTimeout+sengo.ProbeTimeout)
	defer cancel()
	return p.ChecksAnswered(ctx, project, since)
}

// settled forgets the waits counted for inbox message seq: it is done.
func (in *Intake) settled(seq uint64) {
	in.waitedMu.Lock()
	delete(in.waited, seq)
	in.waitedMu.Unlock()
}

// ackWhenDurable runs ack, which waits for the group fsync covering a
// notification's writes and then acknowledges it. With a Durability it
// runs beside the worker, which takes its next notification at once: a
// worker never waits for the disk, so the workers' notifications gather in
// fewer, fuller fsyncs, and a slow fsync does not hold intake's slots
// (issue 11: sixteen workers each waiting for their round of fsync held
// the pipeline at about 1,060 notifications/s). At most awaitingPerWorker
// notifications a worker wait so (shared by all workers); past that a
// worker waits for a slot.
// ack keeps settle's deadline, inside ack_wait.
func (in *Intake) ackWhenDurable(ctx context.Context, ack func(context.Context)) {
	if in.cfg.Durable == nil {
		ack(ctx)
		return
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(in.cfg.AckWait * 9 / 10)
	}
	in.awaiting <- struct{}{}
	in.acks.Add(1)
	go func() {
		defer func() { <-in.awaiting; in.acks.Done() }()
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		ack(ctx)
	}()
}

// awaitingPerWorker bounds the notifications waiting for their fsync, per
// intake worker (ackWhenDurable).
const awaitingPerWorker = 4

// durable waits until the writes made for a notification are on disk
// (group commit), so that an ack never outlives them in a power loss.
func (in *Intake) durable(ctx context.Context) error {
	if in.cfg.Durable == nil {
		return nil
	}
	return in.cfg.Durable.Sync(ctx)
}

// durableOrNak reports whether m's writes are on disk; if they are not
// known to be, it retries m with backoff instead of acknowledging it.
func (in *Intake) durableOrNak(ctx context.Context, m jetstream.Msg, attempt uint64, log func() *zerolog.Logger) bool {
	err := in.durable(ctx)
	if err == nil {
		return true
	}
	delay := in.retryDelay(attempt)
	log().Warn().Err(err).Stringer("delay", delay).Msg("writes not known durable; not acked, retrying")
	_ = m.NakWithDelay(delay)
	return false
}

func (in *Intake) count(project, outcome string) {
	if project == "" {
		project = "unknown"
	}
	in.cfg.Metrics.Intake.WithLabelValues(project, outcome).Inc()
}

// retryDelay is exponential backoff with jitter for the given delivery
// attempt, computed from JetStream's delivery count so it survives restarts.
func (in *Intake) retryDelay(attempt uint64) time.Duration {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = in.cfg.RetryInitial
	b.MaxInterval = in.cfg.RetryMax
	b.MaxElapsedTime = 0
	b.Reset()
	d := b.NextBackOff()
	for i := uint64(1); i < attempt && d < in.cfg.RetryMax; i++ {
		d = b.NextBackOff()
	}
	// The jitter goes up to half again the interval: capped, retry_max is
	// the longest delay, as the duplicate window and the inbox's guard
	// against expiry are sized from it.
	return min(d, in.cfg.RetryMax)
}

// withoutToken is b, a SenGo object of project's, with project's
// callback_token taken out (SenGo echoes the callback URL, the token in
// it).
func (in *Intake) withoutToken(project string, b []byte) []byte {
	return in.tokens[project].Redact(b)
}

// quarantine stores the notification with the reason in SENGO_QUARANTINE.
func (in *Intake) quarantine(ctx context.Context, m jetstream.Msg, r result) error {
	project := r.project
	if project == "" {
		project = "unknown"
	}
	h := nats.Header{}
	for k, v := range m.Headers() {
		// Not the inbox's conditions (the callback stores a final status
		// on condition that it is its transaction's first): quarantine,
		// which keeps a transaction's notifications longer, would refuse it.
		if !strings.HasPrefix(k, "Nats-Expected-") {
			h[k] = v
		}
	}
	h.Del(jetstream.MsgIDHeader)
	h.Set(event.HeaderReason, r.err.Error())
	var mm *sengo.MismatchError
	if errors.As(r.err, &mm) {
		if api := apiObject(in.withoutToken(r.project, mm.SenGo.Raw)); api != "" {
			h.Set(HeaderAPIObject, api) // SenGo's version beside the callback's
		}
	}
	meta, _ := m.Metadata()
	if meta != nil {
		// Idempotent: a retry of the quarantine itself is a duplicate.
		h.Set(jetstream.MsgIDHeader, fmt.Sprintf("q-%d", meta.Sequence.Stream))
		// Which inbox message this was: a final status waiting for an
		// earlier pending stops waiting once that pending is here.
		h.Set(HeaderInboxSeq, strconv.FormatUint(meta.Sequence.Stream, 10))
	}
	subject := event.QuarantineSubject(project)
	data := in.withoutToken(r.project, m.Data())
	if tx, err := sengo.ParseCallback(data); err == nil && r.project != "" {
		subject = event.QuarantineTxSubject(project, tx.ID) // found again by its transaction's story
	}
	_, err := in.cfg.JetStream.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: data},
		jetstream.WithExpectStream(event.StreamQuarantine))
	return err
}

// process applies one notification to its transaction.
func (in *Intake) process(ctx context.Context, m jetstream.Msg) (r result) {
	// The callback's trace (its traceparent is on the inbox message) goes
	// on here, and into the event's headers.
	ctx, span := tracing.Tracer().Start(tracing.Extract(ctx, m.Headers()), "sengo.intake", trace.WithSpanKind(trace.SpanKindConsumer))
	defer func() {
		if span.IsRecording() {
			span.SetAttributes(attribute.String("sengo.project", r.project), attribute.String("sengo.outcome", r.outcome), attribute.Bool("sengo.wait", r.wait))
			tracing.Fail(span, r.err)
		}
		span.End()
	}()
	return in.processTraced(ctx, m, span)
}

func (in *Intake) processTraced(ctx context.Context, m jetstream.Msg, span trace.Span) result {
	project := m.Headers().Get(event.HeaderProject)
	if project == "" {
		return result{err: fmt.Errorf("%w: no %s header", ErrPermanent, event.HeaderProject)}
	}
	r := result{project: project}
	if !slices.Contains(in.cfg.Projects, project) {
		r.err = fmt.Errorf("%w %s: not configured on this relay", ErrUnknownProject, project)
		return r
	}
	// Stored before the listener took the token out (by a relay of an
	// earlier version, a rolling deploy's old one): the event keeps the
	// notification's object when unconfirmed.
	tx, err := sengo.ParseCallback(in.withoutToken(project, m.Data()))
	if err != nil {
		r.err = fmt.Errorf("%w: %v", ErrPermanent, err)
		return r
	}
	acceptedAt, err := time.Parse(time.RFC3339Nano, m.Headers().Get(event.HeaderReceivedAt))
	if err != nil {
		if meta, merr := m.Metadata(); merr == nil {
			acceptedAt = meta.Timestamp
		} else {
			acceptedAt = time.Now()
		}
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("sengo.transaction_id", tx.ID), attribute.String("sengo.status", string(tx.Status)))
	}
	key := txKey(project, tx.ID)
	meta, _ := m.Metadata()
	firstTry := meta != nil && meta.NumDelivered == 1 && m.Headers().Get(event.HeaderSource) == SourceCallback
	var cur *txRead
	order := orderUnknown
	if firstTry {
		// A callback on its first delivery: no leftover outbox needs its
		// state before confirmation, and the transaction is usually new.
		// Unless the inbox holds an earlier notification of it, its state
		// is taken to be empty without reading it: the compare-and-set
		// creates the entry, and fails (then reads and decides again) if
		// one exists after all. A read saved per new transaction.
		if tx.Status.Final() {
			if firstOfTransaction(m.Headers()) {
				order = orderNone // the server checked it when storing m
			} else if order, err = in.earlierPending(ctx, m, project, tx, key, acceptedAt); err != nil {
				r.err = err
				return r
			}
			if order == orderNone {
				cur = &txRead{assumed: true}
			}
		} else {
			cur = &txRead{assumed: true} // a pending never waits for receipt order
		}
	}
	if cur == nil {
		// One read of the transaction's state serves the receipt-order
		// check, the leftover outbox and the first compare-and-set attempt.
		if cur, err = in.read(ctx, key); err != nil {
			r.err = err
			return r
		}
		if tx.Status.Final() && cur.state.Status == "" {
			// Nothing applied yet: a pending received before this final
			// status must go first. (Once a status is applied, no wait is
			// needed.)
			if order == orderUnknown {
				if order, err = in.earlierPending(ctx, m, project, tx, key, acceptedAt); err != nil {
					r.err = err
					return r
				}
			}
			if order == orderPendingFirst {
				r.wait = true
				return r
			}
		}
	}
	if !firstTry {
		// A redelivery (or a notification fed by reconciliation or a
		// redrive) may find an event decided earlier but never published:
		// publish it before asking SenGo again, so a confirmation that
		// fails now can never strand a decision already made.
		if len(cur.state.Outbox) > 0 {
			if err := in.flushDurably(ctx, key, cur.state, cur.rev); err != nil {
				r.err = err
				return r
			}
			cur = nil // changed by the flush: read again
		}
	}
	confirmed, note := false, ""
	if in.cfg.Confirmer != nil {
		cctx, cspan := tracing.Tracer().Start(ctx, "sengo.confirm", trace.WithSpanKind(trace.SpanKindClient))
		got, ok, err := in.cfg.Confirmer.Confirm(cctx, project, tx)
		r.checkAt = time.Now()
		r.claim = project + "\x00" + tx.ID + "\x00" + string(tx.Status)
		cspan.SetAttributes(attribute.Bool("sengo.confirmed", ok && err == nil))
		if ok && err == nil && got.Status != tx.Status {
			cspan.SetAttributes(attribute.String("sengo.api_status", string(got.Status)))
		}
		tracing.Fail(cspan, err)
		cspan.End()
		if err != nil {
			in.countConfirm(project, err)
			r.err = fmt.Errorf("confirm %s: %w", tx.ID, err)
			// An answer asking to try again (ErrTryAgain) is an outage
			// whatever a probe says: SenGo answers the probe from its own
			// records while its upstream fails every real check, and a
			// throttled key lets the one probe through. It is never this
			// transaction's alone, but it holds slots like any outage.
			r.checkFailed = !errors.Is(err, sengo.ErrMismatch) && !errors.Is(err, sengo.ErrUnconfirmed)
			r.checkOutage = errors.Is(err, sengo.ErrTryAgain) || errors.Is(err, sengo.ErrChecksUnanswered)
			r.checkTimedOut = errors.Is(err, sengo.ErrCheckTimedOut)
			return r
		}
		if ok {
			if got.Status != tx.Status {
				note = fmt.Sprintf("callback said %s; SenGo's API says %s", tx.Status, got.Status)
				in.log.Warn().Str("project", project).Str("transaction_id", tx.ID).Str("status", string(got.Status)).
					Str("callback_status", string(tx.Status)).Msg("status taken from SenGo's API")
				in.cfg.Metrics.Confirm.WithLabelValues(project, "status_corrected").Inc()
			} else {
				in.cfg.Metrics.Confirm.WithLabelValues(project, "confirmed").Inc()
			}
			if len(got.Raw) > maxEventRaw {
				// SenGo's object is kept in the event (and in the state that
				// holds the event until it is published): one with a QR image
				// in it, megabytes, was more than the server takes (an
				// external one's 1 MiB), and the write failed at every retry.
				// The fields read from it are kept. (Not the notification's
				// own object: anyone may have sent it, and only the id, the
				// merchantRef and the amounts were compared with SenGo's.)
				got.Raw = got.Compact()
			}
			got.Raw = in.withoutToken(project, got.Raw)
			tx, confirmed = got, true
		}
	}
	if !confirmed && in.cfg.RequireConfirmation[project] {
		r.err = fmt.Errorf("%w: project %s requires confirmation and the notification was not confirmed", ErrPermanent, project)
		return r
	}
	var inboxSeq uint64
	if meta, err := m.Metadata(); err == nil {
		inboxSeq = meta.Sequence.Stream
	}
	log := func() *zerolog.Logger { // built only for the lines written
		l := in.log.With().Str("project", project).Str("transaction_id", tx.ID).Str("merchant_ref", tx.MerchantRef).Str("status", string(tx.Status)).Logger()
		return &l
	}

	var withdrawn []string
	st, rev, err := in.applyFrom(ctx, key, cur, func(s *txState) (bool, error) {
		// For a project that confirms, a status decided unconfirmed (before
		// it was made to confirm, its event's publish refused or its relay
		// stopped) is no decision: a forged claim's would block the genuine
		// status (a failed after a forged success is a conflict), and
		// published, it would go out unconfirmed.
		if in.cfg.RequireConfirmation[project] {
			if withdrawn = s.withdrawUnconfirmed(); len(withdrawn) > 0 && len(s.History) > 0 {
				s.MerchantRef = tx.MerchantRef // SenGo's (tx is confirmed), not the withdrawn claim's
			}
		}
		switch d := event.Decide(s.Status, tx.Status); d {
		case event.Publish:
			ev := tx.Event(project, s.Status, acceptedAt, confirmed)
			b, err := event.Marshal(ev)
			if err != nil {
				return false, fmt.Errorf("%w: %v", ErrPermanent, err)
			}
			if s.TransactionID == "" {
				s.Project, s.TransactionID, s.Product = project, tx.ID, tx.Product
			}
			s.MerchantRef = tx.MerchantRef
			s.Status = tx.Status
			s.UpdatedAt = acceptedAt
			s.History = append(s.History, txEvent{Status: tx.Status, EventID: ev.ID, AcceptedAt: acceptedAt, Source: m.Headers().Get(event.HeaderSource), Note: note, Confirmed: &confirmed})
			s.Outbox = append(s.Outbox, outboxItem{EventID: ev.ID, Subject: event.EventSubject(project, tx.Product, tx.Status), Event: b, InboxSeq: inboxSeq})
			r.outcome = "published"
			return true, nil
		case event.Duplicate:
			r.outcome = "duplicate"
			return len(withdrawn) > 0, nil
		default: // Stale or Conflict: recorded and counted, never published
			r.outcome = d.String()
			rejected := s.reject(tx.Status, d, acceptedAt, inboxSeq)
			return rejected || len(withdrawn) > 0, nil
		}
	})
	if err != nil {
		r.err = err
		return r
	}
	if len(withdrawn) > 0 {
		in.logWithdrawn(project, tx.ID, st, withdrawn)
	}
	if testKillAfterDecision != nil && testKillAfterDecision() {
		r.killed = true
		return r
	}
	switch r.outcome {
	case "conflict":
		log().Error().Str("current_status", string(st.Status)).Msg("SenGo reported a second, different final status; not published")
	case "stale":
		log().Info().Str("current_status", string(st.Status)).Msg("late pending after a final status; not published")
	}
	// Publish what this notification decided. An outbox this notification
	// did not add belongs to a worker still flushing it (a twin processed
	// at the same moment): publishing it again would show core NATS
	// subscribers the event twice. Left behind by a crash, it is flushed
	// by that worker's redelivery, or by reconciliation, before they
	// confirm (flushLeftover).
	if r.outcome == "published" {
		clear, err := in.flush(ctx, key, st, rev)
		if err != nil {
			r.err = err
			return r
		}
		r.clear = clear
	} else if len(st.Outbox) > 0 && (time.Since(st.UpdatedAt) > in.cfg.AckWait || st.decidedBy(inboxSeq)) {
		// An outbox no worker is flushing any more: left by a crash whose
		// redelivery looks like a first delivery (the consumer's delivery
		// count is written without an fsync of its own), which skipped the
		// leftover flush above. Older than the ack wait, or added by this
		// very notification, whose earlier worker died: a restart within
		// the ack wait (the embedded store restarts with the relay) brings
		// it back as recent as a twin's being flushed.
		if err := in.flushDurably(ctx, key, st, rev); err != nil {
			r.err = err
			return r
		}
	}
	if r.outcome == "published" {
		in.cfg.History.Ref(history.Ref{Project: project, MerchantRef: tx.MerchantRef, TransactionID: tx.ID, At: acceptedAt.UTC()})
		log().Info().Str("event_id", event.ID(project, tx.ID, tx.Status)).Bool("confirmed", confirmed).Msg("event published")
	}
	return r
}

// maxEventRaw bounds SenGo's object kept as a confirmed event's raw: the
// callback listener's default body bound.
const maxEventRaw = 64 << 10

// Receipt order: a final status waits at most orderWaitMax after its
// receipt for a pending of the same transaction received before it,
// redelivered every orderWaitDelay.
const (
	orderWaitDelay = 250 * time.Millisecond
	orderWaitMax   = 2 * time.Minute
	// orderScan bounds how many earlier notifications of one transaction
	// are looked at.
	orderScan = 16
)

// receiptOrder is what the inbox holds of a transaction before a
// notification.
type receiptOrder int

const (
	orderUnknown      receiptOrder = iota // not looked at
	orderNone                             // no earlier notification of the transaction
	orderEarlier                          // earlier ones, no pending among them (or too old to wait for)
	orderPendingFirst                     // a pending received earlier
)

// earlierPending reads the notifications of m's transaction received
// before m (a lower inbox sequence). A final status finds orderPendingFirst
// when one of them is a pending; if the transaction has no status applied
// yet (the caller's check), the final status must wait, so that "pending
// then success" is published in the order SenGo sent it even when the
// pending's processing was delayed (a failed write, a redelivery after a
// crash). A pending that intake has settled otherwise (set aside, or
// acknowledged: set aside and since redriven or purged) is not waited for.
// It costs one stream read when the transaction has no earlier
// notification.
func (in *Intake) earlierPending(ctx context.Context, m jetstream.Msg, project string, tx sengo.Transaction, key string, receivedAt time.Time) (receiptOrder, error) {
	meta, err := m.Metadata()
	if err != nil || time.Since(receivedAt) > orderWaitMax {
		return orderEarlier, nil // nothing to wait for: state is read, not assumed
	}
	subject := event.InboxTxSubject(project, tx.ID)
	from := uint64(1)
	found := orderNone
	var setAside map[string]bool // the transaction's quarantined inbox sequences, read once
	for range orderScan {
		// From the leader: a replica not caught up (a direct get is
		// answered by any) missed the pending, and the final went first.
		em, err := stream.LeaderGet(ctx, in.cfg.JetStream, event.StreamInbox, from, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return found, nil
		}
		if err != nil {
			return orderUnknown, fmt.Errorf("read earlier notifications of %s: %w", key, err)
		}
		if em.Sequence >= meta.Sequence.Stream {
			return found, nil
		}
		found = orderEarlier
		if et, perr := sengo.ParseCallback(em.Data); perr == nil && et.Status == event.StatusPending {
			// A pending set aside (forged, or SenGo disagreed) will never
			// be applied: waiting for it would hold the genuine status
			// back for orderWaitMax.
			if setAside == nil {
				if setAside, err = in.quarantined(ctx, project, tx.ID); err != nil {
					return orderUnknown, fmt.Errorf("read quarantined notifications of %s: %w", key, err)
				}
			}
			settled := setAside[strconv.FormatUint(em.Sequence, 10)]
			if !settled {
				// Set aside and since redriven (a recheck) or purged, it has
				// no entry under its sequence: acknowledged, intake is done
				// with it all the same.
				if settled, err = in.acknowledged(ctx, em.Sequence); err != nil {
					return orderUnknown, fmt.Errorf("read intake's acknowledgements: %w", err)
				}
			}
			if !settled {
				return orderPendingFirst, nil
			}
		}
		from = em.Sequence + 1
	}
	return found, nil
}

// acknowledged reports whether intake acknowledged the inbox message seq
// (it is at or below its consumer's acknowledgement floor).
func (in *Intake) acknowledged(ctx context.Context, seq uint64) (bool, error) {
	info, err := in.cons.Info(ctx)
	if err != nil {
		return false, err
	}
	return seq <= info.AckFloor.Stream, nil
}

// quarantined answers the inbox sequences of transaction id's quarantined
// notifications (at most orderScan of them are read), read once for all
// the earlier pendings a final status finds: read for each, forged
// pendings made each later notification read the quarantine a number of
// times that grew with their square.
func (in *Intake) quarantined(ctx context.Context, project, id string) (map[string]bool, error) {
	subject := event.QuarantineTxSubject(project, id)
	seqs := map[string]bool{}
	from := uint64(1)
	for range orderScan {
		qm, err := stream.LeaderGet(ctx, in.cfg.JetStream, event.StreamQuarantine, from, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return seqs, nil
		}
		if err != nil {
			return nil, err
		}
		seqs[qm.Header.Get(HeaderInboxSeq)] = true
		from = qm.Sequence + 1
	}
	return seqs, nil
}

// txRead is a transaction's state as read, with its revision (0: no entry).
type txRead struct {
	state txState
	rev   uint64
	// assumed: not read, taken to be empty (a new transaction); a
	// compare-and-set that finds an entry is then no conflict between
	// workers, only the read it spared.
	assumed bool
}

// read reads the state of the transaction at key.
func (in *Intake) read(ctx context.Context, key string) (*txRead, error) {
	entry, err := in.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return &txRead{}, nil
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	r := &txRead{rev: entry.Revision()}
	if err := json.Unmarshal(entry.Value(), &r.state); err != nil {
		return nil, fmt.Errorf("%w: decode %s: %v", ErrPermanent, key, err)
	}
	return r, nil
}

// countConfirm counts a failed confirmation by kind.
func (in *Intake) countConfirm(project string, err error) {
	outcome := "unavailable"
	switch {
	case errors.Is(err, sengo.ErrMismatch):
		outcome = "mismatch"
	case errors.Is(err, sengo.ErrUnconfirmed):
		outcome = "unconfirmed"
	}
	in.cfg.Metrics.Confirm.WithLabelValues(project, outcome).Inc()
}

// HeaderAPIObject carries SenGo's version of a disputed transaction on a
// quarantined notification.
const HeaderAPIObject = "Sengo-Api-Object"

// maxAPIObject bounds SenGo's version of a transaction as a quarantine
// entry keeps it, in bytes: SenGo's answer may be megabytes (a QRIS image),
// more than a NATS message holds.
const maxAPIObject = 16 << 10

// apiObject is raw (SenGo's transaction object, valid JSON: it was
// parsed) as a header value: compact JSON, with no line break to end the
// header early, cut to maxAPIObject bytes (an entry shows a cut one as a
// string); "" if it does not compact.
func apiObject(raw []byte) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return ""
	}
	return boundedText(b.String(), maxAPIObject)
}

// maxCAS bounds compare-and-set retries for one notification; beyond it
// the notification is retried later with backoff.
const maxCAS = 16

// apply reads the transaction, lets change modify it and writes it back
// with compare-and-set on the revision read, re-reading on conflict. It
// returns the state as stored and its revision (0: no entry).
func (in *Intake) apply(ctx context.Context, key string, change func(*txState) (bool, error)) (txState, uint64, error) {
	return in.applyFrom(ctx, key, nil, change)
}

// applyFrom is apply whose first attempt uses cur, the state as read
// earlier (nil: read it) and consumed, sparing a read; a stale cur costs one
// compare-and-set conflict and a re-read.
func (in *Intake) applyFrom(ctx context.Context, key string, cur *txRead, change func(*txState) (bool, error)) (txState, uint64, error) {
	for range maxCAS {
		if cur == nil {
			var err error
			if cur, err = in.read(ctx, key); err != nil {
				return txState{}, 0, err
			}
		}
		st, rev, assumed := cur.state, cur.rev, cur.assumed // cur is consumed: change may modify its slices
		cur = nil
		changed, err := change(&st)
		if err != nil || !changed {
			return st, rev, err
		}
		b, err := json.Marshal(st)
		if err != nil {
			return txState{}, 0, fmt.Errorf("%w: encode %s: %v", ErrPermanent, key, err)
		}
		if rev == 0 {
			rev, err = in.kv.Create(ctx, key, b)
		} else {
			rev, err = in.kv.Update(ctx, key, b, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if !assumed {
				in.cfg.Metrics.KVConflicts.Inc()
			}
			continue
		}
		if err != nil {
			return txState{}, 0, fmt.Errorf("write %s: %w", key, err)
		}
		return st, rev, nil
	}
	return txState{}, 0, fmt.Errorf("write %s: %d compare-and-set conflicts in a row", key, maxCAS)
}

// flush publishes the outbox of st oldest first, each with its event id as
// Nats-Msg-Id (so a concurrent flush of the same item is a duplicate), and
// answers clear, which removes the published items from the stored state.
// With group commit (Durable) the store writes without fsync, and the
// state and the events are in files of their own: a state written without
// its outbox could reach the disk before the events did, and after a power
// loss the notification, redelivered, would find its status recorded and
// its event gone. So clear must run only once an fsync covers the events:
// the notification's ack runs it after its own (settle). Without group
// commit, the store has synced each write before acknowledging it, and the
// items are removed at once (clear is nil).
//
// For a project that confirms, events decided unconfirmed (before it was
// made to confirm, their publish refused or their relay stopped) are held
// back, left in the outbox: the notification's decision withdraws them
// once SenGo's API has answered (txState.withdrawUnconfirmed), and
// decides again.
func (in *Intake) flush(ctx context.Context, key string, st txState, rev uint64) (clear func(context.Context) error, err error) {
	if len(st.Outbox) == 0 {
		return nil, nil
	}
	seqs := make(map[string]uint64, len(st.Outbox))
	for _, it := range st.Outbox {
		if in.heldBack(st, it) {
			break // oldest first: what follows it waits with it, for the decision that withdraws it
		}
		msg := &nats.Msg{Subject: it.Subject, Data: it.Event, Header: nats.Header{event.HeaderEventID: []string{it.EventID}}}
		tracing.Inject(ctx, msg.Header) // deliveries continue the notification's trace
		ack, err := in.cfg.JetStream.PublishMsg(ctx, msg, jetstream.WithMsgID(it.EventID), jetstream.WithExpectStream(event.StreamEvents))
		if err != nil {
			return nil, fmt.Errorf("publish event %s: %w", it.EventID, err)
		}
		seqs[it.EventID] = ack.Sequence
	}
	if len(seqs) == 0 {
		return nil, nil
	}
	clear = func(ctx context.Context) error { return in.clearOutbox(ctx, key, st, rev, seqs) }
	if in.cfg.Durable != nil {
		return clear, nil
	}
	return nil, clear(ctx)
}

// heldBack reports whether outbox item it of st is not published: decided
// unconfirmed, for a project that now confirms.
func (in *Intake) heldBack(st txState, it outboxItem) bool {
	return in.cfg.RequireConfirmation[st.Project] && st.unconfirmed(it)
}

// logWithdrawn says which events withdrawUnconfirmed took out of st.
func (in *Intake) logWithdrawn(project, transactionID string, st txState, ids []string) {
	in.log.Warn().Str("project", project).Str("transaction_id", transactionID).Strs("event_ids", ids).Str("status", string(st.Status)).
		Msg("events decided unconfirmed, before the project required confirmation, withdrawn: the notification is decided again with SenGo's check")
}

// flushDurably is flush with its clear run at once, after an fsync of its
// own: for an outbox left behind, which is rare.
//
// The transaction is indexed under its merchantRef here too: the
// notification that decided it failed before it could (its publish
// refused, its relay killed), and the one that publishes it now is a
// duplicate, which does not; a search by the order's merchantRef found
// nothing for a paid transaction.
func (in *Intake) flushDurably(ctx context.Context, key string, st txState, rev uint64) error {
	clear, err := in.flush(ctx, key, st, rev)
	if err != nil {
		return err
	}
	// Not when flush held back its first item (and with it the rest): a
	// forged claim's merchantRef would find the transaction.
	published := len(st.Outbox) > 0 && !in.heldBack(st, st.Outbox[0])
	if published && st.MerchantRef != "" {
		in.cfg.History.Ref(history.Ref{Project: st.Project, MerchantRef: st.MerchantRef, TransactionID: st.TransactionID, At: st.UpdatedAt.UTC()})
	}
	if clear == nil {
		return nil
	}
	if err := in.durable(ctx); err != nil {
		return fmt.Errorf("published events not known durable, left in the outbox: %w", err)
	}
	return clear(ctx)
}

// clearOutbox removes the items published at seqs from the stored state
// of key. rev is st's revision: the state just written is usually still
// current, so it is updated without reading it back, and read again only
// if it changed meanwhile.
func (in *Intake) clearOutbox(ctx context.Context, key string, st txState, rev uint64, seqs map[string]uint64) error {
	if rev != 0 && st.published(seqs) {
		b, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("%w: encode %s: %v", ErrPermanent, key, err)
		}
		_, err = in.kv.Update(ctx, key, b, rev)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			in.cfg.Metrics.KVConflicts.Inc()
		default:
			return fmt.Errorf("write %s: %w", key, err)
		}
	}
	_, _, err := in.apply(ctx, key, func(s *txState) (bool, error) { return s.published(seqs), nil })
	return err
}
