package dispatcher

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// retryDelay is the delay before the retry that follows attempt (1-based):
// the schedule's entry randomized by ± jitter (backoff's randomization).
// It is derived only from the attempt number, which is stored in
// JetStream, so the schedule survives restarts.
func retryDelay(schedule []time.Duration, jitter float64, attempt int) time.Duration {
	if len(schedule) == 0 {
		return 0
	}
	i := min(max(attempt-1, 0), len(schedule)-1)
	b := &backoff.ExponentialBackOff{
		InitialInterval:     schedule[i],
		RandomizationFactor: jitter,
		Multiplier:          1,
		MaxInterval:         schedule[i] * 2,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	return b.NextBackOff()
}

// retryAfter parses a Retry-After header (seconds or an HTTP date) and
// clamps it to [1s, max]. ok is false when the header is absent or invalid.
func retryAfter(h http.Header, now time.Time, maxDelay time.Duration) (time.Duration, bool) {
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		// Compared before it is multiplied: a count of seconds past
		// maxDelay (an epoch in milliseconds, 10^20) is the cap, never a
		// product that wraps around to a short or negative delay.
		d = maxDelay
		if err == nil && secs < uint64(maxDelay/time.Second) {
			d = time.Duration(secs) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, time.Second), maxDelay), true
}
