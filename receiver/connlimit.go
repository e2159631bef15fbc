package receiver

import (
	"net"
	"net/netip"
	"slices"
	"sync"
)

// ConnLimits bound the connections LimitConns lets a listener keep open.
type ConnLimits struct {
	// PerAddress: at most this many from one address (an IPv6 address by
	// its /64, which one host holds whole). 0: no bound.
	PerAddress int
	// Total: at most this many from every address together. 0: no bound.
	Total int
	// Exempt are counted for neither and never refused: SenGo's addresses
	// (allowed_ips), and the proxies every client of which shares their
	// address (trusted_proxies).
	Exempt []netip.Prefix
	// Shared are counted for Total but not refused by PerAddress: every
	// operator of this machine shares its loopback address.
	Shared []netip.Prefix
	// Refused, if set, is called for each connection closed unanswered,
	// with why: "per_address" or "total".
	Refused func(reason string)
}

// LimitConns returns ln closing each connection past lim as soon as it is
// accepted, unanswered.
//
// The callback listener needs no credentials to connect: without a bound,
// one caller could hold tens of thousands of connections open (a request
// a minute each renews the idle timeout), each with its buffers and
// goroutine, until the relay ran out of memory and stopped answering
// SenGo too; and many addresses together (an IPv6 /48 holds 65,536 /64s)
// could as well, hence the total.
func LimitConns(ln net.Listener, lim ConnLimits) net.Listener {
	if lim.PerAddress <= 0 && lim.Total <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, lim: lim, open: map[netip.Addr]int{}}
}

type limitListener struct {
	net.Listener
	lim ConnLimits

	mu    sync.Mutex
	open  map[netip.Addr]int
	total int
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
		if slices.ContainsFunc(l.lim.Exempt, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			return c, nil
		}
		if addr.Is6() {
			addr = netip.PrefixFrom(addr, 64).Masked().Addr()
		}
		shared := slices.ContainsFunc(l.lim.Shared, func(p netip.Prefix) bool { return p.Contains(addr) })
		if reason := l.take(addr, shared); reason != "" {
			_ = c.Close()
			if l.lim.Refused != nil {
				l.lim.Refused(reason)
			}
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.release(addr) }}, nil
	}
}

// take counts a connection from addr, or says why it may not be opened.
func (l *limitListener) take(addr netip.Addr, shared bool) (refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case !shared && l.lim.PerAddress > 0 && l.open[addr] >= l.lim.PerAddress:
		return "per_address"
	case l.lim.Total > 0 && l.total >= l.lim.Total:
		return "total"
	}
	l.open[addr]++
	l.total++
	return ""
}

func (l *limitListener) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
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
