package stream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// GroupSync is group commit for the embedded store: many writers share one
// fsync. nats-server with SyncAlways fsyncs after every single write, one
// after the other under the stream's lock (BENCHMARKS.md), so concurrent
// callbacks each wait for their own fsync. Run instead without SyncAlways,
// the server writes every message to its file (write(2), the page cache)
// before its PubAck but fsyncs only on its own interval; a writer that
// needs its write on disk calls Sync after the PubAck. Sync returns once
// an fsync of the whole store that began after the call has completed, so
// it covers every write acknowledged before the call. While one fsync
// runs, every Sync that arrives joins the next one: under load one fsync
// serves many callbacks, and a lone writer waits for one fsync, no timer.
//
// An fsync that fails is final: after a failed fsync the kernel may have
// dropped the dirty pages it could not write, so nothing in the page cache
// can be trusted to reach the disk. Every later Sync returns the same
// error and OnFail is called once, so the relay stops taking callbacks and
// restarts from what is on disk (PostgreSQL's answer to the same problem).
//
// GroupSync is safe for concurrent use. The zero value is not usable; use
// NewGroupSync.
type GroupSync struct {
	fsync  func() error
	onFail func(error)
	close  func() error

	mu      sync.Mutex
	next    *syncRound // the round new callers join; nil: none yet
	running bool       // a goroutine is running rounds
	failed  error
	loops   sync.WaitGroup // the goroutine running rounds, for Close

	fsyncs  atomic.Uint64
	synced  atomic.Uint64 // callers served
	waiting atomic.Int64
	seconds atomic.Int64 // nanoseconds spent in fsync, summed
}

type syncRound struct {
	done    chan struct{}
	err     error
	callers int
}

// GroupSyncConfig configures NewGroupSync.
type GroupSyncConfig struct {
	// Dir is a directory on the store's filesystem (the store dir).
	Dir string
	// OnFail is called once, from the syncing goroutine, when an fsync
	// fails. Optional.
	OnFail func(error)
	// FSync replaces the fsync of Dir's filesystem; for tests that must
	// hold or fail it. Nil: the real one.
	FSync func() error
}

// ErrGroupSyncUnsupported: this platform has no way to fsync a whole
// filesystem (syncfs); use the server's SyncAlways instead.
var ErrGroupSyncUnsupported = errors.New("group commit needs syncfs (Linux)")

// NewGroupSync prepares group commit for the store under cfg.Dir.
func NewGroupSync(cfg GroupSyncConfig) (*GroupSync, error) {
	g := &GroupSync{fsync: cfg.FSync, onFail: cfg.OnFail, close: func() error { return nil }}
	if g.fsync == nil {
		f, err := os.Open(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("group commit: %w", err)
		}
		if err := ordersRenames(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("group commit on %s: %w", cfg.Dir, err)
		}
		if err := syncFS(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("group commit on %s: %w", cfg.Dir, err)
		}
		g.fsync, g.close = func() error { return syncFS(f) }, f.Close
	}
	return g, nil
}

// Sync blocks until every write the store acknowledged before the call is
// on disk, or ctx ends (then the write may or may not be durable). It
// returns the fsync's error, wrapped; after a failure, every call fails.
func (g *GroupSync) Sync(ctx context.Context) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	if g.failed != nil {
		g.mu.Unlock()
		return g.failed
	}
	r := g.next
	if r == nil {
		r = &syncRound{done: make(chan struct{})}
		g.next = r
	}
	r.callers++
	if !g.running {
		g.running = true
		g.loops.Add(1)
		go func() { defer g.loops.Done(); g.loop() }()
	}
	g.mu.Unlock()
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return fmt.Errorf("wait for fsync: %w", ctx.Err())
	}
}

// loop runs rounds until no caller waits: each round takes the callers
// gathered so far and fsyncs once for all of them.
func (g *GroupSync) loop() {
	busy := false // the last round served several callers
	for {
		if busy {
			// Under load, let the round gather a little longer (a fraction
			// of an fsync): fewer, fuller fsyncs cost less CPU, and the
			// callers would have waited for the running fsync anyway.
			time.Sleep(gatherDelay)
		}
		g.mu.Lock()
		r := g.next
		if r == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.next = nil
		g.mu.Unlock()

		start := time.Now()
		err := g.fsync()
		g.seconds.Add(int64(time.Since(start)))
		g.fsyncs.Add(1)
		g.synced.Add(uint64(r.callers))
		if err != nil {
			err = fmt.Errorf("fsync of the store failed; the relay must restart: %w", err)
			g.mu.Lock()
			first := g.failed == nil
			g.failed = err
			// Callers already gathered for the next round fail too.
			if n := g.next; n != nil {
				n.err = err
				close(n.done)
				g.next = nil
			}
			g.running = false
			g.mu.Unlock()
			r.err = err
			close(r.done)
			if first && g.onFail != nil {
				g.onFail(err)
			}
			return
		}
		busy = r.callers >= gatherCallers
		close(r.done)
	}
}

// Under load (a round of gatherCallers or more), the next round starts
// gatherDelay later to gather more callers.
const (
	gatherCallers = 4
	gatherDelay   = 1 * time.Millisecond
)

// GroupSyncStats are a GroupSync's counters.
type GroupSyncStats struct {
	FSyncs  uint64        // fsyncs run
	Callers uint64        // Sync calls they served
	Waiting int64         // Sync calls waiting now
	Time    time.Duration // time spent in fsync
}

// Stats returns the counters; zero for a nil GroupSync.
func (g *GroupSync) Stats() GroupSyncStats {
	if g == nil {
		return GroupSyncStats{}
	}
	return GroupSyncStats{FSyncs: g.fsyncs.Load(), Callers: g.synced.Load(), Waiting: g.waiting.Load(), Time: time.Duration(g.seconds.Load())}
}

// ErrGroupSyncClosed: Sync after Close.
var ErrGroupSyncClosed = errors.New("group commit closed")

// Close waits for a running fsync to finish and releases the directory
// handle; later Sync calls fail with ErrGroupSyncClosed.
func (g *GroupSync) Close() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	failed := g.failed
	if g.failed == nil {
		g.failed = ErrGroupSyncClosed
	}
	g.mu.Unlock()
	g.loops.Wait()
	// One more: what the store wrote as it shut down (each consumer's
	// state), which no writer waited for, is on disk too.
	var err error
	if failed == nil {
		err = g.fsync()
	}
	return errors.Join(err, g.close())
}
