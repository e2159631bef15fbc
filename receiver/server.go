package receiver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/sengo-relay/sengo-relay/verify"
)

// SignatureMode says when X-Signature is checked.
type SignatureMode int

// What became of a callback's X-Signature, in its inbox message's
// event.HeaderSignature.
const (
	SignatureVerified   = "verified"
	SignatureAbsent     = "absent"
	SignatureNotChecked = "not_checked"
)

const (
	// SignatureOff ignores X-Signature.
	SignatureOff SignatureMode = iota
	// SignatureOptional verifies X-Signature when present.
	SignatureOptional
	// SignatureRequired rejects callbacks without a valid X-Signature.
	SignatureRequired
)

// Project is one SenGo project as the receiver needs it.
type Project struct {
	Name          string
	APIKey        string
	Token         string
	CallbackToken string // empty: no path token
	AllowedIPs    verify.IPAllowlist
	Signature     SignatureMode
}

// Config configures the HTTP application.
type Config struct {
	Projects  []Project
	JetStream jetstream.JetStream
	// Durable is waited on after each PubAck and before the 200: nil when
	// the PubAck itself means durable (nats-server fsyncing every write, or
	// a cluster).
	Durable      Durability
	MaxBodyBytes int64
	// MaxInFlight caps callbacks handled at once; beyond it the answer is
	// 503 overloaded with Retry-After (SenGo may retry). 0: no cap.
	MaxInFlight    int
	PublishTimeout time.Duration
	RetryAfter     time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Ready reports whether the relay can store callbacks (JetStream
	// reachable, streams provisioned). It must return within its context.
	// Its answer is shared by the /readyz requests at once and reused for
	// a second (readiness).
	Ready func(context.Context) error
	// ReadyNow is the part of readiness that costs nothing (the
	// connections' state), asked on every /readyz before Ready, so that an
	// outage shows at once.
	ReadyNow func() error
	// Accepting reports whether a callback may be stored now: nil once the
	// streams are provisioned as configured. Before that (at start, or a
	// refusal being retried) the inbox may not be what the configuration
	// says (in memory, one copy where three are asked), and a callback is
	// refused with 503 store_unavailable. Nil: always.
	Accepting func() error
	// Live reports whether the process can still do its work at all; an
	// error makes /healthz answer 503 so an orchestrator restarts it (for
	// example a NATS connection closed for good). Nil: always live.
	Live     func() error
	Metrics  *Metrics
	Gatherer prometheus.Gatherer
	Logger   zerolog.Logger
	// Now returns the acceptance time stamped on notifications; time.Now when nil.
	Now func() time.Time
}

// Durability makes writes the store acknowledged durable
// (stream.GroupSync). Sync blocks until every write acknowledged before
// the call is on disk, or ctx ends; it is safe for concurrent use, and an
// error means those writes may not survive a power loss.
type Durability interface {
	Sync(ctx context.Context) error
}

// HeaderRoom is what a notification's headers may take beside its body
// in a store message: the inbox's (project, source, request id, trace),
// and its quarantine copy's (the reason, SenGo's own object of up to
// 16 KiB).
const HeaderRoom = 64 << 10

// CheckBodyLimit refuses a body limit (http.max_body_bytes) that leaves the
// headers no room within the store's max_payload: a callback near it could
// not be stored (503 at each of SenGo's tries), or, stored, not quarantined
// (retried until the inbox dropped it).
func CheckBodyLimit(maxBody, maxPayload int64) error {
	if maxBody+HeaderRoom > maxPayload {
		return fmt.Errorf("http.max_body_bytes: %d leaves no room for a notification's headers within the store's max_payload (%d bytes): set it to at most %d", maxBody, maxPayload, maxPayload-HeaderRoom)
	}
	return nil
}

// New returns the Echo application: the callback routes, /healthz,
// /readyz and /metrics.
func New(cfg Config) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(cfg.RetryAfter)
	e.IPExtractor = IPExtractor(cfg.TrustedProxies)
	e.Logger.SetOutput(zerologWriter{cfg.Logger})

	h := newCallbackHandler(cfg)
	known := projectNames(h.projects)
	e.Use(plainRequestID, middleware.RequestID())
	e.Use(requestLogger(cfg.Logger, known))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		cfg.Logger.Error().Err(err).Str("request_id", c.Response().Header().Get(echo.HeaderXRequestID)).Bytes("stack", stack).Msg("panic in handler")
		return err
	}}))

	e.POST("/callbacks/sengo/:project", h.serve, traced(known))
	e.POST("/callbacks/sengo/:project/:token", h.serve, traced(known))
	// OPTIONS is refused like every method but POST, as documented: Echo
	// answered it 204 with the route's methods.
	notAllowed := func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderAllow, http.MethodPost)
		return echo.ErrMethodNotAllowed
	}
	e.OPTIONS("/callbacks/sengo/:project", notAllowed)
	e.OPTIONS("/callbacks/sengo/:project/:token", notAllowed)
	// A segment after the callback token is no callback route, whatever
	// the method: Echo took the rest of the path for the token (a POST was
	// answered 401) or answered 405 for the route it half matched.
	e.Any("/callbacks/sengo/:project/:token/*", func(echo.Context) error { return echo.ErrNotFound })

	e.GET("/healthz", func(c echo.Context) error {
		if cfg.Live != nil {
			if err := cfg.Live(); err != nil {
				cfg.Logger.Error().Err(err).Msg("not live")
				return ErrNotLive
			}
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	ready := &readiness{check: cfg.Ready}
	e.GET("/readyz", func(c echo.Context) error {
		if cfg.ReadyNow != nil {
			if err := cfg.ReadyNow(); err != nil {
				cfg.Logger.Warn().Err(err).Msg("not ready")
				return ErrNotReady
			}
		}
		if cfg.Ready != nil {
			if err := ready.get(c.Request().Context()); err != nil {
				cfg.Logger.Warn().Err(err).Msg("not ready")
				return ErrNotReady
			}
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
	if cfg.Gatherer != nil {
		e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))
	}
	return e
}

// plainRequestID drops a caller's X-Request-Id unless it is 1 to 64 of
// [A-Za-z0-9._:-], so that RequestID generates one instead: the id is
// echoed in the response and written to every log line of the request and
// to the inbox message.
func plainRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header
		if rid := h.Get(echo.HeaderXRequestID); rid != "" && !plainToken(rid) {
			h.Del(echo.HeaderXRequestID)
		}
		return next(c)
	}
}

func plainToken(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range []byte(s) {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == ':' || r == '-') {
			return false
		}
	}
	return true
}

// IPExtractor finds the caller's address: the TCP peer, or with trusted
// proxies the right-most untrusted X-Forwarded-For entry (Echo's logic).
// The admin listener finds its clients' so too.
func IPExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// requestLogger writes one line per request. The path is redacted: a
// callback token in it never reaches the log, nor does one sent where the
// project goes (a callback URL configured without its project).
func requestLogger(log zerolog.Logger, known projectNames) echo.MiddlewareFunc {
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogStatus: true, LogLatency: true, LogMethod: true, LogURIPath: true,
		LogRequestID: true, LogRemoteIP: true, LogError: true, HandleError: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			lvl := zerolog.DebugLevel
			switch {
			case v.Status >= 500:
				lvl = zerolog.WarnLevel
			case v.Status >= 400:
				lvl = zerolog.InfoLevel
			}
			if strings.HasPrefix(v.URIPath, "/callbacks/") && v.Status < 400 {
				lvl = zerolog.InfoLevel
			}
			ev := log.WithLevel(lvl).
				Str("request_id", v.RequestID).
				Str("method", loggedMethod(v.Method)).
				Str("path", boundedText(redactPath(v.URIPath, known), maxLoggedPath)).
				Int("http_status", v.Status).
				Stringer("latency", v.Latency).
				Str("remote_ip", v.RemoteIP)
			if p := c.Param("project"); p != "" {
				ev = ev.Str("project", known.label(p))
			}
			if v.Error != nil {
				_, code := classify(v.Error)
				ev = ev.Str("code", code).Err(v.Error)
			}
			ev.Msg("http request")
			return nil
		},
	})
}

// loggedMethod is a request's method as its log line shows it: one of
// HTTP's, or "other" (Go's server takes any method of token characters up
// to its header limit, 32 KiB of any caller's text).
func loggedMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "other"
}

// maxLoggedPath bounds the path a request's log line shows, in bytes.
const maxLoggedPath = 256

// boundedText is s cut to at most n bytes (marked "…") and valid UTF-8.
func boundedText(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// redactPath removes everything after the project segment of a callback
// path (where a callback token would be), and the project segment itself
// unless it names a configured project; of any other path it keeps only a
// first segment that reads as a word. Logs never hold a token.
func redactPath(p string, known projectNames) string {
	const prefix = "/callbacks/sengo/"
	if !strings.HasPrefix(p, prefix) {
		return verify.RedactPath(p) // a wrong callback URL's token may be anywhere in it
	}
	project, _, more := strings.Cut(p[len(prefix):], "/")
	if _, ok := known[project]; !ok {
		project = "[unknown]"
	}
	if more {
		return prefix + project + "/[redacted]"
	}
	return prefix + project
}

// projectNames are the configured projects, by name (the callback
// handler's).
type projectNames map[string]*Project

// label is the project's name for logs and traces: a configured one's,
// or "unknown" (any caller's text, or a callback token sent where the
// project goes).
func (k projectNames) label(name string) string {
	if _, ok := k[name]; ok {
		return name
	}
	return "unknown"
}

// zerologWriter routes Echo's own logger (rarely used) to zerolog.
type zerologWriter struct{ l zerolog.Logger }

func (w zerologWriter) Write(p []byte) (int, error) {
	w.l.Warn().Str("component", "echo").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// readyFor is how long a readiness answer is reused.
const readyFor = time.Second

// readiness runs the Ready check at most once per readyFor, its answer
// shared by every /readyz meanwhile: the route answers anyone who reaches
// the public listener, and each check costs the store about 14 requests
// on the connection intake and delivery use, so a flood of them slowed
// both.
type readiness struct {
	check func(context.Context) error
	group singleflight.Group
	mu    sync.Mutex
	at    time.Time // of the last answer
	err   error     // the last answer
}

func (r *readiness) get(ctx context.Context) error {
	r.mu.Lock()
	if time.Since(r.at) < readyFor { // never, before the first answer
		err := r.err
		r.mu.Unlock()
		return err
	}
	r.mu.Unlock()
	ch := r.group.DoChan("ready", func() (any, error) {
		// Not the first caller's context: its going away must not fail
		// the others' answer.
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		err := r.check(c)
		r.mu.Lock()
		r.at, r.err = time.Now(), err
		r.mu.Unlock()
		return nil, err
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}
