package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/admin"
	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/internal/tracing"
	"github.com/sengo-relay/sengo-relay/receiver"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/stream"
	"github.com/sengo-relay/sengo-relay/verify"
)

// serve runs the relay until ctx is cancelled, then shuts down in order:
// stop accepting HTTP and finish in-flight callbacks, drain the intake
// workers, drain the NATS connection, stop the embedded server.
func serve(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	log := newLogger(cfg.Log, stdout)
	log.Info().Str("version", versionString()).Msg("starting sengo-relay")
	tracing.SetLogger(log)
	stopTracing, err := tracing.Setup(ctx, versionString())
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn().Err(err).Msg("traces not all exported at shutdown")
		}
	}()
	log.Info().Str("traces", tracing.Describe()).Msg("tracing")

	// A connection that nats.go closed for good (not by drain at shutdown,
	// which replaces this handler) stops the relay with an error, and
	// /healthz fails meanwhile: nothing works on it any more, and a
	// restart is the cure.
	connLost := make(chan error, 2)
	// The first error only. (An atomic.Value panicked when a second one
	// was of another type: a connection closed for good, then a failed fsync.)
	var lost atomic.Pointer[error]
	fatal := func(err error) {
		lost.CompareAndSwap(nil, &err)
		select {
		case connLost <- err:
		default:
		}
	}
	onClosed := func(nc *nats.Conn) {
		fatal(fmt.Errorf("nats connection %s closed for good: %v", nc.Opts.Name, nc.LastError()))
	}
	// A failed fsync of the store (group commit) stops the relay the same
	// way: after it, nothing acknowledged since the last good fsync can be
	// trusted.
	conns, shutdownNATS, err := connectNATS(cfg, log, onClosed, fatal)
	if err != nil {
		return err
	}
	defer shutdownNATS()
	// A connection still being made (NATS down at start: the relay waits
	// for it) knows no max_payload yet; the limit is checked once it is
	// up, after provisioning.
	if mp := conns.callbacks.MaxPayload(); mp > 0 {
		if err := receiver.CheckBodyLimit(cfg.HTTP.MaxBodyBytes, mp); err != nil {
			return err
		}
	}
	// Callbacks publish on a connection of their own: behind intake's and
	// the dispatcher's traffic on a shared one, a callback's publish and
	// PubAck would queue (BENCHMARKS.md).
	callbackJS, err := jetstream.New(conns.callbacks)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	nc := conns.work
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	adminJS, err := jetstream.New(conns.admin)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	var readers []jetstream.JetStream
	for _, nc := range conns.readers {
		r, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		readers = append(readers, r)
	}
	spec := provisionSpec(cfg)
	if cfg.NATS.Storage == "memory" {
		log.Error().Msg(memoryWarning)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := receiver.NewMetrics(reg)
	metrics.Prime(cfg.ProjectNames()) // series at zero: the first quarantine or 503 raises its alert
	var intake atomic.Pointer[receiver.Intake]
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sengo_relay_inbox_pending",
		Help: "Inbox notifications not yet processed by intake (NaN when unknown).",
	}, atMostEvery(time.Second, func() float64 {
		in := intake.Load()
		if in == nil {
			return math.NaN()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := in.Pending(ctx)
		if err != nil {
			return math.NaN()
		}
		return float64(n)
	})))

	if gs := conns.durable; gs != nil {
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sengo_relay_store_fsyncs_total",
				Help: "Group-commit fsyncs of the embedded store.",
			}, func() float64 { return float64(gs.Stats().FSyncs) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sengo_relay_store_fsync_writers_total",
				Help: "Waits for durability (callbacks, intake acks, dead letters) that group-commit fsyncs served; divided by sengo_relay_store_fsyncs_total, the writers per fsync.",
			}, func() float64 { return float64(gs.Stats().Callers) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sengo_relay_store_fsync_seconds_total",
				Help: "Time spent in group-commit fsyncs of the embedded store.",
			}, func() float64 { return gs.Stats().Time.Seconds() }),
		)
	}

	ageKept := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sengo_relay_stream_max_age_kept",
		Help: "1 while a stream keeps a max_age above the configured one (a consumer holds messages a lower age would delete; the log at start says which), 0 otherwise.",
	}, []string{"stream"})
	reg.MustRegister(ageKept)
	spec.Kept = func(stream string, kept bool) { ageKept.WithLabelValues(stream).Set(map[bool]float64{true: 1}[kept]) }

	historyWrites := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sengo_relay_history_writes_total",
		Help: "History records (kind: attempt, ref) by result: stored, or failed (the delivery or notification it describes is not affected).",
	}, []string{"kind", "result"})
	reg.MustRegister(historyWrites)
	for _, k := range []string{"attempt", "ref", "reconciliation"} {
		for _, r := range []string{"stored", "failed"} {
			historyWrites.WithLabelValues(k, r)
		}
	}
	hist, err := history.NewWriter(nc, history.WriterConfig{
		OnResult: func(kind string, err error) {
			if err != nil {
				historyWrites.WithLabelValues(kind, "failed").Inc()
			} else {
				historyWrites.WithLabelValues(kind, "stored").Inc()
			}
		},
		Logger: log.With().Str("component", "history").Logger(),
	})
	if err != nil {
		return err
	}

	var provisioned atomic.Bool
	projects, trusted, err := receiverProjects(cfg)
	if err != nil {
		return err
	}
	app := receiver.New(receiver.Config{
		Projects:       projects,
		JetStream:      callbackJS,
		Durable:        conns.durable, // nil-safe: Sync of a nil GroupSync returns at once
		MaxBodyBytes:   cfg.HTTP.MaxBodyBytes,
		MaxInFlight:    cfg.HTTP.MaxInFlight,
		PublishTimeout: cfg.HTTP.PublishTimeout.D(),
		RetryAfter:     cfg.HTTP.RetryAfter.D(),
		TrustedProxies: trusted,
		Live: func() error {
			if err := lost.Load(); err != nil {
				return *err
			}
			return nil
		},
		Accepting: func() error {
			if !provisioned.Load() {
				return errors.New("streams not provisioned yet")
			}
			return nil
		},
		ReadyNow: func() error {
			if !provisioned.Load() {
				return errors.New("streams not provisioned yet")
			}
			for _, c := range []*nats.Conn{conns.callbacks, conns.work, conns.admin} {
				if s := c.Status(); s != nats.CONNECTED {
					return fmt.Errorf("nats %s", s)
				}
			}
			return nil
		},
		Ready: func(ctx context.Context) error {
			if err := stream.Check(ctx, js, spec); err != nil {
				return err
			}
			// Room for a typical callback (about 1 KB with its headers).
			// The embedded server's cap is its own, not the account's.
			storeCap := int64(0)
			if cfg.NATS.URL == "" {
				storeCap = cfg.NATS.Embedded.MaxStore
			}
			return stream.Room(ctx, js, event.StreamInbox, 4<<10, storeCap)
		},
		Metrics: metrics,
		Logger:  log.With().Str("component", "http").Logger(),
	})

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTP.Listen, err)
	}
	exempt, _ := prefixes(cfg.HTTP.TrustedProxies) // validated with the configuration
	for _, name := range cfg.ProjectNames() {
		sengoIPs, _ := prefixes(cfg.Projects[name].AllowedIPs)
		exempt = append(exempt, sengoIPs...)
	}
	ln = receiver.LimitConns(ln, receiver.ConnLimits{PerAddress: cfg.HTTP.MaxConnsPerAddress, Total: cfg.HTTP.MaxConns, Exempt: exempt,
		Refused: refusedBy(metrics, "callback")})
	srv := &http.Server{
		Handler:           app,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout.D(),
		ReadTimeout:       cfg.HTTP.ReadTimeout.D(),
		WriteTimeout:      cfg.HTTP.WriteTimeout.D(),
		IdleTimeout:       cfg.HTTP.IdleTimeout.D(),
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          newStdLogger(log.With().Str("component", "http").Logger()),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Msg("http listening")
	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err)
		}
		mln = receiver.LimitConns(mln, receiver.ConnLimits{PerAddress: metricsConnLimits.PerAddress, Total: metricsConnLimits.Total, Shared: metricsConnLimits.Shared, Refused: refusedBy(metrics, "metrics")})
		msrv := sideServer(cfg, metricsHandler(reg, cfg.Metrics.Token.Value(), config.LoopbackHosts(cfg.Metrics.Listen)))
		go func() { _ = msrv.Serve(mln) }()
		defer msrv.Close()
		log.Info().Str("addr", mln.Addr().String()).Bool("token", cfg.Metrics.Token.Set()).Msg("metrics listening")
	}

	endpoints, err := dispatcherEndpoints(cfg)
	if err != nil {
		return err
	}
	dmetrics := dispatcher.NewMetrics(reg)
	var epNames []string
	for _, ep := range endpoints {
		epNames = append(epNames, ep.Name)
	}
	dmetrics.Prime(epNames) // series at zero: the first dead letter raises its alert
	workerMap := map[string]*dispatcher.Worker{}
	var workerMu sync.Mutex
	for _, ep := range endpoints {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sengo_relay_endpoint_pending",
			Help:        "Events not yet delivered to the endpoint (live and replayed; NaN when unknown).",
			ConstLabels: prometheus.Labels{"endpoint": ep.Name},
		}, atMostEvery(time.Second, func() float64 {
			workerMu.Lock()
			w := workerMap[ep.Name]
			workerMu.Unlock()
			if w == nil {
				return math.NaN()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			live, replay, _, err := w.Pending(ctx)
			if err != nil {
				return math.NaN()
			}
			return float64(live + replay)
		})))
	}

	var confirmer receiver.Confirmer
	if clients := apiClients(cfg, true); len(clients) > 0 {
		confirmer = sengo.NewConfirmer(clients, sengo.CheckTimeout(cfg.Intake.CheckTimeout()))
	}
	go probeAPIs(ctx, cfg, apiClients(cfg, false), log.With().Str("component", "sengo").Logger())
	required := map[string]bool{}
	for _, name := range cfg.ProjectNames() {
		p := cfg.Projects[name]
		required[name] = p.RequireConfirmation
		if !p.Confirms() {
			log.Warn().Str("project", name).Msg("notifications of this project are not confirmed with SenGo's API: anyone who can reach the callback URL can publish an event (confirmed: false); set api_key and token")
		}
		if p.CallbackToken.Set() && !config.RedactableToken(p.CallbackToken.Value()) {
			log.Warn().Str("project", name).Msg("callback_token has characters JSON or a URL may escape (not letters, digits, - . _ ~ + =): SenGo echoes the callback URL in its objects, and the relay may not find the token there to take it out of events; give it a new one (openssl rand -hex 32)")
		}
	}

	// Everything below runs until ctx is done. Intake and the endpoint
	// workers each have their own goroutine; stopping runCtx stops them.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var startFailed atomic.Value // the error a part that could not start stopped the run with
	var intakeDone, workersDone sync.WaitGroup
	var adminSrv *admin.Server
	var adminHTTP *http.Server
	intakeDone.Add(1)
	go func() {
		defer intakeDone.Done()
		if err := provision(runCtx, js, spec, log); err != nil {
			return // cancelled
		}
		if err := receiver.CheckBodyLimit(cfg.HTTP.MaxBodyBytes, nc.MaxPayload()); err != nil {
			fatal(err) // NATS was down at start: checked now that it is up
			return
		}
		provisioned.Store(true)
		var in *receiver.Intake
		err := retryStart(runCtx, log, "starting intake", func() (err error) {
			in, err = receiver.NewIntake(runCtx, receiver.IntakeConfig{
				JetStream:           js,
				Durable:             conns.durable,
				Workers:             cfg.Intake.Workers,
				AckWait:             cfg.Intake.AckWait.D(),
				MaxAckPending:       cfg.Intake.MaxAckPending,
				RetryInitial:        cfg.Intake.RetryInitial.D(),
				RetryMax:            cfg.Intake.RetryMax.D(),
				Confirmer:           confirmer,
				ConfirmAttempts:     cfg.Intake.ConfirmAttempts,
				RequireConfirmation: required,
				CallbackTokens:      cfg.CallbackTokens(),
				Projects:            cfg.ProjectNames(),
				History:             hist,
				Metrics:             metrics,
				Logger:              log.With().Str("component", "intake").Logger(),
			})
			return err
		})
		if err != nil {
			log.Error().Err(err).Msg("intake cannot start")
			startFailed.Store(fmt.Errorf("intake cannot start: %w", err))
			stopRun()
			return
		}
		intake.Store(in)
		// A removed or renamed endpoint's backlog goes to the dead letters
		// (endpoint_removed) instead of waiting for good. Started first: its
		// heartbeat tells other relays which endpoints this one delivers.
		instance := dispatcher.NewInstance()
		epFilters := make(map[string][]string, len(endpoints))
		for _, ep := range endpoints {
			epFilters[ep.Name] = ep.FilterSubjects
		}
		// The workers set their consumers' filters once this relay's
		// heartbeat tells the other relays why (dispatcher.RetireConfig).
		beating := make(chan struct{})
		workersDone.Add(1)
		go func() {
			defer workersDone.Done()
			dispatcher.RunRetirer(runCtx, dispatcher.RetireConfig{
				Started:   func() { close(beating) },
				JetStream: js, Configured: epNames, Filters: epFilters, Instance: instance, Durable: conns.durable, Metrics: dmetrics,
				Quiet: cfg.Delivery.RetireRemovedAfter.D(), Every: min(30*time.Second, cfg.Delivery.RetireRemovedAfter.D()/2),
				// Three heartbeats fit in retire_removed_after (10 s apart
				// at most): the floor others wait is three of this relay's.
				Beat:   cfg.Delivery.RetireRemovedAfter.D() / 3,
				Logger: log.With().Str("component", "dispatcher").Logger(),
			})
		}()
		if len(endpoints) > 0 {
			select {
			case <-beating:
			case <-runCtx.Done():
				return
			}
		}
		for _, ep := range endpoints {
			var w *dispatcher.Worker
			err := retryStart(runCtx, log.With().Str("endpoint", ep.Name).Logger(), "starting endpoint", func() (err error) {
				w, err = dispatcher.NewWorker(runCtx, dispatcher.WorkerConfig{
					Endpoint: ep, JetStream: js, Durable: conns.durable, UserAgent: "sengo-relay/" + versionString(), Metrics: dmetrics, History: hist, Instance: instance,
					Logger: log.With().Str("component", "dispatcher").Logger(),
				})
				return err
			})
			if err != nil {
				log.Error().Err(err).Str("endpoint", ep.Name).Msg("endpoint cannot start")
				startFailed.Store(fmt.Errorf("endpoint %s cannot start: %w", ep.Name, err))
				stopRun()
				return
			}
			workerMu.Lock()
			workerMap[ep.Name] = w
			workerMu.Unlock()
			workersDone.Add(1)
			go func() { defer workersDone.Done(); w.Run(runCtx) }()
		}
		if cfg.Admin.Token.Set() {
			adminProxies, _ := prefixes(cfg.Admin.TrustedProxies) // validated with the configuration
			workerMu.Lock()
			adminSrv = admin.New(admin.Config{Token: cfg.Admin.Token.Value(), JetStream: adminJS, Readers: readers, Projects: cfg.ProjectNames(), Endpoints: endpoints, Workers: workerMap, Durable: conns.durable, SecureCookie: cfg.Admin.SecureCookie, TrustedProxies: adminProxies, Hosts: cfg.Admin.ServedHosts(), Logger: log.With().Str("component", "admin").Logger()})
			workerMu.Unlock()
			aln, err := net.Listen("tcp", cfg.Admin.Listen)
			if err != nil {
				log.Error().Err(err).Msg("admin listener")
				startFailed.Store(fmt.Errorf("admin.listen %s: %w", cfg.Admin.Listen, err))
				stopRun()
				return
			}
			aln = receiver.LimitConns(aln, receiver.ConnLimits{PerAddress: adminConnLimits.PerAddress, Total: adminConnLimits.Total, Exempt: adminProxies, Shared: adminConnLimits.Shared, Refused: refusedBy(metrics, "admin")})
			adminHTTP = sideServer(cfg, adminSrv.Handler())
			go func() { _ = adminHTTP.Serve(aln) }()
			log.Info().Str("addr", aln.Addr().String()).Msg("admin listening")
		}
		if confirmer != nil {
			workersDone.Add(1)
			go func() {
				defer workersDone.Done()
				recheckLoop(runCtx, js, conns.durable, func(p string) bool { pr := cfg.Projects[p]; return pr != nil && pr.Confirms() }, log.With().Str("component", "intake").Logger())
			}()
		}
		if projects := listers(apiClients(cfg, false), ""); cfg.Reconcile.Interval > 0 && len(projects) > 0 {
			workersDone.Add(1)
			go func() {
				defer workersDone.Done()
				reconcileLoop(runCtx, cfg, receiver.ReconcileConfig{
					JetStream: js, Projects: projects, Configured: cfg.ProjectNames(), Window: cfg.Reconcile.Window.D(), CatchUp: reconcileCatchUp(cfg),
					Metrics: metrics, Trigger: receiver.TriggerPeriodic, Runs: hist,
					CallbackTokens: cfg.CallbackTokens(),
					Logger:         log.With().Str("component", "reconcile").Logger(),
				}, log)
			}()
		}
		_ = in.Run(runCtx, cfg.HTTP.ShutdownTimeout.D())
	}()

	var runErr error
	select {
	case <-runCtx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-connLost:
		runErr = err
	}
	if ctx.Err() == nil && runErr == nil {
		runErr = errors.New("intake failed to start")
		if err, ok := startFailed.Load().(error); ok {
			runErr = err // what did not start, named
		}
	}
	log.Info().Msg("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout.D())
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn().Err(err).Msg("http shutdown incomplete")
	}
	stopRun()
	intakeDone.Wait()  // intake drained
	workersDone.Wait() // deliveries in flight finished
	if err := hist.Flush(shutCtx); err != nil {
		log.Warn().Err(err).Msg("history records still in flight at shutdown")
	}
	if adminHTTP != nil {
		_ = adminHTTP.Shutdown(shutCtx)
		adminSrv.Close()
	}
	log.Info().Msg("stopped")
	return runErr
}

// metricsHandler serves /metrics, behind a bearer token when one is set.
func metricsHandler(g prometheus.Gatherer, token string, hosts []string) http.Handler {
	// Two scrapes at once are plenty (a third is answered 503).
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{MaxRequestsInFlight: 2})
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		// Without a token the listener is on loopback: it answers to this
		// machine's names (hosts) only, never to a web page whose name an
		// attacker rebinds to 127.0.0.1 (which could then read the payment
		// volumes).
		if token == "" && !verify.HostIn(r.Host, hosts) {
			http.Error(w, "this listener answers to "+strings.Join(hosts, ", ")+" only", http.StatusMisdirectedRequest)
			return
		}
		if token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || !verify.Token(token, got) {
				http.Error(w, "bearer token required", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
	return mux
}

// recheckLoop puts quarantined unconfirmed notifications back for another
// confirmation on receiver.RecheckAfter's schedule, until ctx ends.
func recheckLoop(ctx context.Context, js jetstream.JetStream, durable receiver.Durability, confirms func(string) bool, log zerolog.Logger) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			n, err := receiver.RecheckUnconfirmed(ctx, js, now, durable, confirms)
			if err != nil && ctx.Err() == nil {
				log.Warn().Err(err).Msg("recheck of unconfirmed notifications failed; trying again later")
			}
			if n > 0 {
				log.Info().Int("count", n).Msg("unconfirmed notifications put back for another confirmation")
			}
		}
	}
}

// provision creates or updates the streams, retrying with backoff until it
// succeeds or ctx ends, whatever the error: a relay started before its
// NATS cluster waits, and one whose streams JetStream refuses keeps saying
// why (readyz stays 503) rather than exiting.
func provision(ctx context.Context, js jetstream.JetStream, spec stream.Spec, log zerolog.Logger) error {
	spec.Warn = func(stream, msg string) { log.Warn().Str("stream", stream).Msg(msg) }
	return retry(ctx, log, "provisioning streams", anyError, func() error {
		return stream.Provision(ctx, js, spec) // each item has its own deadline
	})
}

// retryStart runs start until it succeeds, retrying while NATS is
// unreachable or JetStream unavailable, so a NATS outage at any moment of
// startup delays the relay instead of stopping it. An error JetStream
// answers with (other than 503, unavailable) is returned at once: retrying
// a refused configuration changes nothing.
func retryStart(ctx context.Context, log zerolog.Logger, what string, start func() error) error {
	return retry(ctx, log, what, transient, start)
}

// transient: anything but an answer from JetStream other than 503.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	return !errors.As(err, &apiErr) || apiErr.Code == http.StatusServiceUnavailable
}

func anyError(error) bool { return true }

// retry runs f with exponential backoff (at most 10s apart) until it
// succeeds, ctx ends, or it fails with an error retryable rejects.
func retry(ctx context.Context, log zerolog.Logger, what string, retryable func(error) bool, f func() error) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval = 10 * time.Second
	b.MaxElapsedTime = 0
	return backoff.RetryNotify(func() error {
		err := f()
		switch {
		case ctx.Err() != nil:
			return backoff.Permanent(ctx.Err())
		case err != nil && !retryable(err):
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx), func(err error, d time.Duration) {
		log.Warn().Err(err).Stringer("delay", d).Msg(what + " failed; retrying")
	})
}

// natsConns are the relay's three NATS connections: callbacks carries only
// the receiver's publishes, admin the admin API's and the console's reads
// and actions, work everything else (intake, dispatcher, reconcile); and,
// on the embedded store with group commit, the fsync every acknowledgement
// waits for (nil otherwise: the store's PubAck is the durability point).
// The server reads a connection's requests one after another, and answers
// a direct get in that connection's own read loop: a console page that
// makes the server load cold blocks of a stream would otherwise hold
// intake's and the dispatcher's requests behind it.
type natsConns struct {
	callbacks, work, admin *nats.Conn
	// readers carry the console's concurrent reads (a story's parts), for
	// the same reason: each answers its direct gets one after another.
	readers []*nats.Conn
	durable *stream.GroupSync
}

// adminReaders is how many connections the console's concurrent reads
// spread over: a story reads five parts at once on a machine that has
// few cores.
const adminReaders = 3

// groupCommitBackstop is how often nats-server itself fsyncs under group
// commit: it bounds the loss window of writes made by other processes
// (the nats CLI, subscribers' consumers), which do not wait for the
// relay's fsync.
const groupCommitBackstop = 10 * time.Second

// storeSync is, for a command run beside a relay whose embedded store
// relies on the relay's group commit, an fsync of that store's
// filesystem: what it writes is then made durable by the command itself
// (the server syncs it only every groupCommitBackstop). Nil otherwise
// (nats-server fsyncs each write itself, or the store is elsewhere), with
// a warning on warn when the store relies on group commit and this
// command cannot fsync it (not on this machine): what it writes is then
// on disk within groupCommitBackstop, not at once.
func storeSync(cfg config.Config, warn io.Writer) *stream.GroupSync {
	_, always, _ := cfg.NATS.Embedded.Sync()
	if cfg.NATS.URL != "" || !always || !cfg.NATS.Embedded.GroupCommit {
		return nil
	}
	gs, err := stream.NewGroupSync(stream.GroupSyncConfig{Dir: cfg.StoreDirOrDefault()})
	if errors.Is(err, stream.ErrGroupSyncUnsupported) {
		return nil // the relay does without group commit too: nats-server fsyncs each write
	}
	if err != nil {
		fmt.Fprintf(warn, "warning: cannot fsync the relay's store (%v); what this command writes is on disk within %s, not at once\n", err, groupCommitBackstop)
		return nil
	}
	return gs
}

// watchWrites calls failed with the embedded store's write error, if it
// gets one, looking once a second until done is closed.
func watchWrites(emb *stream.Embedded, log zerolog.Logger, failed func(error), done <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			if err := emb.WriteError(); err != nil {
				err = fmt.Errorf("the store cannot write (free the disk, then the relay starts from it again): %w", err)
				log.Error().Err(err).Msg("stopping: the store cannot write")
				failed(err)
				return
			}
		}
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// connectNATS starts the embedded server when no URL is configured and
// connects. The returned function drains the connections and stops the
// embedded server.
func connectNATS(cfg config.Config, log zerolog.Logger, closed func(*nats.Conn), syncFailed func(error)) (natsConns, func(), error) {
	ccfg := stream.ConnectConfig{
		URL: cfg.NATS.URL, CredsFile: cfg.NATS.CredsFile, Token: cfg.NATS.Token.Value(),
		Logger: log.With().Str("component", "nats").Logger(), Closed: closed,
	}
	var emb *stream.Embedded
	var gs *stream.GroupSync
	var opts []nats.Option
	writesWatched := make(chan struct{})
	if cfg.NATS.URL == "" {
		storeDir := cfg.StoreDirOrDefault()
		if err := os.MkdirAll(storeDir, 0o750); err != nil {
			return natsConns{}, nil, fmt.Errorf("data dir: %w", err)
		}
		interval, always, _ := cfg.NATS.Embedded.Sync()
		// Locked before anything in it changes (the password files): a
		// second relay on this store stops here.
		unlock, err := stream.LockStore(storeDir)
		if err != nil {
			return natsConns{}, nil, err
		}
		auth, err := embeddedAuth(cfg)
		if err != nil {
			unlock()
			return natsConns{}, nil, err
		}
		if always && cfg.NATS.Embedded.GroupCommit {
			switch gs, err = stream.NewGroupSync(stream.GroupSyncConfig{Dir: storeDir, OnFail: syncFailed}); {
			case errors.Is(err, stream.ErrGroupSyncUnsupported):
				log.Warn().Err(err).Msg("no group commit here; nats-server fsyncs every write itself (slower)")
			case err != nil:
				unlock()
				return natsConns{}, nil, err
			default:
				interval, always = groupCommitBackstop, false
			}
		}
		emb, err = stream.StartEmbedded(stream.EmbeddedConfig{
			StoreDir: storeDir, Listen: cfg.NATS.Embedded.Listen,
			SyncInterval: interval, SyncAlways: always, MaxStore: cfg.NATS.Embedded.MaxStore,
			Auth: auth, Logger: log, Locked: unlock, // the server owns the lock now, and releases it on failure too
		})
		if err != nil {
			_ = gs.Close()
			return natsConns{}, nil, err
		}
		ev := log.Info().Str("store_dir", storeDir).Str("client_url", emb.ClientURL()).Bool("group_commit", gs != nil)
		if emb.ClientURL() != "" {
			ev = ev.Str("subscriber_user", auth.SubscriberUser)
			if !cfg.NATS.Embedded.Subscriber.Password.Set() {
				ev = ev.Str("subscriber_password_file", filepath.Join(storeDir, stream.SubscriberPasswordFile))
			}
		}
		ev.Msg("embedded nats started")
		opts = append(opts, emb.ConnectOption())
		// A stream whose file could not be written stores nothing more until
		// the server starts again: every callback waited its publish_timeout
		// for a 503, while /healthz said 200, until someone restarted the
		// relay. It stops, as after a failed fsync, and its restart finds the
		// store as the disk has it.
		go watchWrites(emb, log, syncFailed, writesWatched)
	}
	conns := natsConns{durable: gs}
	shutdown := func() {
		closeOnce(writesWatched)
		for _, nc := range append([]*nats.Conn{conns.callbacks, conns.admin, conns.work}, conns.readers...) {
			if nc != nil {
				drain(nc, log)
			}
		}
		if emb != nil {
			emb.Shutdown()
		}
		if err := gs.Close(); err != nil {
			log.Error().Err(err).Msg("the store's last fsync failed: what it wrote as it shut down (its consumers' state) may not be on disk")
		}
	}
	for _, c := range []struct {
		name  string
		nc    **nats.Conn
		extra []nats.Option
	}{
		// Callbacks never buffer a publish while disconnected: a callback
		// answered 503 must not be stored behind its back on reconnect.
		{"sengo-relay/callbacks", &conns.callbacks, []nats.Option{nats.ReconnectBufSize(-1)}},
		{"sengo-relay/work", &conns.work, nil},
		{"sengo-relay/admin", &conns.admin, []nats.Option{stream.ReadQueue()}},
	} {
		ccfg.Name = c.name
		nc, err := stream.Connect(ccfg, append(slices.Clone(opts), c.extra...)...)
		if err != nil {
			shutdown()
			return natsConns{}, nil, err
		}
		*c.nc = nc
	}
	for i := range adminReaders {
		ccfg.Name = fmt.Sprintf("sengo-relay/admin-read-%d", i+1)
		nc, err := stream.Connect(ccfg, append(slices.Clone(opts), stream.ReadQueue())...)
		if err != nil {
			shutdown()
			return natsConns{}, nil, err
		}
		conns.readers = append(conns.readers, nc)
	}
	if cfg.NATS.URL != "" {
		// The configured servers: not yet connected, ConnectedUrl is empty.
		log.Info().Str("url", verify.RedactServerURLs(cfg.NATS.URL)).Msg("nats connecting")
		warnLeftStore(cfg.StoreDirOrDefault(), log)
	}
	return conns, shutdown, nil
}

// warnLeftStore says when a relay on nats.url has an embedded store of
// its own in dir (one that ran before nats.url was set): nothing reads it
// any more, and what it held unfinished (notifications answered 200 and
// not yet processed, events not yet delivered, dead letters, quarantine)
// stays there.
func warnLeftStore(dir string, log zerolog.Logger) {
	if _, err := os.Stat(filepath.Join(dir, "jetstream", "$G", "streams", event.StreamInbox)); err != nil {
		return
	}
	log.Warn().Str("store_dir", dir).Msg("nats.url is set, and the embedded store an earlier run of this relay used is still in store_dir: nothing reads it now, and what it held unfinished stays there (README: \"Moving from the embedded store\")")
}

// embeddedAuth returns the embedded server's identities: the relay's, with
// a password generated once per store dir, and the read-only subscriber,
// whose password is configured or generated the same way.
func embeddedAuth(cfg config.Config) (*stream.EmbeddedAuth, error) {
	dir := cfg.StoreDirOrDefault()
	relay, err := stream.PasswordFromFile(dir, stream.RelayPasswordFile)
	if err != nil {
		return nil, err
	}
	sub := cfg.NATS.Embedded.Subscriber.Password.Value()
	if sub == "" {
		if sub, err = stream.PasswordFromFile(dir, stream.SubscriberPasswordFile); err != nil {
			return nil, err
		}
	} else if err := os.Remove(filepath.Join(dir, stream.SubscriberPasswordFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// A chosen password retires the generated one: kept, it became
		// valid again the day the chosen one was taken out of the
		// configuration (a rotation away from a leaked one undone).
		return nil, fmt.Errorf("retire the generated subscriber password: %w", err)
	}
	var protected []string
	for _, name := range sortedNames(cfg.Endpoints) {
		protected = append(protected, dispatcher.ConsumerName(name))
	}
	return &stream.EmbeddedAuth{
		RelayUser: config.EmbeddedRelayUser, RelayPassword: relay,
		SubscriberUser: cfg.NATS.Embedded.Subscriber.User, SubscriberPassword: sub,
		Stream: event.StreamEvents, Subjects: event.SubjectsEvents, Protected: protected,
	}, nil
}

func drain(nc *nats.Conn, log zerolog.Logger) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		log.Warn().Msg("nats drain timed out")
		nc.Close()
	}
}

func provisionSpec(cfg config.Config) stream.Spec {
	storage := jetstream.FileStorage
	if cfg.NATS.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	limits := func(s config.StreamLimits) stream.Limits {
		return stream.Limits{MaxAge: s.MaxAge.D(), Duplicates: s.DuplicateWindow.D(), MaxBytes: s.MaxBytes}
	}
	return stream.Spec{
		Replicas: cfg.NATS.Replicas,
		Storage:  storage,
		Streams: []stream.StreamSpec{
			{Name: event.StreamInbox, Subjects: []string{event.SubjectsInbox}, Description: "SenGo notifications as received", Limits: limits(cfg.Streams.Inbox),
				Settle: lastLook(cfg.Intake.RetryMax.D()+cfg.Intake.AckWait.D(), cfg.Streams.Inbox.MaxAge.D()), Retries: isIntake},
			{Name: event.StreamEvents, Subjects: []string{event.SubjectsEvents}, Description: "normalized SenGo transaction events", Limits: limits(cfg.Streams.Events),
				Settle: lastLook(longestWait(cfg), cfg.Streams.Events.MaxAge.D()), Retries: dispatcher.IsEndpointConsumer},
			{Name: event.StreamQuarantine, Subjects: []string{event.SubjectsQuarantine}, Description: "notifications that cannot be processed", Limits: limits(cfg.Streams.Quarantine)},
			{Name: event.StreamDLQ, Subjects: []string{event.SubjectsDLQ}, Description: "events whose delivery was given up, with why", Limits: limits(cfg.Streams.DLQ)},
			{Name: event.StreamReplay, Subjects: []string{event.SubjectsReplay}, Description: "events queued again for one endpoint (replay, redrive)", Limits: limits(cfg.Streams.Replay),
				Settle: lastLook(longestWait(cfg), cfg.Streams.Replay.MaxAge.D()), Retries: dispatcher.IsEndpointConsumer},
			{Name: history.StreamAttempts, Subjects: []string{history.SubjectsAttempts}, Description: "every webhook delivery attempt", Limits: limits(cfg.Streams.Attempts)},
			{Name: history.StreamRefs, Subjects: []string{history.SubjectsRefs}, Description: "merchantRef to SenGo transaction ids", Limits: perSubject(limits(cfg.Streams.Refs), 1)},
			{Name: history.StreamReconcile, Subjects: []string{history.SubjectsReconcile}, Description: "reconciliation runs and what they found", Limits: limits(cfg.Streams.Reconciliations)},
		},
		Buckets: []stream.BucketSpec{
			{Name: event.BucketTx, Description: "SenGo transaction state", TTL: cfg.Streams.Transactions.TTL.D(), History: 1,
				TTLAtLeast: []string{event.StreamInbox, event.StreamQuarantine}},
			{Name: event.BucketDelivery, Description: "webhook delivery attempts per endpoint and event", TTL: deliveryTTL(cfg), History: 1,
				TTLAtLeast: []string{event.StreamEvents, event.StreamReplay}},
			admin.SessionsBucket(),
			admin.ReplaysBucket(),
		},
	}
}

func perSubject(l stream.Limits, n int64) stream.Limits { l.PerSubject = n; return l }

func isIntake(consumer string) bool { return consumer == receiver.IntakeConsumer }

// lastLook is how close to the end of a stream's age (age) a message not
// settled may be while it waits for its next look: wait, and the guard that
// dead-letters or quarantines it before the stream drops it (a tenth of
// the age, a day at most). A lowered max_age waits while an unsettled
// message is that old (stream.StreamSpec.Settle).
func lastLook(wait, age time.Duration) time.Duration { return wait + min(24*time.Hour, age/10) }

// longestWait is the longest an event may wait for its next attempt to an
// endpoint: the longest step of its retry schedule (with jitter) or a
// Retry-After, and the attempt's timeout.
func longestWait(cfg config.Config) time.Duration {
	var longest time.Duration
	for _, e := range cfg.Endpoints {
		step := e.Retry.RetryAfterMax.D()
		for _, d := range e.Retry.Schedule {
			step = max(step, time.Duration(float64(d.D())*(1+e.Retry.Jitter)))
		}
		longest = max(longest, step+e.Timeout.D())
	}
	return longest
}

// deliveryTTL is how long SENGO_DELIVERY keeps a record: as long as the
// events and the copies it speaks of are kept, and a day at least (a
// retired consumer's place, dispatcher's tombstones). A copy's record that
// aged out before the copy let a redrive queue it again, and a replay
// consumer made anew post it again.
func deliveryTTL(cfg config.Config) time.Duration {
	return max(cfg.Streams.Events.MaxAge.D(), cfg.Streams.Replay.MaxAge.D(), 24*time.Hour)
}

func receiverProjects(cfg config.Config) ([]receiver.Project, []netip.Prefix, error) {
	var out []receiver.Project
	for _, name := range cfg.ProjectNames() {
		p := cfg.Projects[name]
		allow, err := verify.ParseIPAllowlist(p.AllowedIPs)
		if err != nil {
			return nil, nil, err // validated already
		}
		mode := receiver.SignatureOff
		switch p.SignatureMode() {
		case config.SignatureOptional:
			mode = receiver.SignatureOptional
		case config.SignatureRequired:
			mode = receiver.SignatureRequired
		}
		out = append(out, receiver.Project{
			Name: name, APIKey: p.APIKey.Value(), Token: p.Token.Value(),
			CallbackToken: p.CallbackToken.Value(), AllowedIPs: allow, Signature: mode,
		})
	}
	trusted, err := prefixes(cfg.HTTP.TrustedProxies)
	return out, trusted, err
}

// prefixes parses a list of trusted proxies (validated already).
func prefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, t := range list {
		p, err := verify.ParsePrefix(t)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// atMostEvery is f, asked at most once every d: callers in between get
// its last answer. The pending gauges each ask the store (consumer info)
// at every scrape, and such requests wait in nats-server's one queue of
// info requests, with the relay's own (its readiness check, intake's
// receipt order): scrapes in a loop would have delayed them.
func atMostEvery(d time.Duration, f func() float64) func() float64 {
	var mu sync.Mutex
	var last float64
	var at time.Time
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		if at.IsZero() || time.Since(at) >= d {
			last, at = f(), time.Now()
		}
		return last
	}
}

// adminConnLimits and metricsConnLimits bound the connections the admin
// and metrics listeners keep open, as http.max_conns* bound the callback
// listener's: a connection comes before its token is read, and one
// caller holding thousands would take the memory the relay answers SenGo
// with (the admin listener reads up to 64 KiB of each request before its
// token). A console needs a few, a scraper one: one address's share is a
// small part of the total, so that a few addresses cannot take it all and
// shut the operators out; and this machine (an ssh tunnel included) is not
// held to one address's share, only to the total. (Variables for tests.)
var (
	adminConnLimits   = receiver.ConnLimits{PerAddress: 16, Total: 1024, Shared: loopbackPrefixes}
	metricsConnLimits = receiver.ConnLimits{PerAddress: 4, Total: 256, Shared: loopbackPrefixes}
)

// loopbackPrefixes are this machine's addresses.
var loopbackPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// refusedBy counts a connection listener closed unanswered.
func refusedBy(m *receiver.Metrics, listener string) func(reason string) {
	return func(reason string) { m.ConnsRefused.WithLabelValues(listener, reason).Inc() }
}

// sideServer is the HTTP server of the admin or metrics listener. Some of
// their answers need no token (the console's sign-in, a 401), so a
// request's body and an idle connection are bounded in time as on the
// callback listener (http.read_header_timeout, http.read_timeout,
// http.idle_timeout): a client that never finishes its request would
// otherwise hold its connection, and a few thousand of them the process's
// file descriptors. An answer has http.write_timeout to be written from
// its first byte (writeBounded), not from the request: a test send waits
// for its endpoint's timeout (up to 5m), a redrive of every dead letter
// for the store, and each handler bounds its own reads.
func sideServer(cfg config.Config, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           writeBounded(h, cfg.HTTP.WriteTimeout.D()),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout.D(),
		ReadTimeout:       cfg.HTTP.ReadTimeout.D(),
		IdleTimeout:       cfg.HTTP.IdleTimeout.D(),
		MaxHeaderBytes:    32 << 10,
	}
}

// writeBounded gives each answer of h d to be written, from its first
// byte, and d again for each further writeChunk a client takes: one that
// reads slowly but reads (a large listing over a slow link) gets its
// answer; one that stops reading is cut off d after it stopped. A client
// that sent requests and never read the answers kept each handler blocked
// in its write for good, the client's kernel keeping the connection
// alive: on the metrics listener promhttp frees its slot only once the
// answer is written, so two such connections made every scrape after them
// 503; on the admin listener each held its answer (up to 8 MiB) in memory.
func writeBounded(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// net/http clears the deadline after each request.
		h.ServeHTTP(&deadlineWriter{ResponseWriter: w, d: d}, r)
	})
}

// writeChunk is how much of an answer a client must take in each
// http.write_timeout: 64 KiB in 15 s is 35 kbit/s.
const writeChunk = 64 << 10

// deadlineWriter sets its connection's write deadline d ahead as the
// answer's header is written, and again once each writeChunk of it has
// been handed on: counted in bytes, not in writes (promhttp writes a few
// KiB at a time, and a deadline renewed at each write asked a client for
// 4 KiB a timeout).
type deadlineWriter struct {
	http.ResponseWriter
	d    time.Duration
	left int // bytes to write before the deadline is set again
}

func (w *deadlineWriter) arm() {
	w.left = writeChunk
	_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.d))
}

func (w *deadlineWriter) WriteHeader(code int) {
	w.arm()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if w.left <= 0 {
			w.arm()
		}
		c := b[:min(len(b), w.left)]
		m, err := w.ResponseWriter.Write(c)
		n, w.left = n+m, w.left-m
		if err != nil {
			return n, err
		}
		b = b[len(c):]
	}
	return n, nil
}

// Unwrap lets http.ResponseController reach the connection's writer
// (a flush, a deadline of the handler's own).
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
