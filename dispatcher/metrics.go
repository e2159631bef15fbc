package dispatcher

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the dispatcher.
type Metrics struct {
	// Deliveries counts attempts by endpoint and outcome: delivered,
	// retry, dead_letter, waiting (an ordered event behind its predecessor).
	Deliveries *prometheus.CounterVec
	// AttemptSeconds is the duration of one HTTP attempt.
	AttemptSeconds *prometheus.HistogramVec
	// RetriesScheduled counts NakWithDelay with a retry delay.
	RetriesScheduled *prometheus.CounterVec
	// DeadLetters counts dead letters by endpoint and reason.
	DeadLetters *prometheus.CounterVec
	// Paused is 1 while an endpoint's circuit breaker is open.
	Paused *prometheus.GaugeVec
	// ConsecutiveFailures of each endpoint.
	ConsecutiveFailures *prometheus.GaugeVec
	// Held is 1 while an operator holds the endpoint; HeldWaits counts the
	// pulls a held worker skipped.
	Held      *prometheus.GaugeVec
	HeldWaits *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sengo_relay_deliveries_total", Help: "Webhook delivery attempts by endpoint and outcome.",
		}, []string{"endpoint", "outcome"}),
		AttemptSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sengo_relay_delivery_attempt_seconds", Help: "Duration of one webhook attempt.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"endpoint"}),
		RetriesScheduled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sengo_relay_retries_scheduled_total", Help: "Retries scheduled after a failed attempt.",
		}, []string{"endpoint"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sengo_relay_dead_letters_total", Help: "Events dead-lettered, by endpoint and reason.",
		}, []string{"endpoint", "reason"}),
		Paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sengo_relay_endpoint_paused", Help: "1 while the endpoint's circuit breaker holds deliveries.",
		}, []string{"endpoint"}),
		ConsecutiveFailures: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sengo_relay_endpoint_consecutive_failures", Help: "Failed attempts in a row.",
		}, []string{"endpoint"}),
		Held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sengo_relay_endpoint_held", Help: "1 while an operator holds the endpoint's deliveries (console or POST /admin/endpoints/{name}/pause).",
		}, []string{"endpoint"}),
		HeldWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sengo_relay_endpoint_held_waits_total", Help: "Pulls a held endpoint's workers skipped.",
		}, []string{"endpoint"}),
	}
	reg.MustRegister(m.Deliveries, m.AttemptSeconds, m.RetriesScheduled, m.DeadLetters, m.Paused, m.ConsecutiveFailures, m.Held, m.HeldWaits)
	return m
}

// Prime creates the series of each endpoint at zero (paused 0, every
// outcome and dead-letter reason): a counter that appears only with its
// first increment makes increase() miss it, so the first dead letter
// would raise no alert.
func (m *Metrics) Prime(endpoints []string) {
	for _, e := range endpoints {
		for _, o := range []string{"delivered", "retry", "dead_letter", "dead_letter_failed", "waiting", "record_failed", "order_released"} {
			m.Deliveries.WithLabelValues(e, o)
		}
		for _, r := range []string{ReasonExhausted, ReasonGone, ReasonAborted, ReasonUndecodable, ReasonExpiring, ReasonExpiringBeforeRetry, ReasonExpiringInBacklog, ReasonRemoved} {
			m.DeadLetters.WithLabelValues(e, r)
		}
		m.AttemptSeconds.WithLabelValues(e)
		m.RetriesScheduled.WithLabelValues(e)
		m.Paused.WithLabelValues(e).Set(0)
		m.Held.WithLabelValues(e).Set(0)
		m.HeldWaits.WithLabelValues(e)
		m.ConsecutiveFailures.WithLabelValues(e).Set(0)
	}
}
