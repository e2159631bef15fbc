package stream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/stream"
)

// Without a listener the server is reachable in-process only; with one,
// other processes can connect over loopback and see the same streams.
func TestEmbedded(t *testing.T) {
	t.Run("in-process only", func(t *testing.T) {
		e, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: t.TempDir(), Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Shutdown()
		if url := e.ClientURL(); url != "" {
			t.Fatalf("ClientURL = %q, want none without a listener", url)
		}
		nc, err := stream.Connect(stream.ConnectConfig{Name: "t", Logger: zerolog.Nop()}, e.ConnectOption())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		if _, err := js.AccountInfo(context.Background()); err != nil {
			t.Fatalf("JetStream not available in-process: %v", err)
		}
	})
	t.Run("loopback listener", func(t *testing.T) {
		e, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", SyncAlways: true, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Shutdown()
		nc, err := nats.Connect(e.ClientURL())
		if err != nil {
			t.Fatalf("connect over loopback to %q: %v", e.ClientURL(), err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		if _, err := js.AccountInfo(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// Two relays on one store directory once both reported ready and lost a
// callback one of them had answered 200. The second now fails at once,
// naming the holder; after the first stops, the store opens again.
func TestStoreDirIsLocked(t *testing.T) {
	dir := t.TempDir()
	first, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: dir, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: dir, Logger: zerolog.Nop()})
	if !errors.Is(err, stream.ErrStoreLocked) || !strings.Contains(err.Error(), fmt.Sprintf("in use by PID %d", os.Getpid())) {
		t.Fatalf("second start on the same dir: %v", err)
	}
	first.Shutdown()
	again, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: dir, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	again.Shutdown()
}

// A busy listen address fails at once, naming the setting, instead of
// waiting 30 s for a server that cannot start.
func TestBusyListenFailsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	_, err = stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: t.TempDir(), Listen: ln.Addr().String(), Logger: zerolog.Nop()})
	if !errors.Is(err, stream.ErrListenBusy) || !strings.Contains(err.Error(), "nats.embedded.listen") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
}
