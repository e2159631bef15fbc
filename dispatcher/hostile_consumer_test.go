package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/verify"
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
	t.Parallel()
	for _, ra := range []string{
		"7200",                 // two hours: capped to one (passes)
		"10000000000",          // ~317 years: time.Duration overflows
		"99999999999999999999", // beyond int64: Atoi fails
	} {
		t.Run(ra, func(t *testing.T) {
			h := newHarness(t)
			// Kept longer than the hour's wait: an event whose next attempt
			// would come after it aged out is dead-lettered instead.
			h.reconfigure(event.StreamEvents, func(cfg *jetstream.StreamConfig) { cfg.MaxAge = 24 * time.Hour })
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
				r, ok, err := store.get(context.Background(), key, time.Time{})
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

// What the relay hides everywhere else must not come back through what a
// consumer answers, which SENGO_ATTEMPTS (kept as long as the events), the
// dead letter (dlq show, the admin API) and the console's transaction page
// keep:
//   - the endpoint's URL can be its own secret (the console, logs and
//     errors show neither its query nor its path after the first segment);
//     a redirect echoes it in Location, Express's default 404 in the body
//     ("Cannot POST /hooks/<token>"), a Link header names it, and the
//     excerpt's end must not cut it to a part that is kept;
//   - the signature the relay sent (an attempt record keeps the request
//     headers minus the signature): a consumer's "bad signature, got v1,…"
//     echoes it;
//   - credentials in a response header whose name says so (X-Password,
//     X-Credentials, X-Bearer), as Cookie and Authorization are.
func TestRecordsKeepNoSecretTheConsumerEchoes(t *testing.T) {
	t.Parallel()
	const pathToken, queryToken = "tok-9f8e7d", "s3cr3t-query"
	for _, tc := range []struct {
		name   string
		answer func(r *http.Request, w http.ResponseWriter) (secrets []string)
	}{
		{"redirect", func(r *http.Request, w http.ResponseWriter) []string {
			http.Redirect(w, r, "https://orders.example"+r.URL.RequestURI(), http.StatusMovedPermanently)
			return []string{pathToken, queryToken}
		}},
		{"echoed URL", func(r *http.Request, w http.ResponseWriter) []string {
			w.Header().Set("Link", "<"+r.URL.RequestURI()+">; rel=\"self\"")
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte("<pre>Cannot POST " + r.URL.RequestURI() + "</pre>")) // as Express's finalhandler does the path (here with the query too)
			return []string{pathToken, queryToken}
		}},
		{"echoed URL across the excerpt's end", func(r *http.Request, w http.ResponseWriter) []string {
			w.WriteHeader(http.StatusNotFound)
			pad := strings.Repeat("a", maxExcerpt-len("/hooks/sengo/")-len(pathToken)+2) // the excerpt would end 2 bytes before the token's
			_, _ = w.Write([]byte(pad + r.URL.RequestURI()))
			return []string{pathToken[:len(pathToken)-2]}
		}},
		{"echoed signature", func(r *http.Request, w http.ResponseWriter) []string {
			sig := r.Header.Get(verify.HeaderWebhookSignature)
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":"bad signature","got":%q}`, sig)
			var parts []string
			for _, p := range strings.Fields(sig) {
				_, b64, _ := strings.Cut(p, ",")
				parts = append(parts, b64)
			}
			return parts
		}},
		{"signature in a malformed status line", func(r *http.Request, w http.ResponseWriter) []string {
			// Go's error repeats the line: malformed HTTP status code "v1,…".
			var parts []string
			for _, p := range strings.Fields(r.Header.Get(verify.HeaderWebhookSignature)) {
				_, b64, _ := strings.Cut(p, ",")
				parts = append(parts, b64)
			}
			rawAnswer(w, "HTTP/1.1 v1,"+parts[0]+"\r\n\r\n")
			return parts
		}},
		{"URL in a malformed status line", func(r *http.Request, w http.ResponseWriter) []string {
			rawAnswer(w, "HTTP/1.1 "+r.URL.RequestURI()+"\r\n\r\n") // a TCP echo service behind the URL
			return []string{pathToken, queryToken}
		}},
		{"signature at the end of a long malformed status line", func(r *http.Request, w http.ResponseWriter) []string {
			_, b64, _ := strings.Cut(r.Header.Get(verify.HeaderWebhookSignature), ",")
			rawAnswer(w, "HTTP/1.1 "+strings.Repeat("x", 60000)+b64+"\r\n\r\n")
			return []string{b64}
		}},
		{"echoed header token", func(r *http.Request, w http.ResponseWriter) []string {
			// A configured "Bearer <token>" was hidden only whole.
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, "invalid token %s", strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			return []string{"0123456789abcdef"}
		}},
		{"JSON-escaped header", func(r *http.Request, w http.ResponseWriter) []string {
			// PHP's json_encode writes '/' as '\/'.
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"got":"%s"}`, strings.ReplaceAll(r.Header.Get("Authorization"), "/", `\/`))
			return []string{"0123456789abcdef"}
		}},
		{"echoed signing secret", func(_ *http.Request, w http.ResponseWriter) []string {
			// A debug page of a consumer configured with another secret:
			// "expected whsec_…". Its base64 part, JSON-escaped, too.
			b64 := strings.TrimPrefix(secretA, verify.SecretPrefix)
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"configured":%q,"key":"%s"}`, secretA, strings.ReplaceAll(b64, "/", `\/`))
			return []string{secretA, b64, strings.ReplaceAll(b64, "/", `\/`)}
		}},
		{"credential headers", func(_ *http.Request, w http.ResponseWriter) []string {
			w.Header().Set("X-Password", "hunter2-pw")
			w.Header().Set("X-Credentials", "cred-123456")
			w.Header().Set("X-Bearer", "bear-abcdef")
			w.Header().Set("X-Csrf", "csrf-abcdef")
			w.WriteHeader(http.StatusBadRequest)
			return []string{"hunter2-pw", "cred-123456", "bear-abcdef", "csrf-abcdef"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.withHistory()
			var mu sync.Mutex
			var secrets []string
			c := newConsumer(t, func(_ int, r *http.Request, w http.ResponseWriter) {
				s := tc.answer(r, w)
				mu.Lock()
				secrets = append(secrets, s...)
				mu.Unlock()
			})
			ep := h.endpoint("orders", c.URL+"/hooks/sengo/"+pathToken+"?key="+queryToken, 10*time.Millisecond)
			ep.Headers = map[string]string{"Authorization": "Bearer tok/0123456789abcdef"}
			w := h.start(ep)
			ev := h.publish("tx-echo", event.StatusSuccess, "")
			eventually(t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
			eventually(t, "two attempts stored", func() bool { s, _ := res.get(); return s == 2 })
			got, _, err := history.Attempts(t.Context(), h.js, ev.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(secrets) == 0 {
				t.Fatal("the consumer echoed nothing")
			}
			for _, secret := range secrets {
				for _, a := range got {
					if b, _ := json.Marshal(a); strings.Contains(string(b), secret) {
						t.Errorf("attempt %d keeps %q: headers %v, excerpt %q", a.Number, secret, a.ResponseHeaders, a.ResponseExcerpt)
					}
				}
				if b, _ := json.Marshal(h.deadLetters()[0]); strings.Contains(string(b), secret) {
					t.Errorf("the dead letter keeps %q: %s", secret, b)
				}
			}
			for _, a := range got {
				if len(a.Error) > maxExcerpt {
					t.Errorf("attempt %d keeps an error of %d bytes, more than an excerpt's %d", a.Number, len(a.Error), maxExcerpt)
				}
			}
			if n := len(h.deadLetters()[0].LastError); n > maxExcerpt {
				t.Errorf("the dead letter keeps an error of %d bytes, more than an excerpt's %d", n, maxExcerpt)
			}
		})
	}
}

// rawAnswer answers a request with raw bytes, as no HTTP server would.
func rawAnswer(w http.ResponseWriter, raw string) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	_, _ = buf.WriteString(raw)
	_ = buf.Flush()
}

// A consumer answering more headers than an attempt keeps had a random
// two dozen kept (Go's map order): Retry-After or Content-Type, which
// explain the answer, could be left out, and two attempts of the same
// answer kept different ones. The headers that explain an answer are kept
// first, then the others in name order.
func TestKeptHeadersAreTheSameEveryTimeAndExplainTheAnswer(t *testing.T) {
	t.Parallel()
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
		if got := keptHeaders(h, func(s string) string { return s }); !maps.Equal(got, want) {
			t.Fatalf("kept %v\nwant %v", got, want)
		}
	}
}

// A consumer that answers 2xx at once and then sends its body a byte at a
// time held the worker until the endpoint's timeout (15 s here) for the
// excerpt it keeps: a delivery already decided by its status took the
// whole timeout, and a slow consumer's every delivery with it. Once the
// status is in, what is kept of the body is read for answerBodyWait at
// most.
func TestADrippingAnswerDoesNotHoldTheWorker(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(_ int, r *http.Request, w http.ResponseWriter) {
		w.WriteHeader(http.StatusOK)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})
	ep := h.endpoint("orders", c.URL)
	ep.Timeout, ep.Concurrency = 15*time.Second, 1
	w := h.start(ep)
	h.publish("tx-drip-1", event.StatusSuccess, "")
	h.publish("tx-drip-2", event.StatusSuccess, "")
	eventually(t, "both delivered and acknowledged", func() bool { return len(c.got()) == 2 && h.settled(w) })
	if n := len(h.deadLetters()); n != 0 {
		t.Fatalf("%d dead letters: a 200 is a delivery", n)
	}
}

// The excerpt kept of an answer is its first maxExcerpt bytes; cut in the
// middle of a character, the record stored U+FFFD for it (JSON has no
// invalid UTF-8) and the console showed "…é" as "…\uFFFD". It ends before a
// character it would cut.
func TestAnExcerptIsNotCutInsideACharacter(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	body := strings.Repeat("a", maxExcerpt-1) + "é and more"
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(body))
	})
	w := h.start(h.endpoint("orders", c.URL, 10*time.Millisecond))
	h.publish("tx-rune", event.StatusSuccess, "")
	eventually(t, "dead-lettered", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	if got := h.deadLetters()[0].ResponseExcerpt; got != body[:maxExcerpt-1] {
		t.Fatalf("excerpt ends %q (%d bytes); want the %d bytes before the é", got[max(0, len(got)-8):], len(got), maxExcerpt-1)
	}
}

// What is kept of a body keeps no part of a secret, whatever ends it: the
// excerpt's length, the read's limit (a scrub that shortened the text a
// lot leaves the excerpt ending where the read stopped) or the read's
// time (answerBodyWait); and it never ends inside a character unless the
// body itself did.
func TestExcerptKeepsNoPartOfASecret(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("J", 700) // a long configured bearer token
	sig := "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/abcd="
	secrets := []string{long, sig}
	for _, tc := range []struct {
		name     string
		body     string
		complete bool // the whole body was read
		want     string
	}{
		{"short and whole", "bad signature " + sig, true, "bad signature …"},
		{"a secret across the excerpt's end", strings.Repeat("a", maxExcerpt-4) + sig, false, strings.Repeat("a", maxExcerpt-4) + "…"},
		{"a secret's start at the excerpt's end", strings.Repeat("a", maxExcerpt-4) + sig[:10], false, strings.Repeat("a", maxExcerpt-4)},
		{"the read stopped inside a secret", long + strings.Repeat("b", 300) + sig[:20], false, "…" + strings.Repeat("b", 300)},
		{"the read stopped inside a character", "caf\xc3", false, "caf"},
		{"a body that ends inside a character", "caf\xc3", true, "caf\xc3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := excerptOf([]byte(tc.body), tc.complete, func(s string) string { return verify.Scrub(s, secrets) }, secrets); got != tc.want {
				t.Fatalf("excerpt %q (%d bytes)\nwant    %q", got[max(0, len(got)-40):], len(got), tc.want[max(0, len(tc.want)-40):])
			}
		})
	}
}

// A header value is clipped to maxHeaderValue bytes; clipped before it was
// scrubbed, a secret echoed across the clip (a Link naming the endpoint's
// URL) was kept in part.
func TestKeptHeadersAreScrubbedBeforeTheyAreClipped(t *testing.T) {
	t.Parallel()
	secret := "tok-0123456789abcdef"
	h := http.Header{"Link": {"<" + strings.Repeat("x", maxHeaderValue-10) + "/" + secret + ">"}}
	got := keptHeaders(h, func(s string) string { return verify.Scrub(s, []string{secret}) })
	if strings.Contains(got["Link"], secret[:6]) {
		t.Fatalf("Link kept %q", got["Link"][maxHeaderValue-20:])
	}
}

// A consumer echoing the signature may escape it: PHP's json_encode
// writes "/" as "\/", a query string or a path escapes "+", "/" and "=".
func TestSignaturesAsAConsumerEchoesThem(t *testing.T) {
	t.Parallel()
	got := signatures("v1,ab/c+d= v1,xyz0")
	for _, want := range []string{"ab/c+d=", `ab\/c+d=`, "ab%2Fc%2Bd%3D", "ab%2Fc+d=", "xyz0"} {
		if !slices.Contains(got, want) {
			t.Errorf("signatures %q: no %q", got, want)
		}
	}
}
