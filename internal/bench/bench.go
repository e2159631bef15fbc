package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
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
	"github.com/sengo-relay/sengo-relay/history"
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
	Deliveries   int // events the dispatcher scenario delivers
	// SustainWindow is how long each probe of the sustained-rate search
	// runs (default 30s).
	SustainWindow time.Duration
	Soak          time.Duration // 0: no soak
	// Scenarios to run, by key (see ScenarioKeys); empty: all.
	Scenarios []string
	// Store: the embedded server (empty NATSURL) with SyncInterval/SyncAlways,
	// or an external server or cluster; Spec sets replicas and limits.
	NATSURL      string
	SyncInterval time.Duration
	SyncAlways   bool
	// GroupCommit, with SyncAlways: the relay's group commit (the server
	// fsyncs on its own only every 10 s; every acknowledgement the relay
	// gives waits for a shared syncfs), as the relay runs by default.
	// Without it, nats-server fsyncs every write itself.
	GroupCommit bool
	// Burst is how many callbacks the after-burst scenario offers at once
	// (default 66,000).
	Burst int
	// ConsoleEvents is how many transactions the console-pages scenario
	// stores before timing pages (default 1,000,000).
	ConsoleEvents int
	// NoHistory runs the relay without its history records (attempts,
	// merchantRef index), to show what they cost.
	NoHistory bool
	Spec      stream.Spec
	Progress  io.Writer // one line per finished scenario; may be nil
	// WipeStore lets a run against NATSURL use a store that already holds
	// the relay's streams or buckets: every scenario purges them and
	// resets their limits to Spec's. Without it such a store is refused
	// (it may be production's).
	WipeStore bool
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
	// PeakRSSBytes is the process's peak RSS during this scenario alone
	// (0 where the kernel cannot reset the peak).
	PeakRSSBytes uint64 `json:"peakRssBytes,omitempty"`
	// ClientMsgsPerOp and JSAPIPerOp are the embedded server's own counts
	// per notification (end to end only): every message the relay sent it
	// (publishes, KV gets and puts, pulls, acks: each one a round trip or
	// a write), and of those the JetStream API requests ($JS.API; KV direct
	// gets and stream publishes are not API requests). Idle pulls during
	// the run are included.
	ClientMsgsPerOp float64 `json:"clientMsgsPerOp,omitempty"`
	JSAPIPerOp      float64 `json:"jsApiPerOp,omitempty"`
	// FSyncsPerOp and WritersPerFSync: with group commit, the fsyncs per
	// operation (callback, or notification end to end) and how many waits
	// for durability each fsync served on average.
	FSyncsPerOp     float64 `json:"fsyncsPerOp,omitempty"`
	WritersPerFSync float64 `json:"writersPerFsync,omitempty"`
}

// SoakSample is one window of a soak run.
type SoakSample struct {
	At       time.Duration `json:"at"`
	RSSBytes uint64        `json:"rssBytes"`
	// HeapLiveBytes is the live heap as of the last GC: what is retained,
	// without the garbage RSS also holds.
	HeapLiveBytes uint64  `json:"heapLiveBytes"`
	Goroutines    int     `json:"goroutines"`
	Delivered     int64   `json:"delivered"`
	P99Millis     float64 `json:"p99Ms"`
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
	if cfg.NATSURL != "" && !cfg.WipeStore {
		if err := refuseOccupied(ctx, cfg); err != nil {
			return r, err
		}
	}
	byKey := map[string]float64{}
	var peak uint64 // VmHWM is reset between scenarios
	for _, sc := range scenarios {
		if len(cfg.Scenarios) > 0 && !slices.Contains(cfg.Scenarios, sc.key) {
			continue
		}
		resetPeak := resetPeakRSS()
		st, done := store{}, func() {}
		if !sc.ownStores {
			var err error
			if st, done, err = openStore(ctx, cfg); err != nil {
				return r, err
			}
		}
		var rows []Result
		var err error
		if sc.runMany != nil {
			rows, err = sc.runMany(ctx, cfg, st)
		} else {
			var res Result
			res, err = sc.run(ctx, cfg, st)
			res.Name = sc.name
			rows = []Result{res}
		}
		for i := range rows {
			if resetPeak {
				rows[i].PeakRSSBytes = procStatus("VmHWM")
			}
		}
		peak = max(peak, procStatus("VmHWM"))
		done()
		if err != nil {
			return r, fmt.Errorf("%s: %w", sc.name, err)
		}
		r.Results = append(r.Results, rows...)
		if len(rows) == 1 {
			byKey[sc.key] = rows[0].PerSecond
		}
		for _, res := range rows {
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "bench: %-45s %10.0f/s  p50 %.2fms  p99 %.2fms\n", res.Name, res.PerSecond, res.P50Millis, res.P99Millis)
			}
		}
	}
	if raw, ep := byKey["publish"], byKey["endpoint"]; raw > 0 && ep > 0 {
		r.Ratios["endpoint / raw publish"] = ep / raw
	}
	if echoRate, ep := byKey["echo"], byKey["endpoint"]; echoRate > 0 && ep > 0 {
		r.Ratios["endpoint / raw Echo"] = ep / echoRate
	}
	if both, ep := byKey["echo-publish"], byKey["endpoint"]; both > 0 && ep > 0 {
		r.Ratios["endpoint / raw Echo + publish"] = ep / both
	}
	if cfg.Soak > 0 {
		st, done, err := openStore(ctx, cfg)
		if err != nil {
			return r, err
		}
		r.Soak, err = soak(ctx, cfg, st)
		done()
		if err != nil {
			return r, err
		}
	}
	r.PeakRSSBytes = max(peak, procStatus("VmHWM"))
	return r, nil
}

// scenarios in the order they run; key names them in Config.Scenarios.
var scenarios = []struct {
	key, name string
	run       func(context.Context, Config, store) (Result, error)
	// runMany, instead of run, reports several rows.
	runMany   func(context.Context, Config, store) ([]Result, error)
	ownStores bool // opens a fresh store per probe; Run opens none for it
}{
	{key: "publish", name: "raw JetStream sync publish", run: rawPublish},
	{key: "echo", name: "raw Echo handler (reads body)", run: rawEcho},
	{key: "echo-publish", name: "raw Echo handler + sync publish", run: rawEchoPublish},
	{key: "endpoint", name: "relay callback endpoint", run: relayEndpoint},
	{key: "endpoint-rate", name: "relay endpoint at a fixed rate (full relay running)", run: endpointAtRate},
	{key: "e2e", name: "end to end: accepted → webhook received", run: endToEnd},
	{key: "deliveries", name: "dispatcher deliveries to a local consumer", run: deliveries},
	{key: "sustained", name: "pipeline sustained rate (callback → webhook)", run: sustained, ownStores: true},
	{key: "after-burst", name: "end to end at 200/s before and after a burst", runMany: afterBurst},
	{key: "console-load", name: "relay endpoint at a fixed rate, an operator using the console", run: consoleUnderLoad},
	{key: "console-pages", name: "console pages", runMany: consolePagesRun},
}

// ScenarioKeys lists the names Config.Scenarios accepts.
func ScenarioKeys() []string {
	keys := make([]string, len(scenarios))
	for i, sc := range scenarios {
		keys[i] = sc.key
	}
	return keys
}

func storeName(cfg Config) string {
	if cfg.NATSURL != "" {
		return "external " + verify.RedactServerURLs(cfg.NATSURL)
	}
	switch {
	case cfg.SyncAlways && cfg.GroupCommit:
		return "embedded, sync always, group commit"
	case cfg.SyncAlways:
		return "embedded, sync always, nats-server fsyncs each write"
	case cfg.SyncInterval > 0:
		return "embedded, sync " + cfg.SyncInterval.String()
	}
	return "embedded, default sync"
}

// store is a scenario's JetStream as the relay uses it: callbacks publish
// on a connection of their own, everything else shares the other.
type store struct {
	// js is intake's, the dispatcher's and the bench's own; callbacks the
	// receiver's; admin the console's (three connections, as serve has,
	// with the readers below).
	js, callbacks, admin jetstream.JetStream
	// readers are the console's connections for a page's concurrent
	// reads, as serve has.
	readers []jetstream.JetStream
	// stats reads the embedded server's counters (nil for an external one).
	stats func() (inMsgs, apiRequests uint64)
	// durable is the group commit (nil without it).
	durable *stream.GroupSync
	// history is the relay's history writer (nil with Config.NoHistory).
	history *history.Writer
}

// syncStats samples the group commit's counters of st.
type syncStats struct {
	st store
	s0 stream.GroupSyncStats
}

func (st store) syncStart() syncStats { return syncStats{st, st.durable.Stats()} }

// add puts the fsyncs since start, per op, into res.
func (s syncStats) add(res *Result, ops int64) {
	if s.st.durable == nil || ops <= 0 {
		return
	}
	s1 := s.st.durable.Stats()
	f, c := s1.FSyncs-s.s0.FSyncs, s1.Callers-s.s0.Callers
	res.FSyncsPerOp = float64(f) / float64(ops)
	if f > 0 {
		res.WritersPerFSync = float64(c) / float64(f)
	}
	var mean time.Duration
	if f > 0 {
		mean = (s1.Time - s.s0.Time) / time.Duration(f)
	}
	res.Note += fmt.Sprintf("; %.2f fsyncs per op, %.1f waits served per fsync, %s per fsync", res.FSyncsPerOp, res.WritersPerFSync, mean.Round(time.Microsecond))
}

// refuseOccupied fails when the store at cfg.NATSURL already holds one of
// the relay's streams or buckets: each scenario purges them and resets
// their limits, and "measure against this cluster" must never empty a
// production inbox of notifications SenGo was answered 200 for.
func refuseOccupied(ctx context.Context, cfg Config) error {
	nc, err := stream.Connect(stream.ConnectConfig{URL: cfg.NATSURL, Name: "bench/check", Logger: zerolog.Nop()})
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var found []string
	for _, s := range cfg.Spec.Streams {
		if _, err := js.Stream(ctx, s.Name); err == nil {
			found = append(found, s.Name)
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("look up stream %s: %w", s.Name, err)
		}
	}
	for _, b := range cfg.Spec.Buckets {
		if _, err := js.KeyValue(ctx, b.Name); err == nil {
			found = append(found, "KV "+b.Name)
		} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("look up bucket %s: %w", b.Name, err)
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("%w: %s holds %s; every scenario would purge them and reset their limits. Point --nats-url at a store of its own, or pass --wipe-store if emptying it is intended (a run leaves its streams behind: a second run against the same store needs it too)",
			ErrStoreInUse, storeName(cfg), strings.Join(found, ", "))
	}
	return nil
}

// ErrStoreInUse: the external store already holds the relay's streams.
var ErrStoreInUse = errors.New("the store is in use")

// openStore starts an embedded server (or connects to cfg.NATSURL and
// empties the relay's streams) and provisions cfg.Spec.
func openStore(ctx context.Context, cfg Config) (store, func(), error) {
	var nc, cnc, anc *nats.Conn
	var emb *stream.Embedded
	var gs *stream.GroupSync
	var dir string
	var err error
	if cfg.NATSURL == "" {
		if dir, err = os.MkdirTemp("", "sengo-bench-"); err != nil {
			return store{}, nil, err
		}
		interval, always := cfg.SyncInterval, cfg.SyncAlways
		if always && cfg.GroupCommit {
			if gs, err = stream.NewGroupSync(stream.GroupSyncConfig{Dir: dir}); err != nil {
				return store{}, nil, err
			}
			interval, always = 10*time.Second, false // as serve runs it
		}
		emb, err = stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: dir, SyncInterval: interval, SyncAlways: always, Logger: zerolog.Nop()})
		if err != nil {
			_ = gs.Close()
			return store{}, nil, err
		}
	}
	connect := func(name string, extra ...nats.Option) (*nats.Conn, error) {
		if emb != nil {
			extra = append(extra, emb.ConnectOption())
		}
		return stream.Connect(stream.ConnectConfig{URL: cfg.NATSURL, Name: name, Logger: zerolog.Nop()}, extra...)
	}
	if nc, err = connect("bench"); err == nil {
		if cnc, err = connect("bench/callbacks"); err != nil {
			nc.Close()
		} else if anc, err = connect("bench/admin", stream.ReadQueue()); err != nil { // the console's, as serve's
			nc.Close()
			cnc.Close()
		}
	}
	if err != nil {
		if emb != nil {
			emb.Shutdown()
			_ = gs.Close()
			os.RemoveAll(dir)
		}
		return store{}, nil, err
	}
	var rncs []*nats.Conn
	for i := range 3 {
		rnc, err := connect(fmt.Sprintf("bench/admin-read-%d", i+1), stream.ReadQueue())
		if err != nil {
			for _, c := range append(rncs, anc, cnc, nc) {
				c.Close()
			}
			if emb != nil {
				emb.Shutdown()
				_ = gs.Close()
				os.RemoveAll(dir)
			}
			return store{}, nil, err
		}
		rncs = append(rncs, rnc)
	}
	done := func() {
		for _, c := range rncs {
			c.Close()
		}
		anc.Close()
		cnc.Close()
		nc.Close()
		if emb != nil {
			emb.Shutdown()
			_ = gs.Close()
			os.RemoveAll(dir)
		}
	}
	js, _ := jetstream.New(nc)
	cjs, _ := jetstream.New(cnc)
	if err := stream.Provision(ctx, js, cfg.Spec); err != nil {
		done()
		return store{}, nil, err
	}
	for _, s := range cfg.Spec.Streams {
		if st, err := js.Stream(ctx, s.Name); err == nil {
			_ = st.Purge(ctx)
		}
	}
	ajs, _ := jetstream.New(anc)
	st := store{js: js, callbacks: cjs, admin: ajs, durable: gs}
	for _, c := range rncs {
		r, _ := jetstream.New(c)
		st.readers = append(st.readers, r)
	}
	if !cfg.NoHistory {
		if st.history, err = history.NewWriter(nc, history.WriterConfig{Logger: zerolog.Nop()}); err != nil {
			done()
			return store{}, nil, err
		}
	}
	if emb != nil {
		st.stats = emb.Stats
	}
	return st, done, nil
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

func rawPublish(ctx context.Context, cfg Config, st store) (Result, error) {
	js := st.callbacks
	ss := st.syncStart()
	s := closedLoop(ctx, cfg.Concurrency, cfg.Duration, func(ctx context.Context) error {
		id, body := callback(cfg.Payload)
		_, err := js.PublishMsg(ctx, &nats.Msg{Subject: event.InboxSubject("bench"), Data: body},
			jetstream.WithMsgID(event.ID("bench", id, event.StatusSuccess)), jetstream.WithExpectStream(event.StreamInbox))
		if err == nil {
			err = st.durable.Sync(ctx) // nil-safe: no group commit, no wait
		}
		return err
	})
	note := "the store's limit"
	if st.durable != nil {
		note = "the store's limit, each publish then waiting for the group fsync"
	}
	res := result(s, note)
	ss.add(&res, s.ops)
	return res, nil
}

func httpLoad(ctx context.Context, cfg Config, url string) (sample, error) {
	p, err := newPoster(url, cfg.Concurrency)
	if err != nil {
		return sample{}, err
	}
	defer p.close()
	return closedLoop(ctx, cfg.Concurrency, cfg.Duration, func(ctx context.Context) error {
		_, body := callback(cfg.Payload)
		return p.accept(body)
	}), nil
}

func rawEcho(ctx context.Context, cfg Config, _ store) (Result, error) {
	e := echo.New()
	e.POST("/", func(c echo.Context) error {
		_, _ = io.Copy(io.Discard, c.Request().Body)
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	s, err := httpLoad(ctx, cfg, srv.URL+"/")
	return result(s, "the HTTP limit (loopback, same process)"), err
}

// rawEchoPublish is the least any callback endpoint must do: read the
// body over HTTP and publish it synchronously (a fresh Nats-Msg-Id), on
// the same cores. No checks, no parsing, no metrics, no logging.
func rawEchoPublish(ctx context.Context, cfg Config, st store) (Result, error) {
	var n atomic.Int64
	e := echo.New()
	e.POST("/", func(c echo.Context) error {
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		id := "raw-" + strconv.FormatInt(n.Add(1), 10)
		if _, err := st.callbacks.PublishMsg(c.Request().Context(), &nats.Msg{Subject: event.InboxSubject("bench"), Data: body},
			jetstream.WithMsgID(id), jetstream.WithExpectStream(event.StreamInbox)); err != nil {
			return err
		}
		if err := st.durable.Sync(c.Request().Context()); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "accepted", "id": id})
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	s, err := httpLoad(ctx, cfg, srv.URL+"/")
	return result(s, "HTTP and store together: the relay's ceiling on shared cores"), err
}

// relayLog is the relay's logger as it runs in production (JSON, info
// level, one line per callback), writing nowhere: formatting is measured,
// the disk is not.
var relayLog = zerolog.New(io.Discard).Level(zerolog.InfoLevel).With().Timestamp().Logger()

// relay builds the receiver on st's callback connection.
func relay(st store, m *receiver.Metrics) http.Handler {
	var d receiver.Durability
	if st.durable != nil {
		d = st.durable
	}
	return receiver.New(receiver.Config{
		Projects: []receiver.Project{{Name: "bench"}}, JetStream: st.callbacks, Durable: d, MaxBodyBytes: 1 << 20, MaxInFlight: 4096,
		PublishTimeout: 5 * time.Second, RetryAfter: time.Second, Metrics: m, Logger: relayLog,
	})
}

func relayEndpoint(ctx context.Context, cfg Config, st store) (Result, error) {
	srv := httptest.NewServer(relay(st, receiver.NewMetrics(prometheus.NewRegistry())))
	defer srv.Close()
	ss := st.syncStart()
	s, err := httpLoad(ctx, cfg, srv.URL+"/callbacks/sengo/bench")
	res := result(s, "every check, parse, publish and PubAck")
	ss.add(&res, s.ops)
	return res, err
}

// pipeline runs intake and one webhook endpoint pointing at consumer.
func pipeline(ctx context.Context, st store, consumerURL string, m *receiver.Metrics) (func(), error) {
	js := st.js
	var d receiver.Durability
	var dd dispatcher.Durability
	if st.durable != nil {
		d, dd = st.durable, st.durable
	}
	in, err := receiver.NewIntake(ctx, receiver.IntakeConfig{JetStream: js, Projects: []string{"bench"}, Durable: d, Workers: 16, AckWait: 30 * time.Second, MaxAckPending: 1024,
		RetryInitial: 100 * time.Millisecond, RetryMax: time.Second, History: st.history, Metrics: m, Logger: relayLog})
	if err != nil {
		return nil, err
	}
	w, err := newWorker(ctx, js, dd, st.history, consumerURL, 32)
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

func newWorker(ctx context.Context, js jetstream.JetStream, d dispatcher.Durability, h *history.Writer, url string, conc int) (*dispatcher.Worker, error) {
	k, _ := verify.ParseWebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	return dispatcher.NewWorker(ctx, dispatcher.WorkerConfig{
		Endpoint: dispatcher.Endpoint{Name: "bench", URL: url, Keys: []verify.WebhookKey{k}, FilterSubjects: []string{event.SubjectsEvents},
			Timeout: 5 * time.Second, Concurrency: conc, Schedule: []time.Duration{time.Second}, RetryAfterMax: time.Second, DeliverFrom: "all"},
		JetStream: js, Durable: d, History: h, UserAgent: "sengo-relay/bench", Metrics: dispatcher.NewMetrics(prometheus.NewRegistry()), Logger: relayLog,
	})
}

// runningRelay is the whole relay (receiver, intake, one webhook endpoint)
// with a consumer that records callback-to-webhook latencies.
type runningRelay struct {
	latencies latencies
	srv       *httptest.Server // the receiver
	poster    *poster          // to srv's callback route
	consumer  *httptest.Server
	stop      func()
}

func startRelay(ctx context.Context, st store) (*runningRelay, error) {
	r := &runningRelay{}
	r.consumer = httptest.NewServer(r.latencies.handler())
	m := receiver.NewMetrics(prometheus.NewRegistry())
	stop, err := pipeline(ctx, st, r.consumer.URL, m)
	if err != nil {
		r.consumer.Close()
		return nil, err
	}
	r.stop = stop
	r.srv = httptest.NewServer(relay(st, m))
	r.poster, _ = newPoster(r.srv.URL+"/callbacks/sengo/bench", 256) // an httptest URL always parses
	return r, nil
}

func (r *runningRelay) close() {
	r.poster.close()
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
	slices.Sort(s.lat)
	return s
}

func endToEnd(ctx context.Context, cfg Config, st store) (Result, error) {
	return endToEndAt(ctx, cfg, st, cfg.Rate, cfg.Duration, 30*time.Second)
}

// endToEndAt offers callbacks at rate for d and measures each one's
// accepted → webhook-received latency, and the server's own message
// counts per notification. Deliveries still missing drain later than
// that count as errors.
func endToEndAt(ctx context.Context, cfg Config, st store, rate int, d, drain time.Duration) (Result, error) {
	rl, err := startRelay(ctx, st)
	if err != nil {
		return Result{}, err
	}
	defer rl.close()
	var in0, api0 uint64
	if st.stats != nil {
		in0, api0 = st.stats()
	}
	ss := st.syncStart()
	l, p := &rl.latencies, rl.poster
	var sent, failed atomic.Int64
	openLoop(ctx, rate, d, func(int) {
		_, body := callback(cfg.Payload)
		if p.accept(body) != nil {
			failed.Add(1)
		} else {
			sent.Add(1)
		}
	})
	deadline := time.Now().Add(drain)
	for l.n.Load() < sent.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // draining the last deliveries
	}
	s := l.take()
	s.elapsed, s.errors = d, failed.Load()+sent.Load()-s.ops
	res := result(s, fmt.Sprintf("at a fixed %d callbacks/s", rate))
	res.PerSecond = float64(rate)
	if st.stats != nil && s.ops > 0 {
		in1, api1 := st.stats()
		res.ClientMsgsPerOp = float64(in1-in0) / float64(s.ops)
		res.JSAPIPerOp = float64(api1-api0) / float64(s.ops)
		res.Note += fmt.Sprintf("; per notification, counted by the server: %.1f messages from the relay, %.1f of them JetStream API requests", res.ClientMsgsPerOp, res.JSAPIPerOp)
	}
	ss.add(&res, s.ops)
	return res, nil
}

// sustained searches the highest fixed rate at which the whole pipeline
// keeps up: every callback delivered within its window plus a second (the
// backlog does not grow) and end-to-end p99 under 100 ms. Each probe runs
// cfg.SustainWindow on a fresh store; the search halves the interval
// between a rate that held and one that did not, down to 10%.
func sustained(ctx context.Context, cfg Config, _ store) (Result, error) {
	window := cfg.SustainWindow
	if window <= 0 {
		window = 30 * time.Second
	}
	holds := func(rate int) (Result, bool, error) {
		st, done, err := openStore(ctx, cfg)
		if err != nil {
			return Result{}, false, err
		}
		defer done()
		res, err := endToEndAt(ctx, cfg, st, rate, window, time.Second)
		ok := err == nil && res.Errors == 0 && res.P99Millis < 100
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "bench: sustained probe %6d/s: p99 %.1fms, %d not delivered in time → %v\n", rate, res.P99Millis, res.Errors, ok)
		}
		return res, ok, err
	}
	lo, hi := 0, 0 // the highest rate that held, the lowest that did not
	var best Result
	try := func(rate int) error {
		res, ok, err := holds(rate)
		if ok {
			lo, best = rate, res
		} else if err == nil {
			hi = rate
		}
		return err
	}
	// Bracket from 500/s: double while rates hold (up to the load
	// generator's 64,000/s), halve while they do not (down to 25/s); then
	// halve the interval between the two down to 10%.
	for rate := 500; (lo == 0 || hi == 0) && rate >= 25 && rate <= 64000; {
		if err := try(rate); err != nil {
			return Result{}, err
		}
		if hi == 0 {
			rate *= 2
		} else {
			rate /= 2
		}
	}
	for lo > 0 && hi > lo && hi-lo > lo/10 {
		if err := try((lo + hi) / 2); err != nil {
			return Result{}, err
		}
	}
	if lo == 0 {
		return Result{Note: fmt.Sprintf("no rate down to %d/s held p99 < 100 ms", hi)}, nil
	}
	best.PerSecond = float64(lo)
	above := fmt.Sprintf("%d/s did not hold", hi)
	if hi == 0 {
		above = "the load generator's limit"
	}
	best.Note = fmt.Sprintf("highest rate held for %s: p99 < 100 ms, nothing left behind (%s)", window, above) + strings.TrimPrefix(best.Note, fmt.Sprintf("at a fixed %d callbacks/s", lo))
	return best, nil
}

// endpointAtRate offers callbacks at cfg.EndpointRate (open loop) to the
// full relay (intake and a webhook endpoint running) and measures each
// callback's answer time as the caller sees it.
func endpointAtRate(ctx context.Context, cfg Config, st store) (Result, error) {
	rl, err := startRelay(ctx, st)
	if err != nil {
		return Result{}, err
	}
	defer rl.close()
	ss := st.syncStart()
	lat, failed := rl.offer(ctx, cfg)
	res := result(sample{ops: int64(len(lat)), errors: failed, elapsed: cfg.Duration, lat: lat}, fmt.Sprintf("callbacks offered at %d/s; answer time as SenGo sees it", cfg.EndpointRate))
	res.PerSecond = float64(len(lat)) / cfg.Duration.Seconds()
	ss.add(&res, int64(len(lat)))
	return res, nil
}

// offer posts callbacks to r at cfg.EndpointRate for cfg.Duration (open
// loop) and returns the answer times, sorted, and how many failed.
func (r *runningRelay) offer(ctx context.Context, cfg Config) ([]time.Duration, int64) {
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	openLoop(ctx, cfg.EndpointRate, cfg.Duration, func(int) {
		_, body := callback(cfg.Payload)
		t0 := time.Now()
		err := r.poster.accept(body)
		d := time.Since(t0)
		if err != nil {
			failed.Add(1)
			return
		}
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
	})
	slices.Sort(lat)
	return lat, failed.Load()
}

func deliveries(ctx context.Context, cfg Config, st store) (Result, error) {
	js := st.js
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
	var dd dispatcher.Durability
	if st.durable != nil {
		dd = st.durable
	}
	w, err := newWorker(ctx, js, dd, st.history, consumer.URL, 32)
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
func soak(ctx context.Context, cfg Config, st store) ([]SoakSample, error) {
	rl, err := startRelay(ctx, st)
	if err != nil {
		return nil, err
	}
	defer rl.close()
	l := &rl.latencies
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
			_, _ = rl.poster.post(body)
		})
	}()
	for {
		select {
		case <-loadDone:
			return out, nil
		case <-sampler.C:
			s := l.take()
			smp := SoakSample{At: time.Since(start).Round(time.Second), RSSBytes: procStatus("VmRSS"), HeapLiveBytes: heapLive(), Goroutines: runtime.NumGoroutine(), Delivered: l.n.Load(), P99Millis: float64(s.pct(0.99).Microseconds()) / 1000}
			out = append(out, smp)
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "soak %6s: rss %4d MiB, heap %4d MiB, %5d goroutines, %8d delivered, p99 %.2fms\n", smp.At, smp.RSSBytes>>20, smp.HeapLiveBytes>>20, smp.Goroutines, smp.Delivered, smp.P99Millis)
			}
		}
	}
}

// resetPeakRSS returns the heap freed so far to the OS and resets the
// kernel's peak-RSS mark (VmHWM), so the next reading is one scenario's
// peak. It reports false where /proc/self/clear_refs is not writable.
func resetPeakRSS() bool {
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// heapLive is the live heap after the last GC (runtime/metrics).
func heapLive() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// gcStats is what the collector has done so far in this process.
type gcStats struct {
	cycles uint64
	assist float64 // CPU seconds goroutines spent helping the collector mark
	live   uint64  // the live heap after the last collection
	allocs uint64  // bytes allocated so far, by the relay and the server
}

func readGC() gcStats {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/mark/assist:cpu-seconds"}, {Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	var g gcStats
	if s[0].Value.Kind() == metrics.KindUint64 {
		g.cycles = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindFloat64 {
		g.assist = s[1].Value.Float64()
	}
	if s[2].Value.Kind() == metrics.KindUint64 {
		g.live = s[2].Value.Uint64()
	}
	if s[3].Value.Kind() == metrics.KindUint64 {
		g.allocs = s[3].Value.Uint64()
	}
	return g
}

// since says what the collector did between g and now, and what the n
// requests in between allocated each (the relay and the embedded server
// together: what sets how often the collector runs), for a row's note.
func (g gcStats) since(n int) string {
	now := readGC()
	return fmt.Sprintf("%.1f MiB allocated a request; %d collections during it (%.2f s of CPU in mark assists, live heap %d MiB after the last)", float64(now.allocs-g.allocs)/float64(n)/(1<<20), now.cycles-g.cycles, now.assist-g.assist, now.live>>20)
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
