// Package stream owns sengo-relay's use of NATS: the embedded nats-server
// with JetStream on local disk, connecting to it or to an external cluster
// with endless reconnects, and provisioning the streams and the KV bucket
// the relay relies on (created when missing, updated in place otherwise).
// The embedded server's subscriber identity lives in an account of its own
// (subscribers.go), so that nothing it asks JetStream for can be stored in
// the relay's streams.
//
// It may import nats.go and nats-server; it knows stream names from event
// only through its caller's Config, so it has no domain knowledge.
package stream
