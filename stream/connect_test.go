package stream_test

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/stream"
)

// A connection the server drops for a protocol error is closed for good
// by nats.go; Closed is told, so the relay can stop instead of running on
// with a dead connection.
func TestClosedIsCalledWhenTheServerDropsTheConnection(t *testing.T) {
	srv := natstest.Start(t)
	var closed atomic.Bool
	nc, err := stream.Connect(stream.ConnectConfig{URL: srv.URL(), Name: "test", Logger: zerolog.Nop(),
		Closed: func(*nats.Conn) { closed.Store(true) }})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.Publish(strings.Repeat("x", 5000), nil) // over the server's 4 KiB control line
	poll.Until(t, "connection closed", func() bool { return closed.Load() && nc.IsClosed() })
}

// A read connection's batched direct gets (a story makes four) allocate a
// few KiB for their answers, not the client library's default queue of
// 65,536 pointers (512 KiB) each, garbage the moment the get ends; and its
// queue still holds the largest batch whole.
func TestReadQueueKeepsGetsSmall(t *testing.T) {
	srv, _ := startWithSpec(t)
	nc, err := stream.Connect(stream.ConnectConfig{URL: srv.(*natstest.Server).URL(), Name: "reader", Logger: zerolog.Nop()}, stream.ReadQueue())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	natstest.PublishMany(t, js, 600, func(int) *nats.Msg { return &nats.Msg{Subject: "t.inbox.a", Data: []byte("x")} })
	n := 0
	if err := stream.ReadSubject(ctx, js, "T_INBOX", "t.inbox.a", func(*jetstream.RawStreamMsg) bool { n++; return true }); err != nil || n != 600 {
		t.Fatalf("read %d of 600 messages: %v", n, err)
	}
	if _, err := js.Publish(ctx, "t.inbox.b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	one := func() { // a story's gets find one message or a few
		if err := stream.ReadSubject(ctx, js, "T_INBOX", "t.inbox.b", func(*jetstream.RawStreamMsg) bool { return true }); err != nil {
			t.Fatal(err)
		}
	}
	one()
	const gets = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range gets {
		one()
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / gets; per > 256<<10 {
		t.Errorf("a direct get allocated %d KiB (client and server), want under 256 KiB", per>>10)
	}
}

// A server URL that does not parse fails the connection with an error that
// does not repeat it: nats.go's does, password included, and it was
// printed at start.
func TestAnUnparsableURLIsNotRepeated(t *testing.T) {
	_, err := stream.Connect(stream.ConnectConfig{URL: "nats://relay:ab%zz-secret@nats-1:4222", Name: "test"})
	if err == nil {
		t.Fatal("connected")
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "%zz") {
		t.Fatalf("the error repeats the URL: %v", err)
	}
}
