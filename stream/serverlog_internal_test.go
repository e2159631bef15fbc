package stream

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
)

// The kinds told apart are bounded: lines of ever new beginnings (an
// error's text in the format) share one limit past serverLogKinds, and
// what is dropped when the server stops is still counted.
func TestServerLogKindsAreBounded(t *testing.T) {
	var logs syncbuf.Buffer
	s := newServerLogger(zerolog.New(&logs))
	const n = 20 * serverLogKinds
	for i := range n {
		s.Errorf("%s", fmt.Sprintf("%c%c%c failed", 'a'+i%26, 'a'+i/26%26, 'a'+i/676%26))
	}
	if len(s.kinds) > serverLogKinds+1 {
		t.Errorf("%d kinds kept", len(s.kinds))
	}
	s.stop()
	written := strings.Count(logs.String(), " failed")
	var dropped int
	for _, l := range strings.Split(logs.String(), "\n") {
		var d int
		if i := strings.Index(l, `"dropped":`); i >= 0 {
			fmt.Sscanf(l[i+len(`"dropped":`):], "%d", &d)
		}
		dropped += d
	}
	if written > (serverLogKinds+1)*ServerLogBurst || written+dropped != n {
		t.Errorf("%d lines written, %d counted as dropped, of %d", written, dropped, n)
	}
}

// A client's address, id, version, language, name, account and user are
// not part of a line's kind: each client would be a kind of its own.
func TestServerLogKindOf(t *testing.T) {
	for _, line := range []string{
		`127.0.0.1:36974 - cid:8 - Publish Violation - Subject "a"`,
		`[::1]:1 - cid:12345 - "v1.55.0:go:my \"name\"" - "SENGO_SUBSCRIBERS/user:subscriber" - Publish Violation - Subject "b"`,
		`10.0.0.1/127.0.0.1:9 - wid:3 - "v2" - Publish Violation - Subject "c"`,
	} {
		if k := serverLogKindOf(line); k != "Publish Violation - Subj" {
			t.Errorf("%s: kind %q", line, k)
		}
	}
}
