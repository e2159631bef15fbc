package receiver

import (
	"net"
	"net/netip"
	"slices"
	"sync"
)

// LimitPerAddress returns ln keeping at most perAddress connections open
// at once from one address (an IPv6 address by its /64, which one host
// holds whole); one over it is closed as soon as it is accepted. A peer in
// trusted (a proxy every client shares) is not counted. perAddress 0: no
// limit.
//
// The callback listener needs no credentials to connect: without a bound,
// one caller could hold tens of thousands of connections open (a request
// a minute each renews the idle timeout), each with its buffers and
// goroutine, until the relay ran out of memory and stopped answering
// SenGo too.
func LimitPerAddress(ln net.Listener, perAddress int, trusted []netip.Prefix) net.Listener {
	if perAddress <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, max: perAddress, trusted: trusted, open: map[netip.Addr]int{}}
}

type limitListener struct {
	net.Listener
	max     int
	trusted []netip.Prefix

	mu   sync.Mutex
	open map[netip.Addr]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil {
			return c, nil // not TCP/IP: nothing to count by
		}
		addr := ap.Addr().Unmap()
		if slices.ContainsFunc(l.trusted, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			return c, nil
		}
		if addr.Is6() {
			addr = netip.PrefixFrom(addr, 64).Masked().Addr()
		}
		l.mu.Lock()
		if l.open[addr] >= l.max {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.open[addr]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, release: func() { l.release(addr) }}, nil
	}
}

func (l *limitListener) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[addr]--; l.open[addr] <= 0 {
		delete(l.open, addr)
	}
}

// limitedConn gives its place back once, when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
