package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
)

// A consumer endpoint down for longer than several retry steps: after it
// recovers, every event is delivered or, where its budget ran out,
// dead-lettered; the counts add up and nothing is delivered twice under
// two ids.
func TestEndpointDownCountsAddUp(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	orders := newHook(t)
	orders.fail.Store(1 << 30) // down
	ep := fmt.Sprintf("  orders: {url: %q, secrets: [%s], filter: {all: true}, deliver_from: all, timeout: 1s, concurrency: 4, retry: {schedule: [50ms, 50ms, 50ms], jitter: 0}, breaker: {failures: 6, probe_initial: 100ms, probe_max: 200ms}}\n", orders.URL, testSecret)
	base, logs := startRunWith(t, writeConfig(t, ep), relayEnv(t.TempDir()))
	natsURL := logs.field(t, "embedded nats started", "client_url")
	waitReady(t, base)
	const n = 12
	want := map[string]bool{}
	for i := range n {
		body := fmt.Appendf(nil, `{"id":"down-%d","merchantRef":"D-%d","status":"success","feePayer":"customer","amount":1000,"fee":0,"totalAmount":1000,"qris":{}}`, i, i)
		if code := post(t, base+"/callbacks/sengo/main", body); code != 200 {
			t.Fatal(code)
		}
		want[event.ID("main", fmt.Sprintf("down-%d", i), event.StatusSuccess)] = true
	}
	poll.Within(t, 30*time.Second, "the endpoint to pause", func() bool {
		return strings.Contains(metricsText(t, logs), `sengo_relay_endpoint_paused{endpoint="orders"} 1`)
	})
	poll.Within(t, 30*time.Second, "several failed probes while paused", func() bool {
		return metricValue(metricsText(t, logs), `sengo_relay_endpoint_consecutive_failures{endpoint="orders"}`) >= 9
	})
	orders.fail.Store(0) // back up

	nc, err := nats.Connect(natsURL, relayAuth(t, logs), nats.Timeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var dead map[string]bool
	poll.Within(t, 60*time.Second, "every event delivered or dead-lettered", func() bool {
		dead = map[string]bool{}
		for _, m := range natstest.Messages(t, js, event.StreamDLQ) {
			dead[m.Header.Get(event.HeaderEventID)] = true
		}
		got := map[string]bool{}
		for _, id := range orders.received() {
			got[id] = true
		}
		return len(got)+len(dead) == n && strings.Contains(metricsText(t, logs), `sengo_relay_endpoint_pending{endpoint="orders"} 0`)
	})
	seen := map[string]int{}
	for _, id := range orders.received() {
		seen[id]++
		if !want[id] || dead[id] {
			t.Errorf("delivered %s: unknown, or also dead-lettered", id)
		}
	}
	for id := range dead {
		if !want[id] {
			t.Errorf("dead letter for unknown id %s", id)
		}
	}
	t.Logf("%d accepted: %d delivered after recovery, %d dead-lettered (budget spent before the pause)", n, len(seen), len(dead))
}

// metricValue reads one sample from Prometheus text output (-1 if absent).
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
