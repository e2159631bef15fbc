// Package admin owns the operator API on its own listener (default
// 127.0.0.1:8081, off unless a bearer token is configured): endpoint
// status, the dead-letter queue (list, show, redrive, purge) and replay
// jobs. It calls dispatcher for the work and adds only HTTP.
//
// It may import dispatcher, verify, event and Echo.
package admin
