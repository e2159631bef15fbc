package stream_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/stream"
)

// An account with tiered JetStream limits (an operator's, per R1, R3…)
// has no top-level limit: its limits and its use are its tier's. /readyz
// compared with the top-level one only, and said ready while the tier was
// full and every callback got 503.
func TestRoomReadsAnAccountsTier(t *testing.T) {
	acc := server.NewAccount("T")
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		Accounts: []*server.Account{acc},
		Users:    []*server.User{{Username: "u", Password: "p", Account: acc}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	live, err := srv.LookupAccount("T")
	if err != nil {
		t.Fatal(err)
	}
	if err := live.EnableJetStream(map[string]server.JetStreamAccountLimits{"R1": {MaxStore: 64 << 10, MaxMemory: -1, MaxStreams: -1, MaxConsumers: -1}}, nil); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("u", "p"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T_INBOX", Subjects: []string{"t.inbox.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Room(ctx, js, "T_INBOX", 4<<10, 0); err != nil {
		t.Fatalf("an empty tier: %v", err)
	}
	body := make([]byte, 4<<10)
	for i := 0; ; i++ {
		if _, err := js.Publish(ctx, fmt.Sprintf("t.inbox.%d", i), body); err != nil {
			break // the tier is full
		}
		if i > 100 {
			t.Fatal("the tier never filled")
		}
	}
	if err := stream.Room(ctx, js, "T_INBOX", 4<<10, 0); !errors.Is(err, stream.ErrStoreFull) {
		t.Fatalf("a full tier: %v, want ErrStoreFull", err)
	}
}
