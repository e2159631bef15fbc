package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/stream"
)

// ReplayRequest selects events of SENGO_EVENTS to deliver again.
type ReplayRequest struct {
	Endpoints     []string       `json:"endpoints"` // names; each receives only what its filter selects
	Since         time.Time      `json:"since"`     // stored at or after
	Until         time.Time      `json:"until"`     // stored at or before; zero: up to now
	Statuses      []event.Status `json:"statuses,omitempty"`
	TransactionID string         `json:"transactionId,omitempty"`
	MerchantRef   string         `json:"merchantRef,omitempty"`
	// Project keeps one project's events ("": every project's): a
	// transaction id or merchantRef may be used by two.
	Project string `json:"project,omitempty"`
	DryRun  bool   `json:"dryRun,omitempty"`
}

// JobID identifies a replay by what it selects, so running the same
// request again resumes it: copies already queued are duplicates. A dry
// run has an id of its own: it queues nothing, and its record must not
// replace the record of the real run, which says what was sent.
func (r ReplayRequest) JobID() string {
	h := sha256.New()
	if r.DryRun {
		h.Write([]byte("dry run|"))
	}
	eps := slices.Clone(r.Endpoints)
	slices.Sort(eps)
	// The statuses as a set: the same selection asked in another order
	// (the CLI's --status expired,success, the console's boxes) is the
	// same job, not a second one that sends every event again.
	r.Statuses = slices.Compact(slices.Sorted(slices.Values(r.Statuses)))
	if strings.Contains(r.TransactionID+r.MerchantRef, "|") {
		// The fields would not be told apart ("a|b" and "" against "a"
		// and "b|"): lengths say where each ends. "#" never begins the
		// other form (endpoint names), whose ids stay as recorded.
		fmt.Fprintf(h, "#%s|%d|%d|%v|%d:%s|%d:%s", strings.Join(eps, ","), r.Since.UnixNano(), r.Until.UnixNano(), r.Statuses,
			len(r.TransactionID), r.TransactionID, len(r.MerchantRef), r.MerchantRef)
	} else {
		fmt.Fprintf(h, "%s|%d|%d|%v|%s|%s", strings.Join(eps, ","), r.Since.UnixNano(), r.Until.UnixNano(), r.Statuses, r.TransactionID, r.MerchantRef)
	}
	if r.Project != "" { // after the rest: the ids of jobs without one stay as recorded
		fmt.Fprintf(h, "|project:%s", r.Project)
	}
	return "rp_" + hex.EncodeToString(h.Sum(nil)[:8])
}

// ReplayProgress is reported while a replay runs and as its summary.
type ReplayProgress struct {
	Job     string `json:"job"`
	Total   uint64 `json:"total"`   // events stored since Since, to scan
	Scanned uint64 `json:"scanned"` // read so far
	Matched uint64 `json:"matched"` // deliveries selected: an event counts once per endpoint it goes to
	Queued  uint64 `json:"queued"`  // copies queued for delivery (0 in a dry run)
	// AlreadyQueued counts copies an earlier run of the same job queued
	// (the stream deduplicated them): a resumed replay does not send twice.
	AlreadyQueued uint64 `json:"alreadyQueued"`
	// Skipped counts matched deliveries no copy of which can be queued:
	// an event too large for the server with the copy's headers, an id too
	// long for them (the copy carries it twice), or one that cannot be a
	// header (another publisher's; the live path
	// dead-letters such an event). The replay counts each and goes on:
	// it stopped there, and every run after stopped at the same event.
	Skipped uint64 `json:"skipped,omitempty"`
	// PerEndpoint counts the deliveries matched for each endpoint.
	PerEndpoint map[string]uint64 `json:"perEndpoint"`
	Done        bool              `json:"done"`
}

// Replay scans SENGO_EVENTS and queues a copy of every matching event on
// sengo.replay.<endpoint>, where the endpoint's worker delivers it through
// the normal signing, retry and dead-letter path, with the same webhook-id
// and a "webhook-replay: true" header. It runs beside live traffic (live
// events use another consumer) and calls progress after each event.
func Replay(ctx context.Context, js jetstream.JetStream, endpoints []Endpoint, req ReplayRequest, progress func(ReplayProgress)) (ReplayProgress, error) {
	var targets []Endpoint
	for _, name := range req.Endpoints {
		i := slices.IndexFunc(endpoints, func(e Endpoint) bool { return e.Name == name })
		if i < 0 {
			return ReplayProgress{}, fmt.Errorf("unknown endpoint %q", name)
		}
		targets = append(targets, endpoints[i])
	}
	if len(targets) == 0 {
		return ReplayProgress{}, fmt.Errorf("no endpoint to replay to")
	}
	// As a redrive: copies for an endpoint no relay delivers (retired, or
	// being retired) would wait where nothing reads them until
	// SENGO_REPLAY dropped them, with no dead letter.
	// Checked again every replayRecheck while it queues: an endpoint
	// retired meanwhile stops the replay (resumable), not its copies.
	checked := map[string]time.Time{}
	records, err := js.KeyValue(ctx, event.BucketDelivery)
	if err != nil {
		return ReplayProgress{}, fmt.Errorf("open bucket %s: %w", event.BucketDelivery, err)
	}
	delivered := func(ep string) error {
		if time.Since(checked[ep]) < replayRecheck {
			return nil
		}
		if ok, err := redrivable(ctx, js, records, ep); err != nil {
			if checked[ep].IsZero() {
				return err // at the start: nothing queued yet
			}
			return nil // a reading that failed (a leader election) stops nothing: asked again at the next copy
		} else if !ok {
			return fmt.Errorf("endpoint %q: no relay delivers it (its consumer on %s is gone or being retired); a relay that has it configured must run first", ep, event.StreamReplay)
		}
		checked[ep] = time.Now()
		return nil
	}
	for _, ep := range targets {
		if err := delivered(ep.Name); err != nil {
			return ReplayProgress{}, err
		}
	}
	until := req.Until
	if now := time.Now(); until.IsZero() || until.After(now) {
		// Up to now: events stored while it scans are live traffic, which
		// a later until would post a second time.
		until = now
	}
	p := ReplayProgress{Job: req.JobID(), PerEndpoint: map[string]uint64{}}
	for _, ep := range targets {
		p.PerEndpoint[ep.Name] = 0
	}
	if progress == nil {
		progress = func(ReplayProgress) {}
	}
	subjects := event.SubjectsEvents
	if req.Project != "" {
		subjects = event.ProjectEvents(req.Project)
	}
	err = stream.Scan(ctx, js, event.StreamEvents, subjects, req.Since, func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
		if meta.Timestamp.After(until) {
			return false, nil
		}
		p.Scanned++
		defer progress(p)
		ev, err := event.Unmarshal(m.Data())
		if err != nil || !req.selects(ev) {
			return true, nil
		}
		for _, ep := range targets {
			if !ep.Matches(m.Subject()) {
				continue
			}
			p.Matched++
			p.PerEndpoint[ep.Name]++
			hdr := 2*len(ev.ID) + 2*len(p.Job) + len(ep.Name) + len(m.Subject()) + replayRoom
			if !deliverableID(ev.ID) || hdr > maxHeaders || int64(len(m.Data())+hdr) > js.Conn().MaxPayload() {
				p.Skipped++
				continue
			}
			if req.DryRun {
				continue
			}
			if err := delivered(ep.Name); err != nil {
				return false, err
			}
			msg := &nats.Msg{Subject: event.ReplaySubject(ep.Name), Data: m.Data(), Header: nats.Header{
				HeaderReplayKind:    []string{"replay"},
				HeaderReplayJob:     []string{p.Job},
				HeaderEventSeq:      []string{strconv.FormatUint(meta.Sequence.Stream, 10)},
				HeaderEventSubject:  []string{m.Subject()},
				event.HeaderEventID: []string{ev.ID},
			}}
			ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(p.Job+"."+ep.Name+"."+ev.ID), jetstream.WithExpectStream(event.StreamReplay))
			if err != nil {
				return false, fmt.Errorf("queue %s for %s: %w", clip(ev.ID), ep.Name, err)
			}
			if ack.Duplicate {
				p.AlreadyQueued++
			} else {
				p.Queued++
			}
		}
		return true, nil
	}, func(n uint64) {
		// Those stored after until are not the job's: counted as the
		// server counts them, in one request (a live one stored between
		// the two counts may be off by itself).
		if after, err := stream.Count(ctx, js, event.StreamEvents, subjects, until.Add(time.Nanosecond)); err == nil {
			n -= min(n, after)
		}
		p.Total = n
		progress(p)
	})
	p.Done = err == nil
	progress(p)
	return p, err
}

// replayRecheck is how often a running replay checks that a relay still
// delivers each of its endpoints (a variable for tests): a second, within
// the shortest time an endpoint removed from every relay's configuration
// waits before it is retired (delivery.retire_removed_after, 1 s at
// least), so that few copies, if any, are queued past its consumer's
// deletion. (30 s let a replay beside retire_removed_after: 20s queue for
// 10 s copies nothing read.) A consumer info (a JetStream API request)
// and a direct get a second per endpoint while a replay runs.
var replayRecheck = time.Second

// replayRoom is what a copy queued for a replay adds to its event, beyond
// the event id and the job id it carries twice (in its message id and in
// headers) and the event's subject: its other headers and the client's
// framing.
const replayRoom = 1 << 10

// maxHeaders is the most JetStream stores in one message's headers
// (nats-server refuses more: "header size exceeds maximum allowed of 64k").
const maxHeaders = 64 << 10

func (r ReplayRequest) selects(ev event.Event) bool {
	return (len(r.Statuses) == 0 || slices.Contains(r.Statuses, ev.Data.Status)) &&
		(r.Project == "" || event.ProjectOf(ev.Source) == r.Project) &&
		(r.TransactionID == "" || ev.Data.TransactionID == r.TransactionID) &&
		(r.MerchantRef == "" || ev.Data.MerchantRef == r.MerchantRef)
}
