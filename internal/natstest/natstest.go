package natstest

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/stream"
)

// Server is one embedded JetStream server owned by a test.
type Server struct {
	t      testing.TB
	dir    string
	listen string

	mu  sync.Mutex
	emb *stream.Embedded
}

// Start starts a server on a free loopback port with its store in a temp
// dir. It is shut down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir(), listen: "127.0.0.1:" + strconv.Itoa(freePort(t))}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// Dir is the server's store directory.
func (s *Server) Dir() string { return s.dir }

// URL is the server's client URL; it stays the same across Restart.
func (s *Server) URL() string { return "nats://" + s.listen }

// Stop shuts the server down (a NATS outage). Idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.emb != nil {
		s.emb.Shutdown()
		s.emb = nil
	}
}

// Restart starts the server again on the same port and store; streams and
// their messages are as they were.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	// The port can take a moment to be released after a stop.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.emb, err = stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: s.dir, Listen: s.listen, Logger: zerolog.Nop()})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // retry pacing for the port, not waiting for an outcome
	}
	if err != nil {
		s.t.Fatalf("natstest: start: %v", err)
	}
}

// Connect returns a client connection and JetStream context, closed when
// the test ends.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Messages returns every message stream holds, in order (deleted ones
// skipped).
func Messages(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("natstest: stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("natstest: stream %s: %v", stream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("natstest: %s message %d: %v", stream, seq, err)
		}
		out = append(out, m)
	}
	return out
}

// RefuseWrites makes stream refuse every new message for real (a MaxMsgSize
// of 1 byte; for a KV bucket pass "KV_<bucket>") and returns the function
// that restores its limit. The restore also runs when the test ends.
func RefuseWrites(t testing.TB, js jetstream.JetStream, stream string) (restore func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("natstest: stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("natstest: stream %s: %v", stream, err)
	}
	before := info.Config.MaxMsgSize
	refused := info.Config
	refused.MaxMsgSize = 1
	if _, err := js.UpdateStream(ctx, refused); err != nil {
		t.Fatalf("natstest: refuse writes on %s: %v", stream, err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := js.Stream(ctx, stream)
			if err != nil {
				t.Errorf("natstest: stream %s: %v", stream, err)
				return
			}
			cfg := s.CachedInfo().Config
			cfg.MaxMsgSize = before
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				t.Errorf("natstest: restore writes on %s: %v", stream, err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}

// SetAckWait sets consumer's ack wait on stream to d, as a relay started
// later with another setting does to a shared consumer, and returns the
// consumer.
func SetAckWait(t testing.TB, js jetstream.JetStream, stream, consumer string, d time.Duration) jetstream.Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		t.Fatalf("natstest: consumer %s on %s: %v", consumer, stream, err)
	}
	cfg := c.CachedInfo().Config
	cfg.AckWait = d
	if c, err = js.CreateOrUpdateConsumer(ctx, stream, cfg); err != nil {
		t.Fatalf("natstest: ack wait of %s on %s: %v", consumer, stream, err)
	}
	return c
}
