package dispatcher

import (
	"strings"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/verify"
)

// Endpoint is one merchant endpoint as the dispatcher needs it.
type Endpoint struct {
	Name string
	URL  string
	// Keys are the decoded signing secrets; every one signs each request.
	Keys           []verify.WebhookKey
	FilterSubjects []string
	Timeout        time.Duration
	Concurrency    int
	// Schedule is the delay before each retry; attempts = len(Schedule)+1.
	Schedule      []time.Duration
	Jitter        float64
	RetryAfterMax time.Duration
	RateLimit     float64 // events per second; 0: none
	Ordered       bool
	Headers       map[string]string
	// DeliverFrom applies when the endpoint's consumer is created: "new",
	// "all" or an RFC 3339 time.
	DeliverFrom string
	Breaker     BreakerPolicy
}

// BreakerPolicy pauses an endpoint after Failures consecutive failures
// and probes it at growing intervals.
type BreakerPolicy struct {
	Failures     int // 0: never pause
	ProbeInitial time.Duration
	ProbeMax     time.Duration
}

// MaxAttempts is the number of delivery attempts before an event is dead-lettered.
func (e Endpoint) MaxAttempts() int { return len(e.Schedule) + 1 }

// Matches reports whether the endpoint's filter selects subject.
func (e Endpoint) Matches(subject string) bool {
	for _, f := range e.FilterSubjects {
		if event.SubjectMatches(f, subject) {
			return true
		}
	}
	return false
}

// ConsumerName is the durable consumer of endpoint name on SENGO_EVENTS
// and on SENGO_REPLAY.
func ConsumerName(name string) string { return consumerPrefix + name }

// IsEndpointConsumer reports whether consumer is an endpoint's
// (ConsumerName), configured now or not.
func IsEndpointConsumer(consumer string) bool { return strings.HasPrefix(consumer, consumerPrefix) }

const consumerPrefix = "webhook-"
