package natstest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sengo-relay/sengo-relay/stream"
)

// FSyncGate is a group-commit fsync that a test holds: every fsync blocks
// until the test fails one (Fail) or opens the gate for good (Open). An
// fsync let through does the real one on the store's filesystem.
type FSyncGate struct {
	GroupSync *stream.GroupSync
	real      *stream.GroupSync
	ch        chan error
	once      sync.Once
	started   atomic.Int64
}

// NewFSyncGate returns a gate whose GroupSync fsyncs dir's filesystem.
// The gate is opened when the test ends.
func NewFSyncGate(t testing.TB, dir string, onFail func(error)) *FSyncGate {
	t.Helper()
	real, err := stream.NewGroupSync(stream.GroupSyncConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	g := &FSyncGate{real: real, ch: make(chan error)}
	g.GroupSync, err = stream.NewGroupSync(stream.GroupSyncConfig{Dir: dir, OnFail: onFail, FSync: g.fsync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Open(); real.Close() })
	return g
}

func (g *FSyncGate) fsync() error {
	g.started.Add(1)
	if err, ok := <-g.ch; ok && err != nil {
		return err
	}
	return g.real.Sync(context.Background())
}

// Started is how many fsyncs have begun (held ones included).
func (g *FSyncGate) Started() int64 { return g.started.Load() }

// Fail makes one held fsync fail with err; it blocks until one is held.
func (g *FSyncGate) Fail(err error) { g.ch <- err }

// Open lets every fsync through from now on. Idempotent.
func (g *FSyncGate) Open() { g.once.Do(func() { close(g.ch) }) }
