package stream

import (
	"net"
	"os"
	"syscall"
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
	refused := func(port int) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 11), Port: port}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	if !f.first(refused(4222)) {
		t.Fatal("the first failure not logged")
	}
	// The same from every server of a cluster's list (told apart only by
	// their addresses), and by every connection.
	for i := range 10 {
		if f.first(refused(4223 + i%3)) {
			t.Fatal("the same reason logged again within a minute")
		}
	}
	// A name a cluster's list gives that does not resolve: the dial's
	// error names the host and the resolver.
	unresolved := func(host string) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: host, Server: "10.0.0.2:53", IsNotFound: true}}
	}
	if !f.first(unresolved("nats-0.nats")) {
		t.Fatal("the lookup failure not logged")
	}
	if f.first(unresolved("nats-1.nats")) || f.first(unresolved("nats-2.nats")) {
		t.Fatal("the same lookup failure logged again for each server")
	}
	if !f.first(nats.ErrAuthorization) {
		t.Fatal("another reason not logged")
	}
	if f.first(nats.ErrNoServers) || f.first(nil) {
		t.Fatal("nats.go's placeholder logged")
	}
}
