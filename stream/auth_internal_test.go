package stream

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// fakeClient is a connecting client as nats-server hands it to Check.
type fakeClient struct{ opts server.ClientOpts }

func (c *fakeClient) GetOpts() *server.ClientOpts                 { return &c.opts }
func (c *fakeClient) GetTLSConnectionState() *tls.ConnectionState { return nil }
func (c *fakeClient) RegisterUser(*server.User)                   {}
func (c *fakeClient) RemoteAddress() net.Addr                     { return &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7)} }
func (c *fakeClient) GetNonce() []byte                            { return nil }
func (c *fakeClient) Kind() int                                   { return server.CLIENT }
func (c *fakeClient) GetID() uint64                               { return 1 }

// Beyond loopback the subscriber's password is one a person chose, checked
// at bcrypt's default cost (about 90 ms of CPU), on every connect: anyone
// who reached the listener could connect with wrong passwords from as many
// connections as they liked and keep both cores busy, the relay's callbacks
// and deliveries with them. Such checks run one at a time (a connect that
// cannot have its turn within a second is refused unchecked); the relay's
// own, at the lowest cost, never wait for them.
func TestPasswordChecksAtTheDefaultCostRunOneAtATime(t *testing.T) {
	var inFlight, most atomic.Int32
	saved := compareHash
	compareHash = func(hash, pw []byte) error {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond) // the cost of the check
		inFlight.Add(-1)
		return saved(hash, pw)
	}
	t.Cleanup(func() { compareHash = saved })
	a := newAuthenticator(&EmbeddedAuth{RelayUser: "sengo-relay", RelayPassword: "relay-pw-0123456789abcdef0123456789abcdef012",
		SubscriberUser: "subscriber", SubscriberPassword: "chosen-pw-0123"}, zerolog.Nop())
	a.sub.Store(&server.User{Username: "subscriber"})
	a.relay.Store(&server.User{Username: "sengo-relay"})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if a.Check(&fakeClient{opts: server.ClientOpts{Username: "subscriber", Password: "wrong"}}) {
				t.Error("a wrong password was let in")
			}
		})
	}
	wg.Wait()
	if n := most.Load(); n > 1 {
		t.Fatalf("%d checks at bcrypt's default cost ran at once, want one at a time", n)
	}
	most.Store(0)
	if !a.Check(&fakeClient{opts: server.ClientOpts{Username: "sengo-relay", Password: "relay-pw-0123456789abcdef0123456789abcdef012"}}) {
		t.Fatal("the relay's own password refused")
	}
}
