package stream_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/poll"
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

// The embedded server authenticates every connection. The subscriber
// identity reads events and runs consumers of its own; it cannot publish
// an event (which the dispatcher would sign and deliver), touch the
// relay's consumers, or delete a stream.
func TestEmbeddedAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	auth := &stream.EmbeddedAuth{
		RelayUser: "sengo-relay", RelayPassword: relayPW,
		SubscriberUser: "subscriber", SubscriberPassword: subPW,
		Stream: "SENGO_EVENTS", Subjects: "sengo.events.>", Protected: []string{"webhook-orders"},
	}
	e, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: auth, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	ctx := context.Background()

	relay, err := stream.Connect(stream.ConnectConfig{Name: "relay", Logger: zerolog.Nop()}, e.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	rjs, _ := jetstream.New(relay)
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_INBOX", Subjects: []string{"sengo.inbox.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.Publish(ctx, "sengo.events.main.retail.success", []byte(`{"id":"evt_1"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "webhook-orders", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}

	for name, opts := range map[string][]nats.Option{
		"no credentials":  nil,
		"wrong password":  {nats.UserInfo("subscriber", "nope")},
		"relay, no token": {nats.UserInfo("sengo-relay", "")},
	} {
		if nc, err := nats.Connect(e.ClientURL(), opts...); err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		}
	}

	// A bcrypt check takes seconds under -race on a busy machine; the
	// default 2 s connect timeout failed CI-like runs.
	// The server refuses a request it does not permit by saying so to the
	// connection, apart from the request, which times out: the subscriber
	// hears each refusal.
	var refusedMu sync.Mutex
	var refused []string
	sub, err := nats.Connect(e.ClientURL(), nats.UserInfo("subscriber", subPW), nats.Timeout(15*time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				refusedMu.Lock()
				refused = append(refused, err.Error())
				refusedMu.Unlock()
			}
		}))
	if err != nil {
		t.Fatalf("subscriber: %v", err)
	}
	defer sub.Close()
	sjs, _ := jetstream.New(sub)
	cons, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "orders-service", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("subscriber cannot create its own consumer: %v", err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil || string(msg.Data()) != `{"id":"evt_1"}` {
		t.Fatalf("subscriber cannot read events: %v", err)
	}
	if err := msg.DoubleAck(ctx); err != nil {
		t.Fatalf("subscriber cannot ack its own consumer: %v", err)
	}

	// denied checks that the subscriber's request to subject fails, and
	// that it fails because the server refused it. A failure alone said
	// nothing: a request that merely timed out on a loaded machine (the
	// server slow to answer, a step before it slow) counted as refused,
	// and a permission given away went unseen.
	denied := func(what, subject string, f func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := f(ctx); err == nil {
			t.Errorf("subscriber could %s", what)
			return
		}
		want := fmt.Sprintf("Publish to %q", subject)
		poll.Until(t, "the refusal to "+what, func() bool {
			refusedMu.Lock()
			defer refusedMu.Unlock()
			return slices.ContainsFunc(refused, func(r string) bool { return strings.Contains(r, want) })
		})
	}
	denied("publish an event", "sengo.events.main.retail.success", func(ctx context.Context) error {
		_, err := sjs.Publish(ctx, "sengo.events.main.retail.success", []byte(`{"id":"forged"}`))
		return err
	})
	denied("publish to the inbox", "sengo.inbox.main", func(ctx context.Context) error {
		_, err := sjs.Publish(ctx, "sengo.inbox.main", []byte(`{}`))
		return err
	})
	denied("delete a stream", "$JS.API.STREAM.DELETE.SENGO_EVENTS", func(ctx context.Context) error { return sjs.DeleteStream(ctx, "SENGO_EVENTS") })
	denied("delete the relay's consumer", "$JS.API.CONSUMER.DELETE.SENGO_EVENTS.webhook-orders", func(ctx context.Context) error {
		return sjs.DeleteConsumer(ctx, "SENGO_EVENTS", "webhook-orders")
	})
	// The subscriber may look at the relay's consumer, not pull from it.
	relays, err := sjs.Consumer(ctx, "SENGO_EVENTS", "webhook-orders")
	if err != nil {
		t.Fatalf("the subscriber's look at the relay's consumer: %v", err)
	}
	denied("pull from the relay's consumer", "$JS.API.CONSUMER.MSG.NEXT.SENGO_EVENTS.webhook-orders", func(context.Context) error {
		_, err := relays.Next(jetstream.FetchMaxWait(time.Second))
		return err
	})
	denied("read the inbox", "$JS.API.STREAM.INFO.SENGO_INBOX", func(ctx context.Context) error {
		_, err := sjs.Stream(ctx, "SENGO_INBOX")
		return err
	})
	// And the pull took nothing: the relay's consumer, as the relay sees
	// it, never handed out the event.
	rc, err := rjs.Consumer(ctx, "SENGO_EVENTS", "webhook-orders")
	if err != nil {
		t.Fatalf("relay's consumer: %v", err)
	}
	if info := rc.CachedInfo(); info.Delivered.Consumer != 0 || info.NumAckPending != 0 {
		t.Fatalf("the relay's consumer after the subscriber's pull: %d delivered, %d unacknowledged", info.Delivered.Consumer, info.NumAckPending)
	}

	s, _ := rjs.Stream(ctx, "SENGO_EVENTS")
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("events stream after the attempts: %v %+v", err, info.State)
	}
	if _, err := rjs.Consumer(ctx, "SENGO_EVENTS", "webhook-orders"); err != nil {
		t.Fatalf("relay's consumer: %v", err)
	}
}
