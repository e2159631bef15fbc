package stream_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/stream"
)

// heldFSync is an fsync that blocks until the test sends its result.
type heldFSync struct {
	started atomic.Int64
	results chan error
}

func (h *heldFSync) fsync() error { h.started.Add(1); return <-h.results }

// Callers that arrive while an fsync runs share the next one: 64 callers
// cost two fsyncs, and none returns before an fsync that began after its
// call has completed.
func TestGroupSyncSharesFsyncs(t *testing.T) {
	h := &heldFSync{results: make(chan error)}
	g, err := stream.NewGroupSync(stream.GroupSyncConfig{FSync: h.fsync})
	if err != nil {
		t.Fatal(err)
	}
	var returned atomic.Int64
	var wg sync.WaitGroup
	call := func() {
		defer wg.Done()
		if err := g.Sync(context.Background()); err != nil {
			t.Error(err)
		}
		returned.Add(1)
	}
	wg.Add(1)
	go call()
	poll.Until(t, "the first fsync to start", func() bool { return h.started.Load() == 1 })
	for range 63 {
		wg.Add(1)
		go call()
	}
	poll.Until(t, "64 callers waiting", func() bool { return g.Stats().Waiting == 64 })
	h.results <- nil // the first fsync ends: only its own caller may return
	poll.Until(t, "the second fsync to start", func() bool { return h.started.Load() == 2 })
	poll.Until(t, "the first caller to return", func() bool { return returned.Load() == 1 })
	if n := g.Stats().Waiting; n != 63 {
		t.Fatalf("%d callers waiting after the first fsync, want 63: a caller returned on an fsync that began before its call", n)
	}
	h.results <- nil
	wg.Wait()
	if s := g.Stats(); s.FSyncs != 2 || s.Callers != 64 {
		t.Fatalf("stats %+v, want 2 fsyncs serving 64 callers", s)
	}
	// A lone caller later gets an fsync of its own at once.
	go func() { h.results <- nil }()
	if err := g.Sync(context.Background()); err != nil || g.Stats().FSyncs != 3 {
		t.Fatalf("lone Sync: %v, %d fsyncs", err, g.Stats().FSyncs)
	}
}

// Close fsyncs once more, for what the store wrote as it shut down (its
// consumers' state, which no writer waits for); not after a failure.
func TestGroupSyncClosesWithAnFsync(t *testing.T) {
	for _, fail := range []bool{false, true} {
		var n atomic.Int64
		g, err := stream.NewGroupSync(stream.GroupSyncConfig{FSync: func() error {
			n.Add(1)
			if fail {
				return errors.New("EIO")
			}
			return nil
		}, OnFail: func(error) {}})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Sync(t.Context()); (err != nil) != fail {
			t.Fatalf("sync: %v", err)
		}
		err = g.Close()
		if want := map[bool]int64{false: 2, true: 1}[fail]; n.Load() != want || err != nil {
			t.Errorf("failed %v: %d fsyncs with Close (%v), want %d", fail, n.Load(), err, want)
		}
	}
}

// A failed fsync fails every caller it served and every later one, and
// reports itself once: after it the page cache cannot be trusted.
func TestGroupSyncFailureIsFinal(t *testing.T) {
	h := &heldFSync{results: make(chan error)} // holds the first fsync
	var failures atomic.Int64
	g, _ := stream.NewGroupSync(stream.GroupSyncConfig{FSync: h.fsync, OnFail: func(error) { failures.Add(1) }})
	errIO := errors.New("input/output error")
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- g.Sync(context.Background()) }()
	}
	poll.Until(t, "10 callers waiting", func() bool { return g.Stats().Waiting == 10 })
	h.results <- errIO
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, errIO) {
			t.Fatalf("Sync = %v, want the fsync's error", err)
		}
	}
	if err := g.Sync(context.Background()); !errors.Is(err, errIO) {
		t.Fatalf("Sync after a failed fsync = %v, want the same error", err)
	}
	if n := h.started.Load(); n != 1 {
		t.Fatalf("%d fsyncs ran, want 1: nothing is fsynced again after a failure", n)
	}
	if failures.Load() != 1 {
		t.Fatalf("OnFail called %d times, want 1", failures.Load())
	}
}

// A caller whose context ends stops waiting; later callers are still served.
func TestGroupSyncHonoursContext(t *testing.T) {
	h := &heldFSync{results: make(chan error)}
	g, _ := stream.NewGroupSync(stream.GroupSyncConfig{FSync: h.fsync})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.Sync(ctx); !errors.Is(err, context.DeadlineExceeded) { // the fsync is held meanwhile
		t.Fatalf("Sync = %v, want the context's deadline", err)
	}
	h.results <- nil // the held fsync ends; the next caller gets one of its own
	go func() { h.results <- nil }()
	if err := g.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Group commit rests on one fact of nats-server's file store, checked
// here so that an upgrade that changes it fails: without SyncAlways, an R1
// stream has written every message to its block file (write(2), so the
// page cache that syncfs flushes) before it sends the PubAck. If the
// server kept acknowledged messages in its own buffers, an fsync after
// the PubAck would not cover them.
func TestAcknowledgedWriteIsInTheFileBeforeFsync(t *testing.T) {
	dir := t.TempDir()
	e, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: dir, SyncInterval: time.Hour, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := stream.Connect(stream.ConnectConfig{Name: "t", Logger: zerolog.Nop()}, e.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		marker := []byte("acknowledged-" + time.Now().Format(time.RFC3339Nano) + "-" + string(rune('a'+i%26)))
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "t.x", Data: marker}); err != nil {
			t.Fatal(err)
		}
		if !inFiles(t, dir, marker) {
			t.Fatalf("message %d acknowledged but not written to any file under the store: group commit's fsync would not cover it", i)
		}
	}
}

func inFiles(t *testing.T, dir string, marker []byte) bool {
	found := false
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, marker) {
			found = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// The real fsync (syncfs of the store's filesystem) runs and is counted.
func TestGroupSyncOnDisk(t *testing.T) {
	g, err := stream.NewGroupSync(stream.GroupSyncConfig{Dir: t.TempDir()})
	if errors.Is(err, stream.ErrGroupSyncUnsupported) {
		t.Skip("no syncfs on this platform: the relay falls back to nats-server's SyncAlways")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for range 3 {
		if err := g.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if s := g.Stats(); s.FSyncs != 3 || s.Time <= 0 {
		t.Fatalf("stats %+v, want 3 timed fsyncs", s)
	}
}
