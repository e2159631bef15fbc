// Package bench owns `sengo-relay bench`: it measures, in one process and
// one run, the physical limits (raw JetStream synchronous publish, a raw
// Echo handler that only reads the body) next to the relay's own paths
// (the callback endpoint, callback-to-webhook latency at a fixed rate,
// dispatcher deliveries), prints the ratios and peak RSS, and in soak mode
// watches memory, goroutines and latency for drift.
//
// It imports receiver, dispatcher, stream, event and verify; only cmd
// imports it.
package bench
