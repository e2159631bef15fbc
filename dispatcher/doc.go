// Package dispatcher owns delivery of events from SENGO_EVENTS to merchant
// endpoints: one durable consumer per configured endpoint (updated in
// place, so it keeps its position across restarts and config changes),
// signed Standard Webhooks POSTs, retries on a schedule applied with
// NakWithDelay, a circuit breaker that stops pulling while an endpoint is
// down, per-transaction ordering, dead letters in SENGO_DLQ, and re-entry
// of events through SENGO_REPLAY for replays and redrives.
//
// It may import event, verify, stream, nats.go and backoff. It never
// imports receiver.
package dispatcher
