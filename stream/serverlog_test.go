package stream_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
	"github.com/sengo-relay/sengo-relay/stream"
)

// nats-server logs a line for each publish it denies and each failed
// login, without a bound of its own: a subscriber publishing where it may
// not wrote 5,000 error lines into the relay's log for 5,000 publishes,
// as fast as it sent them, and anyone reaching the listener could do the
// same with wrong passwords. Now at most stream.ServerLogBurst lines of a
// kind pass at once and stream.ServerLogRate a second, whichever client
// they are about (and stream.ClientLogRate of all about clients), and the
// rest are counted in a line of their own.
func TestTheServersLogLinesAreBounded(t *testing.T) {
	var logs syncbuf.Buffer
	e, _ := startWithSubscriberLogging(t, subscriberAuth(), zerolog.New(&logs))
	start := time.Now()
	const denied, logins = 5000, 40
	var conns []*nats.Conn
	for range 4 { // each connection is a client of its own in nats-server's lines
		sub, err := nats.Connect(e.ClientURL(), nats.UserInfo("subscriber", subPW), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		conns = append(conns, sub)
	}
	// A client whose name is a verb: in nats-server's format, it takes the
	// line's argument (the subject) into the client's part of the line.
	named, err := nats.Connect(e.ClientURL(), nats.UserInfo("subscriber", subPW), nats.Name("%s"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer named.Close()
	conns = append(conns, named)
	for i := range denied {
		subj := "sengo.events.forged"
		if i%len(conns) == len(conns)-1 {
			subj = fmt.Sprintf(`ab"x%d`, i)
		}
		if err := conns[i%len(conns)].Publish(subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		if err := c.Flush(); err != nil { // the server has read (and logged) every publish before
			t.Fatal(err)
		}
	}
	for range logins {
		if nc, err := nats.Connect(e.ClientURL(), nats.UserInfo("subscriber", "not-the-password-0123456789abcdef0123456789"), nats.NoReconnect()); err == nil {
			nc.Close()
			t.Fatal("a wrong password was let in")
		}
	}
	elapsed := time.Since(start).Seconds()
	most := stream.ServerLogBurst + int(stream.ServerLogRate*elapsed) + 1
	count := func(what string) (written, dropped int) {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l struct {
				Message string
				Kind    string
				Dropped int
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%v: %s", err, sc.Bytes())
			}
			if strings.Contains(l.Message, what) && l.Kind == "" {
				written++
			}
			if strings.Contains(l.Kind, what) {
				dropped += l.Dropped
			}
		}
		return written, dropped
	}
	if all, _ := count(" - cid:"); all > stream.ClientLogBurst+int(stream.ClientLogRate*elapsed)+1 {
		t.Errorf("%d lines about clients", all)
	}
	for what, sent := range map[string]int{"Publish Violation": denied, "authentication error": logins} {
		if written, _ := count(what); written == 0 || written > most {
			t.Errorf("%d lines %q for %d, want 1 to %d", written, what, sent, most)
		}
		poll.Within(t, 10*time.Second, "the dropped lines counted", func() bool {
			written, dropped := count(what)
			return written+dropped == sent
		})
	}
}
