package stream

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// The embedded server's log lines of one kind: at most ServerLogBurst at
// once, then ServerLogRate a second; and of the lines about its clients,
// all kinds together, at most ClientLogBurst at once, then ClientLogRate
// a second. nats-server writes a line for every publish it denies, every
// failed login, every error a client sends it and every connection over a
// limit, with no bound of its own: a subscriber publishing where it may
// not, or anyone reaching the listener with a wrong password, wrote the
// relay's log as fast as it could send (5,000 denied publishes, 5,000
// error lines). The server's lines about itself (its store, JetStream)
// have limits of their own, which no client's lines take. Lines over the
// bound are counted, and the count is logged a second after the first of
// them.
const (
	ServerLogBurst = 20
	ServerLogRate  = 10
	ClientLogBurst = 40
	ClientLogRate  = 20
)

// serverLogKinds bounds the kinds the limiter tells apart, of the lines
// about clients and of the others; the kinds past it share one limit.
const serverLogKinds = 256

// serverLogger sends nats-server's log lines to zerolog within the
// bounds above (Fatalf's always).
type serverLogger struct {
	l  zerolog.Logger
	mu sync.Mutex
	// kinds are the server's lines' (0) and the lines' about a client (1).
	kinds   [2]map[string]*serverLogKind
	clients *rate.Limiter // every line about a client
	done    bool          // stopped: drops are logged at once
}

type serverLogKind struct {
	lim     *rate.Limiter
	dropped int
	report  *time.Timer // pending: logs the count of dropped lines
}

func newServerLogger(l zerolog.Logger) *serverLogger {
	return &serverLogger{l: l, kinds: [2]map[string]*serverLogKind{{}, {}}, clients: rate.NewLimiter(ClientLogRate, ClientLogBurst)}
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
	if !s.allow(serverLogKindOf(format, v)) {
		ev.Discard()
		return
	}
	ev.Msgf(format, v...)
}

// clientPrefix is what nats-server puts in the format of a line about a
// client, before the line's own: its address and connection id, and once
// it has logged in its version, language and name and its account and
// user, each quoted (all but the account chosen by the client):
// 127.0.0.1:50312 - cid:7 - "v1.55.0:go:name" - "ACCOUNT/user:u" - .
var clientPrefix = regexp.MustCompile(`^\S* - [a-z_]+:\d+(?: - "(?:[^"\\]|\\.)*"){0,2} - `)

// serverLogKindOf is the kind of the line nats-server logs with format and
// v, and whether the line is about a client. The kind is the format
// without the client and without digits, its first 64 bytes: what a
// client chose (a subject, a user name, an error's text) is in the
// arguments, not the format; the format is read, never the line, whose
// client name may hold verbs that move the arguments. A format that starts
// with an argument ("%v - %s") is taken rendered, its first 24 bytes.
func serverLogKindOf(format string, v []any) (kind string, client bool) {
	k, n := format, 64
	if loc := clientPrefix.FindStringIndex(format); loc != nil {
		k, client = format[loc[1]:], true
	}
	if strings.HasPrefix(k, "%") {
		k, n = fmt.Sprintf(k, v...), 24
		// A client's line nats-server rate-limits itself comes as
		// "%s - %s%s", the client first.
		if loc := clientPrefix.FindStringIndex(k); loc != nil {
			k, client = k[loc[1]:], true
		}
	}
	b := make([]byte, 0, n)
	for i := 0; i < len(k) && len(b) < n; i++ {
		if c := k[i]; c < '0' || c > '9' {
			b = append(b, c)
		}
	}
	return string(b), client
}

func (s *serverLogger) allow(key string, client bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	kinds := s.kinds[0]
	if client {
		kinds = s.kinds[1]
	}
	k := kinds[key]
	if k == nil {
		if len(kinds) >= serverLogKinds {
			key = "" // the kinds past the bound share one
		}
		if k = kinds[key]; k == nil {
			k = &serverLogKind{lim: rate.NewLimiter(ServerLogRate, ServerLogBurst)}
			kinds[key] = k
		}
	}
	if k.lim.Allow() && (!client || s.clients.Allow()) {
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
			Msgf("nats-server's log lines dropped: more than %d a second of one kind, or %d of all about clients", ServerLogRate, ClientLogRate)
	}
}

// stop logs the counts not yet logged and ends the timers.
func (s *serverLogger) stop() {
	s.mu.Lock()
	s.done = true
	pending := make(map[*serverLogKind]string)
	for _, kinds := range s.kinds {
		for key, k := range kinds {
			if k.report != nil && k.report.Stop() {
				pending[k] = key
			}
		}
	}
	s.mu.Unlock()
	for k, key := range pending {
		s.reportDropped(key, k)
	}
}
