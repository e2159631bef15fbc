package stream

import (
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// The embedded server's log lines of one kind: at most ServerLogBurst at
// once, then ServerLogRate a second. nats-server writes a line for every
// publish it denies, every failed login and every connection over a
// limit, with no bound of its own: a subscriber publishing where it may
// not, or anyone reaching the listener with a wrong password, wrote the
// relay's log as fast as it could send (5,000 denied publishes, 5,000
// error lines). Lines over the bound are counted, and the count is logged
// a second after the first of them.
const (
	ServerLogBurst = 20
	ServerLogRate  = 10
)

// serverLogKinds bounds the kinds the limiter tells apart; the kinds past
// it share one limit.
const serverLogKinds = 256

// serverLogger sends nats-server's log lines to zerolog, ServerLogRate
// of one kind a second (Fatalf's always).
type serverLogger struct {
	l     zerolog.Logger
	mu    sync.Mutex
	kinds map[string]*serverLogKind
	done  bool // stopped: drops are logged at once
}

type serverLogKind struct {
	lim     *rate.Limiter
	dropped int
	report  *time.Timer // pending: logs the count of dropped lines
}

func newServerLogger(l zerolog.Logger) *serverLogger {
	return &serverLogger{l: l, kinds: make(map[string]*serverLogKind)}
}

func (s *serverLogger) Noticef(format string, v ...any) { s.logf(s.l.Debug(), format, v) }
func (s *serverLogger) Warnf(format string, v ...any)   { s.logf(s.l.Warn(), format, v) }
func (s *serverLogger) Fatalf(format string, v ...any)  { s.l.Error().Msgf(format, v...) }
func (s *serverLogger) Errorf(format string, v ...any)  { s.logf(s.l.Error(), format, v) }
func (s *serverLogger) Debugf(format string, v ...any)  { s.logf(s.l.Debug(), format, v) }
func (s *serverLogger) Tracef(format string, v ...any)  { s.logf(s.l.Trace(), format, v) }

func (s *serverLogger) logf(ev *zerolog.Event, format string, v []any) {
	if ev == nil { // the level is off
		return
	}
	msg := fmt.Sprintf(format, v...)
	if !s.allow(serverLogKindOf(msg)) {
		ev.Discard()
		return
	}
	ev.Msg(msg)
}

// clientPrefix is what nats-server puts before a client's lines: its
// address and connection id, and once it has logged in its version,
// language and name and its account and user, each quoted (all but the
// account chosen by the client):
// 127.0.0.1:50312 - cid:7 - "v1.55.0:go:name" - "ACCOUNT/user:u" - .
var clientPrefix = regexp.MustCompile(`^\S* - [a-z_]+:\d+(?: - "(?:[^"\\]|\\.)*"){0,2} - `)

// serverLogKindOf is a line's kind: its first 24 bytes without the client
// it is about and without digits. What a client chose (a subject, a user
// name) comes later in nats-server's lines, and some formats are all
// arguments ("%v - %s").
func serverLogKindOf(msg string) string {
	k := clientPrefix.ReplaceAllString(msg, "")
	b := make([]byte, 0, 24)
	for i := 0; i < len(k) && len(b) < cap(b); i++ {
		if c := k[i]; c < '0' || c > '9' {
			b = append(b, c)
		}
	}
	return string(b)
}

func (s *serverLogger) allow(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.kinds[key]
	if k == nil {
		if len(s.kinds) >= serverLogKinds {
			key = "" // the kinds past the bound share one
		}
		if k = s.kinds[key]; k == nil {
			k = &serverLogKind{lim: rate.NewLimiter(ServerLogRate, ServerLogBurst)}
			s.kinds[key] = k
		}
	}
	if k.lim.Allow() {
		return true
	}
	k.dropped++
	if k.report == nil && !s.done {
		k.report = time.AfterFunc(time.Second, func() { s.reportDropped(key, k) })
	}
	return false
}

// reportDropped logs how many lines of k's kind were dropped.
func (s *serverLogger) reportDropped(key string, k *serverLogKind) {
	s.mu.Lock()
	n := k.dropped
	k.dropped, k.report = 0, nil
	s.mu.Unlock()
	if n > 0 {
		s.l.Warn().Str("kind", key).Int("dropped", n).
			Msgf("nats-server's log lines dropped: more than %d a second of one kind", ServerLogRate)
	}
}

// stop logs the counts not yet logged and ends the timers.
func (s *serverLogger) stop() {
	s.mu.Lock()
	s.done = true
	pending := make(map[string]*serverLogKind)
	for key, k := range s.kinds {
		if k.report != nil && k.report.Stop() {
			pending[key] = k
		}
	}
	s.mu.Unlock()
	for key, k := range pending {
		s.reportDropped(key, k)
	}
}
