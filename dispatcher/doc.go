// Package dispatcher will own delivery of events from SENGO_EVENTS to
// merchant endpoints: one durable consumer per configured endpoint, signed
// Standard Webhooks POSTs, retries with exponential backoff through
// NakWithDelay, dead letters in SENGO_DLQ, and replay by time window.
//
// It may import event, verify, stream, nats.go and backoff. It never
// imports receiver.
package dispatcher
