package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
	"github.com/sengo-relay/sengo-relay/stream"
	"github.com/sengo-relay/sengo-relay/verify"
)

const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

func testSpec() stream.Spec {
	l := stream.Limits{MaxAge: time.Hour, Duplicates: time.Minute}
	return stream.Spec{
		Replicas: 1, Storage: jetstream.FileStorage,
		Streams: []stream.StreamSpec{
			{Name: event.StreamEvents, Subjects: []string{event.SubjectsEvents}, Limits: l},
			{Name: event.StreamDLQ, Subjects: []string{event.SubjectsDLQ}, Limits: l},
			{Name: event.StreamReplay, Subjects: []string{event.SubjectsReplay}, Limits: l},
			{Name: history.StreamAttempts, Subjects: []string{history.SubjectsAttempts}, Limits: l},
		},
		Buckets: []stream.BucketSpec{{Name: event.BucketDelivery, History: 1}},
	}
}

// attempt is one request a consumer received.
type attempt struct {
	At     time.Time
	Header http.Header
	Body   []byte
}

// consumer is an httptest server that answers with a script and records
// every attempt.
type consumer struct {
	*httptest.Server
	mu       sync.Mutex
	attempts []attempt
	answer   func(n int, r *http.Request, w http.ResponseWriter) // n: 1-based attempt number
	arrived  chan struct{}
}

func newConsumer(t *testing.T, answer func(n int, r *http.Request, w http.ResponseWriter)) *consumer {
	c := &consumer{answer: answer, arrived: make(chan struct{}, 1000)}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.attempts = append(c.attempts, attempt{At: time.Now(), Header: r.Header.Clone(), Body: body})
		n := len(c.attempts)
		c.mu.Unlock()
		c.answer(n, r, w)
		c.arrived <- struct{}{}
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *consumer) got() []attempt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]attempt(nil), c.attempts...)
}

// status answers the given statuses in order, then 200.
func status(codes ...int) func(int, *http.Request, http.ResponseWriter) {
	return func(n int, _ *http.Request, w http.ResponseWriter) {
		if n <= len(codes) {
			w.WriteHeader(codes[n-1])
			fmt.Fprintf(w, "answer %d", codes[n-1])
			return
		}
		w.WriteHeader(200)
	}
}

type harness struct {
	t       *testing.T
	nats    *natstest.Server
	js      jetstream.JetStream
	metrics *Metrics
	logs    *syncbuf.Buffer
	durable Durability       // waited on by the workers start runs; nil: none
	history *history.Writer  // given to the workers start runs; nil: none
	now     func() time.Time // the clock of the workers start runs; nil: time.Now

	mu        sync.Mutex
	published []stored // by publish, in order
}

// stored is an event publish stored.
type stored struct {
	subject string
	seq     uint64
}

// newHarness gives a test a store of its own (and its own metrics), so
// tests can run beside each other. The long ones that mostly wait (for
// rate-limit turns, ack waits, expiries) call t.Parallel: one after
// another they made this package 8 of the -race pass's 12 minutes. A test
// that sets one of the package's variables for tests (holdRecheck,
// replayTurnMax, beatEvery, withStaleWaits...) must not: Go runs the
// parallel tests after every other, so they read those at their
// defaults, and -race reports a parallel test that writes one.
func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	if err := stream.Provision(context.Background(), js, testSpec()); err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, nats: srv, js: js, metrics: NewMetrics(prometheus.NewRegistry()), logs: &syncbuf.Buffer{}}
}

// endpoint returns a test endpoint for url with a short schedule.
func (h *harness) endpoint(name, url string, schedule ...time.Duration) Endpoint {
	k, _ := verify.ParseWebhookSecret(secretA)
	if schedule == nil {
		schedule = []time.Duration{20 * time.Millisecond, 40 * time.Millisecond}
	}
	return Endpoint{
		Name: name, URL: url, Keys: []verify.WebhookKey{k}, FilterSubjects: []string{"sengo.events.>"},
		Timeout: 2 * time.Second, Concurrency: 4, Schedule: schedule, Jitter: 0, RetryAfterMax: time.Hour,
		DeliverFrom: "all", Breaker: BreakerPolicy{Failures: 0, ProbeInitial: 50 * time.Millisecond, ProbeMax: 200 * time.Millisecond},
	}
}

// start runs a worker for ep until the test ends.
func (h *harness) start(ep Endpoint) *Worker {
	h.t.Helper()
	return h.run(h.worker(ep))
}

// worker makes the worker of ep (its consumers too) without running it.
func (h *harness) worker(ep Endpoint) *Worker {
	h.t.Helper()
	w, err := NewWorker(context.Background(), WorkerConfig{
		Endpoint: ep, JetStream: h.js, Durable: h.durable, History: h.history, UserAgent: "sengo-relay/test", Metrics: h.metrics,
		Logger: zerolog.New(h.logs), Now: h.now,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return w
}

// run runs w until the test ends.
func (h *harness) run(w *Worker) *Worker {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	h.t.Cleanup(func() { cancel(); <-done })
	return w
}

// remakeDLQ deletes SENGO_DLQ and provisions it again, as an operator
// clearing it does: its sequences start again.
func (h *harness) remakeDLQ() {
	h.t.Helper()
	if err := h.js.DeleteStream(h.t.Context(), event.StreamDLQ); err != nil {
		h.t.Fatal(err)
	}
	if err := stream.Provision(h.t.Context(), h.js, testSpec()); err != nil {
		h.t.Fatal(err)
	}
}

// publish stores an event for transaction txID with status s (and the
// previous status, if any) and returns it.
func (h *harness) publish(txID string, s event.Status, prev event.Status) event.Event {
	h.t.Helper()
	var p *event.Status
	if prev != "" {
		p = &prev
	}
	ev := event.Event{
		SpecVersion: "1.0", ID: event.ID("main", txID, s), Source: "sengo/main", Type: event.Type(s),
		Subject: "REF-" + txID, Time: time.Now().UTC(), DataContentType: "application/json",
		Data: event.Data{TransactionID: txID, MerchantRef: "REF-" + txID, Status: s, PreviousStatus: p,
			Product: event.ProductRetail, Channel: "alfamart", Amount: 1000, TotalAmount: 1000, Currency: "IDR", Raw: json.RawMessage(`{}`)},
	}
	b, err := event.Marshal(ev)
	if err != nil {
		h.t.Fatal(err)
	}
	subject := event.EventSubject("main", ev.Data.Product, s)
	ack, err := h.js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Data: b}, jetstream.WithMsgID(ev.ID))
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.published = append(h.published, stored{subject, ack.Sequence})
	h.mu.Unlock()
	return ev
}

// deadLetters reads SENGO_DLQ.
func (h *harness) deadLetters() []DeadLetter {
	h.t.Helper()
	var out []DeadLetter
	for _, m := range natstest.Messages(h.t, h.js, event.StreamDLQ) {
		var d DeadLetter
		if err := json.Unmarshal(m.Data, &d); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// pendingZero reports whether the worker's live consumer has nothing left.
// settled reports that w has nothing left to do: nothing pending on its
// consumers, and every event publish stored that w's filter takes
// delivered to it. (A consumer's count of pending messages lags a
// publish: right after one it can say 0 before the message is delivered,
// and a test that took that for done failed now and then.)
func (h *harness) settled(w *Worker) bool {
	live, replay, _, err := w.Pending(context.Background())
	if err != nil || live != 0 || replay != 0 {
		return false
	}
	var last uint64
	h.mu.Lock()
	for _, p := range h.published {
		if slices.ContainsFunc(w.ep.FilterSubjects, func(f string) bool { return subjectMatches(f, p.subject) }) {
			last = max(last, p.seq)
		}
	}
	h.mu.Unlock()
	if last == 0 {
		return true
	}
	info, err := w.live.Info(context.Background())
	return err == nil && info.Delivered.Stream >= last && info.NumAckPending == 0
}

// subjectMatches reports whether NATS filter f (with * and >) takes subject.
func subjectMatches(f, subject string) bool {
	ft, st := strings.Split(f, "."), strings.Split(subject, ".")
	for i, t := range ft {
		switch {
		case t == ">":
			return len(st) > i
		case i >= len(st) || t != "*" && t != st[i]:
			return false
		}
	}
	return len(ft) == len(st)
}

// skewed returns a clock ahead of time.Now by what ahead holds.
func skewed(ahead *atomic.Int64) func() time.Time {
	return func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
}

func eventually(t *testing.T, what string, cond func() bool) { t.Helper(); poll.Until(t, what, cond) }
