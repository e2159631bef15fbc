package history

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/stream"
)

// Streams and their subjects.
const (
	StreamAttempts    = "SENGO_ATTEMPTS"
	SubjectsAttempts  = "sengo.attempts.>"
	StreamRefs        = "SENGO_REFS"
	SubjectsRefs      = "sengo.refs.>"
	StreamReconcile   = "SENGO_RECONCILE"
	SubjectsReconcile = "sengo.reconcile.>"
)

// Reconciliation is one project's reconciliation run: SenGo's list
// compared with what the relay received, and what it found missing.
type Reconciliation struct {
	Project  string    `json:"project"`
	Trigger  string    `json:"trigger"` // periodic, cli
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Window   string    `json:"window"`
	Checked  int       `json:"checked"`
	Missing  int       `json:"missing"`
	Fed      int       `json:"fed"`
	Resend   bool      `json:"resend,omitempty"`
	Error    string    `json:"error,omitempty"`
	// Unread are the days (YYYY-MM-DD, SenGo's, oldest first) the run did
	// not read whole, of its window and its extra days: a list that
	// failed, or a stop before the day. The next periodic run reads them
	// again.
	Unread []string `json:"unread,omitempty"`
	// Extra are the days before the window the run read again, left
	// unread by an earlier one.
	Extra []string `json:"extra,omitempty"`
	// CaughtUp: a periodic run that looked back to what the last one left
	// (reconcile.catch_up); its record tells the next how far to look.
	CaughtUp bool `json:"caughtUp,omitempty"`
	// Found are the first status changes found missing (at most 50).
	Found []Found `json:"found"`
}

// Found is a status change SenGo reported that the relay had not received.
type Found struct {
	TransactionID string       `json:"transactionId"`
	MerchantRef   string       `json:"merchantRef"`
	Status        event.Status `json:"status"`
}

// Attempt is one delivery attempt of one event to one endpoint.
type Attempt struct {
	Endpoint      string    `json:"endpoint"`
	EventID       string    `json:"eventId"`
	Project       string    `json:"project,omitempty"`
	TransactionID string    `json:"transactionId,omitempty"`
	MerchantRef   string    `json:"merchantRef,omitempty"`
	Number        int       `json:"attempt"`
	At            time.Time `json:"at"`
	DurationMs    float64   `json:"durationMs"`
	// Status is the HTTP status; 0 when no response arrived (then Error says why).
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	// Outcome is what the attempt led to: delivered, retry, dead_letter.
	Outcome string `json:"outcome"`
	// Copy is live for the endpoint's own delivery, replay or redrive for a copy queued again.
	Copy            string            `json:"copy"`
	RequestHeaders  map[string]string `json:"requestHeaders,omitempty"`
	ResponseHeaders map[string]string `json:"responseHeaders,omitempty"`
	ResponseExcerpt string            `json:"responseExcerpt,omitempty"`
}

// Ref ties a merchant's reference to one SenGo transaction.
type Ref struct {
	Project       string    `json:"project"`
	MerchantRef   string    `json:"merchantRef"`
	TransactionID string    `json:"transactionId"`
	At            time.Time `json:"at"`
}

// AttemptSubject is where the attempts of one event to one endpoint go.
// Endpoint names are NATS tokens (checked by the configuration); the event
// id is one through eventToken.
func AttemptSubject(endpoint, eventID string) string {
	return "sengo.attempts." + endpoint + "." + eventToken(eventID)
}

// maxEventToken bounds an event id kept as it is in a subject; the relay's
// own (event.ID) are 36 bytes.
const maxEventToken = 128

// eventToken is eventID when it is one short subject token, else "h-" and
// its hash. An event on sengo.events.> from another publisher carries any
// id: one of 4 KiB made a subject over nats-server's control line, and
// the server closed the connection the relay's intake and delivery share.
func eventToken(eventID string) string {
	ok := eventID != "" && len(eventID) <= maxEventToken && !strings.HasPrefix(eventID, "h-")
	for i := 0; ok && i < len(eventID); i++ {
		c := eventID[i]
		ok = c > ' ' && c < 0x7f && c != '.' && c != '*' && c != '>'
	}
	if ok {
		return eventID
	}
	return "h-" + hash(eventID)
}

// RefSubject is the index entry of (project, merchantRef, transaction):
// both values hashed, so any reference (dots, spaces, 200 bytes) makes a
// fixed-length, valid subject.
func RefSubject(project, merchantRef, transactionID string) string {
	return refPrefix(project, merchantRef) + "." + hash(transactionID)
}

func refPrefix(project, merchantRef string) string {
	return "sengo.refs." + project + "." + hash(merchantRef)
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:10])
}

// WriterConfig configures a Writer.
type WriterConfig struct {
	// MaxPending bounds the records in flight (default 4096). When it is
	// reached, a new record waits at most StallWait (default 50 ms), then
	// is dropped and counted as failed.
	MaxPending int
	StallWait  time.Duration
	// OnResult, when set, is called once per record with its kind
	// (attempt, ref) and the error that lost it (nil when stored).
	OnResult func(kind string, err error)
	Logger   zerolog.Logger
}

// Writer stores history records with asynchronous publishes.
type Writer struct {
	js    jetstream.JetStream
	cfg   WriterConfig
	log   zerolog.Logger
	onRes func(string, error)
}

// NewWriter returns a Writer on nc.
func NewWriter(nc *nats.Conn, cfg WriterConfig) (*Writer, error) {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 4096
	}
	if cfg.StallWait <= 0 {
		cfg.StallWait = 50 * time.Millisecond
	}
	w := &Writer{cfg: cfg, onRes: cfg.OnResult}
	if w.onRes == nil {
		w.onRes = func(string, error) {}
	}
	// A store that refuses every write must not write a log line per record.
	w.log = cfg.Logger.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Minute})
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) { w.onRes(kindOf(m.Subject), nil) }),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) { w.failed(kindOf(m.Subject), err) }),
	)
	if err != nil {
		return nil, fmt.Errorf("history writer: %w", err)
	}
	w.js = js
	return w, nil
}

func kindOf(subject string) string {
	switch {
	case strings.HasPrefix(subject, "sengo.refs."):
		return "ref"
	case strings.HasPrefix(subject, "sengo.reconcile."):
		return "reconciliation"
	}
	return "attempt"
}

func (w *Writer) failed(kind string, err error) {
	w.onRes(kind, err)
	w.log.Warn().Err(err).Str("kind", kind).Msg("history record not stored; the delivery it describes is not affected")
}

// Attempt records one delivery attempt. It never blocks longer than StallWait.
func (w *Writer) Attempt(a Attempt) {
	if w == nil {
		return
	}
	b, _ := json.Marshal(a)
	w.publish("attempt", &nats.Msg{Subject: AttemptSubject(a.Endpoint, a.EventID), Data: b}, StreamAttempts)
}

// Ref records that merchantRef names transactionID in project.
func (w *Writer) Ref(r Ref) {
	if w == nil {
		return
	}
	b, _ := json.Marshal(r)
	w.publish("ref", &nats.Msg{Subject: RefSubject(r.Project, r.MerchantRef, r.TransactionID), Data: b}, StreamRefs)
}

// Reconciliation records one project's reconciliation run.
func (w *Writer) Reconciliation(r Reconciliation) {
	if w == nil {
		return
	}
	if r.Found == nil {
		r.Found = []Found{}
	}
	b, _ := json.Marshal(r)
	w.publish("reconciliation", &nats.Msg{Subject: "sengo.reconcile." + r.Project, Data: b}, StreamReconcile)
}

// Reconciliations returns the latest runs (of project, or every project),
// newest first, at most limit.
func Reconciliations(ctx context.Context, js jetstream.JetStream, project string, limit int) ([]Reconciliation, error) {
	limit = clamp(limit)
	subject := SubjectsReconcile
	if project != "" {
		subject = "sengo.reconcile." + project
	}
	st, err := js.Stream(ctx, StreamReconcile)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []Reconciliation
	if info.State.Msgs == 0 {
		return []Reconciliation{}, nil
	}
	// Runs are few (a few per project per hour): read the newest window
	// of the stream and keep the matching ones.
	from := info.State.FirstSeq
	if span := uint64(limit) * 64; info.State.LastSeq > span && info.State.LastSeq-span > from {
		from = info.State.LastSeq - span
	}
	err = stream.ScanFrom(ctx, js, StreamReconcile, []string{subject}, stream.From{Seq: from}, func(m jetstream.Msg, _ *jetstream.MsgMetadata) (bool, error) {
		var r Reconciliation
		if json.Unmarshal(m.Data(), &r) == nil {
			out = append(out, r)
		}
		return true, nil
	}, nil)
	slices.Reverse(out)
	if len(out) > limit {
		out = out[:limit]
	}
	if out == nil {
		out = []Reconciliation{}
	}
	return out, err
}

func (w *Writer) publish(kind string, m *nats.Msg, stream string) {
	if _, err := w.js.PublishMsgAsync(m, jetstream.WithExpectStream(stream), jetstream.WithStallWait(w.cfg.StallWait)); err != nil {
		w.failed(kind, err)
	}
}

// Flush waits until every record written so far is stored or failed.
func (w *Writer) Flush(ctx context.Context) error {
	if w == nil {
		return nil
	}
	select {
	case <-w.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// MaxRead bounds how many records one read returns.
const MaxRead = 500

// Attempts returns the attempts of one event to every endpoint, oldest
// first, at most limit (≤ MaxRead); more reports that some were left out.
func Attempts(ctx context.Context, js jetstream.JetStream, eventID string, limit int) (out []Attempt, more bool, err error) {
	if eventID == "" {
		return nil, false, errors.New("bad event id")
	}
	limit = clamp(limit)
	err = stream.ScanFrom(ctx, js, StreamAttempts, []string{"sengo.attempts.*." + eventToken(eventID)}, stream.From{}, func(m jetstream.Msg, _ *jetstream.MsgMetadata) (bool, error) {
		if len(out) == limit {
			more = true
			return false, nil
		}
		var a Attempt
		if err := json.Unmarshal(m.Data(), &a); err != nil || a.EventID != eventID {
			return true, nil // not ours to fail a read over; another id under the same hash
		}
		out = append(out, a)
		return true, nil
	}, nil)
	return out, more, err
}

// Lookup returns the transactions merchantRef names in project, at most
// limit. First one batched direct get of the last message per subject
// under the merchantRef's prefix (each pair is its own subject, kept
// once): the server answers from its subject index, with no consumer and
// no scan. The server refuses that get when more than 1,024 subjects
// match, and the client library reads some failures (a timeout) as "no
// messages" and ends a batch cut short as if it were complete, so when it
// fails, falls short or finds nothing the lookup scans the prefix with a
// consumer, as before: a miss costs the scan too.
func Lookup(ctx context.Context, js jetstream.JetStream, project, merchantRef string, limit int) ([]Ref, error) {
	limit = clamp(limit)
	keep := func(out []Ref, data []byte) ([]Ref, bool) {
		var r Ref
		if err := json.Unmarshal(data, &r); err != nil || r.MerchantRef != merchantRef || r.Project != project {
			return out, true // a hash collision or not ours
		}
		out = append(out, r)
		return out, len(out) < limit
	}
	var out []Ref
	if msgs, err := jetstreamext.GetLastMsgsFor(ctx, js, StreamRefs, []string{refPrefix(project, merchantRef) + ".*"}, jetstreamext.GetLastMsgsBatchSize(limit)); err == nil {
		// Complete only when the last match arrived (each message says how
		// many follow it, one fewer each time) or limit were kept: the
		// client library ends a batch its deadline cuts short, or whose
		// messages a replaced connection lost, quietly, as if it were all.
		complete, seen, left := false, false, uint64(0)
		for m, err := range msgs {
			if err != nil {
				break
			}
			after, err := strconv.ParseUint(m.Header.Get(stream.NumPendingHeader), 10, 64)
			if err != nil || seen && after+1 != left {
				break
			}
			seen, left = true, after
			var more bool
			out, more = keep(out, m.Data)
			afterRef(ctx)
			if !more || after == 0 {
				complete = true
				break
			}
		}
		if complete && len(out) > 0 {
			return out, nil
		}
		out = nil // failed or cut short: the scan below decides
	}
	err := stream.ScanFrom(ctx, js, StreamRefs, []string{refPrefix(project, merchantRef) + ".*"}, stream.From{}, func(m jetstream.Msg, _ *jetstream.MsgMetadata) (bool, error) {
		var more bool
		out, more = keep(out, m.Data())
		return more, nil
	}, nil)
	return out, err
}

// afterRef is called after each message of Lookup's batched get (tests:
// a deadline that passes mid-batch).
var afterRef = func(context.Context) {}

func clamp(limit int) int {
	if limit <= 0 || limit > MaxRead {
		return MaxRead
	}
	return limit
}
