package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/receiver"
	"github.com/sengo-relay/sengo-relay/stream"
	"github.com/sengo-relay/sengo-relay/verify"
)

// Config of a benchmark run.
type Config struct {
	Concurrency int           // connections / goroutines of the closed-loop scenarios
	Duration    time.Duration // per scenario
	Payload     int           // callback body size in bytes (padded)
	Rate        int           // callbacks per second of the end-to-end and soak runs
	// EndpointRate is the fixed rate of the endpoint-latency scenario.
	EndpointRate int
	Deliveries   int           // events the dispatcher scenario delivers
	Soak         time.Duration // 0: no soak
	// Store: the embedded server (empty NATSURL) with SyncInterval/SyncAlways,
	// or an external server or cluster; Spec sets replicas and limits.
	NATSURL      string
	SyncInterval time.Duration
	SyncAlways   bool
	Spec         stream.Spec
	Progress     io.Writer // one line per finished scenario; may be nil
}

// Result is one row of the report.
type Result struct {
	Name       string  `json:"name"`
	PerSecond  float64 `json:"perSecond"`
	P50Millis  float64 `json:"p50Ms"`
	P99Millis  float64 `json:"p99Ms"`
	P999Millis float64 `json:"p999Ms"`
	Errors     int64   `json:"errors"`
	Note       string  `json:"note,omitempty"`
}

// SoakSample is one window of a soak run.
type SoakSample struct {
	At         time.Duration `json:"at"`
	RSSBytes   uint64        `json:"rssBytes"`
	Goroutines int           `json:"goroutines"`
	Delivered  int64         `json:"delivered"`
	P99Millis  float64       `json:"p99Ms"`
}

// Report is a whole run.
type Report struct {
	Machine      string             `json:"machine"`
	GoVersion    string             `json:"goVersion"`
	Config       map[string]string  `json:"config"`
	Results      []Result           `json:"results"`
	Ratios       map[string]float64 `json:"ratios"`
	PeakRSSBytes uint64             `json:"peakRssBytes"`
	Soak         []SoakSample       `json:"soak,omitempty"`
}

// Run executes every scenario in turn on a fresh store each.
func Run(ctx context.Context, cfg Config) (Report, error) {
	r := Report{
		Machine:   fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU()),
		GoVersion: runtime.Version(),
		Config: map[string]string{
			"concurrency": strconv.Itoa(cfg.Concurrency), "duration": cfg.Duration.String(), "endpointRate": strconv.Itoa(cfg.EndpointRate),
			"payload": strconv.Itoa(cfg.Payload), "rate": strconv.Itoa(cfg.Rate),
			"store": storeName(cfg), "replicas": strconv.Itoa(cfg.Spec.Replicas),
		},
		Ratios: map[string]float64{},
	}
	scenarios := []struct {
		name string
		run  func(context.Context, Config, jetstream.JetStream) (Result, error)
	}{
		{"raw JetStream sync publish", rawPublish},
		{"raw Echo handler (reads body)", rawEcho},
		{"relay callback endpoint", relayEndpoint},
		{"relay endpoint at a fixed rate (full relay running)", endpointAtRate},
		{"end to end: accepted → webhook received", endToEnd},
		{"dispatcher deliveries to a local consumer", deliveries},
	}
	for _, sc := range scenarios {
		js, done, err := openStore(ctx, cfg)
		if err != nil {
			return r, err
		}
		res, err := sc.run(ctx, cfg, js)
		done()
		if err != nil {
			return r, fmt.Errorf("%s: %w", sc.name, err)
		}
		res.Name = sc.name
		r.Results = append(r.Results, res)
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "bench: %-45s %10.0f/s  p50 %.2fms  p99 %.2fms\n", res.Name, res.PerSecond, res.P50Millis, res.P99Millis)
		}
	}
	if raw, ep := r.Results[0].PerSecond, r.Results[2].PerSecond; raw > 0 && ep > 0 {
		r.Ratios["endpoint / raw publish"] = ep / raw
	}
	if echoRate, ep := r.Results[1].PerSecond, r.Results[2].PerSecond; echoRate > 0 {
		r.Ratios["endpoint / raw Echo"] = ep / echoRate
	}
	if cfg.Soak > 0 {
		js, done, err := openStore(ctx, cfg)
		if err != nil {
			return r, err
		}
		r.Soak, err = soak(ctx, cfg, js)
		done()
		if err != nil {
			return r, err
		}
	}
	r.PeakRSSBytes = procStatus("VmHWM")
	return r, nil
}

func storeName(cfg Config) string {
	if cfg.NATSURL != "" {
		return "external " + cfg.NATSURL
	}
	switch {
	case cfg.SyncAlways:
		return "embedded, sync always"
	case cfg.SyncInterval > 0:
		return "embedded, sync " + cfg.SyncInterval.String()
	}
	return "embedded, default sync"
}

// openStore starts an embedded server (or connects to cfg.NATSURL and
// empties the relay's streams) and provisions cfg.Spec.
func openStore(ctx context.Context, cfg Config) (jetstream.JetStream, func(), error) {
	var nc *nats.Conn
	var emb *stream.Embedded
	var dir string
	var err error
	if cfg.NATSURL == "" {
		if dir, err = os.MkdirTemp("", "sengo-bench-"); err != nil {
			return nil, nil, err
		}
		emb, err = stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: dir, SyncInterval: cfg.SyncInterval, SyncAlways: cfg.SyncAlways, Logger: zerolog.Nop()})
		if err != nil {
			return nil, nil, err
		}
		nc, err = stream.Connect(stream.ConnectConfig{Name: "bench", Logger: zerolog.Nop()}, emb.ConnectOption())
	} else {
		nc, err = stream.Connect(stream.ConnectConfig{URL: cfg.NATSURL, Name: "bench", Logger: zerolog.Nop()})
	}
	if err != nil {
		return nil, nil, err
	}
	done := func() {
		nc.Close()
		if emb != nil {
			emb.Shutdown()
			os.RemoveAll(dir)
		}
	}
	js, _ := jetstream.New(nc)
	if err := stream.Provision(ctx, js, cfg.Spec); err != nil {
		done()
		return nil, nil, err
	}
	for _, s := range cfg.Spec.Streams {
		if st, err := js.Stream(ctx, s.Name); err == nil {
			_ = st.Purge(ctx)
		}
	}
	return js, done, nil
}

var seq atomic.Int64

// callback is a retail success callback padded to size bytes, with a fresh id.
func callback(size int) (string, []byte) {
	id := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), seq.Add(1))
	b := fmt.Appendf(nil, `{"responseCode":200,"responseMessage":"success","responseData":{"id":%q,"merchantRef":"B-%s","status":"success","feePayer":"customer","amount":10000,"fee":85,"totalAmount":10085,"expiredDate":"2025-03-23T10:24:58+07:00","paidDate":"2025-03-23T10:05:12+07:00","retail":{"viewName":"Toko","channel":"alfamart","paymentCode":"12345678901"}`, id, id)
	if pad := size - len(b) - 12; pad > 0 {
		b = append(b, `,"pad":"`...)
		b = append(b, strings.Repeat("x", pad)...)
		b = append(b, '"')
	}
	return id, append(b, "}}"...)
}

func result(s sample, note string) Result {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return Result{PerSecond: s.rate(), P50Millis: ms(s.pct(0.5)), P99Millis: ms(s.pct(0.99)), P999Millis: ms(s.pct(0.999)), Errors: s.errors, Note: note}
}

func rawPublish(ctx context.Context, cfg Config, js jetstream.JetStream) (Result, error) {
	s := closedLoop(ctx, cfg.Concurrency, cfg.Duration, func(ctx context.Context) error {
		id, body := callback(cfg.Payload)
		_, err := js.PublishMsg(ctx, &nats.Msg{Subject: event.InboxSubject("bench"), Data: body},
			jetstream.WithMsgID(event.ID("bench", id, event.StatusSuccess)), jetstream.WithExpectStream(event.StreamInbox))
		return err
	})
	return result(s, "the store's limit"), nil
}

func httpLoad(ctx context.Context, cfg Config, url string) sample {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency, MaxConnsPerHost: cfg.Concurrency}}
	defer client.CloseIdleConnections()
	return closedLoop(ctx, cfg.Concurrency, cfg.Duration, func(ctx context.Context) error {
		_, body := callback(cfg.Payload)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

func rawEcho(ctx context.Context, cfg Config, _ jetstream.JetStream) (Result, error) {
	e := echo.New()
	e.POST("/", func(c echo.Context) error {
		_, _ = io.Copy(io.Discard, c.Request().Body)
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	return result(httpLoad(ctx, cfg, srv.URL+"/"), "the HTTP limit (loopback, same process)"), nil
}

// relay builds the receiver on js.
func relay(js jetstream.JetStream, m *receiver.Metrics) http.Handler {
	return receiver.New(receiver.Config{
		Projects: []receiver.Project{{Name: "bench"}}, JetStream: js, MaxBodyBytes: 1 << 20, MaxInFlight: 4096,
		PublishTimeout: 5 * time.Second, RetryAfter: time.Second, Metrics: m, Logger: zerolog.Nop(),
	})
}

func relayEndpoint(ctx context.Context, cfg Config, js jetstream.JetStream) (Result, error) {
	srv := httptest.NewServer(relay(js, receiver.NewMetrics(prometheus.NewRegistry())))
	defer srv.Close()
	return result(httpLoad(ctx, cfg, srv.URL+"/callbacks/sengo/bench"), "every check, parse, publish and PubAck"), nil
}

// pipeline runs intake and one webhook endpoint pointing at consumer.
func pipeline(ctx context.Context, js jetstream.JetStream, consumerURL string, m *receiver.Metrics) (func(), error) {
	in, err := receiver.NewIntake(ctx, receiver.IntakeConfig{JetStream: js, Workers: 16, AckWait: 30 * time.Second, MaxAckPending: 1024,
		RetryInitial: 100 * time.Millisecond, RetryMax: time.Second, Metrics: m, Logger: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	w, err := newWorker(ctx, js, consumerURL, 32)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = in.Run(rctx, 5*time.Second) }()
	go func() { defer wg.Done(); w.Run(rctx) }()
	return func() { cancel(); wg.Wait() }, nil
}

func newWorker(ctx context.Context, js jetstream.JetStream, url string, conc int) (*dispatcher.Worker, error) {
	k, _ := verify.ParseWebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	return dispatcher.NewWorker(ctx, dispatcher.WorkerConfig{
		Endpoint: dispatcher.Endpoint{Name: "bench", URL: url, Keys: []verify.WebhookKey{k}, FilterSubjects: []string{event.SubjectsEvents},
			Timeout: 5 * time.Second, Concurrency: conc, Schedule: []time.Duration{time.Second}, RetryAfterMax: time.Second, DeliverFrom: "all"},
		JetStream: js, UserAgent: "sengo-relay/bench", Metrics: dispatcher.NewMetrics(prometheus.NewRegistry()), Logger: zerolog.Nop(),
	})
}

// runningRelay is the whole relay (receiver, intake, one webhook endpoint)
// with a consumer that records callback-to-webhook latencies.
type runningRelay struct {
	latencies latencies
	srv       *httptest.Server // the receiver
	consumer  *httptest.Server
	stop      func()
}

func startRelay(ctx context.Context, js jetstream.JetStream) (*runningRelay, error) {
	r := &runningRelay{}
	r.consumer = httptest.NewServer(r.latencies.handler())
	m := receiver.NewMetrics(prometheus.NewRegistry())
	stop, err := pipeline(ctx, js, r.consumer.URL, m)
	if err != nil {
		r.consumer.Close()
		return nil, err
	}
	r.stop = stop
	r.srv = httptest.NewServer(relay(js, m))
	return r, nil
}

func (r *runningRelay) close() {
	r.srv.Close()
	r.stop()
	r.consumer.Close()
}

// latencies records callback-accepted → webhook-received per event.
type latencies struct {
	mu  sync.Mutex
	lat []time.Duration
	n   atomic.Int64
}

func (l *latencies) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		b, _ := io.ReadAll(r.Body)
		if ev, err := event.Unmarshal(b); err == nil {
			l.mu.Lock()
			l.lat = append(l.lat, now.Sub(ev.Time)) // ev.Time: when the receiver accepted it
			l.mu.Unlock()
			l.n.Add(1)
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func (l *latencies) take() sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := sample{lat: l.lat, ops: int64(len(l.lat))}
	l.lat = nil
	sortDurations(s.lat)
	return s
}

func endToEnd(ctx context.Context, cfg Config, js jetstream.JetStream) (Result, error) {
	rl, err := startRelay(ctx, js)
	if err != nil {
		return Result{}, err
	}
	defer rl.close()
	l, srv := &rl.latencies, rl.srv
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var sent, failed atomic.Int64
	openLoop(ctx, cfg.Rate, cfg.Duration, func(int) {
		_, body := callback(cfg.Payload)
		resp, err := client.Post(srv.URL+"/callbacks/sengo/bench", "application/json", bytes.NewReader(body))
		if err != nil || resp.StatusCode != 200 {
			failed.Add(1)
		} else {
			sent.Add(1)
		}
		if resp != nil {
			resp.Body.Close()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for l.n.Load() < sent.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // draining the last deliveries
	}
	s := l.take()
	s.elapsed, s.errors = cfg.Duration, failed.Load()+sent.Load()-s.ops
	res := result(s, fmt.Sprintf("at a fixed %d callbacks/s", cfg.Rate))
	res.PerSecond = float64(cfg.Rate)
	return res, nil
}

// endpointAtRate offers callbacks at cfg.EndpointRate (open loop) to the
// full relay (intake and a webhook endpoint running) and measures each
// callback's answer time as the caller sees it.
func endpointAtRate(ctx context.Context, cfg Config, js jetstream.JetStream) (Result, error) {
	rl, err := startRelay(ctx, js)
	if err != nil {
		return Result{}, err
	}
	defer rl.close()
	srv := rl.srv
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	openLoop(ctx, cfg.EndpointRate, cfg.Duration, func(int) {
		_, body := callback(cfg.Payload)
		t0 := time.Now()
		resp, err := client.Post(srv.URL+"/callbacks/sengo/bench", "application/json", bytes.NewReader(body))
		d := time.Since(t0)
		if err != nil {
			failed.Add(1)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			failed.Add(1)
			return
		}
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
	})
	slices.Sort(lat)
	res := result(sample{ops: int64(len(lat)), errors: failed.Load(), elapsed: cfg.Duration, lat: lat}, fmt.Sprintf("callbacks offered at %d/s; answer time as SenGo sees it", cfg.EndpointRate))
	res.PerSecond = float64(len(lat)) / cfg.Duration.Seconds()
	return res, nil
}

func deliveries(ctx context.Context, cfg Config, js jetstream.JetStream) (Result, error) {
	for i := range cfg.Deliveries {
		body := fmt.Appendf(nil, `{"specversion":"1.0","id":"evt_bench_%d","source":"sengo/bench","type":"id.sengo.transaction.success","time":"2025-03-23T03:05:13Z","data":{"transactionId":"t%d","status":"success","raw":{}}}`, i, i)
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: event.EventSubject("bench", event.ProductRetail, event.StatusSuccess), Data: body}); err != nil {
			return Result{}, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		return Result{}, fmt.Errorf("prefill timed out")
	}
	var got atomic.Int64
	all := make(chan struct{})
	consumer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
		if got.Add(1) == int64(cfg.Deliveries) {
			close(all)
		}
	}))
	defer consumer.Close()
	w, err := newWorker(ctx, js, consumer.URL, 32)
	if err != nil {
		return Result{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); w.Run(rctx) }()
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
	}
	elapsed := time.Since(start)
	cancel()
	<-done
	return Result{PerSecond: float64(got.Load()) / elapsed.Seconds(), Note: fmt.Sprintf("%d events, concurrency 32, consumer answers 200 at once", got.Load())}, nil
}

// soak runs the end-to-end path at cfg.Rate for cfg.Soak and samples
// memory, goroutines and latency every tenth of it.
func soak(ctx context.Context, cfg Config, js jetstream.JetStream) ([]SoakSample, error) {
	rl, err := startRelay(ctx, js)
	if err != nil {
		return nil, err
	}
	defer rl.close()
	l, srv := &rl.latencies, rl.srv
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	window := cfg.Soak / 10
	var out []SoakSample
	start := time.Now()
	sampler := time.NewTicker(window)
	defer sampler.Stop()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		openLoop(ctx, cfg.Rate, cfg.Soak, func(int) {
			_, body := callback(cfg.Payload)
			if resp, err := client.Post(srv.URL+"/callbacks/sengo/bench", "application/json", bytes.NewReader(body)); err == nil {
				resp.Body.Close()
			}
		})
	}()
	for {
		select {
		case <-loadDone:
			return out, nil
		case <-sampler.C:
			s := l.take()
			smp := SoakSample{At: time.Since(start).Round(time.Second), RSSBytes: procStatus("VmRSS"), Goroutines: runtime.NumGoroutine(), Delivered: l.n.Load(), P99Millis: float64(s.pct(0.99).Microseconds()) / 1000}
			out = append(out, smp)
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "soak %6s: rss %4d MiB, %5d goroutines, %8d delivered, p99 %.2fms\n", smp.At, smp.RSSBytes>>20, smp.Goroutines, smp.Delivered, smp.P99Millis)
			}
		}
	}
}

// procStatus reads a kB value from /proc/self/status (0 where unavailable).
func procStatus(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}

func sortDurations(d []time.Duration) {
	slices.Sort(d)
}
