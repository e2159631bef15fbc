package stream_test

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
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
