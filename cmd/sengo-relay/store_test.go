package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
)

// The store refusing writes (the inbox at its size cap): callbacks get 503
// with a clear log line and nothing is dropped; once processed
// notifications are purged, callbacks are accepted again without a
// restart, and every accepted one has its event.
func TestStoreFullRecoversWithoutRestart(t *testing.T) {
	base, logs := startRunWith(t, writeConfig(t, endpointYAML("orders", newHook(t).URL, "1s")),
		relayEnv(t.TempDir(), "SENGO_RELAY_STREAMS_INBOX_MAX_BYTES=32768"))
	natsURL := logs.field(t, "embedded nats started", "client_url")
	waitReady(t, base)
	body := func(i int) []byte {
		return fmt.Appendf(nil, `{"id":"full-%d","merchantRef":"F-%d","status":"success","feePayer":"customer","amount":1000,"fee":0,"totalAmount":1000,"qris":{"content":"%s"}}`, i, i, strings.Repeat("q", 400))
	}
	accepted, refused := 0, -1
	for i := range 500 {
		code := post(t, base+"/callbacks/sengo/main", body(i))
		if code == http.StatusServiceUnavailable {
			refused = i
			break
		}
		if code != 200 {
			t.Fatalf("callback %d: %d", i, code)
		}
		accepted++
	}
	if refused < 0 {
		t.Fatal("the inbox never filled")
	}
	// The log line is written as the answer goes out and read through a
	// pipe: looked for at once, it was not always there yet (CI, once).
	eventually(t, "a log line saying why the store refused the write", func() bool { return strings.Contains(logs.text(), "maximum bytes exceeded") })
	// Every callback gets 503 now: a load balancer must stop sending here.
	eventually(t, "readyz 503 while the store is full", func() bool { return get(t, base+"/readyz") == http.StatusServiceUnavailable })

	nc, err := nats.Connect(natsURL, relayAuth(t, logs), nats.Timeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	// Operator's fix: purge notifications intake has finished (below its ack floor).
	var floor uint64
	eventually(t, "intake to catch up", func() bool {
		c, err := js.Consumer(ctx, event.StreamInbox, "intake")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		if err != nil {
			return false
		}
		floor = info.AckFloor.Stream
		return floor >= uint64(accepted) && info.NumAckPending == 0
	})
	s, _ := js.Stream(ctx, event.StreamInbox)
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(floor+1)); err != nil {
		t.Fatal(err)
	}
	waitReady(t, base)
	if code := post(t, base+"/callbacks/sengo/main", body(refused)); code != 200 {
		t.Fatalf("after the purge: %d", code)
	}
	accepted++
	eventually(t, "an event per accepted callback", func() bool {
		return len(natstest.Messages(t, js, event.StreamEvents)) == accepted
	})
}

func get(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
