package verify

import (
	"fmt"
	"net/netip"
	"strings"
)

// IPAllowlist is a set of networks that may call. The zero value (and a
// list built from no prefixes) allows every address.
type IPAllowlist struct {
	prefixes []netip.Prefix
}

// ParseIPAllowlist parses CIDRs ("203.0.113.0/24") and single addresses
// ("203.0.113.7", taken as /32 or /128). It reports every invalid entry.
func ParseIPAllowlist(entries []string) (IPAllowlist, error) {
	var l IPAllowlist
	var bad []string
	for _, e := range entries {
		p, err := ParsePrefix(e)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%q", e))
			continue
		}
		l.prefixes = append(l.prefixes, p)
	}
	if len(bad) > 0 {
		return IPAllowlist{}, fmt.Errorf("invalid CIDR or address: %s", strings.Join(bad, ", "))
	}
	return l, nil
}

// ParsePrefix parses a CIDR or a single address as a host prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			// Callers are unmapped (Allows): so is a prefix of IPv4-mapped
			// addresses, which would otherwise never match one.
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Empty reports whether the list allows every address.
func (l IPAllowlist) Empty() bool { return len(l.prefixes) == 0 }

// Allows reports whether ip (an address without port) is allowed. An
// unparsable address is never allowed by a non-empty list.
func (l IPAllowlist) Allows(ip string) bool {
	if l.Empty() {
		return true
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range l.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
