package receiver

import (
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sengo-relay/sengo-relay/internal/tracing"
)

// traced opens the server span of a callback: the root of the trace that
// the inbox message, intake, the event and each delivery attempt continue
// (or the child of a traceparent a proxy in front sent). Its name is the
// route, never the path: the path may hold the callback token, and so may
// the project's segment (known names it unless configured).
func traced(known projectNames) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			ctx := tracing.ExtractHTTP(req.Context(), req.Header)
			ctx, span := tracing.Tracer().Start(ctx, "POST /callbacks/sengo/{project}", trace.WithSpanKind(trace.SpanKindServer))
			defer span.End()
			c.SetRequest(req.WithContext(ctx))
			err := next(c)
			if !span.IsRecording() { // tracing off: no attribute is built
				return err
			}
			status := c.Response().Status
			if err != nil {
				status, _ = classify(err)
			}
			span.SetAttributes(attribute.String("http.request.method", loggedMethod(req.Method)), attribute.String("http.route", "/callbacks/sengo/{project}"),
				attribute.String("sengo.project", known.label(c.Param("project"))), attribute.Int("http.response.status_code", status),
				attribute.String("sengo.request_id", c.Response().Header().Get(echo.HeaderXRequestID)))
			if status >= 500 {
				tracing.Fail(span, err)
			}
			return err
		}
	}
}
