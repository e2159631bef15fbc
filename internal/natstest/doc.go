// Package natstest owns the test helper that starts a real nats-server with
// JetStream per test: on a free loopback port, storing in the test's temp
// dir, stoppable and restartable on the same port and store so tests can
// simulate an outage. No NATS mocks exist in this project; tests use this.
//
// It imports stream and nats.go; only tests import it.
package natstest
