package dispatcher

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
)

// A consumer asking for a Retry-After longer than retry_after_max gets
// retry_after_max (README: "honoured as the earliest retry (capped at
// retry_after_max, default 1h, at least 1s)"), whatever the number of
// digits: delay-seconds is any run of digits (RFC 9110 §10.2.3). A value
// of more than about 292 years overflowed time.Duration (secs*time.Second
// wrapped, here to a negative, clamped up to 1s), and one beyond int64 was
// taken as invalid: either way the relay retried on the schedule (20ms
// here, 5s by default) instead of after the hour the cap allows.
func TestReviewHugeRetryAfterIsCapped(t *testing.T) {
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
