package dispatcher

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/stream"
	"github.com/sengo-relay/sengo-relay/verify"
)

// 500, 500, 200: delivered on the third attempt, with growing delays, the
// same webhook-id and the stored bytes every time.
func TestRetriesThenDelivers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status(500, 500))
	w := h.start(h.endpoint("orders", c.URL, 100*time.Millisecond, 300*time.Millisecond))
	ev := h.publish("tx-1", event.StatusSuccess, "")
	eventually(t, "3 attempts and an ack", func() bool { return len(c.got()) == 3 && h.settled(w) })
	got := c.got()
	gap1, gap2 := got[1].At.Sub(got[0].At), got[2].At.Sub(got[1].At)
	if gap1 < 100*time.Millisecond || gap2 < 300*time.Millisecond || gap2 <= gap1 {
		t.Fatalf("delays %s, %s; want >= 100ms then >= 300ms", gap1, gap2)
	}
	stored, _ := event.Marshal(ev)
	for i, a := range got {
		if a.Header.Get("webhook-id") != ev.ID || !bytes.Equal(a.Body, stored) {
			t.Errorf("attempt %d: id %q body %s", i+1, a.Header.Get("webhook-id"), a.Body)
		}
	}
	if len(h.deadLetters()) != 0 {
		t.Fatal("delivered event dead-lettered")
	}
	if n := testutil.ToFloat64(h.metrics.RetriesScheduled.WithLabelValues("orders")); n != 2 {
		t.Errorf("retries scheduled = %v", n)
	}
}

// Headers and signatures: every active secret signs; a consumer holding
// either secret verifies with the exported verifier.
func TestSignedRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	ep.Headers = map[string]string{"X-Tenant": "shop-1"}
	kb, _ := verify.ParseWebhookSecret(secretB)
	ep.Keys = append(ep.Keys, kb) // rotation: A and B
	h.start(ep)
	h.publish("tx-s", event.StatusSuccess, "")
	eventually(t, "delivery", func() bool { return len(c.got()) == 1 })
	a := c.got()[0]
	for _, secret := range []string{secretA, secretB} {
		v, _ := verify.NewWebhookVerifier(secret)
		if err := v.Verify(a.Header, a.Body); err != nil {
			t.Errorf("verify with one of the rotated secrets: %v", err)
		}
	}
	if a.Header.Get("Content-Type") != "application/json" || a.Header.Get("User-Agent") != "sengo-relay/test" || a.Header.Get("X-Tenant") != "shop-1" {
		t.Errorf("headers %v", a.Header)
	}
	if a.Header.Get("webhook-replay") != "" {
		t.Error("live delivery marked as replay")
	}
	if a.Header.Get("sengo-event-sequence") != "1" {
		t.Errorf("sengo-event-sequence = %q, want 1", a.Header.Get("sengo-event-sequence"))
	}
	if n := len(strings.Fields(a.Header.Get("webhook-signature"))); n != 2 {
		t.Errorf("%d signatures, want one per secret", n)
	}
}

// 410 Gone and webhook-delivery: abort-message dead-letter at once.
func TestStopRetrying(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		answer func(int, *http.Request, http.ResponseWriter)
		reason string
	}{
		{"410", status(410), ReasonGone},
		{"abort header", func(_ int, _ *http.Request, w http.ResponseWriter) {
			w.Header().Set("webhook-delivery", "abort-message")
			w.WriteHeader(400)
		}, ReasonAborted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := newConsumer(t, tt.answer)
			w := h.start(h.endpoint("orders", c.URL))
			ev := h.publish("tx-g", event.StatusSuccess, "")
			eventually(t, "a dead letter", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
			if n := len(c.got()); n != 1 {
				t.Fatalf("%d attempts, want 1", n)
			}
			d := h.deadLetters()[0]
			if d.Reason != tt.reason || d.EventID != ev.ID || d.Attempts != 1 {
				t.Fatalf("dead letter %+v", d)
			}
		})
	}
}

// A hanging consumer times out and the event is retried.
func TestTimeoutRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(n int, r *http.Request, w http.ResponseWriter) {
		if n == 1 {
			<-r.Context().Done() // hang until the relay gives up
			return
		}
		w.WriteHeader(204)
	})
	ep := h.endpoint("orders", c.URL)
	ep.Timeout = time.Second // the first attempt hangs until it; an answered one must not overrun it under load
	w := h.start(ep)
	h.publish("tx-h", event.StatusSuccess, "")
	eventually(t, "delivery after a timeout", func() bool { return len(c.got()) == 2 && h.settled(w) })
	if !strings.Contains(h.logs.String(), `"attempt_error":"timeout"`) {
		t.Errorf("timeout not logged:\n%s", h.logs.String())
	}
}

// 429 with Retry-After waits that long (within bounds), not the schedule.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(n int, _ *http.Request, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			return
		}
		w.WriteHeader(200)
	})
	w := h.start(h.endpoint("orders", c.URL, 10*time.Millisecond))
	h.publish("tx-r", event.StatusSuccess, "")
	eventually(t, "delivery after Retry-After", func() bool { return len(c.got()) == 2 && h.settled(w) })
	got := c.got()
	if gap := got[1].At.Sub(got[0].At); gap < time.Second {
		t.Fatalf("retried after %s, want >= the 1s Retry-After", gap)
	}
}

// An endpoint down for every attempt ends in the DLQ with every field set.
func TestExhaustedDeadLetter(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) {
		w.WriteHeader(503)
		fmt.Fprint(w, "maintenance")
	})
	w := h.start(h.endpoint("orders", c.URL, 10*time.Millisecond, 10*time.Millisecond, 10*time.Millisecond))
	ev := h.publish("tx-d", event.StatusSuccess, "")
	eventually(t, "a dead letter", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	d := h.deadLetters()[0]
	stored, _ := event.Marshal(ev)
	switch {
	case d.Endpoint != "orders", d.EventID != ev.ID, d.TransactionID != "tx-d", d.MerchantRef != "REF-tx-d":
		t.Errorf("identity: %+v", d)
	case d.Reason != ReasonExhausted, d.Attempts != 4, len(c.got()) != 4:
		t.Errorf("reason %s attempts %d (consumer saw %d)", d.Reason, d.Attempts, len(c.got()))
	case d.FirstAttemptAt.IsZero(), !d.LastAttemptAt.After(d.FirstAttemptAt), d.DeadAt.IsZero():
		t.Errorf("times: %+v", d)
	case d.LastStatus != 503, d.ResponseExcerpt != "maintenance", d.StreamSeq != 1:
		t.Errorf("last response: %+v", d)
	case !bytes.Equal(d.Event, stored):
		t.Errorf("event not kept as stored: %s", d.Event)
	}
	if n := testutil.ToFloat64(h.metrics.DeadLetters.WithLabelValues("orders", ReasonExhausted)); n != 1 {
		t.Errorf("dead letter metric = %v", n)
	}
}

// A refused connection is a failure like any other.
func TestRefusedConnectionRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	w := h.start(h.endpoint("orders", "http://127.0.0.1:1/hook", 10*time.Millisecond))
	h.publish("tx-x", event.StatusSuccess, "")
	eventually(t, "a dead letter", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	if d := h.deadLetters()[0]; d.LastStatus != 0 || !strings.Contains(d.LastError, "refused") || d.Attempts != 2 {
		t.Fatalf("dead letter %+v", d)
	}
}

// Redirects are not followed: a 302 is a failure.
func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	target := newConsumer(t, status())
	c := newConsumer(t, func(_ int, r *http.Request, w http.ResponseWriter) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	})
	w := h.start(h.endpoint("orders", c.URL, 10*time.Millisecond))
	h.publish("tx-302", event.StatusSuccess, "")
	eventually(t, "a dead letter", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	if len(target.got()) != 0 {
		t.Fatal("redirect followed")
	}
}

// An endpoint's response headers are bounded (64 KiB): an answer with a
// megabyte of them is a failed attempt, never read whole. Unbounded (Go's
// default is 10 MiB), one such answer built a header map of some 150 MiB
// and counted as delivered, and every worker of a hostile endpoint could
// do it at once.
func TestHugeResponseHeadersAreAFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) {
		pad := strings.Repeat("p", 40)
		for i := range 25000 { // 1 MB of headers
			w.Header().Set(fmt.Sprintf("X-Pad-%d", i), pad)
		}
		w.WriteHeader(200)
	})
	ep := h.endpoint("orders", c.URL, 10*time.Millisecond)
	// Writing 25,000 headers took the consumer more than the harness's 2 s
	// under -race beside the parallel tests: the attempt timed out first.
	ep.Timeout = 30 * time.Second
	w := h.start(ep)
	h.publish("tx-headers", event.StatusSuccess, "")
	eventually(t, "a dead letter", func() bool { return len(h.deadLetters()) == 1 && h.settled(w) })
	if d := h.deadLetters()[0]; d.LastStatus != 0 || !strings.Contains(d.LastError, "headers exceeded") {
		t.Fatalf("dead letter: status %d, error %q; want no status and the header bound", d.LastStatus, d.LastError)
	}
}

// A paused endpoint loses nothing: after enough failures the breaker stops
// pulling; events published meanwhile are all delivered after recovery,
// in order per transaction when ordered.
func TestPausedEndpointLosesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var down = true
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	isDown := func() bool { <-mu; defer func() { mu <- struct{}{} }(); return down }
	c := newConsumer(t, func(_ int, _ *http.Request, w http.ResponseWriter) {
		if isDown() {
			w.WriteHeader(502)
			return
		}
		w.WriteHeader(200)
	})
	ep := h.endpoint("orders", c.URL, 20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond,
		20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond)
	ep.Breaker = BreakerPolicy{Failures: 3, ProbeInitial: 100 * time.Millisecond, ProbeMax: 200 * time.Millisecond}
	ep.Ordered = true
	ep.Concurrency = 4
	w := h.start(ep)
	for i := range 5 {
		h.publish(fmt.Sprintf("p-%d", i), event.StatusPending, "")
	}
	eventually(t, "the endpoint to pause", func() bool { return w.State().Paused })
	paused := len(c.got())
	for i := range 5 {
		h.publish(fmt.Sprintf("p-%d", i), event.StatusSuccess, event.StatusPending)
	}
	// While paused, only probes reach the consumer: no event burns its budget.
	eventually(t, "two probes", func() bool { return len(c.got()) >= paused+2 })
	if !w.State().Paused {
		t.Fatal("a failed probe resumed the endpoint")
	}
	<-mu
	down = false
	mu <- struct{}{}
	eventually(t, "everything delivered", func() bool { return h.settled(w) && !w.State().Paused })
	if d := h.deadLetters(); len(d) != 0 {
		t.Fatalf("%d events dead-lettered while paused", len(d))
	}
	delivered := map[string][]string{}
	for _, a := range c.got() {
		ev, _ := event.Unmarshal(a.Body)
		if a.Header.Get("webhook-id") == "" {
			t.Fatal("attempt without webhook-id")
		}
		delivered[ev.Data.TransactionID] = append(delivered[ev.Data.TransactionID], string(ev.Data.Status))
	}
	for i := range 5 {
		seq := delivered[fmt.Sprintf("p-%d", i)]
		last := seq[len(seq)-1]
		firstSuccess := slices.Index(seq, "success")
		if last != "success" || firstSuccess < 0 || slices.Contains(seq[firstSuccess:], "pending") {
			t.Errorf("p-%d: attempts %v: success before pending was delivered", i, seq)
		}
	}
}

// Ordered: a later status waits until the earlier one succeeded, while
// other transactions go on.
func TestOrderedWaitsForPredecessor(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(n int, r *http.Request, w http.ResponseWriter) {
		var buf bytes.Buffer
		buf.ReadFrom(r.Body)
		w.WriteHeader(200)
	})
	failing := map[string]int{}
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	c.answer = func(n int, r *http.Request, w http.ResponseWriter) {
		a := c.got()[n-1]
		ev, _ := event.Unmarshal(a.Body)
		<-mu
		failing[ev.ID]++
		k := failing[ev.ID]
		mu <- struct{}{}
		if ev.Data.TransactionID == "slow" && ev.Data.Status == event.StatusPending && k <= 2 {
			w.WriteHeader(500)
			return
		}
		w.WriteHeader(200)
	}
	ep := h.endpoint("orders", c.URL, 300*time.Millisecond, 300*time.Millisecond)
	ep.Ordered = true
	w := h.start(ep)
	h.publish("slow", event.StatusPending, "")
	h.publish("slow", event.StatusSuccess, event.StatusPending)
	h.publish("fast", event.StatusSuccess, "")
	eventually(t, "all delivered", func() bool { return h.settled(w) })
	var order []string
	for _, a := range c.got() {
		ev, _ := event.Unmarshal(a.Body)
		order = append(order, ev.Data.TransactionID+"/"+string(ev.Data.Status))
	}
	iPendingOK := slices.Index(order, "slow/pending") + 2 // third pending attempt succeeds
	iSuccess := slices.Index(order, "slow/success")
	iFast := slices.Index(order, "fast/success")
	if iSuccess < iPendingOK || order[iPendingOK] != "slow/pending" {
		t.Fatalf("order %v: slow/success went before slow/pending succeeded", order)
	}
	if iFast > iSuccess {
		t.Fatalf("order %v: another transaction was held up", order)
	}
	if n := strings.Count(strings.Join(order, " "), "slow/success"); n != 1 {
		t.Fatalf("slow/success delivered %d times", n)
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	ep := Endpoint{Schedule: []time.Duration{time.Second, time.Minute}}
	tests := []struct {
		name    string
		r       attemptResult
		attempt int
		want    actionKind
		delay   time.Duration
	}{
		{"2xx", attemptResult{Status: 204}, 1, actAck, 0},
		{"500 first", attemptResult{Status: 500}, 1, actRetry, time.Second},
		{"500 second", attemptResult{Status: 500}, 2, actRetry, time.Minute},
		{"500 last", attemptResult{Status: 500}, 3, actDeadLetter, 0},
		{"410", attemptResult{Status: 410, Abort: true}, 1, actDeadLetter, 0},
		{"abort", attemptResult{Status: 400, Abort: true}, 1, actDeadLetter, 0},
		{"429 retry-after", attemptResult{Status: 429, RetryAfter: 7 * time.Second, HasRetry: true}, 1, actRetry, 7 * time.Second},
		{"timeout", attemptResult{Err: fmt.Errorf("timeout")}, 1, actRetry, time.Second},
		{"3xx", attemptResult{Status: 302}, 1, actRetry, time.Second},
	}
	for _, tt := range tests {
		a := decide(ep, tt.r, tt.attempt)
		if a.kind != tt.want || a.delay != tt.delay {
			t.Errorf("%s: %+v, want kind %d delay %s", tt.name, a, tt.want, tt.delay)
		}
	}
}

func TestRetryDelayJitterAndRetryAfter(t *testing.T) {
	t.Parallel()
	s := []time.Duration{10 * time.Second, time.Hour}
	for range 100 {
		if d := retryDelay(s, 0.2, 1); d < 8*time.Second || d > 12*time.Second {
			t.Fatalf("attempt 1: %s outside 10s ± 20%%", d)
		}
		if d := retryDelay(s, 0.2, 9); d < 48*time.Minute || d > 72*time.Minute {
			t.Fatalf("beyond the schedule: %s, want the last entry", d)
		}
	}
	now := time.Now()
	h := http.Header{}
	h.Set("Retry-After", "120")
	if d, ok := retryAfter(h, now, time.Minute); !ok || d != time.Minute {
		t.Errorf("clamped: %s %v", d, ok)
	}
	h.Set("Retry-After", now.Add(30*time.Second).UTC().Format(http.TimeFormat))
	if d, ok := retryAfter(h, now, time.Hour); !ok || d < 29*time.Second || d > 31*time.Second {
		t.Errorf("date: %s %v", d, ok)
	}
	h.Set("Retry-After", "soon")
	if _, ok := retryAfter(h, now, time.Hour); ok {
		t.Error("garbage accepted")
	}
}

// Changing an endpoint's filter and restarting its worker updates the
// consumer in place: delivered events are not sent again, and the new
// filter applies from where it stood.
func TestConfigChangeKeepsPosition(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	ep.FilterSubjects = []string{"sengo.events.*.*.success"}
	w, err := NewWorker(context.Background(), WorkerConfig{Endpoint: ep, JetStream: h.js, UserAgent: "t", Metrics: h.metrics, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	h.publish("a", event.StatusSuccess, "")
	eventually(t, "first delivery", func() bool { return len(c.got()) == 1 && h.settled(w) })
	cancel()
	<-done

	h.publish("b", event.StatusPending, "") // matches only the new filter
	h.publish("c", event.StatusSuccess, "")
	ep.FilterSubjects = []string{"sengo.events.*.*.success", "sengo.events.*.*.pending"}
	ep.DeliverFrom = "all" // ignored: the consumer exists
	w2 := h.start(ep)
	eventually(t, "deliveries after the change", func() bool { return len(c.got()) == 3 && h.settled(w2) })
	var got []string
	for _, a := range c.got() {
		ev, _ := event.Unmarshal(a.Body)
		got = append(got, ev.Data.TransactionID)
	}
	slices.Sort(got) // b and c may go in parallel
	if fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("delivered %v, want a (once), b and c", got)
	}
	info, _ := w2.live.Info(context.Background())
	if info.Config.DeliverPolicy != jetstream.DeliverAllPolicy || len(info.Config.FilterSubjects) != 2 {
		t.Fatalf("consumer config %+v", info.Config)
	}
}

// A paused endpoint whose probe event is answered 410 (or abort-message)
// must go on probing: the probe slot is never given back on that path, so
// the endpoint stays paused for good and the other events never go.
func TestProbeAnsweredGoneDoesNotPauseForever(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(n int, _ *http.Request, w http.ResponseWriter) {
		switch {
		case n <= 2:
			w.WriteHeader(503) // two failures: the breaker pauses
		case n == 3:
			w.WriteHeader(http.StatusGone) // the probe: this event is refused for good
		default:
			w.WriteHeader(200) // the endpoint is healthy again
		}
	})
	ep := h.endpoint("orders", c.URL, 20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond)
	ep.Concurrency = 1
	ep.Breaker = BreakerPolicy{Failures: 2, ProbeInitial: 50 * time.Millisecond, ProbeMax: 200 * time.Millisecond}
	w := h.start(ep)
	h.publish("tx-a", event.StatusSuccess, "")
	h.publish("tx-b", event.StatusSuccess, "")
	eventually(t, "the endpoint to pause", func() bool { return w.State().Paused })
	eventually(t, "the probe answered 410", func() bool { return len(h.deadLetters()) == 1 })
	h.publish("tx-c", event.StatusSuccess, "")
	eventually(t, "the endpoint probed again and resumed, everything settled", func() bool { return h.settled(w) && !w.State().Paused })
}

// The probe of a paused endpoint must reach its live events even when a
// replay worker carries it. Given back after an empty pull, the probe went
// to whichever worker asked first; a replay worker finding SENGO_REPLAY
// empty kept taking it back, and under load the endpoint stayed paused
// for the 30 s of TestPausedEndpointLosesNothing (seen in CI). Here a
// replay worker's probe, with SENGO_REPLAY empty, delivers the live event.
func TestProbeOfAReplayWorkerTakesLiveEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, status())
	ep := h.endpoint("orders", c.URL)
	ep.Breaker = BreakerPolicy{Failures: 1, ProbeInitial: time.Millisecond, ProbeMax: time.Millisecond}
	w, err := NewWorker(context.Background(), WorkerConfig{Endpoint: ep, JetStream: h.js, Metrics: h.metrics, Logger: zerolog.New(h.logs)})
	if err != nil {
		t.Fatal(err)
	}
	w.breaker.failure(false, "HTTP 502") // paused; the probe is due in a millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	live, replay := stream.NewPuller(w.live, 200*time.Millisecond), stream.NewPuller(w.replay, 200*time.Millisecond)
	go live.Run(ctx)
	go replay.Run(ctx)
	h.publish("tx-a", event.StatusSuccess, "")

	w.pullOne(ctx, sources{own: replay, other: live, replayed: true})
	if n := len(c.got()); n != 1 || w.State().Paused {
		t.Fatalf("the replay worker's probe made %d attempts; paused %v: the live event waits while the endpoint stays paused", n, w.State().Paused)
	}
}

// Events that one endpoint keeps refusing (a consumer bug on some
// payloads) wait in NakWithDelay between retries. They must not hold back
// the endpoint's other events: a message Nak'd with a delay stays ack
// pending in JetStream, and the consumer's MaxAckPending (16 for
// concurrency 4) is reached by 16 such events; no new event is delivered
// until a retry ends, here a minute, by default hours to days.
func TestRetryingEventsDoNotHoldBackOthers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := newConsumer(t, func(_ int, r *http.Request, w http.ResponseWriter) {
		if r.Header.Get("webhook-id") != event.ID("main", "good", event.StatusSuccess) {
			w.WriteHeader(500) // the consumer fails on every other event
			return
		}
		w.WriteHeader(200)
	})
	ep := h.endpoint("orders", c.URL, time.Minute, time.Minute) // the retries are a minute away
	w := h.start(ep)
	for i := range 16 {
		h.publish(fmt.Sprintf("bad-%d", i), event.StatusSuccess, "")
	}
	eventually(t, "16 first attempts", func() bool { return len(c.got()) >= 16 })
	h.publish("good", event.StatusSuccess, "")
	poll.Within(t, 10*time.Second, "the good event delivered while the bad ones wait for their retry", func() bool {
		for _, a := range c.got() {
			if ev, _ := event.Unmarshal(a.Body); ev.Data.TransactionID == "good" {
				return true
			}
		}
		return false
	})
	_ = w
}

// An overloaded consumer (or its load balancer) answering 503 with a
// short Retry-After must not spend the whole retry budget in seconds: the
// schedule (by default 10 attempts over 3 days) is what lets an event
// survive an outage. Retry-After is the earliest retry: a Retry-After of
// 1 s replaced each delay of the schedule, and the event was dead-lettered
// about 2 s after its first attempt; a longer one still wins.
func TestShortRetryAfterDoesNotSpendTheBudget(t *testing.T) {
	t.Parallel()
	ep := Endpoint{Schedule: []time.Duration{time.Minute, time.Hour}}
	for attempt, want := range map[int]time.Duration{1: time.Minute, 2: time.Hour} {
		got := decide(ep, attemptResult{Status: 503, HasRetry: true, RetryAfter: time.Second}, attempt)
		if got.kind != actRetry || got.delay != want {
			t.Errorf("attempt %d answered 503 with Retry-After: 1: %+v, want a retry after %s (the schedule's)", attempt, got, want)
		}
	}
	if got := decide(ep, attemptResult{Status: 429, HasRetry: true, RetryAfter: 3 * time.Hour}, 1); got.delay != 3*time.Hour {
		t.Errorf("Retry-After longer than the schedule: retry after %s, want 3h", got.delay)
	}
}
