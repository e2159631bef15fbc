package sengo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"

	"github.com/sengo-relay/sengo-relay/event"
)

// ErrMismatch: SenGo's API contradicts the notification (unknown
// transaction, other merchantRef or amounts). Never retried.
var ErrMismatch = errors.New("SenGo's API disagrees with the notification")

// ErrUnconfirmed: the notification claims a final status that SenGo's API
// still reports as pending. Either forged, or SenGo's API lags its own
// callback: retried a few times, then treated as a mismatch.
var ErrUnconfirmed = errors.New("SenGo's API does not (yet) report the claimed status")

// ErrCheckTimedOut: SenGo's API did not answer a check within the
// Confirmer's check timeout. Transient, like any failed check.
var ErrCheckTimedOut = errors.New("SenGo's API did not answer the check in time")

// ErrTryAgain: SenGo's API (or a proxy before it) answered that the
// check should be tried again, saying nothing of the transaction (400
// CREATE_FAILED, 408, 421, 425, 429): a failure every check shares, an
// outage, never one of this transaction alone.
var ErrTryAgain = errors.New("SenGo's API asks to try the check again")

// ErrChecksUnanswered: the last probe of the project's checks found them
// unanswered (or refused), and another caller's probe is asking again:
// not asked. An outage, retried like one.
var ErrChecksUnanswered = errors.New("SenGo's API answers none of the project's checks now (its last probe); not asked")

// MismatchError carries both versions of a disputed transaction.
type MismatchError struct {
	Reason   string
	Callback Transaction
	SenGo    Transaction // zero when SenGo has no such transaction
	// Refused: SenGo refused to check the id itself (a 4xx for it), which
	// a retry does not change.
	Refused bool
	kind    error // ErrMismatch or ErrUnconfirmed
}

func (e *MismatchError) Error() string { return e.kind.Error() + ": " + e.Reason }
func (e *MismatchError) Unwrap() error { return e.kind }

// Confirmer checks notifications with GET /check/{id} of each project's
// client. Projects without a client are not confirmed.
type Confirmer struct {
	clients      map[string]*Client
	probes       map[string]*probe
	checkTimeout time.Duration
	// checks shares one call among checks of one transaction at the
	// same moment (a flood of forged bodies for one id).
	checks singleflight.Group
}

// ConfirmerOption configures a Confirmer.
type ConfirmerOption func(*Confirmer)

// DefaultCheckTimeout is how long a check may take by default.
const DefaultCheckTimeout = 5 * time.Second

// CheckTimeout bounds each check (one try; the caller retries a failed
// one): a check SenGo does not answer holds its caller no longer.
func CheckTimeout(d time.Duration) ConfirmerOption { return func(c *Confirmer) { c.checkTimeout = d } }

// NewConfirmer confirms the projects in clients (by project name).
func NewConfirmer(clients map[string]*Client, opts ...ConfirmerOption) *Confirmer {
	c := &Confirmer{clients: clients, probes: make(map[string]*probe, len(clients)), checkTimeout: DefaultCheckTimeout}
	for name := range clients {
		c.probes[name] = &probe{turn: make(chan struct{}, 1)}
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// probe is the last answer to whether a project's checks work.
type probe struct {
	turn chan struct{} // one probe of the project at a time
	// mu guards the last answer: written by the caller holding turn,
	// read by one that does not wait for it (a zero since).
	mu      sync.Mutex
	started time.Time // when the last probe was sent
	at      time.Time // and answered
	ok      bool
}

// last is the last probe's answer: when it was sent and answered.
func (p *probe) last() (started, at time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started, p.at, p.ok
}

// answered records a probe's answer.
func (p *probe) answered(started time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started, p.at, p.ok = started, time.Now(), ok
}

// probeFresh is how long one probe's answer stands for every caller.
const probeFresh = 5 * time.Second

// ProbeTimeout is how long a probe waits for SenGo's answer at most, and
// never longer than a check (the Confirmer's check timeout): a SenGo
// answering every check too late does not answer checks. One left
// unanswered that long says SenGo does not answer (one its caller cut
// short says nothing).
const ProbeTimeout = 5 * time.Second

// ProbeIDPrefix starts the made-up id a probe asks SenGo about: a random
// UUID (version 4, as SenGo's ids are) whose first group is zeros, so that
// it reads as the relay's in SenGo's logs. An id shaped as no real one is
// may be refused before SenGo looks anything up, which says nothing of
// whether its lookups work.
const ProbeIDPrefix = "00000000-"

// probeID is a new made-up id for a probe: a random UUID whose first
// group is ProbeIDPrefix's zeros.
func probeID() string { return ProbeIDPrefix + uuid.NewString()[len(ProbeIDPrefix):] }

// ChecksAnswered reports whether SenGo's API answers project's checks at
// all, by checking a made-up id (probeID): SenGo answers it 404
// TRANSACTION_NOT_FOUND, within a check's time, while its checks work. A
// check that failed for one transaction while this holds failed for that
// transaction alone, not in an outage. One probe per project at a
// time. Its answer stands for probeFresh: a "no" (or no answer in the
// caller's time) for every caller, a "yes" only for the checks that had
// failed when it was sent (since: when the caller's check failed). A yes
// sent before tells nothing of a later failure: SenGo may have stopped
// answering in between, and every check failing in an outage's first
// seconds was taken for one failing alone.
func (c *Confirmer) ChecksAnswered(ctx context.Context, project string, since time.Time) bool {
	client, p := c.clients[project], c.probes[project]
	if client == nil {
		return false
	}
	if since.IsZero() {
		// Any answer will do (a check SenGo refused: intake asks whether
		// it refuses every one), the last one while fresh, and the caller
		// does not wait for another caller's probe: a flood of forged ids
		// SenGo refuses held every intake worker behind one slow probe.
		// "No" while one runs with no fresh answer: the caller retries.
		if _, at, ok := p.last(); time.Since(at) < probeFresh {
			return ok
		}
		select {
		case p.turn <- struct{}{}:
		default:
			return false
		}
	} else {
		select {
		case p.turn <- struct{}{}:
		case <-ctx.Done():
			return false
		}
	}
	defer func() { <-p.turn }()
	// A "no" stands for every caller (it only means: retry, an outage); a
	// "yes" only for checks that had failed when it was sent.
	if lastStarted, at, ok := p.last(); time.Since(at) < probeFresh && (!ok || !lastStarted.Before(since)) {
		return ok
	}
	started := time.Now()
	pctx, cancel := context.WithTimeout(ctx, min(ProbeTimeout, c.checkTimeout))
	defer cancel()
	_, err := client.check(pctx, probeID(), false, 1)
	if ctx.Err() != nil {
		return false // the caller's time ran out first: nothing learnt
	}
	if pctx.Err() != nil {
		// No answer in the probe's whole time: an outage as far as anyone
		// can tell, kept so that the callers behind this one do not each
		// wait for a probe of their own.
		p.answered(started, false)
		return false
	}
	ok := err == nil || errors.Is(err, ErrTransactionNotFound)
	p.answered(started, ok)
	return ok
}

// Confirm returns SenGo's view of tx. confirmed is false (and tx returned
// as is) for a project without credentials. SenGo's status wins where it
// has moved on; a final status SenGo does not report yields ErrUnconfirmed,
// and so does a check SenGo refuses for this id alone (a 4xx other than
// 401, 403, 404 and 429, nor one asking to try again: ErrTryAgain);
// other disagreements ErrMismatch. Any other error is transient (SenGo
// unreachable, throttled, misconfigured, asking to try again, or no
// answer within the check timeout: ErrCheckTimedOut) and worth retrying.
func (c *Confirmer) Confirm(ctx context.Context, project string, tx Transaction) (Transaction, bool, error) {
	client, ok := c.clients[project]
	if !ok {
		return tx, false, nil
	}
	// In an outage (the last probe found no answer, or a refusal) each
	// check would hold its caller for the check's whole time, and intake's
	// workers are every project's: one caller at a time asks SenGo (a
	// probe), the others are told at once and retry.
	if _, at, answered := c.probes[project].last(); !at.IsZero() && !answered && !c.ChecksAnswered(ctx, project, time.Time{}) {
		return Transaction{}, false, fmt.Errorf("check %s: %w", tx.ID, ErrChecksUnanswered)
	}
	got, err := c.check(ctx, project, client, tx.ID)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return Transaction{}, false, fmt.Errorf("check %s: %w (%s)", tx.ID, ErrCheckTimedOut, c.checkTimeout)
	}
	if errors.Is(err, ErrTransactionNotFound) {
		return Transaction{}, false, &MismatchError{Reason: "SenGo has no transaction " + tx.ID, Callback: tx, kind: ErrMismatch}
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.tryAgain() {
		return Transaction{}, false, fmt.Errorf("check %s: %w: %w", tx.ID, ErrTryAgain, err)
	}
	if errors.As(err, &apiErr) && apiErr.refusesCheck() {
		// SenGo refused to check this id (a 400 or 422 for it, not a
		// credentials or base_url problem every notification shares):
		// retried as long as an outage, each forged one would hold
		// one of intake's slots for the inbox's retention. Treated as
		// unconfirmed: set aside at once (Refused), rechecked.
		return Transaction{}, false, &MismatchError{Reason: "SenGo's API refused to check the transaction: " + apiErr.Error(), Callback: tx, Refused: true, kind: ErrUnconfirmed}
	}
	if err != nil {
		return Transaction{}, false, fmt.Errorf("check %s: %w", tx.ID, err)
	}
	var diffs []string
	if got.ID != tx.ID {
		diffs = append(diffs, "id")
	}
	if got.MerchantRef != tx.MerchantRef {
		diffs = append(diffs, "merchantRef")
	}
	if got.Amount != tx.Amount {
		diffs = append(diffs, fmt.Sprintf("amount %d vs %d", tx.Amount, got.Amount))
	}
	if got.TotalAmount != tx.TotalAmount {
		diffs = append(diffs, fmt.Sprintf("totalAmount %d vs %d", tx.TotalAmount, got.TotalAmount))
	}
	if len(diffs) > 0 {
		return Transaction{}, false, &MismatchError{Reason: fmt.Sprintf("fields differ: %v", diffs), Callback: tx, SenGo: got, kind: ErrMismatch}
	}
	if tx.Status.Final() && got.Status == event.StatusPending {
		return Transaction{}, false, &MismatchError{Reason: fmt.Sprintf("callback says %s, SenGo says pending", tx.Status), Callback: tx, SenGo: got, kind: ErrUnconfirmed}
	}
	return got, true, nil
}

// check is one try of GET /check/{id}, bounded by the check timeout (the
// caller, intake, retries with its own backoff, and a check SenGo never
// answers must not hold it longer), shared by every caller checking the
// same transaction meanwhile: each forged body posted for a real
// transaction cost a call of its own on the merchant's API key. A caller
// whose context ends stops waiting; the call goes on for the others.
func (c *Confirmer) check(ctx context.Context, project string, client *Client, id string) (Transaction, error) {
	ch := c.checks.DoChan(project+"\x00"+id, func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.checkTimeout)
		defer cancel()
		return client.check(cctx, id, false, 1)
	})
	select {
	case r := <-ch:
		got, _ := r.Val.(Transaction)
		return got, r.Err
	case <-ctx.Done():
		return Transaction{}, ctx.Err()
	}
}
