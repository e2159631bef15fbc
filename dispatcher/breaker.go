package dispatcher

import (
	"context"
	"sync"
	"time"
)

// breaker pauses an endpoint after consecutive failures. While paused,
// workers stop pulling, so events wait in the stream instead of spending
// their retries; one probe event is let through at growing intervals and
// its success resumes the endpoint. Safe for concurrent use.
type breaker struct {
	policy BreakerPolicy
	now    func() time.Time

	mu        sync.Mutex
	failures  int
	paused    bool
	probing   bool
	interval  time.Duration
	nextProbe time.Time
	lastError string
	lastAt    time.Time     // when lastError happened
	resumedAt time.Time     // when it last stopped being paused
	changed   chan struct{} // closed and replaced on every state change
}

func newBreaker(p BreakerPolicy, now func() time.Time) *breaker {
	return &breaker{policy: p, now: now, changed: make(chan struct{})}
}

// acquire blocks while the endpoint is paused and no probe is due. It
// returns probe=true when the caller carries the probe; ok=false when ctx
// ended.
func (b *breaker) acquire(ctx context.Context) (probe, ok bool) {
	for {
		b.mu.Lock()
		if !b.paused {
			b.mu.Unlock()
			return false, true
		}
		wait := b.nextProbe.Sub(b.now())
		if !b.probing && wait <= 0 {
			b.probing = true
			b.mu.Unlock()
			return true, true
		}
		changed, probing := b.changed, b.probing
		b.mu.Unlock()
		var timer *time.Timer
		var fire <-chan time.Time
		if !probing && wait > 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return false, false
		}
	}
}

// release returns a probe slot that was acquired but not used (nothing
// to deliver).
func (b *breaker) release(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.nextProbe = b.now()
	b.notify()
	b.mu.Unlock()
}

// success records a delivered event: the endpoint is healthy.
func (b *breaker) success(probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = 0
	if probe || b.paused {
		if b.paused {
			b.resumedAt = b.now()
		}
		b.paused, b.probing = false, false
		b.notify()
	}
}

// failure records a failed attempt; it reports whether it paused the endpoint.
func (b *breaker) failure(probe bool, reason string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	b.lastError, b.lastAt = reason, b.now()
	switch {
	case probe:
		b.probing = false
		b.interval = min(b.interval*2, b.policy.ProbeMax)
		b.nextProbe = b.now().Add(b.interval)
		b.notify()
	case !b.paused && b.policy.Failures > 0 && b.failures >= b.policy.Failures:
		b.paused = true
		b.interval = b.policy.ProbeInitial
		b.nextProbe = b.now().Add(b.interval)
		b.notify()
		return true
	}
	return false
}

// delivering reports whether the endpoint is not paused, and since when
// (zero: it never was).
func (b *breaker) delivering() (bool, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.paused, b.resumedAt
}

func (b *breaker) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// BreakerState is an endpoint's health as shown by metrics and the admin API.
type BreakerState struct {
	Paused              bool   `json:"paused"`
	ConsecutiveFailures int    `json:"consecutiveFailures"`
	LastError           string `json:"lastError,omitempty"`
	// LastErrorAt is when LastError happened: it stays after the endpoint
	// recovers, for the operator asking what went wrong at three o'clock.
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	NextProbe   time.Time `json:"nextProbe,omitzero"`
}

func (b *breaker) state() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := BreakerState{Paused: b.paused, ConsecutiveFailures: b.failures, LastError: b.lastError, LastErrorAt: b.lastAt.UTC()}
	if b.paused {
		s.NextProbe = b.nextProbe
	}
	return s
}
