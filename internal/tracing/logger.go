package tracing

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/verify"
)

// logTo is where OpenTelemetry's own messages go (SetLogger; nowhere
// before).
var logTo atomic.Pointer[zerolog.Logger]

// SetLogger sends OpenTelemetry's own messages (an exporter that cannot
// reach its collector, a variable it cannot parse) to l, as warnings.
func SetLogger(l zerolog.Logger) { logTo.Store(&l) }

// quietSink is OpenTelemetry's logger: each message with its error, never
// its key/values. Its default logger printed those to stderr, and they
// repeat what it could not parse: OTEL_EXPORTER_OTLP_HEADERS written with
// ":" for "=" ("Authorization: Bearer …") printed the collector's token.
// (An adapter such as zerologr would pass them on; dropping them is the
// point.)
type quietSink struct{}

func (quietSink) Init(logr.RuntimeInfo) {}

// Enabled: OpenTelemetry's debug chatter (levels above 0) is left out.
func (quietSink) Enabled(level int) bool { return level == 0 }

func (quietSink) Info(_ int, msg string, _ ...any) {
	if l := logTo.Load(); l != nil {
		l.Info().Str("component", "opentelemetry").Msg(bounded(msg))
	}
}

func (quietSink) Error(err error, msg string, _ ...any) {
	if l := logTo.Load(); l != nil {
		l.Warn().Str("component", "opentelemetry").Str("error", errText(err)).Msg(bounded(msg))
	}
}

func (s quietSink) WithValues(...any) logr.LogSink { return s }
func (s quietSink) WithName(string) logr.LogSink   { return s }

// handleError logs an error OpenTelemetry hands over (an export that
// failed) as a warning.
func handleError(err error) {
	if l := logTo.Load(); l != nil {
		l.Warn().Str("component", "opentelemetry").Str("error", errText(err)).Msg("opentelemetry error")
	}
}

var urlInText = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"']+`)

// errText is err's text as the log shows it: without the URL a url.Error
// repeats, any other URL in it as verify.RedactURL shows it (either may
// hold credentials or a token), bounded.
func errText(err error) string {
	if err == nil {
		return ""
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return bounded(ue.Op + ": " + errText(ue.Err))
	}
	return bounded(urlInText.ReplaceAllStringFunc(err.Error(), verify.RedactURL))
}

// bounded cuts s to 300 bytes, valid UTF-8.
func bounded(s string) string {
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
