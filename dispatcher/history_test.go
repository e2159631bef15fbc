package dispatcher

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
)

// results counts what a history writer reports.
type results struct {
	mu             sync.Mutex
	stored, failed int
}

func (r *results) on(_ string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.failed++
	} else {
		r.stored++
	}
}

func (r *results) get() (stored, failed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stored, r.failed
}

func (h *harness) withHistory() *results {
	h.t.Helper()
	nc, _ := h.nats.Connect(h.t)
	r := &results{}
	w, err := history.NewWriter(nc, history.WriterConfig{OnResult: r.on, Logger: zerolog.New(h.logs)})
	if err != nil {
		h.t.Fatal(err)
	}
	h.history = w
	return r
}

// Every attempt is kept, not only the last: two failures and the success,
// each with its status, outcome, the headers sent (no signature; the
// values of configured headers redacted) and the response's headers (a
// cookie redacted) and body excerpt.
func TestEveryAttemptIsKept(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := h.withHistory()
	c := newConsumer(t, func(n int, _ *http.Request, w http.ResponseWriter) {
		w.Header().Set("Set-Cookie", "session=s3cr3t")
		w.Header().Set("X-Served-By", "order-7")
		if n <= 2 {
			w.WriteHeader(500)
			_, _ = w.Write([]byte("database down"))
			return
		}
		w.WriteHeader(204)
	})
	ep := h.endpoint("orders", c.URL)
	ep.Headers = map[string]string{"Authorization": "Bearer consumer-secret"}
	w := h.start(ep)
	ev := h.publish("tx-hist", "success", "")
	eventually(t, "delivered", func() bool { return len(c.got()) == 3 && h.settled(w) })
	eventually(t, "three attempts stored", func() bool { s, _ := res.get(); return s == 3 })

	got, more, err := history.Attempts(context.Background(), h.js, ev.ID, 0)
	if err != nil || more || len(got) != 3 {
		t.Fatalf("attempts %d (more %v), %v; want 3", len(got), more, err)
	}
	for i, want := range []struct {
		status  int
		outcome string
	}{{500, "retry"}, {500, "retry"}, {204, "delivered"}} {
		a := got[i]
		if a.Number != i+1 || a.Status != want.status || a.Outcome != want.outcome || a.Endpoint != "orders" || a.Copy != "live" ||
			a.TransactionID != "tx-hist" || a.Project != "main" || a.MerchantRef != "REF-tx-hist" || a.At.IsZero() {
			t.Errorf("attempt %d: %+v, want status %d outcome %s", i+1, a, want.status, want.outcome)
		}
		if _, ok := a.RequestHeaders["Webhook-Signature"]; ok || a.RequestHeaders["Webhook-Id"] != ev.ID || a.RequestHeaders["Authorization"] != "[redacted]" {
			t.Errorf("attempt %d request headers %v", i+1, a.RequestHeaders)
		}
		if a.ResponseHeaders["Set-Cookie"] != "[redacted]" || a.ResponseHeaders["X-Served-By"] != "order-7" {
			t.Errorf("attempt %d response headers %v", i+1, a.ResponseHeaders)
		}
	}
	if got[0].ResponseExcerpt != "database down" {
		t.Errorf("excerpt %q", got[0].ResponseExcerpt)
	}
	for _, a := range got {
		for _, v := range a.RequestHeaders {
			if strings.Contains(v, "consumer-secret") || strings.Contains(v, "v1,") {
				t.Errorf("a secret in the attempt record: %v", a.RequestHeaders)
			}
		}
	}
}

// History is written off the delivery path: with SENGO_ATTEMPTS refusing
// every write (full), events are still delivered and acknowledged, and the
// lost records are counted.
func TestDeliveryGoesOnWhenHistoryFails(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := h.withHistory()
	s, err := h.js.Stream(context.Background(), history.StreamAttempts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxBytes, cfg.Discard = 1, jetstream.DiscardNew // nothing fits
	if _, err := h.js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	c := newConsumer(t, status())
	w := h.start(h.endpoint("orders", c.URL))
	for _, id := range []string{"tx-f1", "tx-f2", "tx-f3"} {
		h.publish(id, "success", "")
	}
	eventually(t, "all delivered and acknowledged", func() bool { return len(c.got()) == 3 && h.settled(w) })
	eventually(t, "three records counted as failed", func() bool { _, f := res.get(); return f == 3 })
	if st, _ := res.get(); st != 0 {
		t.Errorf("%d records reported stored in a full stream", st)
	}
	if len(h.deadLetters()) != 0 {
		t.Error("a history failure dead-lettered an event")
	}
}

// An event from another publisher whose id is no bounded subject token (4
// KiB of it, or a wildcard) is delivered and its attempt kept under a
// bounded token. Its id went into the attempt's subject as it came: over
// nats-server's 4 KiB control line, the server closed the writer's
// connection, which the relay shares with intake and delivery, so every
// relay stopped at the event, again at each restart.
func TestAnAttemptOfAnyEventIDHasABoundedSubject(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := h.withHistory()
	c := newConsumer(t, func(int, *http.Request, http.ResponseWriter) {})
	w := h.start(h.endpoint("orders", c.URL))
	ids := []string{strings.Repeat("a", 4100), "evt.*.>", "evt with spaces"}
	for i, id := range ids {
		ev := h.publish(fmt.Sprintf("tx-%d", i), event.StatusSuccess, "")
		ev.ID = id
		b, err := event.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.js.Publish(t.Context(), event.EventSubject("main", event.ProductRetail, event.StatusPending), b); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every event delivered", func() bool { return len(c.got()) == 2*len(ids) && h.settled(w) })
	eventually(t, "every attempt stored", func() bool { s, _ := res.get(); return s == 2*len(ids) })
	if _, failed := res.get(); failed != 0 {
		t.Errorf("%d attempt records failed", failed)
	}
	for _, l := range h.logLines() { // the id is cut in the log lines too
		if id, _ := l["event_id"].(string); len(id) > 300 {
			t.Errorf("a log line holds an event id of %d bytes", len(id))
		}
	}
	for _, id := range ids {
		got, _, err := history.Attempts(t.Context(), h.js, id, 0)
		if err != nil || len(got) != 1 || got[0].EventID != id {
			t.Errorf("attempts of an event with id %.20q…: %d, %v", id, len(got), err)
		}
	}
}
