package stream_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/stream"
)

// pullerFixture stores n messages in stream P and returns an explicit-ack
// consumer on it, read over a connection of its own (nc's counters are the
// puller's alone).
func pullerFixture(t *testing.T, n int) (jetstream.Consumer, func() uint64) {
	t.Helper()
	srv := natstest.Start(t)
	_, pub := srv.Connect(t)
	nc, js := srv.Connect(t)
	ctx := context.Background()
	if _, err := pub.CreateStream(ctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := pub.Publish(ctx, "p.x", []byte{byte(i), byte(i >> 8)}); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "P", jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	base := nc.Stats().OutMsgs
	return cons, func() uint64 { return nc.Stats().OutMsgs - base }
}

// Every stored message reaches exactly one worker, and the workers waiting
// together share pull requests: far fewer requests than messages (one Next
// per message made one request each).
func TestPullerSharesPullRequests(t *testing.T) {
	const n, workers = 2000, 8
	cons, sent := pullerFixture(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	p := stream.NewPuller(cons, time.Second)
	ran := make(chan struct{})
	go func() { p.Run(ctx); close(ran) }()

	var mu sync.Mutex
	seen := map[uint64]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := p.Next()
				if errors.Is(err, jetstream.ErrNoMessages) {
					return // the stream is drained
				}
				if err != nil {
					t.Error(err)
					return
				}
				meta, _ := m.Metadata()
				mu.Lock()
				seen[meta.Sequence.Stream]++
				mu.Unlock()
				if err := m.Ack(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	<-ran
	if len(seen) != n {
		t.Fatalf("%d distinct messages reached the workers, want %d", len(seen), n)
	}
	for seq, c := range seen {
		if c != 1 {
			t.Fatalf("message %d reached the workers %d times", seq, c)
		}
	}
	requests := sent() - n // every message was acked once; the rest are pulls
	t.Logf("%d pull requests for %d messages and %d workers", requests, n, workers)
	if requests > n/2 {
		t.Fatalf("%d pull requests for %d messages: not shared", requests, n)
	}
}

// A message is pulled only for a worker that asked for one: while the
// workers that asked hold theirs, nothing else is taken from the stream
// (it would wait in the client with its ack wait running).
func TestPullerTakesOnlyForWaitingWorkers(t *testing.T) {
	cons, _ := pullerFixture(t, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := stream.NewPuller(cons, time.Second)
	go p.Run(ctx)
	for range 2 {
		if _, err := p.Next(); err != nil {
			t.Fatal(err)
		}
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 2 || info.NumPending != 8 || info.NumWaiting != 0 {
		t.Fatalf("ack pending %d, pending %d, waiting pulls %d; want 2, 8, 0", info.NumAckPending, info.NumPending, info.NumWaiting)
	}
}

// An empty stream answers ErrNoMessages after the pull's wait; a stopped
// puller answers ErrPullerStopped, to the worker waiting and to later ones.
func TestPullerIdleAndStopped(t *testing.T) {
	cons, _ := pullerFixture(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	p := stream.NewPuller(cons, 50*time.Millisecond)
	ran := make(chan struct{})
	go func() { p.Run(ctx); close(ran) }()
	if _, err := p.Next(); !errors.Is(err, jetstream.ErrNoMessages) {
		t.Fatalf("empty stream: %v, want ErrNoMessages", err)
	}
	cancel()
	<-ran
	if _, err := p.Next(); !errors.Is(err, stream.ErrPullerStopped) {
		t.Fatalf("after Run returned: %v, want ErrPullerStopped", err)
	}
}

// A worker that asks while a pull is in progress, and is still waiting
// when Run stops, is told ErrPullerStopped once that pull ends: a worker
// left waiting for good held the relay's shutdown.
func TestAWorkerQueuedWhenRunStopsIsTold(t *testing.T) {
	cons, _ := pullerFixture(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	p := stream.NewPuller(cons, 2*time.Second)
	ran := make(chan struct{})
	go func() { p.Run(ctx); close(ran) }()
	first := make(chan error, 1)
	go func() { _, err := p.Next(); first <- err }()
	poll.Until(t, "the first worker's pull waiting at the server", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumWaiting == 1
	})
	second := make(chan error, 1)
	go func() { _, err := p.Next(); second <- err }() // queued behind the pull in progress
	cancel()
	if err := <-first; !errors.Is(err, jetstream.ErrNoMessages) {
		t.Fatalf("the worker whose pull ran: %v", err)
	}
	select {
	case err := <-second:
		if !errors.Is(err, stream.ErrPullerStopped) {
			t.Fatalf("the queued worker: %v, want ErrPullerStopped", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the queued worker is still waiting 10 s after Run stopped")
	}
	<-ran
}
