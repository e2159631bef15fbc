package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/verify"
)

// Config is the whole configuration of sengo-relay. config.yaml at the
// repository root documents every key.
type Config struct {
	DataDir   string               `yaml:"data_dir"`
	Log       Log                  `yaml:"log"`
	HTTP      HTTP                 `yaml:"http"`
	NATS      NATS                 `yaml:"nats"`
	Streams   Streams              `yaml:"streams"`
	Intake    Intake               `yaml:"intake"`
	Reconcile Reconcile            `yaml:"reconcile"`
	Delivery  Delivery             `yaml:"delivery"`
	Projects  map[string]*Project  `yaml:"projects"`
	Endpoints map[string]*Endpoint `yaml:"endpoints"`
	Admin     Admin                `yaml:"admin"`
	Metrics   Metrics              `yaml:"metrics"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // trace, debug, info, warn, error
	Format string `yaml:"format"` // json or console
}

// HTTP configures the callback listener.
type HTTP struct {
	Listen       string `yaml:"listen"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"`
	MaxInFlight  int    `yaml:"max_in_flight"`
	// MaxConnsPerAddress bounds the connections one address (an IPv6
	// address by its /64) holds open on the listener, and MaxConns those of
	// every address together; a trusted proxy's and SenGo's (allowed_ips)
	// are not counted. 0: no bound.
	MaxConnsPerAddress int      `yaml:"max_conns_per_address"`
	MaxConns           int      `yaml:"max_conns"`
	PublishTimeout     Duration `yaml:"publish_timeout"`
	RetryAfter         Duration `yaml:"retry_after"`
	TrustedProxies     []string `yaml:"trusted_proxies"`
	ReadHeaderTimeout  Duration `yaml:"read_header_timeout"`
	ReadTimeout        Duration `yaml:"read_timeout"`
	WriteTimeout       Duration `yaml:"write_timeout"`
	IdleTimeout        Duration `yaml:"idle_timeout"`
	ShutdownTimeout    Duration `yaml:"shutdown_timeout"`
}

// NATS configures the connection and, when URL is empty, the embedded server.
type NATS struct {
	URL       string   `yaml:"url"`
	CredsFile string   `yaml:"creds_file"`
	Token     Secret   `yaml:"token"`
	TokenFile string   `yaml:"token_file"`
	Replicas  int      `yaml:"replicas"`
	Storage   string   `yaml:"storage"` // file or memory
	Embedded  Embedded `yaml:"embedded"`
}

// Embedded configures the in-process nats-server.
type Embedded struct {
	Listen       string `yaml:"listen"`        // "" turns the listener off
	StoreDir     string `yaml:"store_dir"`     // default <data_dir>/jetstream
	SyncInterval string `yaml:"sync_interval"` // a duration, or "always"
	// GroupCommit: with sync_interval always, the relay fsyncs the store
	// itself once for every write acknowledged meanwhile (concurrent
	// writers share one fsync) instead of nats-server fsyncing each write
	// on its own. Linux only; false, or elsewhere, nats-server's SyncAlways.
	GroupCommit bool  `yaml:"group_commit"`
	MaxStore    int64 `yaml:"max_store_bytes"`
	// Subscriber is the read-only identity for order services and the nats
	// CLI on the listener: it may read SENGO_EVENTS and manage consumers of
	// its own, nothing else.
	Subscriber Subscriber `yaml:"subscriber"`
}

// Subscriber is the embedded server's read-only identity.
type Subscriber struct {
	User string `yaml:"user"`
	// Password; empty: one is generated on first start and kept in
	// <store_dir>/subscriber.password (mode 0600).
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// Streams configures retention of each stream and of the transaction bucket.
type Streams struct {
	Inbox      StreamLimits `yaml:"inbox"`
	Events     StreamLimits `yaml:"events"`
	Quarantine StreamLimits `yaml:"quarantine"`
	DLQ        StreamLimits `yaml:"dlq"`
	Replay     StreamLimits `yaml:"replay"`
	Attempts   StreamLimits `yaml:"attempts"`
	Refs       StreamLimits `yaml:"refs"`
	// Reconciliations: the record of each reconciliation run.
	Reconciliations StreamLimits `yaml:"reconciliations"`
	Transactions    Bucket       `yaml:"transactions"`
}

// StreamLimits bounds one stream.
type StreamLimits struct {
	MaxAge          Duration `yaml:"max_age"`
	DuplicateWindow Duration `yaml:"duplicate_window"`
	MaxBytes        int64    `yaml:"max_bytes"`
}

// Bucket configures the SENGO_TX bucket.
type Bucket struct {
	TTL Duration `yaml:"ttl"`
}

// Intake configures the workers that turn inbox notifications into events.
type Intake struct {
	Workers       int      `yaml:"workers"`
	AckWait       Duration `yaml:"ack_wait"`
	MaxAckPending int      `yaml:"max_ack_pending"`
	RetryInitial  Duration `yaml:"retry_initial"`
	RetryMax      Duration `yaml:"retry_max"`
	// ConfirmAttempts bounds retries of a callback claiming a final status
	// SenGo's API does not report yet; then it is quarantined.
	ConfirmAttempts int `yaml:"confirm_attempts"`
	// ConfirmTimeout bounds one check with SenGo's API (one try: intake
	// retries with its backoff); 0 is CheckTimeout's default.
	ConfirmTimeout Duration `yaml:"confirm_timeout"`
}

// quarantineRechecks is how far back the quarantine's rechecks read
// (receiver's recheckWindow): its notifications must be kept that long.
const quarantineRechecks = 24 * time.Hour

// consoleReserve is the store the console's buckets reserve (their
// max_bytes, 16 MiB each: internal/admin's sessions and replay jobs).
const consoleReserve = 32 << 20

// CheckTimeout is how long one check with SenGo's API may take:
// confirm_timeout, or by default the smaller of 5s and a third of
// ack_wait.
func (i Intake) CheckTimeout() time.Duration {
	if i.ConfirmTimeout > 0 {
		return i.ConfirmTimeout.D()
	}
	return min(5*time.Second, i.AckWait.D()/3)
}

// Reconcile configures the periodic comparison with SenGo's transaction list.
type Reconcile struct {
	// Interval between runs; 0 turns the job off. Runs only for projects
	// with credentials.
	Interval Duration `yaml:"interval"`
	// Window is how far back each run looks (SenGo keeps 7 days).
	Window Duration `yaml:"window"`
	// CatchUp lets a periodic run look back further than Window: to the
	// days its project's last periodic run did not read (a stop longer
	// than Window), at most 7 days.
	CatchUp bool `yaml:"catch_up"`
}

// Delivery configures what all endpoints share.
type Delivery struct {
	// RetireRemovedAfter is how long an endpoint must have gone unnamed
	// by every relay (and three heartbeats of the slowest relay; a relay
	// writes one every third of this, 10s at most) and its consumer idle (no pull, no
	// delivery) before its backlog is dead-lettered (endpoint_removed)
	// and the consumer deleted.
	RetireRemovedAfter Duration `yaml:"retire_removed_after"`
}

// Signature modes for X-Signature on callbacks.
const (
	SignatureOff      = "off"
	SignatureOptional = "optional"
	SignatureRequired = "required"
)

// Project is one SenGo project (one API key and token pair).
type Project struct {
	APIKey            Secret   `yaml:"api_key"`
	APIKeyFile        string   `yaml:"api_key_file"`
	Token             Secret   `yaml:"token"`
	TokenFile         string   `yaml:"token_file"`
	CallbackToken     Secret   `yaml:"callback_token"`
	CallbackTokenFile string   `yaml:"callback_token_file"`
	AllowedIPs        []string `yaml:"allowed_ips"`
	// Signature is off, optional or required; empty means optional when
	// api_key and token are set, off otherwise.
	Signature string `yaml:"signature"`
	// Confirm checks every notification with SenGo's API before it is
	// published; empty means true when api_key and token are set.
	Confirm string `yaml:"confirm"`
	// RequireConfirmation fails closed: the project must confirm (api_key
	// and token set, confirm not false), or the configuration is refused;
	// intake quarantines any of its notifications that was not confirmed.
	RequireConfirmation bool `yaml:"require_confirmation"`
	// BaseURL of SenGo's API: "production" (default), "sandbox" (SenGo's
	// own), or a URL such as a local sandbox's http://127.0.0.1:8090/api.
	BaseURL string `yaml:"base_url"`
}

// Confirms reports whether notifications of the project are confirmed.
func (p *Project) Confirms() bool {
	if p.Confirm == "" {
		return p.APIKey.Set() && p.Token.Set()
	}
	return p.Confirm == "true"
}

// HasCredentials reports whether the project can call SenGo's API.
func (p *Project) HasCredentials() bool { return p.APIKey.Set() && p.Token.Set() }

// APIBaseURL resolves BaseURL.
func (p *Project) APIBaseURL() string {
	switch p.BaseURL {
	case "", "production":
		return "https://api.sengo.id/api"
	case "sandbox":
		return "https://api.sandbox.sengo.id/api"
	}
	return p.BaseURL
}

// Default returns the configuration used for every key the file omits.
func Default() Config {
	return Config{
		DataDir: "./data",
		Log:     Log{Level: "info", Format: "json"},
		HTTP: HTTP{
			Listen:             ":8080",
			MaxBodyBytes:       64 << 10,
			MaxInFlight:        1024,
			MaxConnsPerAddress: 256,
			MaxConns:           4096,
			PublishTimeout:     Duration(5 * time.Second),
			RetryAfter:         Duration(5 * time.Second),
			ReadHeaderTimeout:  Duration(5 * time.Second),
			ReadTimeout:        Duration(15 * time.Second),
			WriteTimeout:       Duration(15 * time.Second),
			IdleTimeout:        Duration(60 * time.Second),
			ShutdownTimeout:    Duration(15 * time.Second),
		},
		NATS: NATS{
			Replicas: 1,
			Storage:  "file",
			Embedded: Embedded{Listen: "127.0.0.1:4222", SyncInterval: "always", GroupCommit: true, Subscriber: Subscriber{User: "subscriber"}},
		},
		Streams: Streams{
			Inbox:           StreamLimits{MaxAge: Duration(7 * 24 * time.Hour), DuplicateWindow: Duration(10 * time.Minute)},
			Events:          StreamLimits{MaxAge: Duration(30 * 24 * time.Hour), DuplicateWindow: Duration(10 * time.Minute)},
			Quarantine:      StreamLimits{MaxAge: Duration(30 * 24 * time.Hour), DuplicateWindow: Duration(time.Hour)},
			DLQ:             StreamLimits{MaxAge: Duration(30 * 24 * time.Hour), DuplicateWindow: Duration(time.Hour)},
			Replay:          StreamLimits{MaxAge: Duration(7 * 24 * time.Hour), DuplicateWindow: Duration(24 * time.Hour)},
			Attempts:        StreamLimits{MaxAge: Duration(30 * 24 * time.Hour), DuplicateWindow: Duration(2 * time.Minute)},
			Refs:            StreamLimits{MaxAge: Duration(30 * 24 * time.Hour), DuplicateWindow: Duration(2 * time.Minute)},
			Reconciliations: StreamLimits{MaxAge: Duration(30 * 24 * time.Hour), DuplicateWindow: Duration(2 * time.Minute)},
			Transactions:    Bucket{TTL: Duration(30 * 24 * time.Hour)},
		},
		Intake: Intake{
			Workers:         16,
			AckWait:         Duration(30 * time.Second),
			MaxAckPending:   1024,
			RetryInitial:    Duration(time.Second),
			RetryMax:        Duration(5 * time.Minute),
			ConfirmAttempts: 5,
		},
		Reconcile: Reconcile{Interval: Duration(10 * time.Minute), Window: Duration(48 * time.Hour), CatchUp: true},
		Delivery:  Delivery{RetireRemovedAfter: Duration(time.Minute)},
		Admin:     Admin{Listen: "127.0.0.1:8081"},
		Metrics:   Metrics{Listen: "127.0.0.1:9464"},
	}
}

// projectName is safe as a NATS subject token, a KV key part and a URL segment.

// minCallbackToken is the shortest callback token accepted: a path token
// must not be guessable.
const minCallbackToken = 16

// Validate reports every problem in c at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.DataDir == "" {
		bad("data_dir: must not be empty")
	}
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		bad("log.level: %q is not one of trace, debug, info, warn, error", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		bad("log.format: %q is not json or console", c.Log.Format)
	}

	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		bad("http.listen: %q is not host:port", c.HTTP.Listen)
	}
	if c.HTTP.MaxBodyBytes < 1024 || c.HTTP.MaxBodyBytes > 16<<20 {
		bad("http.max_body_bytes: %d is outside 1024 to 16777216", c.HTTP.MaxBodyBytes)
	}
	for name, d := range map[string]Duration{
		"http.publish_timeout": c.HTTP.PublishTimeout, "http.retry_after": c.HTTP.RetryAfter,
		"http.read_header_timeout": c.HTTP.ReadHeaderTimeout, "http.read_timeout": c.HTTP.ReadTimeout,
		"http.write_timeout": c.HTTP.WriteTimeout, "http.idle_timeout": c.HTTP.IdleTimeout,
		"http.shutdown_timeout": c.HTTP.ShutdownTimeout,
		"intake.ack_wait":       c.Intake.AckWait, "intake.retry_initial": c.Intake.RetryInitial,
		"intake.retry_max": c.Intake.RetryMax,
	} {
		if d <= 0 {
			bad("%s: must be positive, got %s", name, d)
		}
	}
	if c.HTTP.PublishTimeout >= c.HTTP.WriteTimeout {
		bad("http.publish_timeout (%s) must be shorter than http.write_timeout (%s)", c.HTTP.PublishTimeout, c.HTTP.WriteTimeout)
	}
	if c.HTTP.MaxInFlight < 0 {
		bad("http.max_in_flight: must not be negative (0: no cap)")
	}
	if c.HTTP.MaxConnsPerAddress < 0 {
		bad("http.max_conns_per_address: must not be negative (0: no bound)")
	}
	if c.HTTP.MaxConns < 0 {
		bad("http.max_conns: must not be negative (0: no bound)")
	}
	for _, p := range c.HTTP.TrustedProxies {
		if _, err := verify.ParsePrefix(p); err != nil {
			bad("http.trusted_proxies: %q is not a CIDR or address", p)
		}
	}
	for _, p := range c.Admin.TrustedProxies {
		if _, err := verify.ParsePrefix(p); err != nil {
			bad("admin.trusted_proxies: %q is not a CIDR or address", p)
		}
	}
	for _, h := range c.Admin.Hosts {
		if h == "" || strings.ContainsAny(h, "/ :@") && net.ParseIP(h) == nil {
			bad("admin.hosts: %q is not a host name or address (no scheme, port or path)", h)
		}
	}

	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		bad("nats.replicas: %d is outside 1 to 5", c.NATS.Replicas)
	}
	if c.NATS.URL != "" {
		// As nats.go reads the list. The value is not repeated: it may
		// hold a password.
		for i, u := range strings.Split(c.NATS.URL, ",") {
			if u = strings.TrimSpace(u); !strings.Contains(u, "://") {
				u = "nats://" + u
			}
			// As verify.RedactServerURL refuses them: a '#' or '?' not
			// encoded makes the token before it the host, which nats.go
			// then dials and names in its error.
			if pu, err := url.Parse(u); err != nil || verify.CredentialsInPath(pu) || strings.ContainsAny(u, "#?") || pu.Opaque != "" {
				bad("nats.url: server %d of the list does not parse as a URL (a password with '%%', '/', '#' or '?' in it must be percent-encoded)", i+1)
			}
		}
	}
	if c.NATS.URL == "" && c.NATS.Replicas > 1 {
		bad("nats.replicas: %d needs a cluster; the embedded server is a single node (set nats.url)", c.NATS.Replicas)
	}
	if c.NATS.Storage != "file" && c.NATS.Storage != "memory" {
		bad("nats.storage: %q is not file or memory", c.NATS.Storage)
	}
	if l := c.NATS.Embedded.Listen; l != "" && c.NATS.URL == "" {
		host, _, err := net.SplitHostPort(l)
		switch {
		case err != nil:
			bad("nats.embedded.listen: %q is not host:port (empty turns the listener off)", l)
		case !isLoopback(host) && !c.NATS.Embedded.Subscriber.Password.Set():
			bad("nats.embedded.listen: %q is not a loopback address; listening beyond this host needs a subscriber password you chose (nats.embedded.subscriber.password or password_file), not a generated one, and TLS in front", l)
		case !isLoopback(host) && len(c.NATS.Embedded.Subscriber.Password.Value()) < 16:
			bad("nats.embedded.subscriber.password: at least 16 characters when nats.embedded.listen is beyond loopback (anyone who reaches it may guess, and the subscriber reads every event)")
		}
	}
	if u := c.NATS.Embedded.Subscriber.User; !natsUser.MatchString(u) || u == EmbeddedRelayUser {
		bad("nats.embedded.subscriber.user: %q must be letters, digits, '-' or '_', and not %q", u, EmbeddedRelayUser)
	}
	if _, _, err := c.NATS.Embedded.Sync(); err != nil {
		bad("nats.embedded.sync_interval: %v", err)
	}
	if m := c.NATS.Embedded.MaxStore; m < -1 || m > 0 && m <= consoleReserve {
		bad("nats.embedded.max_store_bytes: %d must be 0 or -1 (no cap) or more than %d, what the console's buckets reserve: the streams could never be made", m, consoleReserve)
	}

	for name, s := range map[string]StreamLimits{"inbox": c.Streams.Inbox, "events": c.Streams.Events, "quarantine": c.Streams.Quarantine, "dlq": c.Streams.DLQ, "replay": c.Streams.Replay, "attempts": c.Streams.Attempts, "refs": c.Streams.Refs, "reconciliations": c.Streams.Reconciliations} {
		if s.MaxAge <= 0 {
			bad("streams.%s.max_age: must be positive", name)
		}
		if s.DuplicateWindow <= 0 || s.DuplicateWindow > s.MaxAge {
			bad("streams.%s.duplicate_window: must be positive and at most max_age", name)
		}
		if s.MaxBytes < -1 {
			bad("streams.%s.max_bytes: must be 0 or -1 (no cap) or positive", name)
		}
	}
	// Full, these stall what writes there behind them while callbacks still
	// get 200 (intake retries every notification it cannot publish or set
	// aside, and each holds a slot; the dispatcher an event it cannot
	// dead-letter): only the inbox, whose fullness answers 503, and the
	// stores off the delivery path take a cap.
	for name, s := range map[string]StreamLimits{"events": c.Streams.Events, "quarantine": c.Streams.Quarantine, "dlq": c.Streams.DLQ} {
		if s.MaxBytes > 0 {
			bad("streams.%s.max_bytes: must be 0 (or -1): full, it stalls intake or delivery behind it while callbacks still get 200; cap the inbox, or the store as a whole (nats.embedded.max_store_bytes)", name)
		}
	}
	if c.Streams.Quarantine.MaxAge.D() < quarantineRechecks {
		bad("streams.quarantine.max_age (%s) must be at least %s: a notification SenGo's API does not confirm yet is rechecked from there for up to %s (the last recheck 6h after the one before, and a relay down meanwhile rechecks late)", c.Streams.Quarantine.MaxAge, quarantineRechecks, quarantineRechecks)
	}
	if c.Streams.Events.DuplicateWindow < c.Intake.RetryMax+c.Intake.AckWait {
		bad("streams.events.duplicate_window (%s) must be at least intake.retry_max plus intake.ack_wait (%s): an event published again after an intake retry must still be recognized", c.Streams.Events.DuplicateWindow, c.Intake.RetryMax+c.Intake.AckWait)
	}
	if guard := min(24*time.Hour, c.Streams.Inbox.MaxAge.D()/10); guard < (c.Intake.RetryMax + c.Intake.AckWait).D() {
		bad("streams.inbox.max_age (%s): a tenth of it (at most 24h) must be at least intake.retry_max plus intake.ack_wait (%s): a notification intake keeps failing is quarantined in that last stretch, before the inbox drops it", c.Streams.Inbox.MaxAge, c.Intake.RetryMax+c.Intake.AckWait)
	}
	if c.Streams.Transactions.TTL < 0 {
		bad("streams.transactions.ttl: must not be negative (0 keeps entries forever)")
	}
	if c.Streams.Transactions.TTL > 0 && c.Streams.Transactions.TTL < c.Streams.Inbox.MaxAge {
		bad("streams.transactions.ttl (%s) must be 0 or at least streams.inbox.max_age (%s): a redelivered notification must still find its transaction", c.Streams.Transactions.TTL, c.Streams.Inbox.MaxAge)
	}
	reconciles := c.Reconcile.Interval > 0 && slices.ContainsFunc(c.ProjectNames(), func(name string) bool { p := c.Projects[name]; return p != nil && p.HasCredentials() })
	if looks := c.Reconcile.Window.D() + 24*time.Hour + c.Reconcile.Interval.D(); reconciles && c.Streams.Transactions.TTL > 0 && c.Streams.Transactions.TTL.D() <= looks {
		// A run looks back its window and to the start of that day: a
		// transaction whose entry expired while SenGo still lists it was
		// fed, confirmed and published again at every run.
		bad("streams.transactions.ttl (%s) must be 0 or more than reconcile.window plus a day plus reconcile.interval (%s): reconciliation takes a transaction whose entry expired for one the relay never saw, and publishes it again", c.Streams.Transactions.TTL, Duration(looks))
	}

	if c.Intake.Workers < 1 || c.Intake.Workers > 1024 {
		bad("intake.workers: %d is outside 1 to 1024", c.Intake.Workers)
	}
	if c.Intake.MaxAckPending < c.Intake.Workers {
		bad("intake.max_ack_pending: %d must be at least intake.workers", c.Intake.MaxAckPending)
	}
	if c.Intake.RetryInitial > c.Intake.RetryMax {
		bad("intake.retry_initial must not exceed intake.retry_max")
	}
	if c.Intake.ConfirmAttempts < 1 {
		bad("intake.confirm_attempts: must be at least 1")
	}
	if age := c.Streams.Reconciliations.MaxAge.D(); reconciles && c.Reconcile.CatchUp && age > 0 && age < 14*24*time.Hour {
		// Catching up reads the last periodic run's record: gone with it,
		// a stop longer than this looked back reconcile.window only, where
		// SenGo still listed a week.
		bad("streams.reconciliations.max_age (%s) must be 0 or at least 336h with reconcile.catch_up on: a run catching up after a stop reads the record of the last one", c.Streams.Reconciliations.MaxAge)
	}
	if c.Reconcile.Interval < 0 || c.Reconcile.Interval > 0 && c.Reconcile.Interval.D() < time.Minute {
		bad("reconcile.interval: 0 (off) or at least 1m")
	}
	if c.Reconcile.Window <= 0 || c.Reconcile.Window.D() > 7*24*time.Hour {
		bad("reconcile.window: must be positive and at most 168h (SenGo keeps 7 days)")
	}
	if c.Delivery.RetireRemovedAfter.D() < time.Second || c.Delivery.RetireRemovedAfter.D() > 24*time.Hour {
		bad("delivery.retire_removed_after: %s is outside 1s to 24h", c.Delivery.RetireRemovedAfter)
	}
	if c.Intake.AckWait.D() < 5*time.Second {
		bad("intake.ack_wait: %s is below 5s", c.Intake.AckWait)
	}
	if c.Intake.ConfirmTimeout < 0 || c.Intake.ConfirmTimeout > c.Intake.AckWait/3 {
		bad("intake.confirm_timeout (%s) must be 0 (the default) or positive and at most a third of intake.ack_wait (%s): the check, the writes after it and the settling share ack_wait", c.Intake.ConfirmTimeout, c.Intake.AckWait)
	} else if c.Intake.ConfirmTimeout.D() > sengo.CallTimeout {
		bad("intake.confirm_timeout (%s) is over %s, the longest the SenGo client waits for any answer", c.Intake.ConfirmTimeout, sengo.CallTimeout)
	}

	if len(c.Projects) == 0 {
		bad("projects: at least one project is required (in the file, or from the environment: SENGO_RELAY_PROJECTS_<NAME>_API_KEY, _TOKEN, …)")
	}
	keys := map[string]string{} // api_key to the first project using it
	for _, name := range c.ProjectNames() {
		p := c.Projects[name]
		at := "projects." + name
		if !event.ValidName(name) {
			bad("projects.%s: name must be lowercase letters, digits, '-' or '_', starting with a letter or digit", ShownKey(name))
			continue
		}
		if p == nil {
			bad("%s: empty project", at)
			continue
		}
		if p.CallbackToken.Set() && len(p.CallbackToken) < minCallbackToken {
			bad("%s.callback_token: must be at least %d characters", at, minCallbackToken)
		}
		if strings.ContainsAny(p.CallbackToken.Value(), "/?#% ") {
			bad("%s.callback_token: must be URL-safe (no '/', '?', '#', '%%' or spaces)", at)
		}
		if _, err := verify.ParseIPAllowlist(p.AllowedIPs); err != nil {
			bad("%s.allowed_ips: %v", at, err)
		}
		if p.Confirm != "" && p.Confirm != "true" && p.Confirm != "false" {
			bad("%s.confirm: %q is not true or false", at, p.Confirm)
		}
		if p.APIKey.Set() != p.Token.Set() {
			set, unset := "api_key", "token"
			if p.Token.Set() {
				set, unset = unset, set
			}
			bad("%s: %s is set but %s is not; they go together (a missing environment variable or secret file?), and without both nothing is confirmed or verified", at, set, unset)
		}
		if p.Confirm == "true" && !p.HasCredentials() {
			bad("%s.confirm: true needs api_key and token", at)
		}
		if p.RequireConfirmation && !p.Confirms() {
			bad("%s.require_confirmation: the project does not confirm (needs api_key and token, and confirm not false)", at)
		}
		if p.APIKey.Set() {
			if other, dup := keys[p.APIKey.Value()]; dup {
				bad("%s.api_key: the same as projects.%s.api_key; each project has its own credentials", at, other)
			} else {
				keys[p.APIKey.Value()] = name
			}
		}
		if u, err := url.Parse(p.APIBaseURL()); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || verify.CredentialsInPath(u) {
			bad("%s.base_url: not production or sandbox, and %s", at, badURL(p.BaseURL))
		} else if u.Scheme == "http" && p.HasCredentials() && !isLoopback(u.Hostname()) {
			bad("%s.base_url: http:// sends the api_key and token in the clear on every check (and lets anyone on the way forge signed callbacks); use https, or http to this machine only (the sandbox)", at)
		}
		switch p.SignatureMode() {
		case SignatureOff:
		case SignatureOptional, SignatureRequired:
			if !p.APIKey.Set() || !p.Token.Set() {
				bad("%s.signature: %q needs api_key and token", at, p.Signature)
			}
		default:
			bad("%s.signature: %q is not off, optional or required", at, p.Signature)
		}
	}
	if l := c.Metrics.Listen; l != "" {
		host, _, err := net.SplitHostPort(l)
		switch {
		case err != nil:
			bad("metrics.listen: %q is not host:port (empty turns it off)", l)
		case !isLoopback(host) && !c.Metrics.Token.Set():
			bad("metrics.listen: %q is not a loopback address; set metrics.token (or token_file) so only your Prometheus can read payment volumes", l)
		}
	}
	if c.Metrics.Token.Set() && len(c.Metrics.Token) < minCallbackToken {
		bad("metrics.token: must be at least %d characters", minCallbackToken)
	}
	c.validateEndpoints(bad)
	return errors.Join(errs...)
}

// SignatureMode is the effective signature mode (see Project.Signature).
func (p *Project) SignatureMode() string {
	if p.Signature != "" {
		return p.Signature
	}
	if p.APIKey.Set() && p.Token.Set() {
		return SignatureOptional
	}
	return SignatureOff
}

// ProjectNames returns the project names in sorted order.
func (c *Config) ProjectNames() []string {
	return sortedKeys(c.Projects)
}

// CallbackTokens are the projects' callback_tokens, by project (those
// that have one), for taking them out of SenGo's objects: SenGo echoes
// the callback URL, the token in it, in every callback and API answer.
func (c *Config) CallbackTokens() map[string]string {
	out := map[string]string{}
	for name, p := range c.Projects {
		if p != nil && p.CallbackToken.Set() {
			out[name] = p.CallbackToken.Value()
		}
	}
	return out
}

// Sync returns the JetStream fsync policy: an interval, or always.
func (e Embedded) Sync() (interval time.Duration, always bool, err error) {
	if e.SyncInterval == "always" {
		return 0, true, nil
	}
	d, err := time.ParseDuration(e.SyncInterval)
	if err != nil || d <= 0 {
		return 0, false, fmt.Errorf("%q is not a positive duration or \"always\"", e.SyncInterval)
	}
	return d, false, nil
}

// EmbeddedRelayUser is the embedded server's identity of the relay itself
// (full access); its password is generated and kept in the store dir.
const EmbeddedRelayUser = "sengo-relay"

var natsUser = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// badURL says why raw is not an http(s) URL without showing it: the
// mistake is often one character of a URL whose path, query or user is
// its secret (a webhook's token, an API's password). Only the scheme and
// host it was read as are named, the host as verify.RedactHost shows it.
func badURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || verify.CredentialsInPath(u) {
		return "does not parse as a URL (not shown: it may hold a secret; a password with '%', '/' or '#' in it must be percent-encoded)"
	}
	return fmt.Sprintf("is not an http(s) URL: read as scheme %q, host %q (the rest not shown: it may hold a secret)", u.Scheme, verify.RedactHost(u.Host))
}

// isLoopback reports whether host (from host:port) only accepts
// connections from this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// StoreDirOrDefault is where the embedded server keeps JetStream files.
func (c *Config) StoreDirOrDefault() string {
	if c.NATS.Embedded.StoreDir != "" {
		return c.NATS.Embedded.StoreDir
	}
	return strings.TrimRight(c.DataDir, "/") + "/jetstream"
}

// RedactableToken reports whether callback token s is made of characters
// neither JSON nor a URL escapes (letters, digits, - . _ ~ + =): SenGo
// echoes the callback URL in its objects, and the relay takes the token
// out of them by its text (verify.Redactor), which may miss a token of
// other characters carried escaped. Such a token is accepted (refused,
// it would stop a relay whose transactions' callback URLs hold it) and
// warned of at start.
func RedactableToken(s string) bool {
	for _, r := range []byte(s) {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.IndexByte("-._~+=", r) >= 0) {
			return false
		}
	}
	return true
}
