package receiver

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the receiver and the intake workers.
type Metrics struct {
	// Callbacks counts callbacks by project ("unknown" for names not
	// configured) and outcome ("accepted", "duplicate" or an error code).
	Callbacks *prometheus.CounterVec
	// InFlight is how many callbacks are being handled now (bounded by
	// http.max_in_flight; beyond it callbacks are refused as overloaded).
	InFlight prometheus.Gauge
	// RefusedInFlight is how many callbacks that fail the checks needing no
	// body (project, callback token, source IP) are being read now: they
	// take none of http.max_in_flight's slots, so a flood of slow ones
	// shows here, not as overloaded.
	RefusedInFlight prometheus.Gauge
	// PublishSeconds is the time from publish to durable (PubAck, and the
	// group-commit fsync when there is one) on SENGO_INBOX.
	PublishSeconds prometheus.Histogram
	// Intake counts processed notifications by project and outcome
	// ("published", "duplicate", "stale", "conflict", "quarantined", "retry").
	Intake *prometheus.CounterVec
	// KVConflicts counts compare-and-set conflicts on SENGO_TX (two workers
	// racing on one transaction; each is resolved by re-reading).
	KVConflicts prometheus.Counter
	// Confirm counts checks with SenGo's API by project and outcome
	// (confirmed, status_corrected, mismatch, unconfirmed, unavailable,
	// failing_alone, set_aside).
	Confirm *prometheus.CounterVec
	// Reconcile counts reconciliation by project and outcome (checked,
	// missing, fed; elsewhere: transactions held under a project no longer
	// configured, not fed; failed: runs in which the project, or a day of
	// it, could not be reconciled).
	Reconcile *prometheus.CounterVec
	// ConnsRefused counts connections a listener (callback, admin,
	// metrics) closed unanswered, by reason: per_address or total (for the
	// callback listener http.max_conns_per_address and http.max_conns).
	ConnsRefused *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sengo_relay_callbacks_total",
			Help: "Callbacks received, by project and outcome.",
		}, []string{"project", "outcome"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sengo_relay_callbacks_in_flight",
			Help: "Callbacks being handled now; at http.max_in_flight further callbacks are refused as overloaded.",
		}),
		RefusedInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sengo_relay_callbacks_refused_in_flight",
			Help: "Callbacks being read now that fail the checks needing no body (project, callback token, source IP); they take none of http.max_in_flight.",
		}),
		PublishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sengo_relay_inbox_publish_seconds",
			Help:    "Time from publishing a notification to SENGO_INBOX until it is durable: JetStream acknowledged it and, with group commit, the fsync after it completed.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		Intake: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sengo_relay_intake_total",
			Help: "Inbox notifications processed, by project and outcome.",
		}, []string{"project", "outcome"}),
		KVConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sengo_relay_tx_cas_conflicts_total",
			Help: "Compare-and-set conflicts on the SENGO_TX bucket.",
		}),
	}
	m.Confirm = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sengo_relay_confirmations_total",
		Help: "Notifications checked with SenGo's API, by project and outcome.",
	}, []string{"project", "outcome"})
	m.Reconcile = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sengo_relay_reconcile_total",
		Help: "Reconciliation with SenGo's transaction list, by project and outcome.",
	}, []string{"project", "outcome"})
	m.ConnsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sengo_relay_connections_refused_total",
		Help: "Connections closed unanswered, by listener (callback, admin, metrics) and reason (per_address, total).",
	}, []string{"listener", "reason"})
	for _, l := range []string{"callback", "admin", "metrics"} {
		for _, r := range []string{"per_address", "total"} {
			m.ConnsRefused.WithLabelValues(l, r)
		}
	}
	reg.MustRegister(m.Callbacks, m.InFlight, m.RefusedInFlight, m.PublishSeconds, m.Intake, m.KVConflicts, m.Confirm, m.Reconcile, m.ConnsRefused)
	return m
}

// Outcomes the metrics are primed with, for each project: a counter that
// appears only with its first increment makes increase() and rate() miss
// that first event, so an alert on it would stay silent.
var (
	primedCallbacks     = []string{"accepted", "duplicate", "store_unavailable", "overloaded", "unauthorized", "forbidden", "invalid_signature", "invalid_notification"}
	primedIntake        = []string{"published", "duplicate", "stale", "conflict", "quarantined", "retry", "waiting"}
	primedConfirmations = []string{"confirmed", "status_corrected", "mismatch", "unconfirmed", "unavailable", "failing_alone", "set_aside"}
	primedReconcile     = []string{"checked", "missing", "fed", "failed"}
)

// Prime creates the series of each project at zero.
func (m *Metrics) Prime(projects []string) {
	for _, p := range projects {
		for _, o := range primedCallbacks {
			m.Callbacks.WithLabelValues(p, o)
		}
		for _, o := range primedIntake {
			m.Intake.WithLabelValues(p, o)
		}
		for _, o := range primedConfirmations {
			m.Confirm.WithLabelValues(p, o)
		}
		for _, o := range primedReconcile {
			m.Reconcile.WithLabelValues(p, o)
		}
	}
}
