// Package tracing owns OpenTelemetry for the relay: Setup installs the
// official SDK with its OTLP/HTTP exporter when the standard OTEL_*
// variables ask for one (off by default), and the helpers carry a trace
// through NATS headers, so one trace runs from the callback request
// through intake, confirmation and each delivery attempt, and reaches the
// consumer as a W3C traceparent header.
//
// Spans carry ids and outcomes only (project, transaction and event ids,
// endpoint names, HTTP statuses), never a token, secret, API key or URL
// with credentials.
//
// OpenTelemetry's own messages and errors go to the relay's log
// (SetLogger) without the values it attaches (they repeat what it could
// not parse, a header's token included) and with URLs redacted.
//
// It may import the OpenTelemetry API and SDK, logr, zerolog, nats.go and
// verify (to redact URLs).
package tracing
