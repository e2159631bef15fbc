package main

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
)

// A 3-node JetStream cluster with R3 streams, two relay processes and a
// steady stream of callbacks. One NATS node is killed, then one relay
// (SIGKILL); both come back. Every callback that got a 2xx produced
// exactly one event, and every event reached the webhook consumer
// (duplicates only under the same webhook-id).
func TestClusterSurvivesNodeAndRelayLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	cluster := natstest.StartCluster(t, 3)
	orders := newHook(t)
	checkedInConfig = writeConfig(t, endpointYAML("orders", orders.URL, "1s"))
	t.Cleanup(func() { checkedInConfig = committedConfig })
	env := []string{
		"SENGO_RELAY_NATS_URL=" + cluster.URL(), "SENGO_RELAY_NATS_REPLICAS=3",
		"SENGO_RELAY_HTTP_PUBLISH_TIMEOUT=2s", "SENGO_RELAY_INTAKE_ACK_WAIT=5s",
		"SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0", "SENGO_RELAY_LOG_LEVEL=info",
	}
	relays := []*relayProcess{startProcess(t, t.TempDir(), env...), startProcess(t, t.TempDir(), env...)}
	for _, r := range relays {
		// Two relays provisioning R3 streams together take a few seconds.
		poll.Within(t, 90*time.Second, "relay ready", func() bool { return ready(r.base) })
	}

	var mu sync.Mutex
	killed := false
	client := &http.Client{Timeout: 5 * time.Second}
	// deliver sends one callback the way SenGo would retry it: until a 2xx,
	// to whichever relay answers (a load balancer in front of both).
	deliver := func(i int) string {
		body := fmt.Appendf(nil, `{"id":"c-%d","merchantRef":"C-%d","status":"success","feePayer":"customer","amount":1000,"fee":0,"totalAmount":1000,"qris":{}}`, i, i)
		deadline := time.Now().Add(60 * time.Second)
		for attempt := 0; time.Now().Before(deadline); attempt++ {
			mu.Lock()
			r := relays[(i+attempt)%2]
			if killed && r == relays[0] {
				r = relays[1]
			}
			mu.Unlock()
			resp, err := client.Post(r.base+"/callbacks/sengo/main", "application/json", bytes.NewReader(body))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return event.ID("main", fmt.Sprintf("c-%d", i), event.StatusSuccess)
				}
			}
			time.Sleep(100 * time.Millisecond) // SenGo-style retry pacing
		}
		t.Errorf("callback %d never got a 2xx", i)
		return ""
	}

	const n = 90
	accepted := map[string]bool{}
	for i := range n {
		switch i {
		case n / 3:
			cluster.Stop(0) // lose a NATS node
		case 2 * n / 3:
			mu.Lock()
			relays[0].cmd.Process.Signal(syscall.SIGKILL) // lose a relay
			killed = true
			mu.Unlock()
		}
		if id := deliver(i); id != "" {
			accepted[id] = true
		}
		time.Sleep(20 * time.Millisecond) // a steady stream, not a burst
	}
	_ = relays[0].cmd.Wait()
	cluster.Start(0)
	relays[0] = startProcess(t, t.TempDir(), env...)
	poll.Within(t, 90*time.Second, "restarted relay ready", func() bool { return ready(relays[0].base) })

	poll.Within(t, 90*time.Second, "every accepted callback at the consumer", func() bool {
		got := map[string]bool{}
		for _, id := range orders.received() {
			got[id] = true
		}
		for id := range accepted {
			if !got[id] {
				return false
			}
		}
		return true
	})
	for _, id := range orders.received() {
		if !accepted[id] {
			t.Errorf("consumer received unknown id %s", id)
		}
	}
	nc, err := nats.Connect(cluster.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	perID := map[string]int{}
	for _, m := range natstest.Messages(t, js, event.StreamEvents) {
		ev, _ := event.Unmarshal(m.Data)
		perID[ev.ID]++
	}
	for id := range accepted {
		if perID[id] != 1 {
			t.Errorf("event %s stored %d times, want once", id, perID[id])
		}
	}
	if len(perID) != len(accepted) {
		t.Errorf("%d event ids stored for %d accepted callbacks", len(perID), len(accepted))
	}
	t.Logf("%d callbacks accepted, %d webhook deliveries (%d distinct)", len(accepted), len(orders.received()), len(accepted))
}

func ready(base string) bool {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}
