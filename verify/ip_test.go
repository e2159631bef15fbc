package verify

import (
	"strings"
	"testing"
)

func TestIPAllowlist(t *testing.T) {
	l, err := ParseIPAllowlist([]string{"203.0.113.0/24", "198.51.100.7", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ip string
		ok bool
	}{
		{"203.0.113.1", true},
		{"203.0.114.1", false},
		{"198.51.100.7", true},
		{"198.51.100.8", false},
		{"::ffff:203.0.113.9", true}, // IPv4-mapped
		{"2001:db8::1", true},
		{"2001:db9::1", false},
		{"not-an-ip", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := l.Allows(tt.ip); got != tt.ok {
			t.Errorf("Allows(%q) = %v, want %v", tt.ip, got, tt.ok)
		}
	}
	if !(IPAllowlist{}).Allows("192.0.2.1") {
		t.Error("empty allowlist must allow every address")
	}
}

func TestParseIPAllowlistReportsEveryBadEntry(t *testing.T) {
	_, err := ParseIPAllowlist([]string{"10.0.0.0/8", "300.1.1.1", "10.0.0.0/99"})
	if err == nil {
		t.Fatal("want error")
	}
	for _, s := range []string{`"300.1.1.1"`, `"10.0.0.0/99"`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
}

// A prefix written IPv4-mapped (::ffff:203.0.113.0/120) was kept as an
// IPv6 prefix, while callers are unmapped to IPv4 before the match: it
// never matched, and every SenGo callback got 403 (or a proxy named so was
// never trusted). It is unmapped as a single address is.
func TestAnIPv4MappedPrefixMatchesItsIPv4Callers(t *testing.T) {
	l, err := ParseIPAllowlist([]string{"::ffff:203.0.113.0/120"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"203.0.113.7", "::ffff:203.0.113.7"} {
		if !l.Allows(ip) {
			t.Errorf("%s is not allowed by ::ffff:203.0.113.0/120", ip)
		}
	}
	if l.Allows("203.0.114.7") {
		t.Error("203.0.114.7 is allowed by ::ffff:203.0.113.0/120")
	}
}

// And so does a single IPv4-mapped address: taken as a /128 of the IPv4
// address, it matched no caller, and SenGo's genuine callbacks from it
// were refused (403).
func TestAnIPv4MappedAddressMatchesItsIPv4Caller(t *testing.T) {
	l, err := ParseIPAllowlist([]string{"::ffff:203.0.113.7"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"203.0.113.7", "::ffff:203.0.113.7"} {
		if !l.Allows(ip) {
			t.Errorf("%s is not allowed by ::ffff:203.0.113.7", ip)
		}
	}
	if l.Allows("203.0.113.8") {
		t.Error("203.0.113.8 is allowed by ::ffff:203.0.113.7")
	}
}
