// Command sengo-relay receives SenGo payment callbacks, stores each status
// change once in NATS JetStream and (in later releases) delivers it to
// merchant endpoints.
//
//	sengo-relay [serve] [--config PATH]   run the relay (default)
//	sengo-relay check-config [--config PATH]
//	sengo-relay version
//
// This package owns configuration loading, wiring, subcommands, signals and
// the shutdown order. main only calls run, which tests drive end to end.
package main
