package stream

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
)

// The kinds told apart are bounded: lines of ever new beginnings (an
// error's text as the format) share one limit past serverLogKinds, and
// what is dropped when the server stops is still counted. However many
// kinds of lines about clients there are, the server's own lines (its
// store's errors) still pass.
func TestServerLogKindsAreBounded(t *testing.T) {
	var logs syncbuf.Buffer
	s := newServerLogger(zerolog.New(&logs))
	const n = 20 * serverLogKinds
	start := time.Now()
	for i := range n {
		s.Errorf(fmt.Sprintf("127.0.0.1:1 - cid:%d - %c%c%c failed", i, 'a'+i%26, 'a'+i/26%26, 'a'+i/676%26))
	}
	if n := strings.Count(logs.String(), "cid:"); n > ClientLogBurst+ClientLogRate*int(time.Since(start)/time.Second+1) {
		t.Errorf("%d lines about clients written", n)
	}
	s.Errorf("Filestore [%s] Critical write error: %v", "SENGO_EVENTS", "no space left on device")
	if !strings.Contains(logs.String(), "Critical write error") {
		t.Error("the store's error was dropped among the clients' lines")
	}
	for i := range n {
		s.Errorf(fmt.Sprintf("%c%c%c failed", 'a'+i%26, 'a'+i/26%26, 'a'+i/676%26))
	}
	if len(s.kinds[0]) > serverLogKinds+1 || len(s.kinds[1]) > serverLogKinds+1 {
		t.Errorf("%d and %d kinds kept", len(s.kinds[0]), len(s.kinds[1]))
	}
	s.stop()
	var written, dropped int
	for _, l := range strings.Split(logs.String(), "\n") {
		if i := strings.Index(l, `"dropped":`); i >= 0 {
			var d int
			fmt.Sscanf(l[i+len(`"dropped":`):], "%d", &d)
			dropped += d
		} else if strings.Contains(l, ` failed"`) {
			written++
		}
	}
	if written > (serverLogKinds+1)*ServerLogBurst+ClientLogBurst || written+dropped != 2*n {
		t.Errorf("%d lines written, %d counted as dropped, of %d", written, dropped, 2*n)
	}
}

// A line's kind is its format's, without the client it is about: its
// address, id, version, language, name, account and user would make each
// client a kind of its own, and so would what it chose in the arguments
// (a subject), even with a name holding verbs (%s), which moves the
// arguments in the line.
func TestServerLogKindOf(t *testing.T) {
	for _, c := range []struct {
		format string
		v      []any
		kind   string
		client bool
	}{
		{`127.0.0.1:36974 - cid:8 - Publish Violation - Subject %q`, []any{"a"}, "Publish Violation - Subject %q", true},
		{`[::1]:1 - cid:12345 - "v1.55.0:go:my \"%s\"" - "SENGO_SUBSCRIBERS/user:subscriber" - Publish Violation - Subject %q`, []any{`ab"xyz`}, "Publish Violation - Subject %q", true},
		{`10.0.0.1/127.0.0.1:9 - wid:3 - "v2" - Client Error %s`, []any{"anything"}, "Client Error %s", true},
		{`127.0.0.1:2 - cid:9 - %v - %s`, []any{"authentication error", `User "x0"`}, `authentication error - U`, true},
		{`%s - %s%s`, []any{`127.0.0.1:3 - cid:4 - "v1.55.0:go:XX"`, "Producer was stalled", ""}, "Producer was stalled", true},
		{`Filestore [SENGO_EVENTS] Critical write error: %v`, []any{"disk"}, "Filestore [SENGO_EVENTS] Critical write error: %v", false},
	} {
		if k, client := serverLogKindOf(c.format, c.v); k != c.kind || client != c.client {
			t.Errorf("%s: kind %q, about a client %v", c.format, k, client)
		}
	}
}
