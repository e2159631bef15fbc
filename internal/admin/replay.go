package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/stream"
)

// BucketReplays keeps the replay jobs started from the admin API and the
// console, by job id: what each selects, when it started, its progress or
// error, the relay that runs it and when that relay last wrote (its
// heartbeat). Every relay behind one address answers for every job, a
// restart keeps them, and a job whose relay died shows as stalled.
const BucketReplays = "SENGO_CONSOLE_REPLAYS"

const (
	// replayTTL is how long a job is kept after its last write.
	replayTTL = 7 * 24 * time.Hour
	// maxReplaysBytes bounds the bucket (some 20,000 jobs).
	maxReplaysBytes = 16 << 20
	// maxJobBytes bounds one job's record; a request whose record would
	// take more than half of it is refused (its counts grow as it runs).
	maxJobBytes = 64 << 10
	// progressEvery is the most often a running job's progress is written.
	progressEvery = 250 * time.Millisecond
	// heartbeatEvery is how often a running job is written when its
	// progress has not changed (a scan waiting on the server).
	heartbeatEvery = 5 * time.Second
	// stallAfter without a write, a running job shows as stalled: its
	// relay died or lost the store. Relays' clocks must agree to well
	// within it.
	stallAfter = 30 * time.Second
	// writeTimeout bounds one write of a job.
	writeTimeout = 5 * time.Second
)

// ReplaysBucket is the bucket the relay provisions for replay jobs.
func ReplaysBucket() stream.BucketSpec {
	return stream.BucketSpec{Name: BucketReplays, Description: "replay jobs of the admin API and console: request, progress, relay, heartbeat",
		TTL: replayTTL, History: 1, MaxBytes: maxReplaysBytes, MaxValueSize: maxJobBytes}
}

// job is a replay job as BucketReplays keeps it and the API answers it.
type job struct {
	Request  dispatcher.ReplayRequest  `json:"request"`
	Progress dispatcher.ReplayProgress `json:"progress"`
	Started  time.Time                 `json:"started"`
	Error    string                    `json:"error,omitempty"`
	// Relay runs the job; Heartbeat is the time of its latest write.
	Relay     string    `json:"relay"`
	Heartbeat time.Time `json:"heartbeat"`
	// Stalled is set by the reader: the job runs, but its relay has not
	// written for stallAfter. It can be started again.
	Stalled bool `json:"stalled"`
}

// running: neither done nor failed.
func (j *job) running() bool { return !j.Progress.Done && j.Error == "" }

// settle decides Stalled at now.
func (j *job) settle(now time.Time) {
	j.Stalled = j.running() && now.Sub(j.Heartbeat) > stallAfter
}

var (
	// errNoJob: no job has that id (or it expired).
	errNoJob = errors.New("no such replay job")
	// errJobTooLarge: the request would not fit in a job's record.
	errJobTooLarge = errors.New("the replay request is too large to keep (too many endpoints, or a very long transaction id or merchantRef)")
	// errTakenOver: another relay started the job again (it saw it
	// stalled): this one's run stops.
	errTakenOver = errors.New("the job was started again by another relay")
)

// jobID is the shape of JobID's ids; nothing else reaches the store.
var jobID = regexp.MustCompile(`^rp_[0-9a-f]{16}$`)

// replays are the replay jobs in BucketReplays.
type replays struct {
	js jetstream.JetStream
	mu sync.Mutex
	kv jetstream.KeyValue
}

func (r *replays) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kv == nil {
		kv, err := r.js.KeyValue(ctx, BucketReplays)
		if err != nil {
			return nil, fmt.Errorf("replay jobs: %w", err)
		}
		r.kv = kv
	}
	return r.kv, nil
}

// get is the job with id and its revision, settled at now; errNoJob when
// there is none.
func (r *replays) get(ctx context.Context, id string, now time.Time) (job, uint64, error) {
	if !jobID.MatchString(id) {
		return job{}, 0, errNoJob
	}
	kv, err := r.bucket(ctx)
	if err != nil {
		return job{}, 0, err
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return job{}, 0, errNoJob
	}
	if err != nil {
		return job{}, 0, fmt.Errorf("replay job %s: %w", id, err)
	}
	var j job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return job{}, 0, fmt.Errorf("replay job %s: %w", id, err)
	}
	j.settle(now)
	return j, e.Revision(), nil
}

// list is every job kept, settled at now, in no order.
func (r *replays) list(ctx context.Context, now time.Time) ([]job, error) {
	kv, err := r.bucket(ctx)
	if err != nil {
		return nil, err
	}
	// Not kv.ListKeys or a watch: their end can come early while jobs
	// write their progress, and a running job was missing (stream.Keys).
	keys, err := stream.Keys(ctx, r.js, BucketReplays, ">")
	if err != nil {
		return nil, fmt.Errorf("replay jobs: %w", err)
	}
	// One read per job, listReads at a time: one after the other, the
	// bucket's 20,000 jobs at most would take past the read timeout.
	return readEach(ctx, len(keys), listReads, func(ctx context.Context, i int) (*job, error) {
		e, err := kv.Get(ctx, keys[i])
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil // deleted
		} else if err != nil {
			return nil, fmt.Errorf("replay jobs: %w", err)
		}
		var j job
		if json.Unmarshal(e.Value(), &j) != nil {
			return nil, nil // not a job: nothing to show
		}
		j.settle(now)
		return &j, nil
	})
}

// listReads is how many jobs list reads at a time.
const listReads = 32

// startReplay starts the job of req on this relay and records it, unless
// the same job is running (here or on another relay, and not stalled):
// then it returns that one, and started is false. A job done, failed or
// stalled is started again. An error is the store's (nothing started),
// or errJobTooLarge.
func (s *Server) startReplay(ctx context.Context, req dispatcher.ReplayRequest) (j job, started bool, err error) {
	// A place is taken before the job is claimed: requests at once each
	// counted the jobs running before any of theirs did, and all started.
	s.mu.Lock()
	if len(s.running)+s.starting >= maxReplaysRunning && s.running[req.JobID()] == 0 {
		s.mu.Unlock()
		return job{}, false, errTooManyReplays
	}
	s.starting++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.starting--
		s.mu.Unlock()
	}()
	if testClaiming != nil {
		testClaiming()
	}
	kv, j, rev, started, err := s.replays.claim(ctx, newJob(req, s.cfg.Relay, time.Now().UTC()), s.runs)
	if err != nil || !started {
		return j, false, err
	}
	s.run(kv, j, rev)
	return j, true, nil
}

// testClaiming, when set, is called by each start that took its place,
// before it claims its job: for tests.
var testClaiming func()

// maxReplaysRunning bounds the replay jobs one relay runs at once: each
// scans SENGO_EVENTS and writes a copy per event and endpoint into the
// store intake writes to, and a script starting them in a loop (each
// relative window a new job) slowed the store until callbacks were
// answered 503. (A variable for tests.)
var maxReplaysRunning = 4

// errTooManyReplays: maxReplaysRunning jobs run on this relay.
var errTooManyReplays = fmt.Errorf("%d replays already run on this relay: wait for one to end (or run the same one again: it is resumed, not started twice)", maxReplaysRunning)

// newJob is req's job as started by relay at now, nothing done yet.
func newJob(req dispatcher.ReplayRequest, relay string, now time.Time) job {
	j := job{Request: req, Started: now, Relay: relay, Heartbeat: now,
		Progress: dispatcher.ReplayProgress{Job: req.JobID(), PerEndpoint: map[string]uint64{}}}
	for _, ep := range req.Endpoints {
		j.Progress.PerEndpoint[ep] = 0
	}
	return j
}

// claim records j in the bucket as a job its relay runs from now on. When
// the job already runs (its relay writes it, or this process runs it:
// runsHere), claim returns that job instead, and claimed is false. A job
// done, failed or stalled is claimed again. An error is the store's
// (nothing recorded), or errJobTooLarge.
func (r *replays) claim(ctx context.Context, j job, runsHere func(id string) bool) (kv jetstream.KeyValue, _ job, rev uint64, claimed bool, err error) {
	id := j.Progress.Job
	b, err := json.Marshal(j)
	if err != nil {
		return nil, job{}, 0, false, err
	}
	if len(b) > maxJobBytes/2 {
		return nil, job{}, 0, false, errJobTooLarge
	}
	if kv, err = r.bucket(ctx); err != nil {
		return nil, job{}, 0, false, err
	}
	// Another relay may create, finish or take over the job between our
	// read and write: a lost race reads again.
	for range 3 {
		rev, err := kv.Create(ctx, id, b)
		if err == nil {
			return kv, j, rev, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, job{}, 0, false, fmt.Errorf("replay job %s: %w", id, err)
		}
		old, orev, err := r.get(ctx, id, j.Started)
		if errors.Is(err, errNoJob) {
			continue // expired since
		}
		if err != nil {
			return nil, job{}, 0, false, err
		}
		if old.running() && (!old.Stalled || runsHere(id)) {
			return kv, old, orev, false, nil
		}
		rev, err = kv.Update(ctx, id, b, orev)
		if err == nil {
			return kv, j, rev, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, job{}, 0, false, fmt.Errorf("replay job %s: %w", id, err)
		}
	}
	return nil, job{}, 0, false, fmt.Errorf("replay job %s: it kept changing while being started", id)
}

// runs reports whether this relay runs the job id.
func (s *Server) runs(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[id] > 0
}

// run runs j, recorded at revision rev, until it ends or Close, writing
// its progress to kv.
func (s *Server) run(kv jetstream.KeyValue, j job, rev uint64) {
	id := j.Progress.Job
	s.mu.Lock()
	s.running[id]++
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			if s.running[id]--; s.running[id] == 0 {
				delete(s.running, id)
			}
			s.mu.Unlock()
		}()
		_, _ = runJob(s.ctx, kv, j, rev, s.cfg.Logger, func(ctx context.Context, progress func(dispatcher.ReplayProgress)) (dispatcher.ReplayProgress, error) {
			return dispatcher.Replay(ctx, s.cfg.JetStream, s.cfg.Endpoints, j.Request, progress)
		})
	}()
}

// ReplayRun runs a replay, reporting its progress to the function it is
// given.
type ReplayRun func(ctx context.Context, progress func(dispatcher.ReplayProgress)) (dispatcher.ReplayProgress, error)

// runJob runs j, recorded at revision rev, with replay until it ends, ctx
// ends or another relay takes the job over (it saw it stalled), writing
// its progress to kv at most every progressEvery and its end; it returns
// the replay's outcome. A progress write the store refuses is logged and
// tried again with the next tick: the replay goes on.
func runJob(ctx context.Context, kv jetstream.KeyValue, j job, rev uint64, logger zerolog.Logger, replay ReplayRun) (dispatcher.ReplayProgress, error) {
	id := j.Progress.Job
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The writer's job has a map of its own: the caller still reads (and
	// answers with) j while the replay writes the writer's counts.
	wj := j
	wj.Progress.PerEndpoint = maps.Clone(j.Progress.PerEndpoint)
	if wj.Progress.PerEndpoint == nil {
		wj.Progress.PerEndpoint = map[string]uint64{}
	}
	w := &jobWriter{kv: kv, j: wj, rev: rev}
	log := logger.With().Str("job", id).Logger()
	var final dispatcher.ReplayProgress
	var err error
	ended := make(chan struct{})
	go func() { // owned by this function, which waits for ended
		defer close(ended)
		final, err = replay(rctx, w.progress)
	}()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	failing := false
running:
	for {
		select {
		case <-ended:
			break running
		case <-tick.C:
			werr := w.write(false)
			switch {
			case errors.Is(werr, errTakenOver):
				cancel()
				<-ended
				log.Warn().Msg("replay stopped: " + errTakenOver.Error())
				return final, errTakenOver
			case werr != nil && !failing:
				log.Warn().Err(werr).Msg("replay progress not recorded; retrying")
			}
			failing = werr != nil
		}
	}
	if err != nil && ctx.Err() != nil {
		err = errors.New("stopped: the process running it stopped; start the job again to resume it")
	}
	w.end(final, err)
	if werr := w.write(true); werr != nil {
		// The job shows as stalled once stallAfter has passed.
		log.Error().Err(werr).AnErr("replay_error", err).Msg("replay finished but its end was not recorded")
		return final, err
	}
	log.Info().Err(err).Msg("replay finished")
	return final, err
}

// ErrReplayRunning: the replay job is being run by a relay (or another
// command) already.
var ErrReplayRunning = errors.New("this replay is already running")

// RecordedReplay runs a replay started outside the admin API (the
// sengo-relay replay command) as a job the console and GET /admin/replays
// show, run by relay, with its progress and end, exactly as if it had been
// started there. When the same job (same window and filters) is running
// already, it runs nothing and returns ErrReplayRunning naming who runs
// it. When the job cannot be recorded (a store without the bucket, or
// refusing writes), the replay runs anyway, unrecorded, and warn says why.
func RecordedReplay(ctx context.Context, js jetstream.JetStream, relay string, req dispatcher.ReplayRequest, logger zerolog.Logger, warn func(error), replay ReplayRun) (dispatcher.ReplayProgress, error) {
	r := &replays{js: js}
	kv, j, rev, claimed, err := r.claim(ctx, newJob(req, relay, time.Now().UTC()), func(string) bool { return false })
	switch {
	case err != nil:
		warn(fmt.Errorf("the console will not show this replay: %w", err))
		return replay(ctx, func(dispatcher.ReplayProgress) {})
	case !claimed:
		return dispatcher.ReplayProgress{Job: j.Progress.Job}, fmt.Errorf("%w: %s runs it (started %s, %d of %d events scanned); follow it in the console, or run this command again once it has ended",
			ErrReplayRunning, j.Relay, j.Started.Format(time.RFC3339), j.Progress.Scanned, j.Progress.Total)
	}
	return runJob(ctx, kv, j, rev, logger, replay)
}

// jobWriter records a running job in its bucket: its progress at most
// every progressEvery (the caller's ticker), a heartbeat every
// heartbeatEvery when nothing changed, and its end. It writes at the
// revision it wrote last, so a relay that started the job again (it saw
// it stalled) is never overwritten: write reports errTakenOver. progress
// and end may be called concurrently with write.
type jobWriter struct {
	kv      jetstream.KeyValue
	mu      sync.Mutex
	j       job // j.Progress.PerEndpoint is the writer's own map
	changed bool
	rev     uint64 // only write touches it
}

// progress takes the replay's progress (its map is the replay's, which
// keeps changing it: the counts are copied).
func (w *jobWriter) progress(p dispatcher.ReplayProgress) {
	w.mu.Lock()
	defer w.mu.Unlock()
	per := w.j.Progress.PerEndpoint
	for name, n := range p.PerEndpoint {
		per[name] = n
	}
	p.PerEndpoint = per
	w.j.Progress = p
	w.changed = true
}

// end takes the replay's outcome.
func (w *jobWriter) end(p dispatcher.ReplayProgress, err error) {
	if p.PerEndpoint != nil {
		w.progress(p)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.j.Error = err.Error()
	}
	w.changed = true
}

// write records the job when it changed, when its heartbeat is due, or
// when final (its end).
func (w *jobWriter) write(final bool) error {
	now := time.Now().UTC()
	w.mu.Lock()
	if !final && !w.changed && now.Sub(w.j.Heartbeat) < heartbeatEvery {
		w.mu.Unlock()
		return nil
	}
	w.j.Heartbeat, w.changed = now, false
	b, err := json.Marshal(w.j)
	id := w.j.Progress.Job
	w.mu.Unlock()
	if err != nil {
		return err
	}
	tries := 1
	if final {
		tries = 3 // the end matters most: without it the job shows stalled
	}
	for i := range tries {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		var rev uint64
		rev, err = w.kv.Update(ctx, id, b, w.rev)
		cancel()
		if err == nil {
			w.rev = rev
			return nil
		}
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			var mine bool
			if rev, mine, err = w.own(id); err == nil && !mine || errors.Is(err, jetstream.ErrKeyNotFound) {
				return errTakenOver // another's, or removed
			} else if err == nil {
				// Its own write, applied though its answer came too late:
				// taken up from there.
				w.rev = rev
				err = fmt.Errorf("the record's revision moved under an earlier write")
			}
		}
		if i < tries-1 {
			time.Sleep(time.Duration(i+1) * progressEvery) // a pause between tries, not a wait for an outcome
		}
	}
	w.mu.Lock()
	w.changed = true // written with the next tick
	w.mu.Unlock()
	return fmt.Errorf("replay job %s: %w", id, err)
}

// own reads job id's record after a write found another revision than
// the writer's: its own earlier write, applied though its answer came
// after the deadline (mine: the same relay and start), or another relay's.
func (w *jobWriter) own(id string) (rev uint64, mine bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	e, err := w.kv.Get(ctx, id)
	if err != nil {
		return 0, false, err
	}
	var stored job
	if err := json.Unmarshal(e.Value(), &stored); err != nil {
		return e.Revision(), false, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return e.Revision(), stored.Relay == w.j.Relay && stored.Started.Equal(w.j.Started), nil
}

// storeUnavailable is the answer to a replay-job read or write the store
// refused; the detail goes to the log.
func (s *Server) storeUnavailable(err error) error {
	s.cfg.Logger.Warn().Err(err).Msg("replay jobs: store unavailable")
	return apiError(http.StatusServiceUnavailable, "store_unavailable", "replay jobs cannot be read or recorded: the store is unavailable or full; try again")
}

// replayBody is the JSON body of POST /admin/replays.
type replayBody struct {
	Endpoint    string   `json:"endpoint"`
	Endpoints   []string `json:"endpoints"`
	All         bool     `json:"all"`
	Project     string   `json:"project"`
	Since       string   `json:"since"`
	Until       string   `json:"until"`
	Statuses    []string `json:"statuses"`
	Transaction string   `json:"transaction"`
	MerchantRef string   `json:"merchantRef"`
	DryRun      bool     `json:"dryRun"`
}

func (s *Server) replayStart(c echo.Context) error {
	var b replayBody
	if err := decodeJSON(c, &b); err != nil {
		return err
	}
	in := ReplayInput{Endpoints: b.Endpoints, All: b.All, Since: b.Since, Until: b.Until, Statuses: b.Statuses,
		Project: b.Project, Transaction: b.Transaction, MerchantRef: b.MerchantRef, DryRun: b.DryRun}
	if b.Endpoint != "" {
		in.Endpoints = append([]string{b.Endpoint}, in.Endpoints...)
	}
	req, err := ReplayRequest(s.cfg.Endpoints, s.cfg.Projects, in, time.Now())
	if errors.Is(err, ErrUnknownEndpoint) {
		return apiError(http.StatusBadRequest, "unknown_endpoint", err.Error())
	} else if err != nil {
		return apiError(http.StatusBadRequest, "invalid_replay", err.Error())
	}
	ctx, cancel := s.readCtx(c)
	defer cancel()
	j, started, err := s.startReplay(ctx, req)
	action := "replay"
	if req.DryRun {
		action = "replay dry run"
	}
	switch {
	case errors.Is(err, errJobTooLarge):
		s.auditAPI(c, action, req.JobID(), 0, err)
		return apiError(http.StatusBadRequest, "invalid_replay", err.Error())
	case errors.Is(err, errTooManyReplays):
		s.auditAPI(c, action, req.JobID(), 0, err)
		return apiError(http.StatusTooManyRequests, "too_many_replays", err.Error())
	case err != nil:
		s.auditAPI(c, action, req.JobID(), 0, err)
		return s.storeUnavailable(err)
	case !started:
		// Nothing started: the audit line says so, not "replay".
		s.auditAPI(c, action+" (already running)", j.Progress.Job, 0, nil)
		return c.JSON(http.StatusOK, &j)
	}
	s.auditAPI(c, action, j.Progress.Job, 0, nil)
	return c.JSON(http.StatusAccepted, &j)
}

func (s *Server) replayList(c echo.Context) error {
	ctx, cancel := s.readCtx(c)
	defer cancel()
	jobs, err := s.replays.list(ctx, time.Now())
	if err != nil {
		return s.storeUnavailable(err)
	}
	out := make(map[string]job, len(jobs))
	for _, j := range jobs {
		out[j.Progress.Job] = j
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) replayShow(c echo.Context) error {
	ctx, cancel := s.readCtx(c)
	defer cancel()
	j, _, err := s.replays.get(ctx, c.Param("id"), time.Now())
	if errors.Is(err, errNoJob) {
		return echo.NewHTTPError(http.StatusNotFound, "no such replay job")
	}
	if err != nil {
		return s.storeUnavailable(err)
	}
	return c.JSON(http.StatusOK, &j)
}
