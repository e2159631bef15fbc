package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/receiver"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/verify"
)

// Config configures the admin API.
type Config struct {
	Token     string
	JetStream jetstream.JetStream
	// Readers are more connections for the reads one page makes at once
	// (a story's parts): the server answers a connection's direct gets one
	// after another, so parts whose blocks it must load from disk would
	// otherwise wait for each other. Optional.
	Readers []jetstream.JetStream
	// Projects are the configured project names: the only ones searched.
	Projects  []string
	Endpoints []dispatcher.Endpoint
	// Workers by endpoint name, for live status.
	Workers map[string]*dispatcher.Worker
	// Durable, when set, is the relay's group commit: a redriven
	// notification leaves quarantine only once its copy is durable.
	Durable receiver.Durability
	// Relay names this relay in the replay jobs it runs (the host name
	// and process id when empty).
	Relay string
	// ReadTimeout bounds the API's reads (transactions, events, dead
	// letters, replays, reconciliations) and each console page or action,
	// 10 s when zero. A request that reaches this or any other of the
	// server's own bounds is answered 503 read_timeout.
	ReadTimeout time.Duration
	// SecureCookie marks the console's session cookie Secure (sent over
	// HTTPS only): for a console behind a TLS-terminating proxy. Over TLS
	// to this listener itself the cookie is Secure anyway.
	SecureCookie bool
	// TrustedProxies are the peers whose X-Forwarded-For names the
	// client (admin.trusted_proxies): its right-most address not among
	// them is the one wrong tokens are paced by and audit lines name.
	// Empty: the peer that connected, whatever a request claims.
	TrustedProxies []netip.Prefix
	// Hosts are the names (and addresses) requests may name in their Host
	// header, any port; a request naming another is refused (421) before
	// anything else. Empty: any.
	Hosts  []string
	Logger zerolog.Logger
}

// defaultReadTimeout is Config.ReadTimeout when it is zero.
const defaultReadTimeout = 10 * time.Second

// readCtx is a request's context bounded by the read timeout.
func (s *Server) readCtx(c echo.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Request().Context(), s.cfg.ReadTimeout)
}

// Server is the admin API with the replay jobs it runs.
type Server struct {
	cfg     Config
	echo    *echo.Echo
	replays replays
	mu      sync.Mutex
	running map[string]int // the replay jobs this relay runs, by id (a job ending and its next run may overlap)
	// starting counts replay jobs being claimed, not yet running: each
	// holds a place under maxReplaysRunning.
	starting int
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
	next     atomic.Uint32 // the reader the next read takes
	opened   handles
	// guesses paces wrong admin tokens, the API's and the console's.
	guesses *guessLimiter
}

// reader is a connection for one of a page's concurrent reads, the
// configured ones in turn.
func (s *Server) reader() jetstream.JetStream {
	if len(s.cfg.Readers) == 0 {
		return s.cfg.JetStream
	}
	return s.cfg.Readers[int(s.next.Add(1))%len(s.cfg.Readers)]
}

// New returns the admin API. Every route needs "Authorization: Bearer <token>".
func New(cfg Config) *Server {
	if cfg.Relay == "" {
		host, _ := os.Hostname()
		cfg.Relay = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = defaultReadTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, echo: echo.New(), replays: replays{js: cfg.JetStream}, running: map[string]int{}, ctx: ctx, cancel: cancel,
		guesses: newGuessLimiter(cfg.Logger)}
	e := s.echo
	e.HideBanner, e.HidePort = true, true
	// Audit lines name, and wrong tokens are paced by, the peer that
	// connected, never an address a request claims for itself in
	// X-Forwarded-For or X-Real-IP; behind a trusted proxy, the client it
	// names.
	e.IPExtractor = receiver.IPExtractor(cfg.TrustedProxies)
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		status, body := http.StatusInternalServerError, errorMsg{Code: "internal_error", Message: "internal error"}
		var he *echo.HTTPError
		if errors.As(err, &he) {
			status, body = he.Code, errorMsg{Code: codeForStatus(he.Code), Message: http.StatusText(he.Code)}
			switch m := he.Message.(type) {
			case errorMsg:
				body = m
			case string:
				body.Message = m
			}
		} else if errors.Is(err, context.DeadlineExceeded) && c.Request().Context().Err() == nil {
			// Our own bound, not a client that left: a scan of a large
			// stream, or a store too slow to answer.
			status, body = http.StatusServiceUnavailable, errorMsg{Code: "read_timeout", Message: "the store did not answer in time: narrow the filter, or try again"}
			cfg.Logger.Warn().Err(err).Str("path", c.Path()).Msg("admin request timed out")
		} else {
			cfg.Logger.Error().Err(err).Str("path", c.Path()).Msg("admin request failed")
		}
		_ = c.JSON(status, map[string]any{"error": body})
	}
	e.Pre(servesHost(cfg.Hosts), boundBody)
	// Wrong bearer tokens spend the allowances of the console's sign-ins
	// (guessLimiter): an address out of attempts is answered 429 without
	// its token being compared. A right token, or none at all (a
	// browser's favicon), spends nothing.
	bearer := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			got, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
			if !ok {
				return echo.NewHTTPError(http.StatusUnauthorized, "bearer token required")
			}
			k, wait := s.guesses.begin(c.RealIP())
			if wait > 0 {
				return tooMany(c, wait)
			}
			if !verify.Token(cfg.Token, got) {
				s.guesses.wrong(k)
				return echo.NewHTTPError(http.StatusUnauthorized, "bearer token required")
			}
			s.guesses.right(k)
			return next(c)
		}
	}
	// Every route needs the token: the API's as a bearer token, the
	// console's through the session its sign-in set. Nothing else is served.
	a := e.Group("/admin", bearer)
	// Each route names the query parameters it takes; any other is
	// refused before the handler runs (see takes).
	route := func(method, path string, h echo.HandlerFunc, params ...string) {
		a.Add(method, path, h, takes(params...))
	}
	route(http.MethodGet, "/openapi.yaml", serveOpenAPI)
	route(http.MethodGet, "/transactions", s.transactions, listParams...)
	route(http.MethodGet, "/transactions/:project/:id", s.transaction)
	route(http.MethodGet, "/events", s.events, "project", "status", "product", "since", "until", "cursor", "limit")
	route(http.MethodGet, "/reconciliations", s.reconciliations, "project", "limit")
	route(http.MethodGet, "/endpoints", s.endpoints)
	route(http.MethodPost, "/endpoints/:name/pause", s.endpointPause)
	route(http.MethodPost, "/endpoints/:name/resume", s.endpointPause)
	route(http.MethodPost, "/endpoints/:name/test", s.endpointTest)
	route(http.MethodGet, "/dlq", s.dlqList, dlqListParams...)
	route(http.MethodGet, "/dlq/:seq", s.dlqShow)
	route(http.MethodPost, "/dlq/redrive", s.dlqRedrive, dlqActParams...)
	route(http.MethodDelete, "/dlq", s.dlqPurge, dlqActParams...)
	route(http.MethodGet, "/quarantine", s.quarantineList, quarantineParams...)
	route(http.MethodGet, "/quarantine/:seq", s.quarantineShow)
	route(http.MethodPost, "/quarantine/redrive", s.quarantineRedrive, quarantineActParams...)
	route(http.MethodDelete, "/quarantine", s.quarantinePurge, quarantineActParams...)
	route(http.MethodPost, "/replays", s.replayStart)
	route(http.MethodGet, "/replays", s.replayList)
	route(http.MethodGet, "/replays/:id", s.replayShow)
	s.mountConsole(e)
	e.RouteNotFound("/*", func(c echo.Context) error { return bearer(func(echo.Context) error { return echo.ErrNotFound })(c) })
	return s
}

// maxBody is the largest request body the admin listener reads: its JSON
// bodies and the console's forms are a few hundred bytes.
const maxBody = 64 << 10

// boundBody reads a request's body, at most maxBody, before any handler
// does; a larger one is answered 413 body_too_large. The console's
// sign-in needs no token and parsed its form with Go's defaults (10 MB
// urlencoded, 32 MB multipart in memory): a few concurrent posts held
// hundreds of megabytes. The listener's read timeout bounds a slow one.
func boundBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Body == nil || r.Body == http.NoBody {
			return next(c)
		}
		tooLarge := apiError(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body is over %d bytes", maxBody))
		if r.ContentLength > maxBody {
			return tooLarge
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		switch {
		case err != nil:
			return apiError(http.StatusBadRequest, "bad_body", "the body could not be read")
		case len(b) > maxBody:
			return tooLarge
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		return next(c)
	}
}

// errorMsg is the body of every admin error: a stable code and a message.
type errorMsg struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// apiError is an admin error with a stable code.
func apiError(status int, code, msg string) error {
	return &echo.HTTPError{Code: status, Message: errorMsg{Code: code, Message: msg}}
}

// takes refuses a request whose query holds a parameter other than names
// (unknown_parameter), one given empty or twice (empty_filter), or a
// query that does not parse (bad_query). A filter the route does not
// know must never be read as no filter: DELETE
// /admin/dlq?endpoint=orders&transaction_id=t1 (the filter is
// "transaction") purged every dead letter of orders. Go's query parser
// drops a pair it cannot read (a bad escape, a semicolon) as silently.
func takes(names ...string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := checkParams(c.Request().URL.RawQuery, names); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// checkParams is takes' check of a raw query.
func checkParams(raw string, names []string) error {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return apiError(http.StatusBadRequest, "bad_query", fmt.Sprintf("the query string cannot be read: %.80s", err))
	}
	return checkValues(q, names)
}

// checkValues refuses a name not among names (unknown_parameter) and a
// value given empty or twice (empty_filter): ?transaction= never means
// every transaction.
func checkValues(q url.Values, names []string) error {
	keys := slices.Sorted(maps.Keys(q)) // the same answer to the same query
	for _, name := range keys {
		if !slices.Contains(names, name) {
			return apiError(http.StatusBadRequest, "unknown_parameter", fmt.Sprintf("%.40q is not a parameter of this route", name))
		}
	}
	for _, name := range keys {
		if v := q[name]; len(v) != 1 || v[0] == "" {
			return apiError(http.StatusBadRequest, "empty_filter", name+" is empty or repeated: give one value, or leave it out")
		}
	}
	return nil
}

// checkAll refuses an all other than true or false (bad_all).
func checkAll(c echo.Context) error {
	if v := c.QueryParam("all"); v != "" && v != "true" && v != "false" {
		return apiError(http.StatusBadRequest, "bad_all", "all must be true or false")
	}
	return nil
}

// checkIDs bounds a transaction id (bad_id) and a merchantRef
// (bad_merchant_ref) by SenGo's own limits before they reach a filter,
// named as the route's parameters are.
func checkIDs(idName, id, ref string) error {
	if len(id) > sengo.MaxIDBytes {
		return apiError(http.StatusBadRequest, "bad_id", fmt.Sprintf("%s is longer than %d bytes", idName, sengo.MaxIDBytes))
	}
	if len(ref) > sengo.MaxMerchantRefBytes {
		return apiError(http.StatusBadRequest, "bad_merchant_ref", fmt.Sprintf("merchant_ref is longer than %d bytes", sengo.MaxMerchantRefBytes))
	}
	return nil
}

// codeForStatus is the code of an error that has no more specific one.
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	}
	return "http_" + strconv.Itoa(status)
}

// Handler is the HTTP handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Close stops the replay jobs this relay runs and waits for them (each is
// recorded as stopped); a stopped job resumes when the same request is
// posted again.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// endpointStatus is one row of GET /admin/endpoints.
type endpointStatus struct {
	Name          string `json:"name"`
	URL           string `json:"url"`
	Ordered       bool   `json:"ordered"`
	Pending       uint64 `json:"pending"`
	ReplayPending uint64 `json:"replayPending"`
	AckFloor      uint64 `json:"ackFloor"`
	dispatcher.BreakerState
	// Hold is an operator's hold (pause), apart from the breaker's.
	Hold dispatcher.HoldState `json:"hold"`
}

func (s *Server) endpoints(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 5*time.Second)
	defer cancel()
	out, err := s.endpointStatuses(ctx)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) endpointStatuses(ctx context.Context) ([]endpointStatus, error) {
	var out []endpointStatus
	for _, ep := range s.cfg.Endpoints {
		st := endpointStatus{Name: ep.Name, URL: redactURL(ep.URL), Ordered: ep.Ordered}
		if w := s.cfg.Workers[ep.Name]; w != nil {
			st.BreakerState, st.Hold = w.State(), w.Held()
			live, replay, floor, err := w.Pending(ctx)
			if err != nil {
				return nil, err
			}
			st.Pending, st.ReplayPending, st.AckFloor = live, replay, floor
		}
		out = append(out, st)
	}
	return out, nil
}

// worker is the worker of the endpoint named in the path.
func (s *Server) worker(c echo.Context) (*dispatcher.Worker, error) {
	w := s.cfg.Workers[c.Param("name")]
	if w == nil {
		return nil, apiError(http.StatusNotFound, "unknown_endpoint", "no endpoint of that name runs here")
	}
	return w, nil
}

// endpointPause holds (…/pause) or releases (…/resume) an endpoint's
// deliveries on every relay instance.
func (s *Server) endpointPause(c echo.Context) error {
	if _, err := s.worker(c); err != nil {
		return err
	}
	name := c.Param("name")
	var err error
	pause := strings.HasSuffix(c.Path(), "/pause")
	if pause {
		err = dispatcher.Hold(c.Request().Context(), s.cfg.JetStream, name, "admin API")
	} else {
		err = dispatcher.Release(c.Request().Context(), s.cfg.JetStream, name)
	}
	s.auditAPI(c, map[bool]string{true: "pause", false: "resume"}[pause], "", 1, err)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"endpoint": name, "held": pause})
}

// endpointTest sends one signed test event to the endpoint.
func (s *Server) endpointTest(c echo.Context) error {
	w, err := s.worker(c)
	if err != nil {
		return err
	}
	res := w.TestSend(c.Request().Context())
	var failed error
	if !res.OK {
		failed = errTestSendFailed
	}
	s.auditAPI(c, "test send", "", 1, failed)
	return c.JSON(http.StatusOK, res)
}

// errTestSendFailed marks, in its audit line, a test send the endpoint
// did not accept.
var errTestSendFailed = errors.New("the endpoint did not accept the test event")

// auditAPI writes the audit line of an admin API action: who (the admin
// token's holder, known by the address that connected), what, on what
// (the route's name parameter and the query, URL-encoded and bounded), how
// many it touched, and how it failed. target, when given, goes before
// the query.
func (s *Server) auditAPI(c echo.Context, action, target string, n int, err error) {
	ev := s.cfg.Logger.Info()
	if err != nil {
		ev = s.cfg.Logger.Warn().Str("error", auditText(err.Error()))
	}
	if target == "" {
		target = c.Param("name")
	}
	if q := c.QueryParams().Encode(); q != "" {
		if target != "" {
			target += " "
		}
		target += q
	}
	ev.Bool("audit", true).Str("who", "admin API@"+c.RealIP()).Str("action", action).Str("target", auditText(target)).Int("count", n).Msg("admin action")
}

// maxAuditTarget bounds the target and the error of an audit line, in
// bytes: both may repeat what the operator's request sent.
const maxAuditTarget = 256

// auditText is s cut to maxAuditTarget bytes (marked "…"), valid UTF-8.
func auditText(s string) string {
	if len(s) > maxAuditTarget {
		s = s[:maxAuditTarget] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// redactURL drops credentials, the query and the fragment (which may hold
// a token), and every path segment after the first: a URL that is its own
// credential (https://hooks.example/services/T0/B0/secret) shows only
// https://hooks.example/services/….
func redactURL(raw string) string { return dispatcher.RedactURL(raw) }

// dlqFilters are the query parameters that select dead letters.
var dlqFilters = []string{"endpoint", "transaction", "merchant_ref", "since", "until", "seq"}

// dlqListParams are what GET /admin/dlq takes: the filters and a page.
var dlqListParams = append(slices.Clip(dlqFilters), "limit", "cursor")

// dlqActParams are what a redrive or a purge of dead letters takes: the
// filters, or all. Not limit: a purge of "limit=1" would have purged
// every one selected.
var dlqActParams = append(slices.Clip(dlqFilters), "all")

// maxDLQAnswer bounds the dead letters of one page of GET /admin/dlq, in
// stored bytes (each carries its event whole).
const maxDLQAnswer = 8 << 20

// maxDLQLimit bounds a page of GET /admin/dlq (and is its default).
const maxDLQLimit = dispatcher.DLQPage

// dlqFilter reads the dead-letter filters of the query, which takes has
// checked for unknown, empty and repeated parameters.
func dlqFilter(c echo.Context) (dispatcher.DLQFilter, error) {
	if err := checkAll(c); err != nil {
		return dispatcher.DLQFilter{}, err
	}
	f := dispatcher.DLQFilter{
		Endpoint:      c.QueryParam("endpoint"),
		TransactionID: c.QueryParam("transaction"),
		MerchantRef:   c.QueryParam("merchant_ref"),
	}
	if err := checkIDs("transaction", f.TransactionID, f.MerchantRef); err != nil {
		return f, err
	}
	// The name becomes a subject token: a wildcard ("*", ">") or a dot
	// would select other endpoints' dead letters, for a purge too. An
	// endpoint no longer configured keeps its dead letters, so any valid
	// name is taken.
	if f.Endpoint != "" && !event.ValidName(f.Endpoint) {
		return f, apiError(http.StatusBadRequest, "bad_endpoint", "endpoint must be an endpoint name: 1 to 63 of a-z, 0-9, _ and -")
	}
	var err error
	if f.Since, err = ParseTime(c.QueryParam("since"), time.Now()); err != nil {
		return f, apiError(http.StatusBadRequest, "bad_time", "since: "+err.Error())
	}
	if f.Until, err = ParseTime(c.QueryParam("until"), time.Now()); err != nil {
		return f, apiError(http.StatusBadRequest, "bad_time", "until: "+err.Error())
	}
	if v := c.QueryParam("seq"); v != "" {
		// 0 would mean no seq at all: a purge of ?seq=0 would take every
		// dead letter without all=true.
		if f.Seq, err = strconv.ParseUint(v, 10, 64); err != nil || f.Seq == 0 {
			return f, apiError(http.StatusBadRequest, "bad_seq", "seq must be a positive integer")
		}
	}
	return f, nil
}

func (s *Server) dlqList(c echo.Context) error {
	f, err := dlqFilter(c)
	if err != nil {
		return err
	}
	limit := maxDLQLimit
	if v := c.QueryParam("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxDLQLimit {
			return apiError(http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit must be 1 to %d", maxDLQLimit))
		}
	}
	if v := c.QueryParam("cursor"); v != "" {
		if f.After, err = strconv.ParseUint(v, 10, 64); err != nil || f.After == 0 {
			return apiError(http.StatusBadRequest, "bad_cursor", "cursor is not one this API returned")
		}
	}
	f.Limit = limit + 1 // one more tells whether a next page exists
	f.MaxBytes = maxDLQAnswer
	// Bounded in time: a filter by merchant_ref, or one that matches
	// nothing, reads every dead letter stored.
	ctx, cancel := s.readCtx(c)
	defer cancel()
	entries, err := dispatcher.ListDLQ(ctx, s.cfg.JetStream, f)
	if err != nil {
		return err
	}
	if len(entries) > limit || f.Full(entries) {
		// The body stays an array, as before pages; the next page is named
		// in headers (RFC 8288's Link, and the cursor alone). A page that
		// reached maxDLQAnswer ends early (the next may then be empty).
		entries = entries[:min(limit, len(entries))]
		next := strconv.FormatUint(entries[len(entries)-1].Seq, 10)
		q := c.QueryParams()
		q.Set("cursor", next)
		// The same window: a relative since or until ("24h") read again
		// later would have moved, and skipped what was stored between.
		for param, t := range map[string]time.Time{"since": f.Since, "until": f.Until} {
			if q.Has(param) {
				q.Set(param, t.UTC().Format(time.RFC3339Nano))
			}
		}
		c.Response().Header().Set(HeaderNextCursor, next)
		c.Response().Header().Set("Link", "</admin/dlq?"+q.Encode()+`>; rel="next"`)
	}
	if entries == nil {
		entries = []dispatcher.DLQEntry{}
	}
	return c.JSON(http.StatusOK, entries)
}

// HeaderNextCursor names, on a page of dead letters that is not the last,
// the cursor of the next page.
const HeaderNextCursor = "Sengo-Next-Cursor"

func (s *Server) dlqShow(c echo.Context) error {
	seq, err := strconv.ParseUint(c.Param("seq"), 10, 64)
	if err != nil || seq == 0 {
		return apiError(http.StatusBadRequest, "bad_seq", "seq must be a positive integer")
	}
	entries, err := dispatcher.ListDLQ(c.Request().Context(), s.cfg.JetStream, dispatcher.DLQFilter{Seq: seq})
	if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && len(entries) == 0 {
		return echo.NewHTTPError(http.StatusNotFound, "no such dead letter")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, entries[0])
}

// dlqRedrive redrives the dead letters selected by the query (or ?seq=N).
func (s *Server) dlqRedrive(c echo.Context) error {
	if err := needsFilter(c, "redrive_needs_filter", "select dead letters with a filter, or all=true to redrive every one"); err != nil {
		return err
	}
	n, err := s.eachSelected(c, dispatcher.Redrive)
	s.auditAPI(c, "redrive dead letters", "", n, err)
	return s.acted(c, "redriven", n, err)
}

// dlqPurge deletes the dead letters selected by the query. An empty
// query is refused: purging everything takes ?all=true.
func (s *Server) dlqPurge(c echo.Context) error {
	if err := needsFilter(c, "purge_needs_filter", "select dead letters with a filter, or all=true to purge every one"); err != nil {
		return err
	}
	n, err := s.eachSelected(c, dispatcher.Purge)
	s.auditAPI(c, "purge dead letters", "", n, err)
	return s.acted(c, "purged", n, err)
}

// acted answers an action on what it selected: its count (field: redriven
// or purged) when it finished; when the store failed part way, 503
// action_incomplete with the count done, so that an operator can tell
// nothing from some (the error alone read as a read to narrow, or an
// internal error). A refusal before anything was done is answered as is.
func (s *Server) acted(c echo.Context, field string, n int, err error) error {
	if err == nil {
		return c.JSON(http.StatusOK, map[string]int{field: n})
	}
	if _, refused := errors.AsType[*echo.HTTPError](err); refused {
		return err
	}
	s.cfg.Logger.Error().Err(err).Str("path", c.Path()).Int(field, n).Msg("admin action stopped part way")
	return c.JSON(http.StatusServiceUnavailable, map[string]any{field: n, "error": errorMsg{Code: "action_incomplete", Message: incomplete(n)}})
}

// incomplete says what an action that stopped part way did, and what to
// do about it (the store's error is in the log).
func incomplete(n int) string {
	return fmt.Sprintf("stopped part way: %d done before the store failed; run it again to finish: what is done is not done twice", n)
}

// needsFilter refuses, with code, an action on dead letters that names
// none: every one takes all=true. It also refuses bad and repeated filters.
func needsFilter(c echo.Context, code, msg string) error {
	if _, err := dlqFilter(c); err != nil {
		return err
	}
	for _, name := range dlqFilters {
		if c.QueryParam(name) != "" {
			return nil
		}
	}
	if c.QueryParam("all") != "true" {
		return apiError(http.StatusBadRequest, code, msg)
	}
	return nil
}

// eachSelected applies act to the dead letters the query selects, a page
// at a time, and counts what it touched.
func (s *Server) eachSelected(c echo.Context, act func(context.Context, jetstream.JetStream, []dispatcher.DLQEntry) (int, error)) (int, error) {
	f, err := dlqFilter(c)
	if err != nil {
		return 0, err
	}
	ctx := c.Request().Context()
	n := 0
	err = dispatcher.EachDLQPage(ctx, s.cfg.JetStream, f, 0, func(page []dispatcher.DLQEntry) error {
		k, err := act(ctx, s.cfg.JetStream, page)
		n += k
		return err
	})
	return n, err
}

// decodeJSON reads the request body as one JSON object into v: 415
// unsupported_media_type unless the body is declared application/json (a
// form posted by curl -d is not silently read as empty), 400 bad_body for
// malformed JSON or an unknown field.
func decodeJSON(c echo.Context, v any) error {
	mt, _, err := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType))
	if err != nil || mt != echo.MIMEApplicationJSON {
		return apiError(http.StatusUnsupportedMediaType, "unsupported_media_type", "the body must be JSON, sent with Content-Type: application/json")
	}
	dec := json.NewDecoder(c.Request().Body) // boundBody read it, at most maxBody
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apiError(http.StatusBadRequest, "bad_body", "the body is not the expected JSON object: "+err.Error())
	}
	return nil
}

// ErrUnknownEndpoint is a replay for an endpoint the configuration lacks.
var ErrUnknownEndpoint = errors.New("no endpoint")

// ReplayInput is a replay as the CLI, the API and the console take it.
type ReplayInput struct {
	// Endpoints are names (one or several); All is every configured one.
	Endpoints []string
	All       bool
	// Since and Until are RFC 3339 or a duration back from now ("24h").
	Since, Until string
	Statuses     []string
	// Project, Transaction and MerchantRef narrow what is selected.
	Project, Transaction, MerchantRef string
	DryRun                            bool
}

// ReplayRequest builds a replay request from user input: endpoints of
// eps, a project of projects.
func ReplayRequest(eps []dispatcher.Endpoint, projects []string, in ReplayInput, now time.Time) (dispatcher.ReplayRequest, error) {
	var r dispatcher.ReplayRequest
	since, until := in.Since, in.Until
	switch {
	case in.All && len(in.Endpoints) > 0:
		return r, errors.New("give an endpoint or all, not both")
	case in.All:
		for _, e := range eps {
			r.Endpoints = append(r.Endpoints, e.Name)
		}
	case len(in.Endpoints) > 0:
		for _, endpoint := range in.Endpoints {
			if !slices.ContainsFunc(eps, func(e dispatcher.Endpoint) bool { return e.Name == endpoint }) {
				names := make([]string, len(eps))
				for i, e := range eps {
					names[i] = e.Name
				}
				return r, fmt.Errorf("%w %.80q (configured: %s)", ErrUnknownEndpoint, endpoint, strings.Join(names, ", "))
			}
			if !slices.Contains(r.Endpoints, endpoint) {
				r.Endpoints = append(r.Endpoints, endpoint)
			}
		}
	default:
		return r, errors.New("an endpoint or all is required")
	}
	if len(r.Endpoints) == 0 {
		return r, errors.New("no endpoint is configured")
	}
	if in.Project != "" && !slices.Contains(projects, in.Project) {
		return r, fmt.Errorf("no project %.80q (configured: %s)", in.Project, strings.Join(projects, ", "))
	}
	r.Project = in.Project
	statuses, tx, ref, dry := in.Statuses, in.Transaction, in.MerchantRef, in.DryRun
	var err error
	if since == "" {
		return r, errors.New("since is required")
	}
	if r.Since, err = ParseTime(since, now); err != nil {
		return r, errors.New("since: " + err.Error())
	}
	if r.Until, err = ParseTime(until, now); err != nil {
		return r, errors.New("until: " + err.Error())
	}
	if r.Until.IsZero() || r.Until.After(now) {
		// An absolute window: the job's identity must not move with the
		// clock. A run ends where it starts (dispatcher.Replay), so an
		// until later than now named a window no run kept, and a later
		// run of the same job queued what live traffic stored meanwhile.
		r.Until = now
	}
	if !r.Until.After(r.Since) {
		return r, errors.New("until must be after since")
	}
	for _, st := range statuses {
		s, err := event.ParseStatus(st)
		if err != nil {
			return r, err
		}
		r.Statuses = append(r.Statuses, s)
	}
	if err := checkIDs("transaction", tx, ref); err != nil { // bounded before they reach a job's filter
		return r, err
	}
	r.TransactionID, r.MerchantRef, r.DryRun = tx, ref, dry
	return r, nil
}

// ParseTime reads RFC 3339 or a duration back from now; "" is the zero time.
// The zero time written out (0001-01-01T00:00:00Z, what a Go client sends
// for a time it never set) is refused: read as no bound, it made a purge
// "until year 1" take every dead letter.
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := config.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errors.New("want RFC 3339 (2025-03-23T10:00:00+07:00) or a duration back from now (24h, 30d)")
	}
	if t.IsZero() {
		return time.Time{}, errors.New("0001-01-01T00:00:00Z is the zero time (a time never set), not a bound; leave it out")
	}
	return t, nil
}

// quarantineParams are the query parameters that select quarantined
// notifications.
var quarantineParams = []string{"project", "transaction", "seq"}

// quarantineActParams are what a redrive or a purge of quarantined
// notifications takes: the filters, or all.
var quarantineActParams = append(slices.Clip(quarantineParams), "all")

// quarantineFilter reads ?project=&transaction=&seq= (takes has checked
// that each is given once, not empty) and refuses a bad all.
func quarantineFilter(c echo.Context) (receiver.QuarantineFilter, error) {
	if err := checkAll(c); err != nil {
		return receiver.QuarantineFilter{}, err
	}
	f := receiver.QuarantineFilter{Project: c.QueryParam("project"), TransactionID: c.QueryParam("transaction")}
	if err := checkIDs("transaction", f.TransactionID, ""); err != nil {
		return f, err
	}
	if f.Project != "" && !event.ValidName(f.Project) { // a subject token: no wildcard, no dot
		return f, apiError(http.StatusBadRequest, "unknown_project", "project must be a project name: 1 to 63 of a-z, 0-9, _ and -")
	}
	if v := c.QueryParam("seq"); v != "" {
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil || seq == 0 {
			return f, apiError(http.StatusBadRequest, "bad_seq", "seq must be a positive integer")
		}
		f.Seq = seq
	}
	return f, nil
}

// quarantineList answers the quarantined notifications f selects, each
// body an excerpt, the newest within maxQuarantineAnswer: written as
// listQuarantine encoded them, never built again in one buffer.
func (s *Server) quarantineList(c echo.Context) error {
	f, err := quarantineFilter(c)
	if err != nil {
		return err
	}
	// Bounded in time: a project's quarantine is read to its 10,000th.
	ctx, cancel := s.readCtx(c)
	defer cancel()
	kept, left, err := s.listQuarantine(ctx, f)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	if left > 0 {
		h.Set(HeaderLeftOut, strconv.Itoa(left))
	}
	w := c.Response()
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte{'['})
	for i, it := range kept {
		if i > 0 {
			_, _ = w.Write([]byte{','})
		}
		_, _ = w.Write(it.json) // a client gone is no error of ours
	}
	_, _ = w.Write([]byte("]\n"))
	return nil
}

func (s *Server) quarantineShow(c echo.Context) error {
	seq, err := strconv.ParseUint(c.Param("seq"), 10, 64)
	if err != nil || seq == 0 {
		return apiError(http.StatusBadRequest, "bad_seq", "seq must be a positive integer")
	}
	entries, err := receiver.ListQuarantine(c.Request().Context(), s.cfg.JetStream, receiver.QuarantineFilter{Seq: seq})
	if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && len(entries) == 0 {
		return apiError(http.StatusNotFound, "not_found", fmt.Sprintf("no quarantined notification %d", seq))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, entries[0])
}

// quarantineRedrive puts the selected quarantined notifications back into
// the inbox; with no filter it takes all=true.
func (s *Server) quarantineRedrive(c echo.Context) error {
	f, err := quarantineFilter(c)
	if err != nil {
		return err
	}
	if f == (receiver.QuarantineFilter{}) && c.QueryParam("all") != "true" {
		return apiError(http.StatusBadRequest, "redrive_needs_filter", "select notifications with project, transaction or seq, or all=true")
	}
	ctx := c.Request().Context()
	n, _, err := receiver.EachQuarantinedBatch(ctx, s.cfg.JetStream, f, func(batch []receiver.QuarantineEntry) (int, error) {
		return receiver.RedriveQuarantine(ctx, s.cfg.JetStream, batch, s.cfg.Durable)
	})
	s.auditAPI(c, "redrive quarantined", "", n, err)
	return s.acted(c, "redriven", n, err)
}

// quarantinePurge deletes the selected quarantined notifications; with no
// filter it takes all=true.
func (s *Server) quarantinePurge(c echo.Context) error {
	f, err := quarantineFilter(c)
	if err != nil {
		return err
	}
	if f == (receiver.QuarantineFilter{}) && c.QueryParam("all") != "true" {
		return apiError(http.StatusBadRequest, "purge_needs_filter", "select notifications with project, transaction or seq, or all=true to purge every one")
	}
	ctx := c.Request().Context()
	n, _, err := receiver.EachQuarantinedBatch(ctx, s.cfg.JetStream, f, func(batch []receiver.QuarantineEntry) (int, error) {
		return receiver.PurgeQuarantine(ctx, s.cfg.JetStream, batch)
	})
	s.auditAPI(c, "purge quarantined", "", n, err)
	return s.acted(c, "purged", n, err)
}

// servesHost refuses (421) a request whose Host header names none of
// hosts (any port; nil: any host). A page whose name an attacker rebinds
// to the listener's address (DNS rebinding) is same-origin to itself:
// without this its requests passed the cross-site checks and spent the
// operator's own address's sign-in attempts.
func servesHost(hosts []string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if len(hosts) == 0 || verify.HostIn(c.Request().Host, hosts) {
				return next(c)
			}
			return echo.NewHTTPError(http.StatusMisdirectedRequest, errorMsg{Code: "host_not_allowed", Message: "this listener does not serve that host name (admin.hosts)"})
		}
	}
}
