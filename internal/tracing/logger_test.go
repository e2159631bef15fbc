package tracing

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// OpenTelemetry's own errors reach the log without the URL a url.Error
// repeats (an OTLP endpoint with credentials in it that it could not
// parse), other URLs as RedactURL shows them, and cut to 300 bytes of
// valid UTF-8 whatever they hold.
func TestOpenTelemetrysErrorsAreLoggedWithoutSecrets(t *testing.T) {
	var logs bytes.Buffer
	SetLogger(zerolog.New(&logs))
	t.Cleanup(func() { SetLogger(zerolog.Nop()) })
	quietSink{}.Error(&url.Error{Op: "parse", URL: "https://user:s3cr%zzet@collector.example:4318/v1/traces", Err: errors.New("invalid URL escape")}, "parse url")
	handleError(errors.New("export to https://collector.example/v1/traces?token=s3cr-query-token failed"))
	quietSink{}.Error(errors.New(strings.Repeat("x", 10000)+"\xff"), "long")
	s := logs.String()
	if !strings.Contains(s, "parse url") || strings.Contains(s, "s3cr") {
		t.Errorf("the log:\n%s", s)
	}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if len(line) > 500 {
			t.Errorf("a line of %d bytes", len(line))
		}
	}
}
