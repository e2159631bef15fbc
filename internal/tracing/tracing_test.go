package tracing

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

func TestEnabledByTheStandardVariables(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, false},
	} {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"} {
			t.Setenv(k, c.env[k])
		}
		if got := Enabled(); got != c.want {
			t.Errorf("%v: enabled %v, want %v", c.env, got, c.want)
		}
	}
}

// Describe never shows credentials in the endpoint.
func TestDescribeHidesCredentials(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:s3cret@collector.example:4318/?api_key=k3y")
	if d := Describe(); strings.Contains(d, "s3cret") || strings.Contains(d, "k3y") || !strings.Contains(d, "collector.example:4318") {
		t.Errorf("Describe() = %q", d)
	}
	// One that does not parse is not repeated either.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:s3%zzcret@collector.example:4318/")
	if d := Describe(); strings.Contains(d, "s3") || strings.Contains(d, "cret") {
		t.Errorf("Describe() = %q", d)
	}
	// Nor one whose credentials parse as something else: without a
	// scheme (the rest is opaque), with a '/' in them (their end and the
	// host become the path), with a '#' (the rest is a fragment). Each was
	// printed whole by check-config and the start-up log.
	for _, ep := range []string{"otel:s3cret@collector:4318", "https://tok/s3cret@collector:4318", "https://u:12#s3cret@collector:4318"} {
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", ep)
		if d := Describe(); strings.Contains(d, "s3cret") {
			t.Errorf("Describe() of %s = %q", ep, d)
		}
	}
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, spans reach the collector over
// OTLP/HTTP with the headers OTEL_EXPORTER_OTLP_HEADERS gives; an
// unsupported protocol is refused at start.
func TestSetupExportsOverOTLP(t *testing.T) {
	var posts atomic.Int64
	var auth atomic.Value
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" && len(b) > 0 {
			auth.Store(r.Header.Get("Authorization"))
			posts.Add(1)
		}
		w.WriteHeader(200)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer collector-token")
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	shutdown, err := Setup(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	_, span := Tracer().Start(context.Background(), "sengo.test")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if posts.Load() == 0 || auth.Load() != "Bearer collector-token" {
		t.Fatalf("collector got %d exports (Authorization %v)", posts.Load(), auth.Load())
	}
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	if _, err := Setup(context.Background(), "test"); err == nil {
		t.Error("grpc accepted")
	}
}

// A trace context survives a trip through NATS headers.
func TestNATSHeadersCarryTheTrace(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	h := nats.Header{}
	Inject(ctx, h)
	if !strings.HasPrefix(h.Get("Traceparent"), "00-01020300") {
		t.Fatalf("headers %v", h)
	}
	got := trace.SpanContextFromContext(Extract(context.Background(), h))
	if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() {
		t.Errorf("extracted %v, want %v", got, sc)
	}
}

// A caller's tracestate is carried on (into the inbox message, the event
// and each webhook) only up to the 512 characters W3C asks to be kept:
// whoever can post a callback chose up to 32 members of 256 characters,
// 16 KB that rode the event into every delivery of it (a consumer's
// proxy refuses headers that large: the event was retried for days).
func TestLongTraceStateIsNotCarried(t *testing.T) {
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	member := func(i int) string { return fmt.Sprintf("v%02d=%s", i, strings.Repeat("x", 250)) }
	for _, c := range []struct {
		state string
		kept  bool
	}{
		{"congo=t61rcWkgMzE", true},
		{member(1) + "," + member(2), true},
		{member(1) + "," + member(2) + "," + member(3), false},
	} {
		in := http.Header{"Traceparent": {parent}, "Tracestate": {c.state}}
		out := http.Header{}
		InjectHTTP(ExtractHTTP(context.Background(), in), out)
		if out.Get("traceparent") != parent {
			t.Errorf("tracestate of %d bytes: traceparent %q not carried", len(c.state), out.Get("traceparent"))
		}
		if got := out.Get("tracestate"); (got != "") != c.kept || len(got) > 512 {
			t.Errorf("tracestate of %d bytes: carried %d bytes; want it kept %v, never over 512", len(c.state), len(got), c.kept)
		}
		// An event's headers too: another publisher's event carried it
		// whole into every webhook of the event.
		out = http.Header{}
		InjectHTTP(Extract(context.Background(), nats.Header{"Traceparent": {parent}, "Tracestate": {c.state}}), out)
		if got := out.Get("tracestate"); out.Get("traceparent") != parent || (got != "") != c.kept || len(got) > 512 {
			t.Errorf("an event's tracestate of %d bytes: carried %d bytes; want it kept %v, never over 512", len(c.state), len(got), c.kept)
		}
	}
}

// OpenTelemetry's own logger printed what it could not parse to stderr,
// value and all: a header written with ":" instead of "="
// (OTEL_EXPORTER_OTLP_HEADERS="Authorization: Bearer …") put the
// collector's token in the relay's output. Its messages now go to the
// relay's log without their values.
func TestOpenTelemetryLogsNoHeaderValue(t *testing.T) {
	stderr, logged := runOpenTelemetry(t, http.StatusOK, map[string]string{
		"OTEL_EXPORTER_OTLP_HEADERS": "Authorization: Bearer s3cr3t-collector-token"})
	if strings.Contains(stderr, "s3cr3t") {
		t.Fatalf("stderr repeats the header's value:\n%s", stderr)
	}
	if !strings.Contains(logged, "parse headers") || strings.Contains(logged, "s3cr3t") {
		t.Fatalf("the relay's log: %s; want OpenTelemetry's message without the header's value", logged)
	}
}

// runOpenTelemetry sets tracing up against a collector answering status
// (the variables env added; OTEL_EXPORTER_OTLP_ENDPOINT is the collector
// unless OTEL_EXPORTER_OTLP_TRACES_ENDPOINT names a path of it), exports
// one span and shuts down. It returns what reached stderr and the relay's
// log meanwhile.
func runOpenTelemetry(t *testing.T, status int, env map[string]string) (stderr, logged string) {
	t.Helper()
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	for k, v := range env {
		t.Setenv(k, strings.ReplaceAll(v, "{collector}", collector.URL))
	}
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	read := captureStderr(t)
	var log bytes.Buffer
	SetLogger(zerolog.New(&log))
	defer SetLogger(zerolog.Nop())
	shutdown, err := Setup(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	_, span := Tracer().Start(context.Background(), "sengo.test")
	span.End()
	_ = shutdown(context.Background())
	return read(), log.String()
}

// captureStderr points file descriptor 2 at a file until the test ends
// and returns a func that reads what was written to it: OpenTelemetry's
// default logger holds os.Stderr's file, not the variable.
func captureStderr(t *testing.T) func() string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup2(int(f.Fd()), 2); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Dup2(saved, 2); _ = syscall.Close(saved); f.Close() })
	return func() string {
		b, _ := os.ReadFile(f.Name())
		return string(b)
	}
}

// An export that fails is handed to OpenTelemetry's error handler, whose
// default printed it to stderr with the collector's URL (its path may be
// a token). It goes to the relay's log, the URL as RedactURL shows it.
func TestOpenTelemetryExportErrorsGoToTheLog(t *testing.T) {
	stderr, logged := runOpenTelemetry(t, http.StatusUnauthorized, map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{collector}/ingest/s3cr3tPathToken0123456789"})
	if strings.Contains(stderr, "s3cr3t") || strings.Contains(stderr, "401") {
		t.Fatalf("stderr: %s", stderr)
	}
	if !strings.Contains(logged, "401") || strings.Contains(logged, "s3cr3t") {
		t.Fatalf("the relay's log: %s; want the failed export, its URL without the token", logged)
	}
}
