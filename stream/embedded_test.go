package stream_test

import (
	"context"
	"testing"

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
