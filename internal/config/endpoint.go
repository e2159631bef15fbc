package config

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/verify"
)

// Endpoint is one merchant webhook endpoint.
type Endpoint struct {
	URL         string            `yaml:"url"`
	Secrets     []Secret          `yaml:"secrets"`
	SecretsFile string            `yaml:"secrets_file"` // one whsec_ secret per line
	Filter      Filter            `yaml:"filter"`
	Timeout     Duration          `yaml:"timeout"`
	Concurrency int               `yaml:"concurrency"`
	Retry       Retry             `yaml:"retry"`
	RateLimit   float64           `yaml:"rate_limit"` // events per second; 0: none
	Ordered     bool              `yaml:"ordered"`
	Headers     map[string]string `yaml:"headers"`
	// DeliverFrom is where a new endpoint starts: "new" (events published
	// after it is created), "all" (everything the stream holds) or an RFC
	// 3339 time. Existing endpoints keep their position whatever it says.
	DeliverFrom string  `yaml:"deliver_from"`
	Breaker     Breaker `yaml:"breaker"`
}

// Filter selects the events an endpoint receives. Empty lists mean "any";
// at least one list must be set, or all: true, so that "everything" is a
// decision, not an accident.
type Filter struct {
	All      bool     `yaml:"all"`
	Projects []string `yaml:"projects"`
	Products []string `yaml:"products"`
	Statuses []string `yaml:"statuses"`
}

// Retry is an endpoint's retry policy.
type Retry struct {
	// Schedule is the delay before each retry; attempts = len(schedule)+1.
	Schedule []Duration `yaml:"schedule"`
	// Jitter randomizes each delay by ± this fraction (0 to 1).
	Jitter float64 `yaml:"jitter"`
	// RetryAfterMax caps a Retry-After the endpoint asks for (429, 503).
	RetryAfterMax Duration `yaml:"retry_after_max"`
}

// Breaker pauses an endpoint after consecutive failures.
type Breaker struct {
	// Failures in a row that pause the endpoint; 0 disables the breaker.
	Failures int `yaml:"failures"`
	// ProbeInitial is the first wait before a paused endpoint is probed
	// with one event; it doubles per failed probe up to ProbeMax.
	ProbeInitial Duration `yaml:"probe_initial"`
	ProbeMax     Duration `yaml:"probe_max"`
}

// Metrics configures the Prometheus /metrics listener. It is not on the
// public callback listener: payment volumes per project are not for
// everyone who can reach the callback URL.
type Metrics struct {
	// Listen: "" turns it off. A non-loopback address needs Token.
	Listen string `yaml:"listen"`
	// Token, when set, is required as "Authorization: Bearer <token>".
	Token     Secret `yaml:"token"`
	TokenFile string `yaml:"token_file"`
}

// Admin configures the admin API listener.
type Admin struct {
	Listen    string `yaml:"listen"`
	Token     Secret `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// SecureCookie marks the console's session cookie Secure, so that a
	// browser sends it over HTTPS only: for a console reached through a
	// TLS-terminating proxy (the listener itself is plain HTTP).
	SecureCookie bool `yaml:"secure_cookie"`
	// TrustedProxies are the proxies (CIDRs or addresses) whose
	// X-Forwarded-For names the operator's address: wrong tokens are
	// paced, and audit lines name who acted, by that address rather
	// than by the proxy's, which every client of the proxy shares.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Hosts are the names the listener answers to (the Host header, any
	// port); another is refused, so that a page whose name an attacker
	// rebinds to the listener's address (DNS rebinding) cannot reach it.
	// Empty: the loopback names on a loopback listener, any otherwise.
	Hosts []string `yaml:"hosts"`
}

// ServedHosts are the Host names the admin listener answers to (nil:
// any): Hosts; else, on a loopback listener with no proxy in front
// (trusted_proxies), the loopback names and its own address; else any.
// A proxy passes on the name browsers used, which only admin.hosts can
// say.
func (a Admin) ServedHosts() []string {
	if len(a.Hosts) > 0 {
		return a.Hosts
	}
	if len(a.TrustedProxies) == 0 {
		return LoopbackHosts(a.Listen)
	}
	return nil
}

// LoopbackHosts are the Host names a listener on listen answers to when
// listen is a loopback address: this machine's names and listen's own
// host (127.0.0.2 is loopback too); nil for any other address.
func LoopbackHosts(listen string) []string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || !isLoopback(host) {
		return nil
	}
	names := slices.Clone(verify.LoopbackNames)
	if !slices.Contains(names, host) {
		names = append(names, host)
	}
	return names
}

// DefaultSchedule is the Standard Webhooks example schedule: about three
// days over ten attempts.
func DefaultSchedule() []Duration {
	var out []Duration
	for _, d := range []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour} {
		out = append(out, Duration(d))
	}
	return out
}

// defaultEndpoint is an endpoint entry before its keys are read: every key
// the entry leaves out keeps its default, and a key written as 0 stays 0
// (breaker.failures: 0 never pauses, retry.jitter: 0 adds none).
func defaultEndpoint() Endpoint {
	return Endpoint{
		Timeout:     Duration(10 * time.Second),
		Concurrency: 4,
		Retry:       Retry{Schedule: DefaultSchedule(), Jitter: 0.2, RetryAfterMax: Duration(time.Hour)},
		DeliverFrom: "new",
		Breaker:     Breaker{Failures: 10, ProbeInitial: Duration(30 * time.Second), ProbeMax: Duration(10 * time.Minute)},
	}
}

// UnmarshalYAML reads an endpoint entry over the defaults. It uses the
// decoder it is given (yaml.v3's older unmarshaler form), so unknown keys
// inside an entry remain errors.
func (e *Endpoint) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Endpoint // without this method
	p := plain(defaultEndpoint())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*e = Endpoint(p)
	return nil
}

// MaxFilterSubjects bounds an endpoint's filter subjects (the product of
// its lists), and MaxAllFilterSubjects all the endpoints' (all: true counts
// one). Each relay tells them in its heartbeat, one value of the store,
// with each endpoint's name twice: under 1 MiB at most (4,096 endpoints of
// one subject and 63-character names), an external server's max_payload
// by default, past which no heartbeat is written and the relay delivers
// nothing. And it weighs each subject against each other every heartbeat.
const (
	MaxFilterSubjects    = 256
	MaxAllFilterSubjects = 4096
)

// validateEndpoints reports every problem with the endpoints.
func (c *Config) validateEndpoints(bad func(string, ...any)) {
	subjects := 0
	for _, name := range sortedKeys(c.Endpoints) {
		e := c.Endpoints[name]
		at := "endpoints." + name
		if !event.ValidName(name) {
			bad("endpoints.%s: name must be lowercase letters, digits, '-' or '_'", ShownKey(name))
			continue
		}
		if e == nil {
			bad("%s: empty endpoint", at)
			continue
		}
		if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("%s.url: %s", at, badURL(e.URL))
		}
		if len(e.Secrets) == 0 {
			bad("%s.secrets: at least one whsec_ secret is required", at)
		}
		for i, s := range e.Secrets {
			if _, err := verify.ParseWebhookSecret(s.Value()); err != nil {
				bad("%s.secrets[%d]: %v", at, i, err)
			}
		}
		f := e.Filter
		if !f.All && len(f.Projects)+len(f.Products)+len(f.Statuses) == 0 {
			bad("%s.filter: empty; list projects, products or statuses, or set all: true", at)
		}
		for _, p := range f.Projects {
			if _, ok := c.Projects[p]; !ok {
				bad("%s.filter.projects: %q is not a configured project (removed? its events this endpoint has not delivered are settled unposted once the filter leaves it out: README \"Removing a project\")", at, p)
			}
		}
		for _, p := range f.Products {
			if !slices.Contains(event.Products, event.Product(p)) {
				bad("%s.filter.products: %q is not one of %v", at, p, event.Products)
			}
		}
		for _, s := range f.Statuses {
			if _, err := event.ParseStatus(s); err != nil {
				bad("%s.filter.statuses: %v", at, err)
			}
		}
		if f.All {
			subjects++ // one: sengo.events.>
		} else {
			n := len(f.Subjects())
			if n > MaxFilterSubjects {
				bad("%s.filter: %d subjects (projects × products × statuses), over %d: leave a list empty to take all of it", at, n, MaxFilterSubjects)
			}
			subjects += n
		}
		// nats-server refuses a consumer whose filter subjects overlap,
		// and a repeat overlaps itself: the endpoint, and so the relay,
		// could not start.
		for key, l := range map[string][]string{"projects": f.Projects, "products": f.Products, "statuses": f.Statuses} {
			seen := map[string]int{}
			for _, v := range l {
				if seen[v]++; seen[v] == 2 {
					bad("%s.filter.%s: %q is listed twice", at, key, v)
				}
			}
		}
		if e.Timeout <= 0 || e.Timeout.D() > 5*time.Minute {
			bad("%s.timeout: must be between 0 and 5m", at)
		}
		if e.Concurrency < 1 || e.Concurrency > 256 {
			bad("%s.concurrency: %d is outside 1 to 256", at, e.Concurrency)
		}
		for i, d := range e.Retry.Schedule {
			if d <= 0 {
				bad("%s.retry.schedule[%d]: must be positive", at, i)
			}
		}
		if time.Duration(e.Retry.RetryAfterMax) < time.Second {
			// Retry-After is capped to it: under a second, every retry
			// would come at once and spend the budget in moments.
			bad("%s.retry.retry_after_max: %v is under 1s", at, time.Duration(e.Retry.RetryAfterMax))
		}
		// Written so that NaN fails too: it fails every comparison.
		if !(e.Retry.Jitter >= 0 && e.Retry.Jitter <= 1) {
			bad("%s.retry.jitter: %v is outside 0 to 1", at, e.Retry.Jitter)
		}
		if !(e.RateLimit >= 0) || math.IsInf(e.RateLimit, 1) {
			bad("%s.rate_limit: %v is not a number of events per second (0: none)", at, e.RateLimit)
		}
		seen := map[string]string{}
		for _, k := range sortedKeys(e.Headers) {
			v := e.Headers[k]
			if http.CanonicalHeaderKey(k) == "" || !validHeader.MatchString(k) {
				bad("%s.headers: %q is not a header name", at, ShownKey(k))
				continue
			}
			if other, dup := seen[http.CanonicalHeaderKey(k)]; dup {
				// One header: which value went out was chosen per request.
				bad("%s.headers: %q and %q are one header (names ignore case)", at, other, k)
			}
			seen[http.CanonicalHeaderKey(k)] = k
			if !httpguts.ValidHeaderFieldValue(v) {
				bad("%s.headers.%s: the value has a control character (CR, LF, …), which would split the request", at, k)
			}
			if reserved[http.CanonicalHeaderKey(k)] {
				bad("%s.headers: %q is set by the relay", at, k)
			}
		}
		switch e.DeliverFrom {
		case "new", "all":
		default:
			if _, err := time.Parse(time.RFC3339, e.DeliverFrom); err != nil {
				bad("%s.deliver_from: %q is not new, all or an RFC 3339 time", at, e.DeliverFrom)
			}
		}
		if e.Breaker.Failures < 0 || e.Breaker.ProbeInitial <= 0 || e.Breaker.ProbeMax < e.Breaker.ProbeInitial {
			bad("%s.breaker: failures must be >= 0 and 0 < probe_initial <= probe_max", at)
		}
		if total := e.Retry.total(); total > c.Streams.Events.MaxAge.D() {
			bad("%s.retry.schedule: spans %s, longer than streams.events.max_age %s: events would expire before their last retry", at, total, c.Streams.Events.MaxAge)
		}
		// Replayed and redriven copies are retried on SENGO_REPLAY: one
		// aging out between two retries would have no dead letter.
		if total := e.Retry.total(); c.Streams.Replay.MaxAge.D() > 0 && total > c.Streams.Replay.MaxAge.D() {
			bad("%s.retry.schedule: spans %s, longer than streams.replay.max_age %s: replayed and redriven copies would expire before their last retry", at, total, c.Streams.Replay.MaxAge)
		}
	}
	if subjects > MaxAllFilterSubjects {
		bad("endpoints: %d filter subjects in all, over %d (each is a project × product × status an endpoint's filter lists; each relay tells them in its heartbeat): leave a list empty to take all of it", subjects, MaxAllFilterSubjects)
	}
	if c.Admin.Token.Set() {
		if len(c.Admin.Token) < 16 {
			bad("admin.token: must be at least 16 characters")
		}
		if c.Admin.Listen == "" {
			bad("admin.listen: required when admin.token is set")
		} else if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			bad("admin.listen: %.80q is not host:port", c.Admin.Listen)
		}
	}
}

var validHeader = regexp.MustCompile(`^[A-Za-z0-9-]+$`)

var reserved = map[string]bool{
	"Content-Type": true, "User-Agent": true, "Webhook-Id": true, "Webhook-Timestamp": true,
	"Webhook-Signature": true, "Webhook-Replay": true, "Content-Length": true, "Host": true,
}

func (r Retry) total() time.Duration {
	// Saturating: a sum past int64 wrapped negative and passed every
	// check against the streams' retention.
	var t float64
	for _, d := range r.Schedule {
		t += float64(d.D())
	}
	if t *= 1 + r.Jitter; t >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(t)
}

// FilterSubjects compiles a filter to JetStream filter subjects on
// SENGO_EVENTS: the cross product of the lists, "*" where a list is empty.
func (f Filter) Subjects() []string {
	or := func(l []string) []string {
		if len(l) == 0 {
			return []string{"*"}
		}
		return l
	}
	var out []string
	for _, p := range or(f.Projects) {
		for _, pr := range or(f.Products) {
			for _, s := range or(f.Statuses) {
				out = append(out, fmt.Sprintf("sengo.events.%s.%s.%s", p, pr, s))
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
