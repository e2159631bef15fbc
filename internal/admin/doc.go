// Package admin owns the operator API on its own listener (default
// 127.0.0.1:8081, off unless a bearer token is configured): endpoint
// status, the dead-letter queue (list, show, redrive, purge), quarantine,
// replay jobs, and the read side: transactions searched by merchantRef,
// id, status, product and time, one transaction's whole story (its
// notifications, status changes, events, every delivery attempt and dead
// letter, merged into steps), and events by cursor. openapi.yaml, served
// at /admin/openapi.yaml, describes every route; a test validates real
// responses against it. It calls dispatcher, receiver and history for the
// work and adds only HTTP.
//
// It may import dispatcher, receiver, history, stream, sengo, verify,
// event and Echo.
package admin
