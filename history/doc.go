// Package history owns what the relay keeps so an operator can read a
// payment's story after the fact: every webhook delivery attempt
// (SENGO_ATTEMPTS, subject sengo.attempts.<endpoint>.<event id>, or h-<hash>
// for an id that is no short token) and the
// index from a merchant's own reference to SenGo's transaction ids
// (SENGO_REFS, subject sengo.refs.<project>.<ref hash>.<id hash>, one
// message per pair).
//
// Records are written with asynchronous publishes, off the critical
// round trips of intake and delivery: a record that cannot be stored is
// counted (sengo_relay_history_writes_total{result="failed"}) and logged,
// and never holds back or fails the delivery it describes. The Writer
// bounds what is in flight, so a store that stops answering costs memory
// only up to that bound.
//
// It may import event and nats.go.
package history
