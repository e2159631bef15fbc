package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/sengo-relay/sengo-relay/verify"
)

// Name is the instrumentation scope of the relay's spans.
const Name = "github.com/sengo-relay/sengo-relay"

// Tracer is the relay's tracer (a no-op until Setup installs the SDK).
func Tracer() trace.Tracer { return otel.Tracer(Name) }

// propagator is W3C trace context, whatever Setup decides: a traceparent
// that arrives is passed on even with tracing off. Not baggage: whoever
// can post a callback would put key=values of their choosing on every
// event and webhook, as if they were the relay's.
var propagator = propagation.TraceContext{}

func init() { otel.SetTextMapPropagator(propagator) }

// Enabled reports whether the OTEL_* variables ask for traces: an OTLP
// endpoint, or OTEL_TRACES_EXPORTER=otlp; OTEL_SDK_DISABLED=true and
// OTEL_TRACES_EXPORTER=none turn it off.
func Enabled() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER")) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Describe says where traces go, for check-config and the start line:
// the endpoint without credentials, query or headers.
func Describe() string {
	if !Enabled() {
		return "off (set OTEL_EXPORTER_OTLP_ENDPOINT to send traces)"
	}
	ep := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if ep == "" {
		ep = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if ep == "" {
		ep = "http://localhost:4318"
	}
	// Not repeated unless it parses as scheme://host/path: credentials
	// in it can parse as something else (without a scheme the rest is
	// opaque; a '/' in them makes their end and the host the path; a '#'
	// makes the rest a fragment).
	u, err := url.Parse(ep)
	if err != nil || u.Opaque != "" || u.Host == "" || strings.Contains(ep, "#") || verify.CredentialsInPath(u) {
		return "OTLP/HTTP to an endpoint not shown: it does not parse as scheme://host/path and may hold credentials"
	}
	u.User, u.RawQuery = nil, ""
	return "OTLP/HTTP to " + u.String()
}

// ErrProtocol: the OTLP protocol asked for is not the one built in.
var ErrProtocol = errors.New("OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is built in")

// Setup installs the SDK when Enabled, with the exporter, resource and
// sampler the OTEL_* variables configure (OTEL_SERVICE_NAME defaults to
// sengo-relay). The returned func flushes and stops it; it is a no-op
// when tracing is off.
func Setup(ctx context.Context, version string) (func(context.Context) error, error) {
	if !Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	otel.SetLogger(logr.New(quietSink{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(handleError)) // its default prints an export's failure, URL and all, to stderr
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(k); p != "" && p != "http/protobuf" {
			return nil, fmt.Errorf("%w (%s=%s)", ErrProtocol, k, p)
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.version", version)}
	if os.Getenv("OTEL_SERVICE_NAME") == "" {
		attrs = append(attrs, attribute.String("service.name", "sengo-relay"))
	}
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil {
		return nil, fmt.Errorf("otel resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Inject writes ctx's trace context into NATS message headers.
func Inject(ctx context.Context, h nats.Header) {
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// Extract reads the trace context of NATS message headers into ctx, as
// ExtractHTTP does: an event from another publisher may carry any
// tracestate, which each webhook of it would carry on.
func Extract(ctx context.Context, h nats.Header) context.Context {
	return ExtractHTTP(ctx, http.Header(h))
}

// InjectHTTP writes ctx's trace context into an outgoing request's
// headers (traceparent, and tracestate when there is one).
func InjectHTTP(ctx context.Context, h http.Header) {
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// maxTraceState is the longest tracestate of a request that is carried
// on, the 512 characters W3C asks to be kept. A longer one is dropped
// (traceparent is kept): whoever can post a callback chooses it, and up to
// 32 members of 256 characters rode the event into every webhook of it.
const maxTraceState = 512

// ExtractHTTP reads an incoming request's trace context into ctx; a
// tracestate over maxTraceState is left out.
func ExtractHTTP(ctx context.Context, h http.Header) context.Context {
	n := 0
	for _, v := range h.Values("tracestate") {
		n += len(v) + 1
	}
	if n-1 > maxTraceState {
		h = h.Clone()
		h.Del("tracestate")
	}
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// Fail marks span failed with err's text (errors carry no secrets: the
// relay's own are written for logs).
func Fail(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}
