package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
	"github.com/sengo-relay/sengo-relay/stream"
)

// harness is a receiver and (optionally) intake on a real JetStream.
type harness struct {
	t       testing.TB
	nats    *natstest.Server
	js      jetstream.JetStream
	http    *httptest.Server
	app     http.Handler
	metrics *Metrics
	logs    *syncbuf.Buffer
	cfg     Config
	icfg    IntakeConfig // what startIntake runs
}

type option func(*Config, *IntakeConfig)

func withProjects(ps ...Project) option {
	return func(c *Config, _ *IntakeConfig) { c.Projects = ps }
}

func testSpec() stream.Spec {
	l := stream.Limits{MaxAge: time.Hour, Duplicates: time.Minute}
	return stream.Spec{
		Replicas: 1,
		Storage:  jetstream.FileStorage,
		Streams: []stream.StreamSpec{
			{Name: event.StreamInbox, Subjects: []string{event.SubjectsInbox}, Limits: l},
			{Name: event.StreamEvents, Subjects: []string{event.SubjectsEvents}, Limits: l},
			{Name: event.StreamQuarantine, Subjects: []string{event.SubjectsQuarantine}, Limits: l},
			{Name: history.StreamRefs, Subjects: []string{history.SubjectsRefs}, Limits: stream.Limits{MaxAge: time.Hour, Duplicates: time.Minute, PerSubject: 1}},
		},
		Buckets: []stream.BucketSpec{{Name: event.BucketTx, History: 1}},
	}
}

// newHarness starts NATS, provisions the streams and serves the receiver
// over httptest. With runIntake, intake workers run until the test ends.
// Each test has its own store, metrics and SenGo, so tests call t.Parallel
// (they mostly wait: one after another, -short took 87 s), except those
// that set one of the package's variables for tests (intakeInProgressEvery,
// testKillAfterDecision, maxQuarantineListBytes): Go runs the parallel
// tests after the others, which so read them at their defaults.
func newHarness(t testing.TB, runIntake bool, opts ...option) *harness {
	t.Helper()
	return newHarnessOn(t, natstest.Start(t), runIntake, opts...)
}

// newHarnessOn is newHarness on a server the test started.
func newHarnessOn(t testing.TB, srv *natstest.Server, runIntake bool, opts ...option) *harness {
	t.Helper()
	_, js := srv.Connect(t)
	if err := stream.Provision(context.Background(), js, testSpec()); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel)
	reg := prometheus.NewRegistry()
	h := &harness{t: t, nats: srv, js: js, metrics: NewMetrics(reg), logs: logs}
	h.cfg = Config{
		Projects:       []Project{{Name: "main"}},
		JetStream:      js,
		MaxBodyBytes:   64 << 10,
		PublishTimeout: 5 * time.Second, // a loaded CI machine stalls the store for more than a second at times
		RetryAfter:     3 * time.Second,
		Metrics:        h.metrics,
		Gatherer:       reg,
		Logger:         log,
	}
	icfg := IntakeConfig{
		JetStream: js, Workers: 8, AckWait: 10 * time.Second, MaxAckPending: 256,
		RetryInitial: 50 * time.Millisecond, RetryMax: time.Second, Metrics: h.metrics, Logger: log,
	}
	for _, o := range opts {
		o(&h.cfg, &icfg)
	}
	if icfg.Projects == nil {
		for _, p := range h.cfg.Projects {
			icfg.Projects = append(icfg.Projects, p.Name)
		}
	}
	h.icfg = icfg
	h.serve()
	if runIntake {
		h.startIntake()
	}
	return h
}

// startIntake runs intake workers until the test ends.
func (h *harness) startIntake() {
	h.t.Helper()
	in, err := NewIntake(context.Background(), h.icfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = in.Run(ctx, 5*time.Second) }()
	h.t.Cleanup(func() { cancel(); <-done })
}

// serve starts the receiver of h.cfg over httptest.
func (h *harness) serve() {
	h.app = New(h.cfg)
	h.http = httptest.NewServer(h.app)
	h.t.Cleanup(h.http.Close)
}

// post sends body to path with a JSON content type and extra headers.
func (h *harness) post(path string, body []byte, headers ...string) (*http.Response, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.http.URL+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return h.do(req)
}

func (h *harness) do(req *http.Request) (*http.Response, map[string]any) {
	h.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp, body
}

// msgs returns how many messages a stream holds.
func (h *harness) msgs(name string) uint64 {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), name)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Msgs
}

// events reads every message of SENGO_EVENTS in stream order.
func (h *harness) events() []event.Event {
	h.t.Helper()
	return readEvents(h.t, h.js)
}

func readEvents(t testing.TB, js jetstream.JetStream) []event.Event {
	t.Helper()
	var out []event.Event
	for _, m := range natstest.Messages(t, js, event.StreamEvents) {
		ev, err := event.Unmarshal(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get(jetstream.MsgIDHeader); got != ev.ID {
			t.Fatalf("event %s stored with Nats-Msg-Id %q", ev.ID, got)
		}
		out = append(out, ev)
	}
	return out
}

func eventually(t testing.TB, what string, cond func() bool) { t.Helper(); poll.Until(t, what, cond) }

// intakeIdle reports whether intake has finished every message the inbox
// holds. It compares the consumer's ack floor with the stream's last
// sequence: a consumer's pending count is updated asynchronously after a
// publish and can read 0 before intake has even seen the message.
func (h *harness) intakeIdle() bool {
	ctx := context.Background()
	s, err := h.js.Stream(ctx, event.StreamInbox)
	if err != nil {
		return false
	}
	si, err := s.Info(ctx)
	if err != nil {
		return false
	}
	cons, err := h.js.Consumer(ctx, event.StreamInbox, IntakeConsumer)
	if err != nil {
		return false
	}
	ci, err := cons.Info(ctx)
	return err == nil && ci.AckFloor.Stream >= si.State.LastSeq && ci.NumAckPending == 0
}

func (h *harness) intakeCount(project, outcome string) float64 {
	return testutil.ToFloat64(h.metrics.Intake.WithLabelValues(project, outcome))
}
