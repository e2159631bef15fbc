package admin

import (
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// guessLimiter paces wrong admin tokens: those posted to the console's
// sign-in and those sent as the API's bearer token spend the same
// allowances, so guessing is no faster through one door than the other.
//
// Per address (an IPv6 address by its /64): guessBurst attempts at once,
// then guessRate a second. An address out of attempts is refused before
// its token is compared (else the answer to each guess would still come
// back), and each attempt is taken before the comparison and given back
// when the token was right, so that concurrent requests cannot all be
// compared on one attempt. The limiter remembers the maxGuessAddrs
// addresses that tried most recently and forgets the least recent first:
// addresses that come and go do not reset the pacing of one that keeps
// guessing, as forgetting every address at once did.
//
// Every address together: wrong tokens spend one shared budget,
// guessBudgetBurst at once, then guessBudgetRate a second. It is charged
// only after a token was compared and found wrong, and never refuses a
// token before comparing it: the right token gets in however many others
// guess (the sign-in's shared cap once let some 30 guessing addresses
// lock the operator out). What it bounds instead: while it is spent, a
// wrong token shuts its own address out for guessPause, so that each
// address guessing at once gets one guess a guessPause rather than
// guessRate a second, and a human is told (an error line, at most one a
// guessPause). An address that cycles through more than maxGuessAddrs
// addresses within a guessPause still gets one guess per address: no
// bounded memory can tell it apart from new operators, and refusing
// unseen addresses would refuse the operator too. The admin token's
// length is what makes that too slow to matter.
type guessLimiter struct {
	mu     sync.Mutex
	addrs  *simplelru.LRU[netip.Addr, guessState]
	all    *rate.Limiter
	warned time.Time // when the last line about a spent budget was written
	log    zerolog.Logger
	now    func() time.Time // time.Now; a test's clock
}

const (
	guessBurst       = 10
	guessRate        = 5 // attempts a second, per address
	guessBudgetBurst = 100
	guessBudgetRate  = 10 // wrong tokens a second, every address together
	guessPause       = time.Minute
	// maxGuessAddrs bounds the addresses remembered: some 220 bytes each,
	// 15 MB when full.
	maxGuessAddrs = 1 << 16
)

// guessState is one address's allowance: a bucket of guessBurst attempts
// refilled at guessRate, and the end of a pause.
type guessState struct {
	tokens float64
	last   time.Time // when tokens was last refilled
	until  time.Time // no attempt before then
}

func (g *guessState) refill(now time.Time) {
	if now.After(g.last) {
		g.tokens = min(guessBurst, g.tokens+now.Sub(g.last).Seconds()*guessRate)
		g.last = now
	}
}

func newGuessLimiter(log zerolog.Logger) *guessLimiter {
	addrs, _ := simplelru.NewLRU[netip.Addr, guessState](maxGuessAddrs, nil) // fails only for a size < 1
	return &guessLimiter{addrs: addrs, all: rate.NewLimiter(guessBudgetRate, guessBudgetBurst), log: log, now: time.Now}
}

// guessKey is the key of ip's allowance: the address, or for IPv6 its
// /64 (one host's share of addresses). What does not parse shares one.
func guessKey(ip string) netip.Addr {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Addr{}
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		a = p.Addr()
	}
	return a
}

// begin takes one of ip's attempts before its token is compared. It
// answers the key to pass to right or wrong once the token is compared,
// or how long ip must wait (> 0), and then nothing was taken and nothing
// must be compared.
func (l *guessLimiter) begin(ip string) (netip.Addr, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now, k := l.now(), guessKey(ip)
	g, ok := l.addrs.Get(k)
	if !ok {
		g = guessState{tokens: guessBurst, last: now}
	}
	g.refill(now)
	if now.Before(g.until) {
		return k, g.until.Sub(now)
	}
	if g.tokens < 1 {
		return k, time.Duration((1 - g.tokens) / guessRate * float64(time.Second))
	}
	g.tokens--
	l.addrs.Add(k, g)
	return k, 0
}

// right gives back the attempt begin took: a right token spends nothing.
// An address whose allowance is whole again is forgotten.
func (l *guessLimiter) right(k netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.addrs.Peek(k)
	if !ok {
		return
	}
	g.refill(l.now())
	g.tokens = min(guessBurst, g.tokens+1)
	if g.tokens == guessBurst && !l.now().Before(g.until) {
		l.addrs.Remove(k)
		return
	}
	l.addrs.Add(k, g)
}

// wrong records a wrong token: the attempt begin took stays spent, and
// the shared budget is charged; when it is spent, the address is paused.
func (l *guessLimiter) wrong(k netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	g, ok := l.addrs.Get(k)
	if !ok { // forgotten since begin: its attempt is still spent
		g = guessState{tokens: guessBurst - 1, last: now}
	}
	if !l.all.AllowN(now, 1) {
		g.until = now.Add(guessPause)
		if now.Sub(l.warned) >= guessPause {
			l.warned = now
			l.log.Error().Int("addresses", l.addrs.Len()).Dur("delay", guessPause).
				Msg("wrong admin tokens from many addresses: each address that sends one now waits before its next")
		}
	}
	l.addrs.Add(k, g)
}

// tooMany is the answer to an address that must wait d: 429 with a
// Retry-After of whole seconds.
func tooMany(c echo.Context, d time.Duration) error {
	c.Response().Header().Set("Retry-After", strconv.Itoa(retrySeconds(d)))
	return apiError(http.StatusTooManyRequests, "too_many_attempts", "too many wrong tokens from this address: wait Retry-After seconds")
}

// retrySeconds is d in whole seconds, rounded up, at least 1.
func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
