// Command sengo-relay receives SenGo payment callbacks, confirms them with
// SenGo's API, stores each status change once in NATS JetStream, and
// delivers it to merchant endpoints as signed webhooks.
//
//	sengo-relay [serve] [--config PATH]   run the relay (default)
//	sengo-relay check-config [--config PATH]
//	sengo-relay reconcile | dlq | replay | sandbox | bench | healthcheck | version
//
// This package owns configuration wiring, subcommands, signals and the
// shutdown order. main only calls run, which tests drive end to end.
package main
