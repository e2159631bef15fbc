package stream

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
)

// nats.go reports a failed connect at every try of every connection, two
// a second each (a relay has six): a NATS down for an hour wrote tens of
// thousands of lines that said the same. Each reason is logged once
// (again a minute later), and nats.go's placeholder for a first connect
// that has not tried yet not at all.
func TestAConnectFailureIsLoggedOnce(t *testing.T) {
	var f failureLog
	refused := errors.New("dial tcp 127.0.0.1:4222: connect: connection refused")
	if !f.first(refused) {
		t.Fatal("the first failure not logged")
	}
	for range 10 {
		if f.first(errors.New(refused.Error())) {
			t.Fatal("the same reason logged again within a minute")
		}
	}
	if !f.first(nats.ErrAuthorization) {
		t.Fatal("another reason not logged")
	}
	if f.first(nats.ErrNoServers) || f.first(nil) {
		t.Fatal("nats.go's placeholder logged")
	}
}
