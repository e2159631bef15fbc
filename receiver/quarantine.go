package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/stream"
)

// SourceRedrive marks a quarantined notification put back into the inbox.
const SourceRedrive = "redrive"

// HeaderRedriveOf names the quarantine message a redriven notification
// came from ("q-<seq>").
const HeaderRedriveOf = "Sengo-Redrive-Of"

// HeaderInboxSeq names, on a quarantined notification, its SENGO_INBOX
// sequence.
const HeaderInboxSeq = "Sengo-Inbox-Seq"

// QuarantineFilter selects quarantined notifications; zero fields match
// everything.
type QuarantineFilter struct {
	Project       string
	TransactionID string
	Seq           uint64 // one notification by its SENGO_QUARANTINE sequence
	// ReasonContains matches a substring of the quarantine reason.
	ReasonContains string
	// Since, when set, reads every notification stored from then on
	// instead of the newest maxQuarantineScan (EachQuarantined only).
	Since time.Time
	// headersOnly reads no bodies: the entries carry no notification
	// (nor what it names), only what the headers say.
	headersOnly bool
	// UpTo, when set, leaves out notifications stored after this
	// SENGO_QUARANTINE sequence: an action confirmed on a count touches
	// only what was counted (EachQuarantinedBatch only).
	UpTo uint64
}

// QuarantineEntry is one quarantined notification: what arrived, why it
// was set aside, and SenGo's version where SenGo disagreed.
type QuarantineEntry struct {
	Seq           uint64          `json:"seq"`
	Stored        time.Time       `json:"stored"`
	Project       string          `json:"project"`
	Reason        string          `json:"reason"`
	Source        string          `json:"source,omitempty"`
	RequestID     string          `json:"requestId,omitempty"`
	ReceivedAt    string          `json:"receivedAt,omitempty"`
	TransactionID string          `json:"transactionId,omitempty"`
	MerchantRef   string          `json:"merchantRef,omitempty"`
	Status        event.Status    `json:"status,omitempty"`
	Rechecks      string          `json:"rechecks,omitempty"` // confirmations retried after quarantine
	Notification  json.RawMessage `json:"notification"`
	SenGo         json.RawMessage `json:"sengo,omitempty"` // SenGo's version of the transaction
}

// maxQuarantineScan bounds how many messages one listing reads: with no
// project or transaction, the newest this many.
const maxQuarantineScan = 10000

// maxQuarantineListBytes bounds the notifications (and SenGo's versions)
// one listing holds in memory; the newest are kept. Forged claims fill
// the quarantine (up to http.max_body_bytes each): 10,000 of them would
// otherwise be over 600 MB for one page. A variable for tests.
var maxQuarantineListBytes = 32 << 20

// ListQuarantine returns the quarantined notifications matching f, oldest
// first. A project or a transaction is read by subject, the first
// maxQuarantineScan that match; otherwise the newest maxQuarantineScan
// messages are read. Either way they are fetched in batches, not one
// request each, and at most maxQuarantineListBytes of them are kept: the
// newest.
func ListQuarantine(ctx context.Context, js jetstream.JetStream, f QuarantineFilter) ([]QuarantineEntry, error) {
	out, _, err := ListQuarantineCounted(ctx, js, f)
	return out, err
}

// ListQuarantineCounted is ListQuarantine that also says how many of the
// oldest it read it left out to stay within maxQuarantineListBytes: a
// listing that said nothing of them hid, behind a flood of forged claims,
// the genuine ones an operator must redrive.
func ListQuarantineCounted(ctx context.Context, js jetstream.JetStream, f QuarantineFilter) (entries []QuarantineEntry, leftOut int, err error) {
	var (
		out        []QuarantineEntry
		seen, held int
	)
	err = EachQuarantined(ctx, js, f, func(e QuarantineEntry) bool {
		out = append(out, e)
		held += e.size()
		for held > maxQuarantineListBytes && len(out) > 1 {
			held -= out[0].size()
			out[0] = QuarantineEntry{} // its bodies can go now
			out = out[1:]
			leftOut++
		}
		seen++
		return seen < maxQuarantineScan
	})
	return out, leftOut, err
}

// size is about what e holds in memory.
func (e QuarantineEntry) size() int { return len(e.Notification) + len(e.SenGo) + 256 }

// EachQuarantined visits the quarantined notifications matching f, oldest
// first, one at a time (as ListQuarantine selects them, without its
// bounds), until visit returns false.
func EachQuarantined(ctx context.Context, js jetstream.JetStream, f QuarantineFilter, visit func(QuarantineEntry) bool) error {
	return eachQuarantined(ctx, js, f, true, visit)
}

// quarantineActBatch is how many quarantined notifications one call of
// EachQuarantinedBatch's act gets (a redrive's copies share one fsync).
const quarantineActBatch = 256

// EachQuarantinedBatch calls act with every quarantined notification
// that matches f and was stored before it started, oldest first, a batch
// at a time, for a redrive or a purge: unlike a listing it has no window
// of the newest 10,000 and keeps no bodies (the entries carry Seq only,
// what RedriveQuarantine and PurgeQuarantine read), so "all" is every
// one. It never reaches one stored after it started: a redrive that
// quarantines its notifications again would otherwise meet them again.
// It returns how many act acted on (the sum of what it returned) and how
// many were selected.
func EachQuarantinedBatch(ctx context.Context, js jetstream.JetStream, f QuarantineFilter, act func([]QuarantineEntry) (int, error)) (acted, selected int, err error) {
	s, err := js.Stream(ctx, event.StreamQuarantine)
	if err != nil {
		return 0, 0, fmt.Errorf("open %s: %w", event.StreamQuarantine, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("%s info: %w", event.StreamQuarantine, err)
	}
	last := info.State.LastSeq
	if f.UpTo > 0 {
		last = min(last, f.UpTo)
	}
	var seqs []uint64 // 8 bytes each: a million is 8 MB
	// Headers only, unless a transaction is asked for (its id is in the
	// body): an operator's purge of a flood of forged bodies read each
	// whole from the store intake and delivery share.
	f.headersOnly = f.TransactionID == ""
	if err := eachQuarantined(ctx, js, f, false, func(e QuarantineEntry) bool {
		if e.Seq > last {
			return false
		}
		seqs = append(seqs, e.Seq)
		return true
	}); err != nil {
		return 0, 0, err
	}
	for len(seqs) > 0 {
		n := min(len(seqs), quarantineActBatch)
		batch := make([]QuarantineEntry, n)
		for i, seq := range seqs[:n] {
			batch[i].Seq = seq
		}
		k, err := act(batch)
		acted, selected = acted+k, selected+n
		if err != nil {
			return acted, selected, err
		}
		seqs = seqs[n:]
	}
	return acted, selected, nil
}

// eachQuarantined is EachQuarantined; window limits a scan with no
// filter to the newest maxQuarantineScan messages (a listing's bound).
func eachQuarantined(ctx context.Context, js jetstream.JetStream, f QuarantineFilter, window bool, visit func(QuarantineEntry) bool) error {
	s, err := js.Stream(ctx, event.StreamQuarantine)
	if err != nil {
		return fmt.Errorf("open %s: %w", event.StreamQuarantine, err)
	}
	keep := func(e QuarantineEntry) bool {
		return (f.Project == "" || e.Project == f.Project) && (f.TransactionID == "" || e.TransactionID == f.TransactionID) &&
			(f.ReasonContains == "" || strings.Contains(e.Reason, f.ReasonContains))
	}
	if f.Seq > 0 {
		m, err := s.GetMsg(ctx, f.Seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("quarantined %d: %w", f.Seq, err)
		}
		if e := quarantineEntry(m); keep(e) {
			visit(e)
		}
		return nil
	}
	from := stream.From{HeadersOnly: f.headersOnly}
	if !f.Since.IsZero() {
		from.Time = f.Since
	} else if window && f.Project == "" && f.TransactionID == "" {
		info, err := s.Info(ctx)
		if err != nil {
			return fmt.Errorf("%s info: %w", event.StreamQuarantine, err)
		}
		if info.State.Msgs == 0 {
			return nil
		}
		// The newest maxQuarantineScan sequences, only when the stream
		// holds more messages than that: deleted ones (a purged flood)
		// keep the last sequence where they ended, and that window held
		// none of the notifications kept before them. With fewer, every
		// one is read from the first.
		if last := info.State.LastSeq; info.State.Msgs > maxQuarantineScan && last-info.State.FirstSeq >= maxQuarantineScan {
			from.Seq = last - maxQuarantineScan + 1
		}
	}
	err = stream.ScanFrom(ctx, js, event.StreamQuarantine, event.QuarantineFilters(f.Project, f.TransactionID), from, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		e := quarantineEntry(&jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: meta.Sequence.Stream, Header: m.Headers(), Data: m.Data(), Time: meta.Timestamp})
		if !keep(e) {
			return true, nil
		}
		return visit(e), nil
	}, nil)
	if err != nil {
		return fmt.Errorf("list %s: %w", event.StreamQuarantine, err)
	}
	return nil
}

func quarantineEntry(m *jetstream.RawStreamMsg) QuarantineEntry {
	e := QuarantineEntry{
		Seq: m.Sequence, Stored: m.Time.UTC(), Project: projectOfQuarantine(m.Subject),
		Reason: m.Header.Get(event.HeaderReason), Source: m.Header.Get(event.HeaderSource),
		RequestID: m.Header.Get(event.HeaderRequestID), ReceivedAt: m.Header.Get(event.HeaderReceivedAt),
		Rechecks:     m.Header.Get(HeaderRechecks),
		Notification: rawOrString(m.Data),
	}
	if api := m.Header.Get(HeaderAPIObject); api != "" {
		e.SenGo = rawOrString([]byte(api))
	}
	if tx, err := sengo.ParseCallback(m.Data); err == nil {
		e.TransactionID, e.MerchantRef, e.Status = tx.ID, tx.MerchantRef, tx.Status
	}
	return e
}

// rawOrString keeps b as JSON, or as a JSON string if it is not JSON.
func rawOrString(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b))
	return q
}

// RedriveQuarantine puts each given quarantined notification back into the
// inbox, as received (body and headers), marked source redrive, and
// removes it from quarantine only after the inbox acknowledged the copy
// and durable (when not nil: the relay's group commit) has made it
// durable, so that a power loss cannot keep the removal and lose the
// copy. Intake then processes it as any notification: confirmed with
// SenGo, deduplicated by the transaction state. It returns how many were
// redriven (removed from quarantine).
func RedriveQuarantine(ctx context.Context, js jetstream.JetStream, entries []QuarantineEntry, durable Durability) (int, error) {
	return redrive(ctx, js, entries, "", durable)
}

// redrive is RedriveQuarantine; rechecks, when set, is the value of the
// HeaderRechecks the copies carry. The copies are stored first, then made
// durable together, then removed from quarantine.
func redrive(ctx context.Context, js jetstream.JetStream, entries []QuarantineEntry, rechecks string, durable Durability) (int, error) {
	s, err := js.Stream(ctx, event.StreamQuarantine)
	if err != nil {
		return 0, err
	}
	var copied []uint64
	remove := func() (int, error) {
		if len(copied) == 0 {
			return 0, nil
		}
		if durable != nil {
			if err := durable.Sync(ctx); err != nil {
				return 0, fmt.Errorf("redriven copies not known durable, left in quarantine: %w", err)
			}
		}
		n := 0
		for _, seq := range copied {
			removed, err := stream.Delete(ctx, s, seq)
			if err != nil {
				return n, fmt.Errorf("remove redriven %d: %w", seq, err)
			}
			if removed { // else another redrive (a recheck) took it meanwhile, and counted it
				n++
			}
		}
		return n, nil
	}
	for _, e := range entries {
		m, err := s.GetMsg(ctx, e.Seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // redriven or purged meanwhile
		}
		if err != nil {
			n, rerr := remove()
			return n, errors.Join(fmt.Errorf("quarantined %d: %w", e.Seq, err), rerr)
		}
		project := m.Header.Get(event.HeaderProject)
		if project == "" {
			continue // never had a project: nothing intake could do with it
		}
		h := nats.Header{}
		for _, k := range []string{event.HeaderProject, event.HeaderReceivedAt, event.HeaderRequestID, HeaderRechecks} {
			if v := m.Header.Get(k); v != "" {
				h.Set(k, v)
			}
		}
		h.Set(event.HeaderSource, SourceRedrive)
		if rechecks != "" {
			h.Set(HeaderRechecks, rechecks)
		}
		h.Set(HeaderRedriveOf, "q-"+strconv.FormatUint(e.Seq, 10))
		subject := event.InboxSubject(project)
		if tx, err := sengo.ParseCallback(m.Data); err == nil {
			subject = event.InboxTxSubject(project, tx.ID)
		}
		msg := &nats.Msg{Subject: subject, Header: h, Data: m.Data}
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID("redrive-q-"+strconv.FormatUint(e.Seq, 10)), jetstream.WithExpectStream(event.StreamInbox)); err != nil {
			n, rerr := remove()
			return n, errors.Join(fmt.Errorf("redrive quarantined %d: %w", e.Seq, err), rerr)
		}
		copied = append(copied, e.Seq)
	}
	return remove()
}

// PurgeQuarantine deletes the given quarantined notifications for good
// and returns how many it deleted (one already gone is not counted). The
// notification stays in SENGO_INBOX for the inbox's retention.
func PurgeQuarantine(ctx context.Context, js jetstream.JetStream, entries []QuarantineEntry) (int, error) {
	s, err := js.Stream(ctx, event.StreamQuarantine)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		deleted, err := stream.Delete(ctx, s, e.Seq)
		if err != nil {
			return n, fmt.Errorf("purge quarantined %d: %w", e.Seq, err)
		}
		if deleted { // else redriven or purged meanwhile
			n++
		}
	}
	return n, nil
}

// HeaderRechecks counts how often an unconfirmed notification was put
// back for another confirmation.
const HeaderRechecks = "Sengo-Rechecks"

// RecheckAfter is when a notification quarantined as unconfirmed (it
// claims a final status SenGo's API does not report yet) is confirmed
// again: the n-th recheck happens RecheckAfter[n] after it was last
// quarantined. SenGo's API can lag its own callback; a forged claim stays
// quarantined after the last one.
var RecheckAfter = []time.Duration{time.Minute, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 6 * time.Hour}

// recheckWindow is how far back the recheck reads (the quarantine keeps
// notifications at least this long: internal/config): a notification is
// quarantined again at each recheck, so one still due was stored at most
// the longest RecheckAfter ago, and the rest is room for a relay that was
// down meanwhile.
const recheckWindow = 24 * time.Hour

// recheckBatch is how many due notifications one fsync covers.
const recheckBatch = 256

// RecheckUnconfirmed redrives every quarantined unconfirmed notification
// whose next recheck is due at now, of a project that confirms (confirms;
// nil: every project). It returns how many were redriven. A project that
// no longer confirms (its credentials removed, or a relay on a
// configuration without them) would publish unconfirmed the claims SenGo
// denied: its notifications stay.
func RecheckUnconfirmed(ctx context.Context, js jetstream.JetStream, now time.Time, durable Durability, confirms func(project string) bool) (int, error) {
	// One at a time, and every one stored within recheckWindow: a
	// quarantine that forged claims filled is never held in memory at
	// once, nor does it push a genuine claim out of the recheck (as a
	// window of the newest 10,000 did).
	n := 0
	var rerr error
	// Due ones are redriven a batch at a time (their sequences only, by
	// how many rechecks they had), sharing one fsync.
	due := map[int][]QuarantineEntry{}
	queued := 0
	flush := func() {
		for done, es := range due {
			k, err := redrive(ctx, js, es, strconv.Itoa(done+1), durable)
			n += k
			if err != nil && rerr == nil {
				rerr = err
			}
		}
		clear(due)
		queued = 0
	}
	// Headers only: the reason, the rechecks done and when it was stored
	// are all it needs, and a forged body read in full by every relay
	// every 30 s for a day multiplied each forged request.
	f := QuarantineFilter{ReasonContains: sengo.ErrUnconfirmed.Error(), Since: now.Add(-recheckWindow), headersOnly: true}
	err := EachQuarantined(ctx, js, f, func(e QuarantineEntry) bool {
		done, _ := strconv.Atoi(e.Rechecks)
		if done >= len(RecheckAfter) || now.Sub(e.Stored) < RecheckAfter[done] || confirms != nil && !confirms(e.Project) {
			return true
		}
		due[done] = append(due[done], QuarantineEntry{Seq: e.Seq})
		if queued++; queued == recheckBatch {
			flush()
		}
		return rerr == nil
	})
	if rerr == nil {
		flush()
	}
	if rerr != nil {
		return n, rerr
	}
	return n, err
}

// projectOfQuarantine is the project of a quarantine subject:
// sengo.quarantine.<project> or sengo.quarantine.<project>.<tx hash>.
func projectOfQuarantine(subject string) string {
	p, _, _ := strings.Cut(strings.TrimPrefix(subject, "sengo.quarantine."), ".")
	return p
}

// EachQuarantinedOf visits the quarantined notifications of one
// transaction (those stored since its subject carries the transaction),
// oldest first, until visit returns false. Each entry holds its whole
// bodies: a caller that keeps many keeps less of each.
func EachQuarantinedOf(ctx context.Context, js jetstream.JetStream, project, transactionID string, visit func(QuarantineEntry) bool) error {
	return stream.ReadSubject(ctx, js, event.StreamQuarantine, event.QuarantineTxSubject(project, transactionID), func(m *jetstream.RawStreamMsg) bool {
		e := quarantineEntry(m)
		if e.TransactionID != transactionID {
			return true // another id with the same hash
		}
		return visit(e)
	})
}
