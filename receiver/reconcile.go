package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/verify"
)

// SourceReconcile marks notifications fed by reconciliation.
const SourceReconcile = "reconcile"

// Lister is what reconciliation needs of SenGo's API (sengo.Client).
// Both calls block and are safe for concurrent use.
type Lister interface {
	ListTransactions(ctx context.Context, q sengo.ListQuery) ([]sengo.Transaction, error)
	Check(ctx context.Context, id string, resend bool) (sengo.Transaction, error)
}

// ReconcileConfig configures one reconciliation run.
type ReconcileConfig struct {
	JetStream jetstream.JetStream
	// Projects to reconcile, by name.
	Projects map[string]Lister
	// Configured names every project of the configuration (nil: those of
	// Projects). A transaction the relay holds under a project not among
	// them (a project renamed) is not fed again (knownElsewhere).
	Configured []string
	// Window is how far back to look (at most SenGo's 7 days).
	Window time.Duration
	// CatchUp, when over Window, lets a project's run look back further
	// (reconcileWindow), at most CatchUp. A relay stopped (or a project's
	// API failing) longer than Window otherwise never read the first days
	// of it, whose callbacks SenGo may never send again. Zero: Window only
	// (the CLI's --since).
	CatchUp time.Duration
	// Resend asks SenGo to send missing callbacks again instead of feeding
	// the inbox directly.
	Resend bool
	// CallbackTokens are the projects' callback_tokens, taken out of the
	// objects fed (IntakeConfig.CallbackTokens).
	CallbackTokens map[string]string
	// Trigger names what started the run in its record: periodic, cli.
	Trigger string
	// Runs, when set, records each project's run in SENGO_RECONCILE (the
	// console's Reconciliation page), asynchronously.
	Runs    *history.Writer
	Now     func() time.Time
	Metrics *Metrics
	Logger  zerolog.Logger
}

// ReconcileSummary counts one run.
type ReconcileSummary struct {
	Checked int `json:"checked"` // transactions listed by SenGo
	Missing int `json:"missing"` // status changes the relay never received
	// Fed are the missing changes this run stored in the inbox (or had
	// SenGo resend, with Resend); one an earlier run fed within the
	// inbox's duplicate window that still waits for intake is missing,
	// not fed again (fed before it, it is fed again, and intake drops the
	// second copy as a duplicate).
	Fed int `json:"fed"`
	// Elsewhere are transactions SenGo listed that the relay holds under a
	// project no longer configured (knownElsewhere), not fed.
	Elsewhere int `json:"elsewhere,omitempty"`
	// Found are the first status changes found missing (at most maxFound).
	Found []history.Found `json:"found,omitempty"`
}

// maxFound bounds the missing changes a run's record names.
const maxFound = 50

// wib is the timezone of SenGo's dates.
var wib = time.FixedZone("WIB", 7*3600)

func midnight(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, wib)
}

// maxPages bounds paging per status and day.
const maxPages = 1000

// Reconcile lists SenGo's transactions per project, status and day within
// the window, compares them with SENGO_TX, and feeds every transition the
// relay never received into the inbox as a notification with source
// "reconcile". It goes through the same deduplication, confirmation and
// delivery as a callback; its Nats-Msg-Id (inboxMsgID) makes running it
// twice change nothing the second time. progress, if set, is called after each
// page.
func Reconcile(ctx context.Context, cfg ReconcileConfig, progress func(project, day string, status event.Status, s ReconcileSummary)) (ReconcileSummary, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	kv, err := cfg.JetStream.KeyValue(ctx, event.BucketTx)
	if err != nil {
		return ReconcileSummary{}, fmt.Errorf("open bucket %s: %w", event.BucketTx, err)
	}
	var total ReconcileSummary
	var errs []error
	for _, project := range sortedKeys(cfg.Projects) {
		// Each project, and each day of it, is reconciled on its own: one
		// that fails (its SenGo credentials, a bad page) does not keep the
		// others from being checked.
		started := cfg.Now()
		window, extra := reconcileWindow(ctx, cfg, project, started)
		sum, unread, perr := reconcileProject(ctx, cfg, kv, project, started, window, extra, progress)
		run := history.Reconciliation{Project: project, Trigger: cfg.Trigger, Started: started.UTC(), Finished: cfg.Now().UTC(), Window: window.String(),
			Checked: sum.Checked, Missing: sum.Missing, Fed: sum.Fed, Resend: cfg.Resend, Found: sum.Found, Unread: unread, Extra: extra,
			CaughtUp: cfg.catchesUp()}
		if perr != nil {
			run.Error = perr.Error()
		}
		cfg.Runs.Reconciliation(run)
		if cfg.Metrics != nil {
			cfg.Metrics.Reconcile.WithLabelValues(project, "checked").Add(float64(sum.Checked))
			cfg.Metrics.Reconcile.WithLabelValues(project, "missing").Add(float64(sum.Missing))
			cfg.Metrics.Reconcile.WithLabelValues(project, "fed").Add(float64(sum.Fed))
			cfg.Metrics.Reconcile.WithLabelValues(project, "elsewhere").Add(float64(sum.Elsewhere))
			if perr != nil {
				cfg.Metrics.Reconcile.WithLabelValues(project, "failed").Inc()
			}
		}
		ev := cfg.Logger.Info()
		if perr != nil {
			ev = cfg.Logger.Warn().Err(perr)
			errs = append(errs, perr)
		}
		ev.Str("project", project).Int("checked", sum.Checked).Int("missing", sum.Missing).Int("fed", sum.Fed).Int("elsewhere", sum.Elsewhere).Msg("reconciled")
		total.Checked += sum.Checked
		total.Missing += sum.Missing
		total.Fed += sum.Fed
		total.Elsewhere += sum.Elsewhere
		if ctx.Err() != nil {
			if rest := sortedKeys(cfg.Projects); project != rest[len(rest)-1] {
				errs = append(errs, fmt.Errorf("stopped before the projects after %s: %w", project, ctx.Err()))
			}
			break
		}
	}
	return total, errors.Join(errs...)
}

// reconcileWindow is what project's run at now reads: the days of a span
// back from now, and before them some days earlier runs left unread
// (extra, oldest first). The span is Window, or with CatchUp back to what
// the last periodic run left: everything since that run started, at most
// CatchUp; the days it did not read whole (a list that failed, a stop
// before the day: its Unread) are read again, those before the span alone
// (a day that fails at every run costs that day, not the days since),
// until they are older than CatchUp. That run looked back the same way, so
// nothing before is left.
//
// Which run: the newest periodic one that caught up (its record says so;
// a run of the CLI says nothing of the days before its --since). Periodic
// runs after it that did not catch up (a relay of an earlier version, or
// with catch_up off, on the same store) do not count as having read, and
// those of them that failed add their whole window. With no run that
// caught up recorded (the first after an upgrade), the newest periodic
// one counts, a failed one its whole window. A project with no periodic
// run recorded (a new store, a project just added) gets Window; one whose
// records cannot be read, CatchUp.
func reconcileWindow(ctx context.Context, cfg ReconcileConfig, project string, now time.Time) (time.Duration, []string) {
	window := min(cfg.Window, ReconcileWindowMax)
	if !cfg.catchesUp() {
		return window, nil
	}
	catchUp := min(cfg.CatchUp, ReconcileWindowMax)
	runs, err := history.Reconciliations(ctx, cfg.JetStream, project, lastRuns)
	if err != nil && ctx.Err() != nil {
		return window, nil // stopping: this run reads nothing, and its record says so
	}
	if err != nil {
		cfg.Logger.Warn().Err(err).Str("project", project).Msg("reconciliation's earlier runs unreadable; looking back as far as catching up may")
		return catchUp, nil
	}
	caughtUp := slices.ContainsFunc(runs, func(r history.Reconciliation) bool { return r.Trigger == TriggerPeriodic && r.CaughtUp })
	from, found := now, false
	var unread []string
	for _, r := range runs { // newest first
		if r.Trigger != TriggerPeriodic {
			continue
		}
		if caughtUp && !r.CaughtUp {
			if r.Error != "" {
				from = earliest(from, wholeWindow(r, now, catchUp))
			}
			continue
		}
		found = true
		from = earliest(from, r.Started)
		switch {
		case r.Error == "":
		case len(r.Unread) > 0:
			unread = r.Unread
		default: // a run that failed, recorded before Unread was
			from = earliest(from, wholeWindow(r, now, catchUp))
		}
		break
	}
	if !found { // (a run that caught up is among runs whenever one that did not moved from)
		return window, nil
	}
	span := min(max(window, now.Sub(from)), catchUp)
	first, oldest := midnight(now.In(wib).Add(-span)), midnight(now.In(wib).Add(-catchUp))
	var extra []string
	for _, d := range unread {
		if t, err := time.ParseInLocation("2006-01-02", d, wib); err == nil && t.Before(first) && !t.Before(oldest) {
			extra = append(extra, d)
		}
	}
	slices.Sort(extra)
	return span, slices.Compact(extra)
}

// catchesUp reports whether a run may look back further than its window
// (CatchUp).
func (c ReconcileConfig) catchesUp() bool { return c.CatchUp > min(c.Window, ReconcileWindowMax) }

// wholeWindow is when run r's window started (now-catchUp if its record
// does not say).
func wholeWindow(r history.Reconciliation, now time.Time, catchUp time.Duration) time.Time {
	if w, err := time.ParseDuration(r.Window); err == nil {
		return r.Started.Add(-w)
	}
	return now.Add(-catchUp)
}

// earliest is the earlier of a and b.
func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// TriggerPeriodic names the relay's own runs in their records
// (ReconcileConfig.Trigger); the CLI's are "cli".
const TriggerPeriodic = "periodic"

// lastRuns is how many of a project's latest runs reconcileWindow reads.
const lastRuns = 100

// reconcileProject reconciles one project day by day: the extra days,
// then those of window back from started, up to today; a day that fails
// is reported, and named in the days it returns unread, and the next one
// is still checked.
func reconcileProject(ctx context.Context, cfg ReconcileConfig, kv jetstream.KeyValue, project string, started time.Time, window time.Duration, extra []string, progress func(string, string, event.Status, ReconcileSummary)) (ReconcileSummary, []string, error) {
	api := cfg.Projects[project]
	var sum ReconcileSummary
	var errs []error
	var unread []string
	for i, date := range extra { // days earlier runs left, before the window
		if ctx.Err() != nil {
			unread = append(unread, extra[i:]...)
			break
		}
		if err := reconcileDay(ctx, cfg, kv, api, project, date, &sum, progress); err != nil {
			errs = append(errs, err)
			unread = append(unread, date)
		}
	}
	// From when the run started, as reconcileWindow counted: the extra days
	// may take minutes, and a midnight passed meanwhile moved the window's
	// first day, which was then neither an extra day nor read.
	now := started.In(wib)
	today := midnight(now)
	day := midnight(now.Add(-window))
	for ; !day.After(today) && ctx.Err() == nil; day = day.AddDate(0, 0, 1) {
		date := day.Format("2006-01-02")
		if err := reconcileDay(ctx, cfg, kv, api, project, date, &sum, progress); err != nil {
			errs = append(errs, err)
			unread = append(unread, date)
		}
	}
	if !day.After(today) {
		// Stopped (Ctrl-C, the relay stopping) between two days: what is
		// left of the window was not checked, and the run must not say it
		// was.
		errs = append(errs, fmt.Errorf("stopped before %s %s: %w", project, day.Format("2006-01-02"), ctx.Err()))
		for ; !day.After(today); day = day.AddDate(0, 0, 1) {
			unread = append(unread, day.Format("2006-01-02"))
		}
	}
	return sum, unread, errors.Join(errs...)
}

// reconcileOrder is the order a day's lists are read in: the final
// statuses, then pending.
var reconcileOrder = []event.Status{event.StatusSuccess, event.StatusExpired, event.StatusFailed, event.StatusPending}

// reconcileDay checks one project's transactions of one day, every status.
func reconcileDay(ctx context.Context, cfg ReconcileConfig, kv jetstream.KeyValue, api Lister, project, date string, sum *ReconcileSummary, progress func(string, string, event.Status, ReconcileSummary)) error {
	// Transactions SenGo listed that could not be read: the day is
	// reported (how many pages held them, and the first), the rest still
	// checked. One error per page made a run's error and its log line
	// hundreds of KiB.
	var first error
	var unreadPages int
	unread := func() error {
		if first == nil {
			return nil
		}
		return fmt.Errorf("%d page(s) of %s %s listed transactions that could not be read, the first: %w", unreadPages, project, date, first)
	}
	var unfinished []error // lists cut at maxPages, or that failed
	// failed is the day's error: what could not be read, with err.
	failed := func(err error) error { return errors.Join(append([]error{unread()}, append(unfinished, err)...)...) }
	// A list that fails is reported and the day's others still read: one
	// failing pending list (the longest, the first throttled, one too
	// large to read) ended the day, and a success whose callback was lost
	// was never fed. The final statuses first, for the same reason.
	for _, status := range reconcileOrder {
		var before []string // the ids of the page before
		for page := 1; ; page++ {
			if page > maxPages {
				// Reported, not taken for the list's end: what is past it
				// is not reconciled, and the run must not say it was.
				unfinished = append(unfinished, fmt.Errorf("list %s %s %s not read to its end: it has more than %d pages", project, date, status, maxPages))
				break
			}
			txs, err := api.ListTransactions(ctx, sengo.ListQuery{Page: page, Status: status, Date: date})
			var bad *sengo.UnreadableError
			if errors.As(err, &bad) {
				if unreadPages++; first == nil {
					first = fmt.Errorf("list %s %s %s page %d: %w", project, date, status, page, err)
				}
				if len(txs) == 0 {
					continue // the page held only those: the next may hold more
				}
			} else if err != nil {
				unfinished = append(unfinished, fmt.Errorf("list %s %s %s page %d: %w", project, date, status, page, err))
				break
			}
			if len(txs) == 0 {
				break
			}
			// A page the same as the one before ends the list too: a SenGo
			// answering every page past the last with the last one made
			// each status of each day 1,000 requests.
			ids := make([]string, len(txs))
			for i, tx := range txs {
				ids[i] = tx.ID
			}
			if slices.Equal(ids, before) {
				break
			}
			before = ids
			for _, tx := range txs {
				sum.Checked++
				missing, absent, err := isMissing(ctx, kv, project, tx)
				if err != nil {
					return failed(err)
				}
				if absent {
					// Not held under this project: published under a
					// project no longer configured, it is this one's before
					// a rename, and feeding it would publish the change
					// again under a new event id.
					other, err := knownElsewhere(ctx, cfg, kv, project, tx)
					if err != nil {
						return failed(err)
					}
					if other != "" {
						missing = false
						sum.Elsewhere++
						if sum.Elsewhere == 1 {
							cfg.Logger.Warn().Str("project", project).Str("transaction_id", tx.ID).Str("known_under", other).
								Msg("reconcile: a transaction SenGo lists is held under a project no longer configured (renamed?); not fed, or its changes would be published again under new event ids. Keep the old name, or see README \"Renaming a project\"")
						}
					}
				}
				if !missing {
					continue
				}
				sum.Missing++
				if len(sum.Found) < maxFound {
					sum.Found = append(sum.Found, history.Found{TransactionID: tx.ID, MerchantRef: tx.MerchantRef, Status: tx.Status})
				}
				stored, err := feed(ctx, cfg, api, project, tx)
				if err != nil {
					return failed(err)
				}
				if stored {
					sum.Fed++
				}
			}
			if progress != nil {
				progress(project, date, status, *sum)
			}
		}
	}
	return failed(nil)
}

// knownElsewhere returns a project not configured (cfg.Configured) under
// which SENGO_TX holds transaction tx with its listed status published, or
// "" if there is none: the project's name before a rename, under which the
// change went out already. A status the old name never published (paid
// after the rename) is fed. For a transaction not held under project at
// all: every project's key of it ends the same (txKey), so the bucket's
// stream lists them, from its index, in one request.
func knownElsewhere(ctx context.Context, cfg ReconcileConfig, kv jetstream.KeyValue, project string, tx sengo.Transaction) (string, error) {
	configured := cfg.Configured
	if configured == nil {
		configured = slices.Collect(maps.Keys(cfg.Projects))
	}
	prefix := "$KV." + event.BucketTx + "."
	key := strings.TrimPrefix(txKey(project, tx.ID), project) // ".<id's key>"
	s, err := cfg.JetStream.Stream(ctx, "KV_"+event.BucketTx)
	if err != nil {
		return "", fmt.Errorf("look for %s under other projects: %w", tx.ID, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+"*"+key))
	if err != nil {
		return "", fmt.Errorf("look for %s under other projects: %w", tx.ID, err)
	}
	for _, subject := range slices.Sorted(maps.Keys(info.State.Subjects)) {
		other, _, _ := strings.Cut(strings.TrimPrefix(subject, prefix), ".")
		if slices.Contains(configured, other) {
			continue // a project's own transaction
		}
		entry, err := kv.Get(ctx, other+key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted
		} else if err != nil {
			return "", fmt.Errorf("read %s: %w", other+key, err)
		}
		var st txState
		if err := json.Unmarshal(entry.Value(), &st); err != nil {
			continue // nothing to tell it by: fed, as before
		}
		if published(st, tx.Status) {
			return other, nil
		}
	}
	return "", nil
}

// published reports whether st's transaction needs no event for status:
// one went out already (decided and no longer in the outbox), or it would
// not be published (a stale pending, a conflict).
func published(st txState, status event.Status) bool {
	for _, h := range st.History {
		if h.Status == status {
			return !slices.ContainsFunc(st.Outbox, func(o outboxItem) bool { return o.EventID == h.EventID })
		}
	}
	return event.Decide(st.Status, status) != event.Publish
}

// isMissing reports whether the transaction's listed status would still
// be published: the relay has not seen it, and it is not a stale pending
// or a conflict.
// absent: the project holds no entry of the transaction.
func isMissing(ctx context.Context, kv jetstream.KeyValue, project string, tx sengo.Transaction) (missing, absent bool, err error) {
	entry, err := kv.Get(ctx, txKey(project, tx.ID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return true, true, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("read %s: %w", txKey(project, tx.ID), err)
	}
	var st txState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		return false, false, fmt.Errorf("decode %s: %w", txKey(project, tx.ID), err)
	}
	// An outbox not empty is decided but not yet published (a crash or a
	// failed write): feeding it makes intake flush the outbox.
	return len(st.Outbox) > 0 || !published(st, tx.Status), false, nil
}

// feed puts a missing transition into the inbox, or asks SenGo to resend.
// stored is false when the inbox already held it (fed by an earlier run and
// not yet processed): its duplicate window dropped this copy.
func feed(ctx context.Context, cfg ReconcileConfig, api Lister, project string, tx sengo.Transaction) (stored bool, err error) {
	if cfg.Resend {
		if _, err := api.Check(ctx, tx.ID, true); err != nil {
			return false, fmt.Errorf("resend %s: %w", tx.ID, err)
		}
		return true, nil
	}
	raw := tx.Raw
	if len(raw) > maxEventRaw {
		// SenGo's object with a QR image in it (megabytes): larger than
		// an external server takes (1 MiB by default), its failed publish
		// ended the day's run at every run, and the event would have
		// carried it to every endpoint. The fields the relay reads stand
		// in for it, as for a confirmed event's raw.
		raw = tx.Compact()
	}
	raw = verify.RedactIn(raw, cfg.CallbackTokens[project])
	msg := &nats.Msg{Subject: event.InboxTxSubject(project, tx.ID), Data: raw, Header: nats.Header{
		event.HeaderProject:    []string{project},
		event.HeaderReceivedAt: []string{cfg.Now().UTC().Format(time.RFC3339Nano)},
		event.HeaderSource:     []string{SourceReconcile},
	}}
	id := event.ID(project, tx.ID, tx.Status)
	ack, err := cfg.JetStream.PublishMsg(ctx, msg, jetstream.WithMsgID(inboxMsgID(id, SourceReconcile, raw)), jetstream.WithExpectStream(event.StreamInbox))
	if err != nil {
		return false, fmt.Errorf("feed %s: %w", id, err)
	}
	return !ack.Duplicate, nil
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// ReconcileWindowMax bounds how far back reconciliation looks: SenGo lists
// the last 7 days.
const ReconcileWindowMax = 7 * 24 * time.Hour
