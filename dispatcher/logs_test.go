package dispatcher

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
)

// logLines decodes the harness's JSON log lines.
func (h *harness) logLines() []map[string]any {
	h.t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			h.t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// An idle endpoint logs nothing but its start: a pull that finds no
// message is not a failure. It used to log `warn "pull failed"
// error="nats: timeout"` about once a second per puller.
func TestIdleEndpointIsQuiet(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test: not with -short (.ci/run runs it)")
	}
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	h.start(ep)
	// Idle for three pull expiries (FetchMaxWait is 1s): an absence is
	// only seen by waiting for it.
	idle := time.Now().Add(3500 * time.Millisecond)
	for time.Now().Before(idle) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, l := range h.logLines() {
		if l["level"] != "info" {
			t.Errorf("idle endpoint logged %v", l)
		}
	}
}

// Each delivery outcome is one line with the same fields in the same
// form: http_status is a number, a transport failure is attempt_error,
// and a delay is a duration string.
func TestDeliveryOutcomesAreLoggedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status(500))
	w := h.start(h.endpoint("orders", c.URL, 50*time.Millisecond))
	ev := h.publish("tx-1", event.StatusSuccess, "")
	eventually(t, "2 attempts and an ack", func() bool { return len(c.got()) == 2 && h.settled(w) })
	var retried, delivered int
	for _, l := range h.logLines() {
		switch l["message"] {
		case "delivery failed; retry scheduled":
			retried++
			if l["http_status"] != float64(500) || l["delay"] == nil || l["event_id"] != ev.ID || l["attempt"] != float64(1) {
				t.Errorf("retry line %v", l)
			}
		case "delivered":
			delivered++
			if l["level"] != "info" || l["http_status"] != float64(200) || l["event_id"] != ev.ID || l["merchant_ref"] != "REF-tx-1" || l["attempt"] != float64(2) || l["duration"] == nil {
				t.Errorf("delivered line %v", l)
			}
		}
		if s, ok := l["status"]; ok {
			t.Errorf("field status %v on a delivery line (it is the payment status elsewhere): %v", s, l)
		}
	}
	if retried != 1 || delivered != 1 {
		t.Fatalf("%d retry lines, %d delivered lines; want 1 and 1:\n%s", retried, delivered, h.logs.String())
	}
}
