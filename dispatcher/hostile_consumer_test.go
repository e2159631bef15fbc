package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
)

// A consumer asking for a Retry-After longer than retry_after_max gets
// retry_after_max (README: "honoured as the earliest retry (capped at
// retry_after_max, default 1h, at least 1s)"), whatever the number of
// digits: delay-seconds is any run of digits (RFC 9110 §10.2.3). A value
// of more than about 292 years overflowed time.Duration (secs*time.Second
// wrapped, here to a negative, clamped up to 1s), and one beyond int64 was
// taken as invalid: either way the relay retried on the schedule (20ms
// here, 5s by default) instead of after the hour the cap allows.
func TestHugeRetryAfterIsCappedAtRetryAfterMax(t *testing.T) {
	for _, ra := range []string{
		"7200",                 // two hours: capped to one (passes)
		"10000000000",          // ~317 years: time.Duration overflows
		"99999999999999999999", // beyond int64: Atoi fails
	} {
		t.Run(ra, func(t *testing.T) {
			h := newHarness(t)
			c := newConsumer(t, func(n int, _ *http.Request, w http.ResponseWriter) {
				if n == 1 {
					w.Header().Set("Retry-After", ra)
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
				w.WriteHeader(200)
			})
			ep := h.endpoint("orders", c.URL) // schedule 20ms, 40ms; retry_after_max 1h
			h.start(ep)
			ev := h.publish("tx-ra", "success", "")
			key := attemptKey(ep.Name, ev.ID, 0)
			store := attemptStore{kv: mustKV(t, h)}
			var rec attempts
			eventually(t, "the first attempt recorded", func() bool {
				r, ok, err := store.get(context.Background(), key)
				rec = r
				return err == nil && ok && r.Count >= 1
			})
			if rec.Count != 1 {
				t.Fatalf("Retry-After: %s: attempt %d already made (%d requests); want the retry held for retry_after_max (1h)", ra, rec.Count, len(c.got()))
			}
			if got := rec.NextAt.Sub(rec.Last); got < ep.RetryAfterMax-time.Second {
				t.Fatalf("Retry-After: %s on a 429: next attempt scheduled %s after the first; want retry_after_max (%s)", ra, got, ep.RetryAfterMax)
			}
		})
	}
}

func mustKV(t *testing.T, h *harness) jetstream.KeyValue {
	t.Helper()
	kv, err := h.js.KeyValue(context.Background(), event.BucketDelivery)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// The endpoint URL can be its own secret: the console, logs and errors
// show neither its query nor its path after the first segment (README,
// Configuration), and a Location echoing it is redacted in the attempt
// record (TestRedirectDoesNotLeakTheEndpointURLIntoRecords). But a
// consumer echoes its URL in the body far more often than in Location:
// Express's default 404 is "Cannot POST /hooks/<token>", Spring's error
// JSON has "path", a Link or Refresh header names the resource. Those are
// kept verbatim in SENGO_ATTEMPTS (kept as long as the events), in the
// dead letter (dlq show, the admin API) and on the console's transaction
// page: the token the relay hides everywhere else.
func TestEchoedEndpointURLIsNotKeptInRecords(t *testing.T) {
	const pathToken, queryToken = "tok-9f8e7d", "s3cr3t-query"
	h := newHarness(t)
	res := h.withHistory()
	c := newConsumer(t, func(_ int, r *http.Request, w http.ResponseWriter) {
		w.Header().Set("Link", "<"+r.URL.RequestURI()+">; rel=\"self\"")
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("<pre>Cannot POST " + r.URL.RequestURI() + "</pre>")) // as Express's finalhandler does the path (here with the query too)
	})
	w := h.start(h.endpoint("orders", c.URL+"/hooks/sengo/"+pathToken+"?key="+queryToken, 10*time.Millisecond))
	ev := h.publish("tx-echo", event.StatusSuccess, "")
	eventually(t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	eventually(t, "two attempts stored", func() bool { s, _ := res.get(); return s == 2 })
	got, _, err := history.Attempts(t.Context(), h.js, ev.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range got {
		b, _ := json.Marshal(a)
		if strings.Contains(string(b), queryToken) || strings.Contains(string(b), pathToken) {
			t.Errorf("attempt %d keeps the endpoint's secret URL: Link %q, excerpt %q", a.Number, a.ResponseHeaders["Link"], a.ResponseExcerpt)
		}
	}
	if d := h.deadLetters()[0]; strings.Contains(d.ResponseExcerpt, queryToken) || strings.Contains(d.ResponseExcerpt, pathToken) {
		t.Errorf("the dead letter keeps the endpoint's secret URL: %q", d.ResponseExcerpt)
	}
}

// A consumer answering more headers than an attempt keeps had a random
// two dozen kept (Go's map order): Retry-After or Content-Type, which
// explain the answer, could be left out, and two attempts of the same
// answer kept different ones. The headers that explain an answer are kept
// first, then the others in name order.
func TestKeptHeadersAreTheSameEveryTimeAndExplainTheAnswer(t *testing.T) {
	h := http.Header{}
	for i := range 40 {
		h.Set(fmt.Sprintf("A-Filler-%02d", i), "x")
	}
	h.Set("Retry-After", "120")
	h.Set("Content-Type", "text/plain")
	h.Set("Webhook-Delivery", "retry")
	want := map[string]string{"Retry-After": "120", "Content-Type": "text/plain", "Webhook-Delivery": "retry", "…": omittedValue}
	for i := range maxKeptHeaders - 3 {
		want[fmt.Sprintf("A-Filler-%02d", i)] = "x"
	}
	for range 5 {
		if got := keptHeaders(h); !maps.Equal(got, want) {
			t.Fatalf("kept %v\nwant %v", got, want)
		}
	}
}
