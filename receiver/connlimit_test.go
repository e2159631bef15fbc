package receiver

import (
	"bufio"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/internal/poll"
)

// Nothing bounded the callback listener's connections: a caller needing
// no token could hold tens of thousands open (a request a minute each
// renews the idle timeout), each with its buffers and goroutine, until
// the relay ran out of memory and stopped answering SenGo too. One address
// keeps at most PerAddress connections open; a proxy named trusted is not
// counted (every client of it shares its address).
func TestOneAddressCannotHoldEveryConnection(t *testing.T) {
	t.Parallel()
	serve := func(trusted []netip.Prefix) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })}
		go func() { _ = srv.Serve(LimitConns(ln, ConnLimits{PerAddress: 3, Exempt: trusted})) }()
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	addr := serve(nil)
	var conns []net.Conn
	for i := range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ok := oneRequestAnswered(c)
		if i < 3 && !ok {
			t.Fatalf("connection %d not answered", i+1)
		}
		if i == 3 && ok {
			t.Fatal("a fourth connection from one address was answered")
		}
		conns = append(conns, c)
	}
	conns[0].Close()
	poll.Until(t, "a connection in the room a closed one made", func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		return oneRequestAnswered(c)
	})
	// A trusted proxy's connections are not counted.
	addr = serve([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
	for i := range 5 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !oneRequestAnswered(c) {
			t.Fatalf("the trusted proxy's connection %d not answered", i+1)
		}
	}
}

// Bounded per address only, many addresses together held any number: a
// host with an IPv6 /48 (65,536 /64s) or a few IPv4 addresses took them
// all. A total bound takes the rest; exempt addresses (SenGo's
// allowed_ips, trusted proxies) count for neither and are never refused,
// and every refusal is counted.
func TestManyAddressesCannotHoldEveryConnection(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]int{}
	var mu sync.Mutex
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })}
	go func() {
		_ = srv.Serve(LimitConns(ln, ConnLimits{PerAddress: 2, Total: 4, Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")},
			Refused: func(reason string) { mu.Lock(); refused[reason]++; mu.Unlock() }}))
	}()
	t.Cleanup(func() { srv.Close() })
	dial := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for i, from := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		if !oneRequestAnswered(dial(from)) {
			t.Fatalf("connection %d (from %s) not answered", i+1, from)
		}
	}
	if oneRequestAnswered(dial("127.0.0.6")) {
		t.Fatal("a fifth connection, past the total of 4, was answered")
	}
	for i := range 3 {
		if !oneRequestAnswered(dial("127.0.0.9")) {
			t.Fatalf("the exempt address's connection %d was refused", i+1)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if refused["total"] != 1 {
		t.Fatalf("refusals counted %v, want one over the total", refused)
	}
}

// oneRequestAnswered sends one request on c and reports whether it was answered (204).
func oneRequestAnswered(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 204
}
