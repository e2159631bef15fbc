package main

import (
	"io"
	stdlog "log"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/config"
)

func newLogger(cfg config.Log, w io.Writer) zerolog.Logger {
	if cfg.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	lvl, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		lvl = zerolog.InfoLevel // validated already
	}
	logFormats.Do(func() { // process-wide: set once, not under a running relay's log lines
		zerolog.TimeFieldFormat = time.RFC3339Nano
		zerolog.DurationFieldFormat = zerolog.DurationFormatString // "1.5s", never a bare number
	})
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

var logFormats sync.Once

// newStdLogger adapts zerolog for net/http's ErrorLog (TLS handshake and
// connection errors).
func newStdLogger(l zerolog.Logger) *stdlog.Logger {
	return stdlog.New(lineWriter{l}, "", 0)
}

type lineWriter struct{ l zerolog.Logger }

// maxStdLine bounds a line of net/http's as logged: it may quote what a
// client sent (the protocols a TLS handshake offered, up to 64 KiB).
const maxStdLine = 1024

func (w lineWriter) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	if len(s) > maxStdLine {
		s = s[:maxStdLine] + "…"
	}
	w.l.Warn().Msg(strings.ToValidUTF8(s, "?"))
	return len(p), nil
}
