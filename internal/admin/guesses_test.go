package admin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
)

// clock is a time the test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// frozen stops the clock of s's guess pacing, for the test to move.
func frozen(s *Server) *clock {
	c := &clock{t: time.Date(2025, 8, 17, 9, 0, 0, 0, time.UTC)}
	s.guesses.now = c.now
	return c
}

// from is s's answer to req as if it came from addr, the peer address the
// admin listener sees.
func from(s *Server, addr string, req *http.Request) *httptest.ResponseRecorder {
	req.RemoteAddr = net.JoinHostPort(addr, "40000")
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	return w
}

// apiTry sends tok from addr as the API's bearer token.
func apiTry(s *Server, addr, tok string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/admin/endpoints", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	return from(s, addr, req)
}

// loginTry posts tok from addr to the console's sign-in.
func loginTry(s *Server, addr, tok string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return from(s, addr, req)
}

// many is the i-th of many IPv4 addresses, none of them 192.0.2.0/24,
// 198.51.100.0/24 or 203.0.113.0/24, which the tests use by name.
func many(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

func wrong(i int) string { return fmt.Sprintf("guess-%06d-0123456789abcdef", i) }

// refused checks that w is the answer to an address out of attempts:
// 429, a Retry-After of whole seconds, and (from the API) the stable code.
func refused(t *testing.T, what string, w *httptest.ResponseRecorder, api bool) {
	t.Helper()
	if w.Code != http.StatusTooManyRequests {
		t.Errorf("%s: %d, want 429", what, w.Code)
		return
	}
	if s, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("%s: 429 with Retry-After %q, want whole seconds", what, w.Header().Get("Retry-After"))
	}
	var body struct {
		Error errorMsg `json:"error"`
	}
	if api && (json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Error.Code != "too_many_attempts") {
		t.Errorf("%s: 429 %s, want code too_many_attempts", what, w.Body)
	}
}

// Many addresses guessing at full speed, over the console and the API,
// lock no one out: the right token from an address that guessed nothing
// gets in at once (the sign-ins' shared cap of 50 a second once refused
// it after some 30 addresses had spent it). The guessing addresses are
// refused with 429 and Retry-After.
func TestRightTokenGetsInWhileManyAddressesGuess(t *testing.T) {
	_, s := newRelayNamed(t, provision(t), "relay-a", zerolog.Nop())
	frozen(s)
	for i := range 100 {
		for j := range 10 {
			if j%2 == 0 {
				loginTry(s, many(i), wrong(i*10+j))
			} else {
				apiTry(s, many(i), wrong(i*10+j))
			}
		}
	}
	if w := loginTry(s, "192.0.2.200", token); w.Code != http.StatusSeeOther {
		t.Errorf("the right token at the console's sign-in while 100 addresses guess: %d, want 303 (signed in)", w.Code)
	}
	if w := apiTry(s, "192.0.2.201", token); w.Code != http.StatusOK {
		t.Errorf("the right bearer token while 100 addresses guess: %d %s, want 200", w.Code, w.Body)
	}
	refused(t, "a guessing address at the sign-in", loginTry(s, many(7), wrong(-1)), false)
	refused(t, "a guessing address at the API", apiTry(s, many(8), wrong(-2)), true)
}

// An address out of attempts stays out however many other addresses
// guess meanwhile: the pacing once forgot every address when it had
// 4,096, so cycling through more reset it.
func TestGuessPacingOutlastsManyAddresses(t *testing.T) {
	_, s := newRelayNamed(t, provision(t), "relay-a", zerolog.Nop())
	c := frozen(s)
	const x = "198.51.100.7"
	for i := range 10 {
		if w := apiTry(s, x, wrong(i)); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d of the burst: %d, want 401", i+1, w.Code)
		}
	}
	refused(t, "the right token from an address out of attempts", apiTry(s, x, token), true)
	for i := range 5000 {
		apiTry(s, many(i), wrong(100+i))
	}
	refused(t, "the same address after 5,000 others guessed", apiTry(s, x, token), true)
	refused(t, "the same address at the sign-in", loginTry(s, x, token), false)
	c.t = c.t.Add(time.Minute)
	if w := apiTry(s, x, token); w.Code != http.StatusOK {
		t.Errorf("the right token a minute later: %d, want 200", w.Code)
	}
}

// Attempts are paced per address: one guessing is refused after its
// burst, the right token included, while others sign in at once; an IPv6
// address is paced by its /64, which a neighbour shares.
func TestGuessPacingPerAddress(t *testing.T) {
	_, s := newRelayNamed(t, provision(t), "relay-a", zerolog.Nop())
	frozen(s)
	for i := range 10 {
		loginTry(s, "2001:db8:1:2::1", wrong(i))
	}
	refused(t, "a neighbour in the same /64", loginTry(s, "2001:db8:1:2:ffff::9", token), false)
	if w := loginTry(s, "2001:db8:1:3::1", token); w.Code != http.StatusSeeOther {
		t.Errorf("another /64: %d, want 303", w.Code)
	}
	if w := loginTry(s, "203.0.113.5", token); w.Code != http.StatusSeeOther {
		t.Errorf("an IPv4 address: %d, want 303", w.Code)
	}
}

// Wrong tokens at the sign-in and at the API spend one budget: once many
// addresses have spent it, an address that guesses wrong even once waits
// before its next token is compared, whichever door it knocks at. The
// API's bearer check once had no shared cap at all.
func TestWrongTokensShareOneBudget(t *testing.T) {
	_, s := newRelayNamed(t, provision(t), "relay-a", zerolog.Nop())
	c := frozen(s)
	for i := range 200 {
		loginTry(s, many(i), wrong(i))
	}
	const y = "203.0.113.9"
	if w := apiTry(s, y, wrong(-1)); w.Code != http.StatusUnauthorized {
		t.Fatalf("a first wrong token while many guess: %d, want 401 (it is compared)", w.Code)
	}
	refused(t, "the next token from that address, over the API", apiTry(s, y, token), true)
	if w := apiTry(s, "203.0.113.10", token); w.Code != http.StatusOK {
		t.Errorf("the right token from an address that guessed nothing: %d, want 200", w.Code)
	}
	c.t = c.t.Add(time.Minute)
	if w := apiTry(s, y, token); w.Code != http.StatusOK {
		t.Errorf("the right token a minute later: %d, want 200", w.Code)
	}

	// And the other way: wrong bearer tokens spend the sign-in's budget.
	for i := range 200 {
		apiTry(s, many(1000+i), wrong(i))
	}
	const z = "203.0.113.11"
	if w := loginTry(s, z, wrong(-2)); w.Code != http.StatusUnauthorized {
		t.Fatalf("a first wrong sign-in while many guess: %d, want 401", w.Code)
	}
	refused(t, "the next sign-in from that address", loginTry(s, z, token), false)
}

// No token sent, wrong or right, reaches the log: not at the sign-in, not
// as a bearer token, not in the line that tells a human many addresses
// are guessing.
func TestSubmittedTokensAreNeverLogged(t *testing.T) {
	var logs syncbuf.Buffer
	_, s := newRelayNamed(t, provision(t), "relay-a", zerolog.New(&logs).Level(zerolog.DebugLevel))
	frozen(s)
	for i := range 150 {
		loginTry(s, many(i), wrong(i))
		apiTry(s, many(i), wrong(1000+i))
	}
	loginTry(s, "192.0.2.1", token)
	apiTry(s, "192.0.2.1", token)
	out := logs.String()
	if strings.Contains(out, token) || strings.Contains(out, "guess-") {
		t.Fatalf("a submitted token is in the log:\n%s", out)
	}
	if !strings.Contains(out, `"level":"error"`) || !strings.Contains(out, "wrong admin tokens from many addresses") {
		t.Errorf("no error line tells a human that many addresses guess:\n%.2000s", out)
	}
}

// Attempts in flight count: each is taken before its token is compared,
// not charged after, so requests from one address that are all still
// being compared cannot all pass the same check of what is left.
func TestAttemptsInFlightCount(t *testing.T) {
	l := newGuessLimiter(zerolog.Nop())
	l.now = (&clock{t: time.Date(2025, 8, 17, 9, 0, 0, 0, time.UTC)}).now
	var k netip.Addr
	for i := range guessBurst {
		var wait time.Duration
		if k, wait = l.begin("198.51.100.20"); wait > 0 {
			t.Fatalf("attempt %d of the burst refused", i+1)
		}
	}
	if _, wait := l.begin("198.51.100.20"); wait <= 0 {
		t.Fatalf("attempt %d while %d are being compared was allowed", guessBurst+1, guessBurst)
	}
	l.right(k) // one of those in flight was the right token: its attempt comes back
	if _, wait := l.begin("198.51.100.20"); wait > 0 {
		t.Fatalf("an attempt given back by a right token is not there: wait %s", wait)
	}
}

// Behind a proxy named in admin.trusted_proxies, guesses are paced per
// client, as X-Forwarded-For names it: every client of the proxy once
// shared the proxy's address, so anyone who could reach the proxy kept
// the operator's right token answered 429. A peer not named there is
// its own client whatever it claims.
func TestGuessesThroughATrustedProxyArePacedPerClient(t *testing.T) {
	js := provision(t)
	s := New(Config{Token: token, JetStream: js, Projects: []string{"main"}, Relay: "relay-a", Logger: zerolog.Nop(),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}})
	t.Cleanup(s.Close)
	frozen(s)
	via := func(peer, client, tok string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/admin/endpoints", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if client != "" {
			req.Header.Set("X-Forwarded-For", client)
		}
		return from(s, peer, req)
	}
	for i := range 20 {
		via("10.9.0.1", "203.0.113.5", wrong(i))
	}
	refused(t, "the guessing client through the proxy", via("10.9.0.1", "203.0.113.5", wrong(99)), true)
	if w := via("10.9.0.1", "198.51.100.7", token); w.Code != http.StatusOK {
		t.Fatalf("the operator's right token through the same proxy while another client is paced: %d %s, want 200", w.Code, w.Body)
	}
	// A peer the relay does not trust is paced as itself: naming a new
	// client in each request resets nothing.
	for i := range 20 {
		via("192.0.2.50", fmt.Sprintf("198.51.100.%d", i), wrong(100+i))
	}
	refused(t, "an untrusted peer naming a new client each time", via("192.0.2.50", "198.51.100.99", wrong(200)), true)
}
