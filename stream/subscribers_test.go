package stream_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
	"github.com/sengo-relay/sengo-relay/stream"
)

// The tests' passwords are as long as a generated one, so the server checks
// them at bcrypt's lowest cost (bcryptHash): a short chosen one costs a
// check at the default cost on every connect, 1.4 s of CPU under -race, and
// the tests here connect dozens of times.
const (
	relayPW = "relay-pw-0123456789abcdef0123456789abcdef012"
	subPW   = "sub-pw-0123456789abcdef0123456789abcdef0123"
)

// The subscriber cannot write into the relay's streams by choosing where
// JetStream's answers go. In one account it could: nats-server publishes a
// direct get's answer and a pull's messages to the request's reply
// subject, and a push consumer's to its deliver subject, as written, and
// the inbox, the transactions' bucket or the events stream stored them
// (an empty entry in the bucket quarantined the transaction's genuine
// success). What it may do still works: read, pull and ack its own
// consumer, push to its _INBOX, live events.
func TestTheSubscriberCannotWriteThroughReplies(t *testing.T) {
	auth := &stream.EmbeddedAuth{
		RelayUser: "sengo-relay", RelayPassword: relayPW,
		SubscriberUser: "subscriber", SubscriberPassword: subPW,
		Stream: "SENGO_EVENTS", Subjects: "sengo.events.>", Protected: []string{"webhook-orders"},
	}
	e, rjs := startWithSubscriber(t, auth)
	ctx := context.Background()
	events, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}, AllowDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_INBOX", Subjects: []string{"sengo.inbox.>"}})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := rjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "SENGO_TX"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.Publish(ctx, "sengo.events.main.retail.success", []byte(`{"id":"evt_1"}`)); err != nil {
		t.Fatal(err)
	}

	sub := subscriberConn(t, e)
	sjs, _ := jetstream.New(sub)
	live, err := sub.SubscribeSync("sengo.events.>")
	if err != nil {
		t.Fatal(err)
	}
	own, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "orders-service", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("the subscriber's own consumer: %v", err)
	}
	targets := []string{"sengo.inbox.main", "$KV.SENGO_TX.main.t1", "sengo.events.main.retail.refund"}
	for _, reply := range targets {
		for _, m := range []*nats.Msg{
			{Subject: "$JS.API.DIRECT.GET.SENGO_EVENTS", Reply: reply, Data: []byte(`{"seq":1}`)},
			{Subject: "$JS.API.DIRECT.GET.SENGO_EVENTS", Reply: reply},
			{Subject: "$JS.API.STREAM.INFO.SENGO_EVENTS", Reply: reply},
			{Subject: "$JS.API.CONSUMER.MSG.NEXT.SENGO_EVENTS.orders-service", Reply: reply, Data: []byte(`{"batch":1}`)},
		} {
			if err := sub.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A push consumer delivering into the relay's subjects, and one named
	// as the relay's consumers are, are refused at creation.
	for _, cfg := range []jetstream.ConsumerConfig{
		{Durable: "pusher", DeliverSubject: "sengo.inbox.main", AckPolicy: jetstream.AckNonePolicy},
		{Durable: "pusher-kv", DeliverSubject: "$KV.SENGO_TX.main.t2", AckPolicy: jetstream.AckNonePolicy},
		{Durable: "webhook-crm", AckPolicy: jetstream.AckExplicitPolicy},                   // an endpoint not configured (yet, or any more)
		{Durable: stream.ScanConsumerPrefix + "x", AckPolicy: jetstream.AckExplicitPolicy}, // the name of a relay's scan (a replay's)
	} {
		if _, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", cfg); err == nil || !strings.Contains(err.Error(), "relay") && !strings.Contains(err.Error(), "_INBOX") {
			t.Errorf("consumer %s (deliver_subject %q) created: %v", cfg.Durable, cfg.DeliverSubject, err)
		}
	}
	// A consumer of an endpoint no longer configured (not in Protected)
	// is still the relay's: its retirement dead-letters what it holds.
	if _, err := rjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "webhook-old", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if err := sjs.DeleteConsumer(ctx, "SENGO_EVENTS", "webhook-old"); err == nil {
		t.Error("the subscriber deleted webhook-old")
	}
	if _, err := rjs.Consumer(ctx, "SENGO_EVENTS", "webhook-old"); err != nil {
		t.Errorf("webhook-old after the subscriber's delete: %v", err)
	}
	if err := sjs.DeleteConsumer(ctx, "SENGO_EVENTS", "orders-service-2"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("deleting a consumer of its own that does not exist: %v, want not found", err)
	}
	// Allowed: a push consumer delivering to the subscriber's _INBOX.
	pushed, err := sub.SubscribeSync("_INBOX.pushed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "pushed", DeliverSubject: "_INBOX.pushed", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatalf("a push consumer to _INBOX: %v", err)
	}
	if m, err := pushed.NextMsg(10 * time.Second); err != nil || string(m.Data) != `{"id":"evt_1"}` {
		t.Fatalf("push delivery: %v", err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}

	// Live events still arrive, and the subscriber's consumer still works.
	if _, err := rjs.Publish(ctx, "sengo.events.main.retail.pending", []byte(`{"id":"evt_2"}`)); err != nil {
		t.Fatal(err)
	}
	// (The answers sent to sengo.events.main.retail.refund above come
	// back to the subscriber's own account, to this subscription, first.)
	for {
		m, err := live.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("live event: %v", err)
		}
		if string(m.Data) == `{"id":"evt_2"}` {
			break
		}
	}
	msg, err := own.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("the subscriber's pull: %v", err)
	}
	if err := msg.DoubleAck(ctx); err != nil {
		t.Fatalf("the subscriber's ack: %v", err)
	}

	// Nothing reached the relay's streams. The server answers a stream's
	// direct gets in order, and the injected ones were sent before these.
	if err := rjs.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	sev, err := sjs.Stream(ctx, "SENGO_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sev.GetMsg(ctx, 1, jetstream.WithGetMsgSubject("")); err != nil {
		t.Fatalf("the subscriber's direct get: %v", err)
	}
	in, err := inbox.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in.State.Msgs != 0 || ev.State.Msgs != 2 {
		t.Errorf("stored from the subscriber's replies: inbox %d messages (want 0), events %d (want 2)", in.State.Msgs, ev.State.Msgs)
	}
	for _, k := range []string{"main.t1", "main.t2"} {
		if _, err := kv.Get(ctx, k); err == nil {
			t.Errorf("the transactions' bucket holds %s, written by the subscriber's reply", k)
		}
	}
}

// The consumers of endpoints no longer configured are the relay's too
// until their retirement: a subscriber pulling from one took its events
// without the dead letter retirement leaves (endpoint_removed), and its
// waiting pull kept the consumer from being retired. Those present when
// the server starts are denied as the configured ones are. A subscriber
// password longer than bcrypt's 72 bytes logs in (bcrypt refuses to hash
// it as it is).
func TestARemovedEndpointsConsumerIsTheRelays(t *testing.T) {
	long := strings.Repeat("p", 88)
	auth := &stream.EmbeddedAuth{
		RelayUser: "sengo-relay", RelayPassword: relayPW,
		SubscriberUser: "subscriber", SubscriberPassword: long,
		Stream: "SENGO_EVENTS", Subjects: "sengo.events.>", Protected: []string{"webhook-orders"},
	}
	dir := t.TempDir()
	start := func() *stream.Embedded {
		e, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: dir, Listen: "127.0.0.1:0", Auth: auth, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	ctx := context.Background()
	e := start()
	relay, err := stream.Connect(stream.ConnectConfig{Name: "relay", Logger: zerolog.Nop()}, e.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	rjs, _ := jetstream.New(relay)
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "webhook-old", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.Publish(ctx, "sengo.events.main.retail.success", []byte(`{"id":"evt_1"}`)); err != nil {
		t.Fatal(err)
	}
	relay.Close()
	e.Shutdown()

	e = start() // webhook-old is in no configuration now
	defer e.Shutdown()
	sub, err := nats.Connect(e.ClientURL(), nats.UserInfo("subscriber", long), nats.Timeout(15*time.Second))
	if err != nil {
		t.Fatalf("the subscriber with an 88-byte password: %v", err)
	}
	defer sub.Close()
	sjs, _ := jetstream.New(sub)
	c, err := sjs.Consumer(ctx, "SENGO_EVENTS", "webhook-old")
	if err == nil {
		if _, err := c.Next(jetstream.FetchMaxWait(time.Second)); err == nil {
			t.Error("the subscriber took an event from webhook-old")
		}
	}
}

// The relay's scans (a replay's, the console's reads) are ordered
// consumers on the events stream, with random names. The subscriber could
// list them, and a pull of its own on one took every event the scan had
// not yet read: the scan, finding nothing pending, ended as if done, and
// a replay reported success with its tail missing. The subscriber cannot
// list the stream's consumers.
func TestTheSubscriberCannotFindTheRelaysScans(t *testing.T) {
	auth := &stream.EmbeddedAuth{
		RelayUser: "sengo-relay", RelayPassword: relayPW,
		SubscriberUser: "subscriber", SubscriberPassword: subPW,
		Stream: "SENGO_EVENTS", Subjects: "sengo.events.>",
	}
	e, rjs := startWithSubscriber(t, auth)
	if _, err := rjs.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.Publish(t.Context(), "sengo.events.main.retail.success", []byte(`{"id":"evt_1"}`)); err != nil {
		t.Fatal(err)
	}
	sub := subscriberConn(t, e)
	listed := make(chan []string, 1)
	err := stream.ScanFrom(t.Context(), rjs, "SENGO_EVENTS", []string{"sengo.events.>"}, stream.From{}, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) {
		// While the scan's consumer exists, the subscriber asks for names.
		var got []string
		for _, api := range []string{"$JS.API.CONSUMER.NAMES.SENGO_EVENTS", "$JS.API.CONSUMER.LIST.SENGO_EVENTS"} {
			if m, err := sub.Request(api, []byte(`{}`), 2*time.Second); err == nil {
				got = append(got, api+": "+string(m.Data))
			}
		}
		listed <- got
		return false, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-listed; len(got) > 0 {
		t.Fatalf("the subscriber listed the stream's consumers: %v", got)
	}
}

// startWithSubscriber starts the embedded server with auth on loopback and
// returns it with the relay's JetStream, both closed when the test ends.
func startWithSubscriber(t *testing.T, auth *stream.EmbeddedAuth) (*stream.Embedded, jetstream.JetStream) {
	t.Helper()
	return startWithSubscriberLogging(t, auth, zerolog.Nop())
}

// startWithSubscriberLogging is startWithSubscriber with the server's log
// lines, the relay's about the subscriber included, going to log.
func startWithSubscriberLogging(t *testing.T, auth *stream.EmbeddedAuth, log zerolog.Logger) (*stream.Embedded, jetstream.JetStream) {
	t.Helper()
	e, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: auth, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	relay, err := stream.Connect(stream.ConnectConfig{Name: "relay", Logger: zerolog.Nop()}, e.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relay.Close)
	rjs, _ := jetstream.New(relay)
	return e, rjs
}

// subscriberAuth is the embedded server's two identities for the
// subscriber tests.
func subscriberAuth() *stream.EmbeddedAuth {
	return &stream.EmbeddedAuth{
		RelayUser: "sengo-relay", RelayPassword: relayPW,
		SubscriberUser: "subscriber", SubscriberPassword: subPW,
		Stream: "SENGO_EVENTS", Subjects: "sengo.events.>", Protected: []string{"webhook-orders"},
	}
}

// The subscriber's JetStream requests (stream and consumer info, message
// gets) went straight into nats-server's one queue of API requests, which
// serves every account: past 10,000 waiting the server drops them all,
// the relay's too, and it answers info requests only when that queue is
// empty. A subscriber sending gets as fast as it could so kept the relay's
// readiness checks, scans and deletions from being answered. Its
// requests now wait in a small queue of their own, and those beyond it
// are refused at once.
func TestASubscriberFloodLeavesTheRelaysRequestsAnswered(t *testing.T) {
	e, rjs := startWithSubscriber(t, subscriberAuth())
	ctx := t.Context()
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.Publish(ctx, "sengo.events.main.retail.success", []byte(`{"id":"evt_1"}`)); err != nil {
		t.Fatal(err)
	}
	flood, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	var busy atomic.Int64 // the flood's requests the relay refused at once, its queue full
	for range 4 {
		sub, err := nats.Connect(e.ClientURL(), nats.UserInfo("subscriber", subPW), nats.Timeout(15*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		inbox := nats.NewInbox()
		if _, err := sub.Subscribe(inbox, func(m *nats.Msg) {
			if strings.Contains(string(m.Data), "too many of the subscriber's requests are waiting") {
				busy.Add(1)
			}
		}); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for flood.Err() == nil {
				for range 1000 {
					_ = sub.PublishRequest("$JS.API.STREAM.MSG.GET.SENGO_EVENTS", inbox, []byte(`{"seq":1}`))
					_ = sub.PublishRequest("$JS.API.STREAM.INFO.SENGO_EVENTS", inbox, nil)
				}
				_ = sub.Flush()
			}
		}()
	}
	// What keeps the relay's requests answered: the flood waits in the
	// relay's queue for the subscriber, not the server's, and what does
	// not fit is refused. So the relay's requests go once the flood is
	// known to fill that queue: some of its requests were refused. Read
	// after the flood, the count could still be 0 on a loaded machine
	// (the flood slowed, the refusals not yet arrived), and a flood not
	// yet under way said nothing of the requests sent meanwhile. A relay
	// whose subscriber's requests go straight to the server's queue
	// refuses none of them: the wait fails.
	poll.Until(t, "some of the flood's requests refused for a full queue", func() bool { return busy.Load() > 0 })
	failed := 0
	for i := range 10 {
		// 10 s, not 2: under the race detector on a loaded machine the
		// relay's request waits its turn behind the queued flood's for
		// longer than 2 s and is still answered, where the server's queue
		// (past 10,000 waiting) drops it.
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := rjs.Stream(rctx, "SENGO_EVENTS")
		if err == nil {
			_, err = s.GetMsg(rctx, 1)
		}
		cancel()
		if err != nil {
			failed++
			t.Logf("the relay's request %d during the flood: %v", i+1, err)
		}
	}
	stop()
	wg.Wait()
	if failed > 0 {
		t.Fatalf("%d of the relay's 10 requests failed while the subscriber flooded the API", failed)
	}
	// The subscriber's own requests are answered once it stops flooding.
	sub := subscriberConn(t, e)
	sjs, _ := jetstream.New(sub)
	var info *jetstream.StreamInfo
	deadline := time.Now().Add(10 * time.Second)
	for info == nil && time.Now().Before(deadline) {
		if s, err := sjs.Stream(ctx, "SENGO_EVENTS"); err == nil {
			info = s.CachedInfo()
		}
	}
	if info == nil || info.State.Msgs != 1 {
		t.Fatalf("the subscriber's stream info after the flood: %+v", info)
	}
}

// nats-server allows a stream 1,000 consumers. The subscriber could make
// them all (durables stay), and the relay then had none left: no scan (a
// replay, the console's story) and no consumer for a new endpoint, so it
// could not start. The subscriber keeps at most SubscriberMaxConsumers;
// past them it is refused (an update of one it has is not), and the relay
// still creates its own.
func TestTheSubscriberCannotTakeEveryConsumer(t *testing.T) {
	e, rjs := startWithSubscriber(t, subscriberAuth())
	ctx := t.Context()
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	sub := subscriberConn(t, e)
	sjs, _ := jetstream.New(sub)
	for i := range stream.SubscriberMaxConsumers {
		if _, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: fmt.Sprint("s", i)}); err != nil {
			t.Fatalf("the subscriber's consumer %d: %v", i+1, err)
		}
	}
	_, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "one-more"})
	if err == nil || !strings.Contains(err.Error(), "too many consumers") {
		t.Fatalf("consumer %d of the subscriber's: %v, want too many consumers", stream.SubscriberMaxConsumers+1, err)
	}
	if _, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "s0", Description: "updated"}); err != nil {
		t.Fatalf("an update of the subscriber's own at its limit: %v", err)
	}
	// The server creates the consumer the subject names, whatever name the
	// request's configuration gives: naming one it has there is no update.
	for _, api := range []string{"$JS.API.CONSUMER.CREATE.SENGO_EVENTS.sneak", "$JS.API.CONSUMER.DURABLE.CREATE.SENGO_EVENTS.sneak"} {
		m, err := sub.Request(api, []byte(`{"stream_name":"SENGO_EVENTS","config":{"name":"s0","durable_name":"s0","ack_policy":"explicit"}}`), 10*time.Second)
		if err != nil || !strings.Contains(string(m.Data), "too many consumers") {
			t.Fatalf("%s naming s0 in its configuration: %v %s", api, err, fmt.Sprint(m))
		}
	}
	// The relay's consumers are not counted as the subscriber's, and the
	// relay still makes its own: an endpoint's, a scan's.
	if _, err := rjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "webhook-new"}); err != nil {
		t.Fatalf("the relay's consumer beside the subscriber's: %v", err)
	}
	if err := stream.ScanFrom(ctx, rjs, "SENGO_EVENTS", []string{"sengo.events.>"}, stream.From{}, func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error) { return true, nil }, nil); err != nil {
		t.Fatalf("the relay's scan beside the subscriber's consumers: %v", err)
	}
	// Deleting one makes room for another.
	if err := sjs.DeleteConsumer(ctx, "SENGO_EVENTS", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "one-more"}); err != nil {
		t.Fatalf("a consumer in the room a deletion made: %v", err)
	}
}

// A message get's answer carries the event in base64: for an event of
// 7 MiB it is larger than the server's 8 MiB max_payload, and the relay,
// which passes the subscriber's requests on, could not send it back: the
// subscriber waited for its timeout. It is refused with why, at once.
func TestALargeMessageGetIsRefusedNotLost(t *testing.T) {
	e, rjs := startWithSubscriber(t, subscriberAuth())
	ctx := t.Context()
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.Publish(ctx, "sengo.events.main.retail.success", make([]byte, 7<<20)); err != nil {
		t.Fatal(err)
	}
	sub := subscriberConn(t, e)
	m, err := sub.Request("$JS.API.STREAM.MSG.GET.SENGO_EVENTS", []byte(`{"seq":1}`), 20*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "could not be passed on") {
		t.Fatalf("a 7 MiB event's message get: %v %.200s", err, fmt.Sprint(m))
	}
}

// Each of the subscriber's connections may hold up to 64 MiB of
// messages the server has yet to send it, and each of its subscriptions
// costs the server memory: with no limit, a subscriber opening
// connections and subscriptions without end grew the relay's process
// (the embedded server is in it) until the machine ran out. It keeps at
// most SubscriberMaxConnections connections, and every connection at most
// MaxSubscriptions subscriptions; the relay still connects.
func TestTheSubscriberCannotTakeEveryConnection(t *testing.T) {
	var logs syncbuf.Buffer
	e, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Auth: subscriberAuth(), Logger: zerolog.New(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	connect := func() (*nats.Conn, error) {
		return nats.Connect(e.ClientURL(), nats.UserInfo("subscriber", subPW), nats.Timeout(15*time.Second), nats.NoReconnect())
	}
	var conns []*nats.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range stream.SubscriberMaxConnections {
		c, err := connect()
		if err != nil {
			t.Fatalf("the subscriber's connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	if c, err := connect(); err == nil {
		c.Close()
		t.Fatalf("connection %d of the subscriber's was let in", stream.SubscriberMaxConnections+1)
	}
	// The client hears "authorization violation", as for a wrong password
	// (and nats.go stops reconnecting after two): the relay's log says why.
	if !strings.Contains(logs.String(), "subscriber connection refused: it has 32 open") {
		t.Errorf("no log line for the refused connection:\n%s", logs.String())
	}
	relay, err := stream.Connect(stream.ConnectConfig{Name: "relay", Logger: zerolog.Nop()}, e.ConnectOption())
	if err != nil {
		t.Fatalf("the relay beside the subscriber's connections: %v", err)
	}
	relay.Close()
	// Closing one makes room for another (the server forgets a closed
	// connection soon after, not at once).
	conns[0].Close()
	var again *nats.Conn
	deadline := time.Now().Add(10 * time.Second)
	for again == nil && time.Now().Before(deadline) {
		again, _ = connect()
	}
	if again == nil {
		t.Fatal("no connection in the room a closed one made")
	}
	conns[0] = again

	// Subscriptions: up to the limit on one connection, not one more.
	errs := make(chan error, 1)
	sub := conns[1]
	sub.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
	for i := range stream.MaxSubscriptions {
		if _, err := sub.SubscribeSync(fmt.Sprintf("sengo.events.s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sub.Flush(); err != nil {
		t.Fatalf("%d subscriptions: %v", stream.MaxSubscriptions, err)
	}
	select {
	case err := <-errs:
		t.Fatalf("%d subscriptions: %v", stream.MaxSubscriptions, err)
	default:
	}
	_, _ = sub.SubscribeSync("sengo.events.one-more")
	_ = sub.Flush()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "maximum subscriptions") {
			t.Fatalf("subscription %d: %v", stream.MaxSubscriptions+1, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("subscription %d of one connection was let in", stream.MaxSubscriptions+1)
	}
}

// The relay holds each of the subscriber's requests it passes on while it
// waits for its turn: up to 256 of them, each of up to the server's 8 MiB
// max_payload, was 2 GiB of the relay's memory for one subscriber. A
// JetStream API request is a few hundred bytes: one past 64 KiB is
// refused at once, before it waits.
func TestTheSubscribersRequestsAreBounded(t *testing.T) {
	e, rjs := startWithSubscriber(t, subscriberAuth())
	if _, err := rjs.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	sub := subscriberConn(t, e)
	big := `{"config":{"durable_name":"big","ack_policy":"explicit"},"pad":"` + strings.Repeat("x", 1<<20) + `"}`
	m, err := sub.Request("$JS.API.CONSUMER.CREATE.SENGO_EVENTS.big", []byte(big), 10*time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"code":413`) {
		t.Fatalf("a 1 MiB request: %v %.300s", err, m.Data)
	}
	// Headers count too: the server bounds them with the body, not apart.
	req := nats.NewMsg("$JS.API.CONSUMER.CREATE.SENGO_EVENTS.heady")
	req.Data = []byte(`{"config":{"durable_name":"heady","ack_policy":"explicit"}}`)
	req.Header.Set("Pad", strings.Repeat("x", 1<<20))
	if m, err = sub.RequestMsg(req, 10*time.Second); err != nil || !strings.Contains(string(m.Data), `"code":413`) {
		t.Fatalf("a request of 1 MiB of headers: %v %.300s", err, m.Data)
	}
	sjs, _ := jetstream.New(sub)
	if _, err := sjs.CreateOrUpdateConsumer(t.Context(), "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "small", FilterSubjects: []string{"sengo.events.main.>", "sengo.events.other.>"}}); err != nil {
		t.Fatalf("a request of its size: %v", err)
	}
}

// A consumer marked direct (or sourcing) is one nats-server keeps out of
// the stream's consumer list and its consumer limit: the subscriber could
// create them without end past its 100 (each two goroutines and the
// server's state, in the relay's process), unseen by the count, the
// console and nats consumer ls. It may create none, nor one whose pull
// requests may wait without bound (max_waiting past the server's 512).
func TestTheSubscriberCannotMakeConsumersTheCountMisses(t *testing.T) {
	e, rjs := startWithSubscriber(t, subscriberAuth())
	if _, err := rjs.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	sub := subscriberConn(t, e)
	for name, cfg := range map[string]string{
		"direct":   `{"name":"direct","direct":true,"deliver_subject":"_INBOX.direct","ack_policy":"none","deliver_policy":"new"}`,
		"sourcing": `{"name":"sourcing","direct":true,"sourcing":true,"deliver_subject":"_INBOX.sourcing","ack_policy":"none","deliver_policy":"new"}`,
		"waiting":  `{"name":"waiting","ack_policy":"explicit","max_waiting":100000000}`,
		// Every message read and not acknowledged is kept in the server's
		// state of the consumer, rewritten whole ten times a second: with
		// no bound, a subscriber reading the whole stream without acking
		// made that state as large as the stream.
		"unacked":  `{"name":"unacked","ack_policy":"explicit","max_ack_pending":-1}`,
		"unacked2": `{"name":"unacked2","ack_policy":"explicit","max_ack_pending":100000000}`,
		// nats-server walks a consumer's unacknowledged messages each
		// ack_wait (or backoff step) plus 1 ms, under the consumer's lock,
		// refusing only a negative one: 100 consumers of 10,000 read and
		// never acked, with an ack_wait of 1 ns, kept both cores busy for
		// good (the consumers and their state outlive a restart).
		"fast":    `{"name":"fast","ack_policy":"explicit","ack_wait":1}`,
		"fast2":   `{"name":"fast2","ack_policy":"explicit","ack_wait":999999999}`,
		"backoff": `{"name":"backoff","ack_policy":"explicit","ack_wait":1000000000,"backoff":[1000000000,1000],"max_deliver":5}`,
	} {
		m, err := sub.Request("$JS.API.CONSUMER.CREATE.SENGO_EVENTS."+name, []byte(`{"stream_name":"SENGO_EVENTS","config":`+cfg+`}`), 10*time.Second)
		if err != nil || !strings.Contains(string(m.Data), `"code":403`) {
			t.Errorf("a %s consumer: %v %.300s", name, err, fmt.Sprint(m))
		}
	}
	// The server's count holds none of them.
	s, err := rjs.Stream(t.Context(), "SENGO_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Consumers; n != 0 {
		t.Fatalf("%d consumers made", n)
	}
	sjs, _ := jetstream.New(sub)
	if _, err := sjs.CreateOrUpdateConsumer(t.Context(), "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "plain", MaxWaiting: 512, MaxAckPending: stream.SubscriberMaxAckPending, AckWait: time.Second, BackOff: []time.Duration{time.Second, time.Minute}, MaxDeliver: 5}); err != nil {
		t.Fatalf("a consumer of the server's own bounds: %v", err)
	}
	// Nor may it make one it has redeliver that fast: an update is checked
	// as a creation is.
	m, err := sub.Request("$JS.API.CONSUMER.CREATE.SENGO_EVENTS.plain", []byte(`{"stream_name":"SENGO_EVENTS","config":{"durable_name":"plain","ack_policy":"explicit","ack_wait":1000000}}`), 10*time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"code":403`) {
		t.Errorf("an update to an ack_wait of 1 ms: %v %.300s", err, fmt.Sprint(m))
	}
}

// A batched direct get from the subscriber went to the events stream as
// sent: nats-server bounds neither its batch nor, when the request names
// one, its bytes, and answers it in one pass that holds the stream's
// writes (every event the relay publishes) and queues every message in
// the relay's process. One request could so stop events for everyone and
// fill the memory with the whole stream. A direct get by sequence is
// passed on by the relay, one message a request.
func TestTheSubscribersDirectGetsAreOneMessageEach(t *testing.T) {
	e, rjs := startWithSubscriber(t, subscriberAuth())
	ctx := t.Context()
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := rjs.Publish(ctx, "sengo.events.main.retail.success", fmt.Appendf(nil, `{"id":"evt_%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	sub := subscriberConn(t, e)
	for _, req := range []string{`{"seq":1,"batch":2000000000,"max_bytes":2000000000}`, `{"multi_last":["sengo.events.>"]}`, `{"seq":1,"batch":1}`} {
		// Refused as the stream answers a direct get it cannot serve: a
		// status and a description, no body (nats.go reports the
		// description).
		m, err := sub.Request("$JS.API.DIRECT.GET.SENGO_EVENTS", []byte(req), 10*time.Second)
		if err != nil || m.Header.Get("Status") != "403" || len(m.Data) != 0 || !strings.Contains(m.Header.Get("Description"), "one message") {
			t.Errorf("direct get %s: %v %v %q", req, err, m.Header, m.Data)
		}
	}
	// One message at a time still works, through the client library.
	sjs, _ := jetstream.New(sub)
	s, err := sjs.Stream(ctx, "SENGO_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetMsg(ctx, 2)
	if err != nil || string(got.Data) != `{"id":"evt_1"}` {
		t.Fatalf("direct get of seq 2: %v %v", err, got)
	}
	last, err := s.GetLastMsgForSubject(ctx, "sengo.events.main.retail.success")
	if err != nil || string(last.Data) != `{"id":"evt_2"}` {
		t.Fatalf("direct get of the last: %v %v", err, last)
	}
	if _, err := s.GetMsg(ctx, 99); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("direct get of a sequence not stored: %v, want not found", err)
	}
}

// A direct get of the last message of a wildcard (in the request's
// subject, $JS.API.DIRECT.GET.SENGO_EVENTS.sengo.events.>) went to the
// events stream as sent: nats-server finds it by walking every subject of
// the stream that matches, one a transaction and status, holding the
// stream's lock. Asked without end, it stalled the relay's writes of
// events. It is refused as the stream refuses a get it cannot serve; the
// last of one subject still works. So is a stream info listing the
// stream's subjects or deleted sequences (one pass under the lock, one
// answer of megabytes); its state is still answered.
func TestTheSubscriberCannotMakeTheStreamWalkEverySubject(t *testing.T) {
	e, rjs := startWithSubscriber(t, subscriberAuth())
	ctx := t.Context()
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"sengo.events.main.a.success", "sengo.events.main.b.pending"} {
		if _, err := rjs.Publish(ctx, subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	sub := subscriberConn(t, e)
	for _, key := range []string{"sengo.events.>", "sengo.events.main.*.success", "*.events.main.a.success"} {
		m, err := sub.Request("$JS.API.DIRECT.GET.SENGO_EVENTS."+key, nil, 10*time.Second)
		if err != nil {
			t.Fatalf("the last of %s: %v", key, err)
		}
		if m.Header.Get("Status") != "403" || m.Header.Get("Nats-Subject") != "" || !strings.Contains(m.Header.Get("Description"), "no wildcard") {
			t.Errorf("the last of %s: %v %q", key, m.Header, m.Data)
		}
	}
	// The same in a direct get's body, and in a message get's; nats-server
	// reads a message get's body value after value, each over the last.
	for _, req := range []string{`{"last_by_subj":"sengo.events.>"}`, `{"seq":1,"next_by_subj":"sengo.events.*.*.success"}`, `{}{"last_by_subj":"sengo.events.>"}`} {
		m, err := sub.Request("$JS.API.DIRECT.GET.SENGO_EVENTS", []byte(req), 10*time.Second)
		if err != nil {
			t.Fatalf("direct get %s: %v", req, err)
		}
		if m.Header.Get("Status") != "403" || m.Header.Get("Nats-Subject") != "" {
			t.Errorf("direct get %s: %v %q", req, m.Header, m.Data)
		}
		if m, err = sub.Request("$JS.API.STREAM.MSG.GET.SENGO_EVENTS", []byte(req), 10*time.Second); err != nil {
			t.Fatalf("message get %s: %v", req, err)
		}
		if !strings.Contains(string(m.Data), `"code":403`) || strings.Contains(string(m.Data), "sengo.events.main") {
			t.Errorf("message get %s: %.300s", req, m.Data)
		}
	}
	sjs, _ := jetstream.New(sub)
	s, err := sjs.Stream(ctx, "SENGO_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if next, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject("sengo.events.main.b.pending")); err != nil || next.Sequence != 2 {
		t.Fatalf("direct get of the next on one subject: %v %v", err, next)
	}
	if last, err := s.GetLastMsgForSubject(ctx, "sengo.events.main.b.pending"); err != nil || last.Sequence != 2 {
		t.Fatalf("direct get of the last of one subject: %v %v", err, last)
	}
	if _, err := s.GetLastMsgForSubject(ctx, "sengo.events.main.c.pending"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("direct get of the last of a subject with none: %v, want not found", err)
	}
	for _, req := range []string{`{"subjects_filter":">"}`, `{"subjects_filter":"sengo.events.main.a.success"}`, `{"deleted_details":true}`, `{} {"subjects_filter":">"}`} {
		m, err := sub.Request("$JS.API.STREAM.INFO.SENGO_EVENTS", []byte(req), 10*time.Second)
		if err != nil {
			t.Fatalf("stream info %s: %v", req, err)
		}
		if !strings.Contains(string(m.Data), `"code":403`) || strings.Contains(string(m.Data), "sengo.events.main") {
			t.Errorf("stream info %s: %.300s", req, m.Data)
		}
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Fatalf("stream info: %v %v", err, info)
	}
	// A consumer starting at every subject's last message: found by
	// reading the whole stream in one pass under its lock.
	if _, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Name: "latest", DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy, FilterSubject: "sengo.events.>", AckPolicy: jetstream.AckExplicitPolicy}); err == nil || !strings.Contains(err.Error(), "last_per_subject") {
		t.Errorf("a consumer of every subject's last message: %v", err)
	}
	if _, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Name: "all", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatalf("a consumer of all: %v", err)
	}
}

// subscriberConn connects to e as the subscriber (subscriberAuth's), until
// the test ends.
func subscriberConn(t *testing.T, e *stream.Embedded) *nats.Conn {
	t.Helper()
	sub, err := nats.Connect(e.ClientURL(), nats.UserInfo("subscriber", subPW), nats.Timeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return sub
}

// Each request the subscriber sends across to the relay's account with a
// reply subject leaves nats-server an entry (the reply, up to 4 KiB of
// it) until it is answered for good, or for two minutes: a pull's answer
// (no_wait's 404 included) keeps it. Pulls of its own consumer sent as
// fast as a connection goes, each with a reply of its own, held gigabytes
// in the relay's process within a minute. Past SubscriberMaxReplies the
// subscriber's connections are closed, which takes their entries with
// them; it may connect again.
func TestTheSubscriberCannotHoldRepliesWithoutEnd(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(i int) string
	}{
		{"a reply each", func(i int) string { return fmt.Sprintf("_INBOX.%s.%d", strings.Repeat("r", 1000), i) }},
		// nats-server keeps requests that share a reply under one key,
		// each with its own copy of the reply: counted by key, they
		// were one.
		{"one reply for all", func(int) string { return "_INBOX." + strings.Repeat("r", 1000) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			e, rjs := startWithSubscriberLogging(t, subscriberAuth(), zerolog.New(&logs))
			ctx := t.Context()
			if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
				t.Fatal(err)
			}
			sub := subscriberConn(t, e)
			sjs, _ := jetstream.New(sub)
			if _, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "x", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.Subscribe("_INBOX.>", func(*nats.Msg) {}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2*stream.SubscriberMaxReplies; i++ {
				if err := sub.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.SENGO_EVENTS.x", tc.reply(i), []byte(`{"batch":1,"no_wait":true}`)); err != nil {
					break // closed
				}
			}
			_ = sub.Flush()
			deadline := time.Now().Add(20 * time.Second)
			closed := func() bool { return sub.Status() != nats.CONNECTED || sub.Stats().Reconnects > 0 }
			for !closed() || e.SubscriberReplies() > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the subscriber holds %d replies, its connection closed: %v", e.SubscriberReplies(), closed())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(logs.String(), "subscriber connections closed") {
				t.Errorf("not logged: %s", logs.String())
			}
			again := subscriberConn(t, e)
			ajs, _ := jetstream.New(again)
			if _, err := ajs.Consumer(ctx, "SENGO_EVENTS", "x"); err != nil {
				t.Fatalf("connected again: %v", err)
			}
		})
	}
}

// A finished pull's entry stayed for nats-server's two minutes (to four):
// nats.go's legacy Fetch pulls each time with a reply of its own and never
// ends its interest in them, so a client fetching some 80 times a second
// passed SubscriberMaxReplies and had its connections closed over and
// over. Entries of pulls that got nothing since go after pullWait (30 s;
// a second here), the client's connection untouched.
func TestFinishedPullsLeaveNoEntries(t *testing.T) {
	stream.SetReplyWaits(t, time.Second, time.Second)
	e, rjs := startWithSubscriber(t, subscriberAuth())
	ctx := t.Context()
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	sub := subscriberConn(t, e)
	sjs, _ := jetstream.New(sub)
	if _, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "x", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe("_INBOX.fetch.*", func(*nats.Msg) {}); err != nil { // as the legacy Fetch does
		t.Fatal(err)
	}
	for i := range 100 {
		if err := sub.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.SENGO_EVENTS.x", fmt.Sprintf("_INBOX.fetch.%d", i), []byte(`{"batch":1,"no_wait":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	_ = sub.Flush()
	// (The pulls reach the consumer through the relay: their entries are
	// made a moment after the client sent them.)
	poll.Until(t, "the pulls' entries", func() bool { return e.SubscriberReplies() > 0 })
	deadline := time.Now().Add(10 * time.Second)
	for e.SubscriberReplies() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d entries of finished pulls are still kept", e.SubscriberReplies())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if sub.Stats().Reconnects != 0 || sub.Status() != nats.CONNECTED {
		t.Fatal("the client's connection was closed")
	}
}

// A pull's idle_heartbeat went to the consumer as sent: nats-server sends
// each waiting pull a heartbeat that often (its timer's floor is 1 ms),
// walking every waiting pull of the consumer each time. 5,000 waiting
// pulls of 1 ns took both cores (9.3 s of CPU in 5 s); of 1 s, 0.35 s.
// Pulls now pass through the relay, which refuses a heartbeat under 1 s
// and passes the rest on with the client's reply subject.
func TestTheSubscribersPullsHeartbeatAtMostOnceASecond(t *testing.T) {
	e, rjs := startWithSubscriber(t, subscriberAuth())
	ctx := t.Context()
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	sub := subscriberConn(t, e)
	sjs, _ := jetstream.New(sub)
	if _, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "x", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	for _, hb := range []time.Duration{1, time.Millisecond, time.Second - 1} {
		m, err := sub.Request("$JS.API.CONSUMER.MSG.NEXT.SENGO_EVENTS.x", fmt.Appendf(nil, `{"batch":1,"expires":%d,"idle_heartbeat":%d}`, time.Hour, hb), 10*time.Second)
		if err != nil || m.Header.Get("Status") != "403" || len(m.Data) != 0 || !strings.Contains(m.Header.Get("Description"), "idle_heartbeat") {
			t.Errorf("a pull with a heartbeat of %s: %v %v %q", hb, err, m.Header, m.Data)
		}
	}
	// Nor as an ack's next request (+NXT), which the consumer takes as a
	// pull, whatever the ack acknowledges (here nothing).
	if m, err := sub.Request("$JS.ACK.SENGO_EVENTS.x.1.0.0.0.0", fmt.Appendf(nil, `+NXT {"batch":1,"expires":%d,"idle_heartbeat":1}`, time.Hour), 10*time.Second); err != nil || m.Header.Get("Status") != "403" || !strings.Contains(m.Header.Get("Description"), "idle_heartbeat") {
		t.Errorf("an ack's next request with a heartbeat of 1 ns: %v %v", err, m)
	}
	// Nor may it send a pull where the relay sends those it lets through.
	if m, err := sub.Request("_SENGO_RELAY_PULLS.SENGO_EVENTS.x", fmt.Appendf(nil, `{"batch":1,"expires":%d,"idle_heartbeat":1}`, time.Hour), 2*time.Second); err == nil {
		t.Errorf("a pull sent past the relay was answered: %v", m.Header)
	}
	sub = subscriberConn(t, e) // (the permissions violation may close the connection)
	if m, err := sub.Request("_SENGO_RELAY_ACKS.SENGO_EVENTS.x.1.0.0.0.0", fmt.Appendf(nil, `+NXT {"batch":1,"expires":%d,"idle_heartbeat":1}`, time.Hour), 2*time.Second); err == nil {
		t.Errorf("an ack's next request sent past the relay was answered: %v", m.Header)
	}
	sub = subscriberConn(t, e)
	// One of 1 s is passed on: its heartbeats come, and so do messages,
	// to the client's own reply subject.
	m, err := sub.Request("$JS.API.CONSUMER.MSG.NEXT.SENGO_EVENTS.x", fmt.Appendf(nil, `{"batch":1,"expires":%d,"idle_heartbeat":%d}`, 3*time.Second, time.Second), 10*time.Second)
	if err != nil || m.Header.Get("Status") != "100" {
		t.Fatalf("a pull with a heartbeat of 1s: %v %v", err, m)
	}
	// (Another consumer: that pull still waits on x.)
	c, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "y", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.Publish(ctx, "sengo.events.main.retail.success", []byte(`{"id":"evt_1"}`)); err != nil {
		t.Fatal(err)
	}
	b, err := c.Fetch(1, jetstream.FetchMaxWait(10*time.Second), jetstream.FetchHeartbeat(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for msg := range b.Messages() {
		if string(msg.Data()) != `{"id":"evt_1"}` {
			t.Fatalf("pulled %q", msg.Data())
		}
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if b.Error() != nil {
		t.Fatal(b.Error())
	}
	if info, err := c.Info(ctx); err != nil || info.AckFloor.Stream != 1 {
		t.Fatalf("acked: %v %+v", err, info)
	}
	// And nats.go's Consume, as it pulls by default.
	if _, err := rjs.Publish(ctx, "sengo.events.main.retail.success", []byte(`{"id":"evt_2"}`)); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	cc, err := c.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		got <- string(m.Data())
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { t.Errorf("consume: %v", err) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	select {
	case d := <-got:
		if d != `{"id":"evt_2"}` {
			t.Fatalf("consumed %q", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Consume got nothing")
	}
}

// nats-server checks the subjects a client sends to, not the replies it
// names (only _R_., $JS.ACK. and _GR_. are refused): where the relay
// passes the subscriber's pulls and acks on was a subject it could name as
// a reply, and what answered there (the relay's refusal of a pull, a
// pull's 404) became an ack of the relay's own consumer, its message
// then never delivered nor dead-lettered. Those subjects are now the
// relay's secret, and a pull or ack of a relay consumer is refused
// however it arrives.
func TestTheSubscriberCannotAckTheRelaysMessagesThroughAReply(t *testing.T) {
	e, rjs := startWithSubscriber(t, subscriberAuth())
	ctx := t.Context()
	if _, err := rjs.CreateStream(ctx, jetstream.StreamConfig{Name: "SENGO_EVENTS", Subjects: []string{"sengo.events.>"}}); err != nil {
		t.Fatal(err)
	}
	relayCons, err := rjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "webhook-orders", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rjs.Publish(ctx, "sengo.events.main.retail.success", []byte(`{"id":"evt_1"}`)); err != nil {
		t.Fatal(err)
	}
	b, err := relayCons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var ackSubj string
	for m := range b.Messages() {
		ackSubj = m.Reply() // $JS.ACK.SENGO_EVENTS.webhook-orders.1.1.1.<ts>.0
	}
	if ackSubj == "" {
		t.Fatal("the relay's consumer gave out nothing")
	}
	sub := subscriberConn(t, e)
	sjs, _ := jetstream.New(sub)
	if _, err := sjs.CreateOrUpdateConsumer(ctx, "SENGO_EVENTS", jetstream.ConsumerConfig{Durable: "x", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "sengo.events.none"}); err != nil {
		t.Fatal(err)
	}
	tail := strings.TrimPrefix(ackSubj, "$JS.ACK.")
	for _, reply := range []string{"_SENGO_RELAY_ACKS." + tail, "_SENGO_RELAY_PASS.ACKS." + tail, "_SENGO_RELAY_PULLS.SENGO_EVENTS.webhook-orders", "$JS.API.CONSUMER.MSG.NEXT.SENGO_EVENTS.webhook-orders"} {
		for _, body := range []string{fmt.Sprintf(`{"batch":1,"expires":%d,"idle_heartbeat":1}`, time.Hour), `{"batch":1,"no_wait":true}`} {
			if err := sub.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.SENGO_EVENTS.x", reply, []byte(body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = sub.Flush()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if info, err := relayCons.Info(ctx); err != nil || info.NumAckPending != 1 || info.AckFloor.Stream != 0 {
			t.Fatalf("the relay's consumer after the subscriber's replies: %v %+v", err, info)
		}
	}
}
