package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/internal/config"
)

// Durations in the production logger are Go duration strings, never a
// bare number without a unit.
func TestLoggerWritesDurationsWithUnits(t *testing.T) {
	var b bytes.Buffer
	l := newLogger(config.Log{Level: "info", Format: "json"}, &b)
	l.Info().Dur("delay", 1500*time.Millisecond).Msg("x")
	if !strings.Contains(b.String(), `"delay":"1.5s"`) {
		t.Fatalf("got %s", b.String())
	}
}
