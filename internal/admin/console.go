package admin

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/receiver"
	"github.com/sengo-relay/sengo-relay/stream"
	"github.com/sengo-relay/sengo-relay/verify"
)

//go:embed console
var consoleFS embed.FS

const (
	sessionCookie = "sengo_console"
	sessionTTL    = 12 * time.Hour
	csrfField     = "_csrf"
	csrfHeader    = "X-CSRF-Token"
)

// wib is Western Indonesia Time, the zone the console prints.
var wib = time.FixedZone("WIB", 7*3600)

// session is one signed-in browser.
type session struct {
	csrf    string
	expires time.Time
	who     string // for audit lines: a short hash of the session id, the address
}

// BucketSessions keeps the console's sign-ins in JetStream, so that every
// relay behind one address knows them and a restart signs no one out.
// It holds an HMAC of each session id under the admin token with its
// expiry and the audit name, never the id or its CSRF token (derived from
// the id): reading the store signs no one in, writing it neither without
// the admin token, and a new admin token ends every session.
const BucketSessions = "SENGO_CONSOLE_SESSIONS"

// SessionsBucket is the bucket the relay provisions for the console.
func SessionsBucket() stream.BucketSpec {
	return stream.BucketSpec{Name: BucketSessions, Description: "console sign-ins: hashes of session ids", TTL: sessionTTL, History: 1, MaxBytes: maxSessionBytes}
}

// maxSessionBytes bounds the sign-ins kept (some 60,000: sign-ins need the
// admin token and are rate-limited, and each lives sessionTTL).
const maxSessionBytes = 16 << 20

type sessionRecord struct {
	Expires time.Time `json:"expires"`
	Who     string    `json:"who"`
}

// sessions are the console's sign-ins in BucketSessions.
type sessions struct {
	js jetstream.JetStream
	// secret keys the store's keys and the CSRF tokens: the admin token,
	// so that writing the bucket signs no one in without it, and a new
	// token ends every session at once.
	secret []byte
	mu     sync.Mutex
	kv     jetstream.KeyValue
}

func (ss *sessions) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.kv == nil {
		kv, err := ss.js.KeyValue(ctx, BucketSessions)
		if err != nil {
			return nil, fmt.Errorf("console sessions: %w", err)
		}
		ss.kv = kv
	}
	return ss.kv, nil
}

// key is the store's key for a session id: its HMAC under the secret.
func (ss *sessions) key(id string) string {
	return hex.EncodeToString(ss.mac("session\x00" + id))
}

// csrfOf is the session's CSRF token, derived from its id so that it is
// never stored.
func (ss *sessions) csrfOf(id string) string {
	return base64.RawURLEncoding.EncodeToString(ss.mac("csrf\x00" + id))
}

func (ss *sessions) mac(s string) []byte {
	m := hmac.New(sha256.New, ss.secret)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// add stores a new session for who and returns its id.
func (ss *sessions) add(ctx context.Context, who string) (string, *session, error) {
	kv, err := ss.bucket(ctx)
	if err != nil {
		return "", nil, err
	}
	id := randomToken()
	sum := sha256.Sum256([]byte(id))
	s := &session{csrf: ss.csrfOf(id), expires: time.Now().Add(sessionTTL), who: "session:" + hex.EncodeToString(sum[:4]) + who}
	b, _ := json.Marshal(sessionRecord{Expires: s.expires, Who: s.who})
	if _, err := kv.Create(ctx, ss.key(id), b); err != nil {
		return "", nil, fmt.Errorf("console sessions: %w", err)
	}
	return id, s, nil
}

// get is the live session with id, nil for none.
func (ss *sessions) get(ctx context.Context, id string) (*session, error) {
	if len(id) != 43 { // randomToken's length: nothing else reaches the store
		return nil, nil
	}
	kv, err := ss.bucket(ctx)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, ss.key(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("console sessions: %w", err)
	}
	var r sessionRecord
	if json.Unmarshal(e.Value(), &r) != nil || time.Now().After(r.Expires) {
		return nil, nil
	}
	return &session{csrf: ss.csrfOf(id), expires: r.Expires, who: r.Who}, nil
}

// drop ends the session with id on every relay.
func (ss *sessions) drop(ctx context.Context, id string) error {
	if len(id) != 43 {
		return nil
	}
	kv, err := ss.bucket(ctx)
	if err != nil {
		return err
	}
	return kv.Delete(ctx, ss.key(id))
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// progressView is a replay job with the CSRF token its "send for real"
// form needs (the progress fragment is re-rendered on its own).
type progressView struct {
	job
	CSRF string
}

// console is the web console's state.
type console struct {
	s        *Server
	tmpl     *template.Template
	sessions sessions
	audit    zerolog.Logger
}

var consoleFuncs = template.FuncMap{
	"rupiah": Rupiah,
	"wib":    func(t time.Time) string { return t.In(wib).Format("2006-01-02 15:04:05 WIB") },
	"iso":    func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"join":   func(s []string) string { return strings.Join(s, ", ") },
	// pathseg makes a value one segment of a link's path: html/template
	// leaves '/', '?' and '#' in a path as they are, and a transaction id
	// is any caller's text.
	"pathseg":      url.PathEscape,
	"rates":        func(rows []rateRow, from time.Time) ratesView { return ratesView{rows, from} },
	"progressView": func(j job, csrf string) progressView { return progressView{j, csrf} },
	"percent": func(p dispatcher.ReplayProgress) int {
		switch {
		case p.Done:
			return 100
		case p.Total == 0:
			return 0
		}
		return int(min(99, p.Scanned*100/p.Total))
	},
}

// Rupiah formats an amount as Indonesians write it: "Rp 10.085".
func Rupiah(n int64) string {
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte('.')
		}
		b.WriteRune(r)
	}
	return sign + "Rp " + b.String()
}

// mountConsole serves the console under /console on e.
func (s *Server) mountConsole(e *echo.Echo) {
	c := &console{
		s:        s,
		tmpl:     template.Must(template.New("").Funcs(consoleFuncs).ParseFS(consoleFS, "console/*.html")),
		sessions: sessions{js: s.cfg.JetStream, secret: []byte(s.cfg.Token)},
		audit:    s.cfg.Logger.With().Bool("audit", true).Logger(),
	}
	static, _ := fs.Sub(consoleFS, "console/static")
	g := e.Group("/console", securityHeaders)
	g.GET("/static/*", echo.WrapHandler(http.StripPrefix("/console/static/", http.FileServer(http.FS(static)))))
	g.GET("/login", c.loginPage)
	g.POST("/login", c.login)
	a := g.Group("", c.signedIn)
	a.GET("", c.home)
	a.GET("/", c.home)
	a.POST("/logout", c.logout)
	a.GET("/search", c.search)
	a.GET("/tx/:project/:id", c.tx)
	a.GET("/events", c.events)
	a.GET("/events/table", c.eventTable)
	a.GET("/endpoints", c.endpoints)
	a.POST("/endpoints/:name/pause", c.endpointControl)
	a.POST("/endpoints/:name/resume", c.endpointControl)
	a.POST("/endpoints/:name/test", c.endpointControl)
	a.GET("/dlq", c.dlq)
	a.GET("/dlq/confirm", c.dlqConfirm)
	a.POST("/dlq/redrive", c.dlqAct)
	a.POST("/dlq/purge", c.dlqAct)
	a.GET("/quarantine", c.quarantine)
	a.GET("/quarantine/confirm", c.quarantineConfirm)
	a.POST("/quarantine/redrive", c.quarantineAct)
	a.POST("/quarantine/purge", c.quarantineAct)
	a.GET("/reconciliations", c.reconciliations)
	a.GET("/replays", c.replays)
	a.POST("/replays", c.replayStart)
	a.GET("/replays/:id", c.replay)
	a.GET("/replays/:id/progress", c.replayProgress)
}

// securityHeaders: no script but our own, no framing, no caching of pages
// that show payments, no referrer leaking a merchantRef to another site.
func securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin") // "no-referrer" makes browsers send Origin: null on our own forms
		if !strings.HasPrefix(c.Request().URL.Path, "/console/static/") {
			h.Set("Cache-Control", "no-store")
		}
		return next(c)
	}
}

// signedIn lets a request through only with a live session; a state
// change (any method but GET) also needs the session's CSRF token, in the
// form (_csrf) or the X-CSRF-Token header, and must not be foreign.
func (cn *console) signedIn(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		var s *session
		if ck, err := c.Cookie(sessionCookie); err == nil {
			var err error
			if s, err = cn.sessions.get(c.Request().Context(), ck.Value); err != nil {
				return apiError(http.StatusServiceUnavailable, "store_unavailable", "the console cannot read its sign-ins: the store is unavailable")
			}
		}
		if s == nil {
			if c.Request().Method == http.MethodGet {
				return c.Redirect(http.StatusSeeOther, "/console/login")
			}
			return apiError(http.StatusUnauthorized, "session_required", "sign in first")
		}
		if c.Request().Method != http.MethodGet {
			if verify.FromAnotherSite(c.Request()) {
				return apiError(http.StatusForbidden, "csrf_failed", "a request from another site")
			}
			got := c.Request().Header.Get(csrfHeader)
			if got == "" {
				got = c.FormValue(csrfField)
			}
			if !verify.Token(s.csrf, got) {
				cn.audit.Warn().Str("who", s.who).Str("action", c.Request().Method+" "+c.Path()).Str("result", "refused: csrf").Msg("console action")
				return apiError(http.StatusForbidden, "csrf_failed", "the form is stale or forged: reload the page and try again")
			}
		}
		c.Set("session", s)
		return next(c)
	}
}

// view is what every page template gets.
type view struct {
	Title, CSRF, Flash, Error string
	Data                      any
}

func (cn *console) page(c echo.Context, name, title string, data any) error {
	v := view{Title: title, Data: data, CSRF: cn.csrf(c)}
	// Only a message the console wrote, signed in its redirect: a link
	// anyone can send would otherwise put its own words on the page.
	if msg := c.QueryParam("done"); len(msg) <= 200 && hmac.Equal([]byte(c.QueryParam("sig")), []byte(cn.flashSig(msg))) {
		v.Flash = msg
	}
	return cn.render(c, http.StatusOK, name, v)
}

// done is the redirect to path that shows msg once the action is done.
func (cn *console) done(path, msg string) string {
	return path + "?done=" + url.QueryEscape(msg) + "&sig=" + cn.flashSig(msg)
}

func (cn *console) flashSig(msg string) string {
	return base64.RawURLEncoding.EncodeToString(cn.sessions.mac("flash\x00" + msg)[:18])
}

func (cn *console) render(c echo.Context, status int, name string, v any) error {
	var b bytes.Buffer
	if err := cn.tmpl.ExecuteTemplate(&b, name, v); err != nil {
		return err
	}
	return c.HTMLBlob(status, b.Bytes())
}

// act logs a console action as an audit line: who, what, on what, result.
func (cn *console) act(c echo.Context, action, target string, err error, n int) {
	s, _ := c.Get("session").(*session)
	who := ""
	if s != nil {
		who = s.who
	}
	ev := cn.audit.Info()
	if err != nil {
		ev = cn.audit.Warn().Str("error", auditText(err.Error()))
	}
	ev.Str("who", who).Str("action", action).Str("target", auditText(target)).Int("count", n).Msg("console action")
}

func (cn *console) loginPage(c echo.Context) error {
	return cn.render(c, http.StatusOK, "login", view{Title: "Sign in"})
}

func (cn *console) login(c echo.Context) error {
	// Refused from another site before anything else, as actions are: a
	// page elsewhere could sign the operator's browser in to a session of
	// its choosing, or post wrong tokens until the operator's own address
	// had no attempt left.
	if verify.FromAnotherSite(c.Request()) {
		cn.audit.Warn().Str("who", "@"+c.RealIP()).Str("action", "sign in").Str("result", "refused: another site").Msg("console action")
		return apiError(http.StatusForbidden, "csrf_failed", "a sign-in from another site")
	}
	// Paced with the API's bearer tokens (guessLimiter): an address out of
	// attempts gets no answer about its token.
	k, wait := cn.s.guesses.begin(c.RealIP())
	if wait > 0 {
		n := retrySeconds(wait)
		c.Response().Header().Set("Retry-After", strconv.Itoa(n))
		return cn.render(c, http.StatusTooManyRequests, "login", view{Title: "Sign in", Error: fmt.Sprintf("Too many wrong tokens from this address; try again in %d s.", n)})
	}
	who := "@" + c.RealIP()
	// The posted form only: a token in the query string would land in
	// access logs and the browser's history.
	if !verify.Token(cn.s.cfg.Token, c.Request().PostFormValue("token")) {
		cn.s.guesses.wrong(k)
		cn.audit.Warn().Str("who", who).Str("action", "sign in").Str("result", "refused: wrong token").Msg("console action")
		return cn.render(c, http.StatusUnauthorized, "login", view{Title: "Sign in", Error: "That is not the admin token."})
	}
	cn.s.guesses.right(k)
	id, s, err := cn.sessions.add(c.Request().Context(), who)
	if err != nil {
		cn.audit.Warn().Err(err).Str("who", who).Str("action", "sign in").Str("result", "failed: store").Msg("console action")
		return cn.render(c, http.StatusServiceUnavailable, "login", view{Title: "Sign in", Error: "The console cannot keep a sign-in now (the store is unavailable or full); try again."})
	}
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: id, Path: "/console", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: cn.secure(c), Expires: s.expires})
	cn.audit.Info().Str("who", s.who).Str("action", "sign in").Msg("console action")
	return c.Redirect(http.StatusSeeOther, "/console/")
}

// secure is whether the session cookie is Secure: when configured (a
// TLS-terminating proxy in front), or over TLS to this listener. No
// X-Forwarded-Proto is believed: any client could send one.
func (cn *console) secure(c echo.Context) bool {
	return cn.s.cfg.SecureCookie || c.Request().TLS != nil
}

func (cn *console) logout(c echo.Context) error {
	if err := fields(c, csrfField); err != nil { // as every action: its form sends no other
		return err
	}
	var err error
	if ck, cerr := c.Cookie(sessionCookie); cerr == nil {
		err = cn.sessions.drop(c.Request().Context(), ck.Value)
	}
	cn.act(c, "sign out", "", err, 0)
	if err != nil {
		return apiError(http.StatusServiceUnavailable, "store_unavailable", "the sign-out did not reach the store: try again")
	}
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: "", Path: "/console", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: cn.secure(c), MaxAge: -1})
	return c.Redirect(http.StatusSeeOther, "/console/login")
}

// homeData is the overview.
type homeData struct {
	Counts      []statusCount
	DeadLetters uint64
	Quarantined uint64
	// DeadLettersHour and QuarantinedHour are those of the last hour.
	DeadLettersHour uint64
	QuarantinedHour uint64
	Endpoints       []endpointStatus
	Recent          []txSummary
	// Rates are the last hour in rateWindows windows, oldest first.
	Rates []rateRow
	From  time.Time
}

type ratesView struct {
	Rows []rateRow
	From time.Time
}

// rateWindows windows of rateStep make the overview's hour.
const (
	rateWindows = 12
	rateStep    = 5 * time.Minute
)

// rateRow is one stream's last hour, window by window.
type rateRow struct {
	Name, Note, Link string
	Bad              bool // failures: drawn in red
	Windows          []uint64
	Total            uint64
}

// PerMinute is the rate of the newest window.
func (r rateRow) PerMinute() string {
	if len(r.Windows) == 0 {
		return "0"
	}
	return strconv.FormatFloat(float64(r.Windows[len(r.Windows)-1])/rateStep.Minutes(), 'f', 1, 64)
}

// bar is one window of a rate row, drawn in a 12×30 SVG cell.
type bar struct {
	X, Y, H float64
	N       uint64
	At      time.Time
}

// Bars are the row's windows scaled to the row's largest.
func (r rateRow) Bars(from time.Time) []bar {
	top := uint64(1)
	for _, n := range r.Windows {
		top = max(top, n)
	}
	out := make([]bar, len(r.Windows))
	for i, n := range r.Windows {
		h := 28 * float64(n) / float64(top)
		if n > 0 {
			h = max(h, 1.5) // a window with anything in it shows
		}
		out[i] = bar{X: float64(i) * 10, Y: 30 - h, H: h, N: n, At: from.Add(time.Duration(i) * rateStep)}
	}
	return out
}

// rates is the overview's last hour: what arrived in the inbox, the
// events and the attempts streams (their sequences at the windows' edges,
// a request per edge), and the dead letters and quarantined notifications
// still kept (the server's count per edge: redriven ones are removed, so
// sequences would miscount them).
func (cn *console) rates(ctx context.Context, from time.Time) ([]rateRow, error) {
	var rows []rateRow
	for _, r := range []struct {
		name, note, link, stream string
	}{
		{"notifications received", "callbacks, reconciliation and resends", "/console/events", event.StreamInbox},
		{"events published", "status changes recorded", "/console/events", event.StreamEvents},
		{"delivery attempts", "webhook POSTs, kept in the history", "/console/endpoints", history.StreamAttempts},
	} {
		w, err := stream.Arrivals(ctx, cn.s.cfg.JetStream, r.stream, from, rateStep, rateWindows)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // no history kept
		}
		if err != nil {
			return nil, err
		}
		rows = append(rows, rateRow{Name: r.name, Note: r.note, Link: r.link, Windows: w, Total: sum(w)})
	}
	for _, r := range []struct {
		name, note, link, stream, subject string
	}{
		{"dead letters", "still waiting (redriven ones leave)", "/console/dlq", event.StreamDLQ, event.SubjectsDLQ},
		{"quarantined", "still kept (redriven ones leave)", "/console/quarantine", event.StreamQuarantine, event.SubjectsQuarantine},
	} {
		w, err := cn.kept(ctx, r.stream, r.subject, from)
		if err != nil {
			return nil, err
		}
		rows = append(rows, rateRow{Name: r.name, Note: r.note, Link: r.link, Bad: true, Windows: w, Total: sum(w)})
	}
	return rows, nil
}

// kept is how many messages of stream on subject, still kept, were stored
// in each window from from: one server count per edge, none when the
// whole hour holds nothing (the usual case).
func (cn *console) kept(ctx context.Context, name, subject string, from time.Time) ([]uint64, error) {
	w := make([]uint64, rateWindows)
	prev, err := stream.Count(ctx, cn.s.cfg.JetStream, name, subject, from)
	if err != nil || prev == 0 {
		return w, err
	}
	for i := range w {
		next := uint64(0)
		if i < rateWindows-1 {
			if next, err = stream.Count(ctx, cn.s.cfg.JetStream, name, subject, from.Add(time.Duration(i+1)*rateStep)); err != nil {
				return nil, err
			}
		}
		if prev > next {
			w[i] = prev - next
		}
		prev = next
	}
	return w, nil
}

func sum(w []uint64) uint64 {
	var n uint64
	for _, v := range w {
		n += v
	}
	return n
}

type statusCount struct {
	Status event.Status
	N      uint64
}

func (cn *console) home(c echo.Context) error {
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	d := homeData{}
	hourAgo := time.Now().Add(-time.Hour)
	var err error
	d.From = hourAgo
	if d.Rates, err = cn.rates(ctx, hourAgo); err != nil {
		return err
	}
	for _, st := range []event.Status{event.StatusSuccess, event.StatusPending, event.StatusExpired, event.StatusFailed} {
		// Counted by the server for a consumer that would start an hour
		// ago: one request, however many events the hour holds.
		n, err := stream.Count(ctx, cn.s.cfg.JetStream, event.StreamEvents, "sengo.events.*.*."+string(st), hourAgo)
		if err != nil {
			return err
		}
		d.Counts = append(d.Counts, statusCount{st, n})
	}
	d.DeadLetters = cn.msgs(ctx, event.StreamDLQ)
	d.Quarantined = cn.msgs(ctx, event.StreamQuarantine)
	// Failures of the last hour, counted by the server like the events.
	for _, f := range []struct {
		n               *uint64
		stream, subject string
	}{{&d.DeadLettersHour, event.StreamDLQ, event.SubjectsDLQ}, {&d.QuarantinedHour, event.StreamQuarantine, event.SubjectsQuarantine}} {
		n, err := stream.Count(ctx, cn.s.cfg.JetStream, f.stream, f.subject, hourAgo)
		if err != nil {
			return err
		}
		*f.n = n
	}
	if d.Endpoints, err = cn.s.endpointStatuses(ctx); err != nil {
		return err
	}
	recent, err := cn.latestEvents(ctx, 30)
	if err != nil {
		return err
	}
	seenTx := map[string]bool{}
	var keys []txSummary
	for _, v := range recent {
		if len(keys) == 10 {
			break
		}
		if k := v.Project + "\x00" + v.TransactionID; !seenTx[k] {
			seenTx[k] = true
			keys = append(keys, txSummary{Project: v.Project, TransactionID: v.TransactionID})
		}
	}
	if recentTx, err := cn.s.summaries(ctx, keys, nil); err == nil { // the overview shows the rest without them
		d.Recent = recentTx
	}
	return cn.page(c, "home", "Overview", d)
}

func (cn *console) msgs(ctx context.Context, name string) uint64 {
	st, err := cn.s.cfg.JetStream.Stream(ctx, name)
	if err != nil {
		return 0
	}
	return st.CachedInfo().State.Msgs
}

// search finds q as a merchantRef, else as a SenGo id, in every project;
// one match opens its story at once.
func (cn *console) search(c echo.Context) error {
	q := strings.TrimSpace(c.QueryParam("q"))
	if q == "" || len(q) > 255 {
		return c.Redirect(http.StatusSeeOther, "/console/")
	}
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	// One transaction with this merchantRef opens its story at once,
	// without reading it twice (its state and event here, then again for
	// the story): an old payment's records are loaded from disk, and the
	// search is the page an operator waits for.
	keys, err := cn.s.find(ctx, listQuery{merchantRef: q})
	if err != nil {
		return err
	}
	if len(keys) == 1 {
		cn.act(c, "search", q, nil, 1)
		return c.Redirect(http.StatusSeeOther, "/console/tx/"+url.PathEscape(keys[0].Project)+"/"+url.PathEscape(keys[0].TransactionID))
	}
	found, err := cn.s.summaries(ctx, keys, nil)
	if err != nil {
		return err
	}
	if len(found) == 0 && len(q) <= 128 {
		if found, err = cn.s.lookup(ctx, listQuery{id: q}); err != nil {
			return err
		}
	}
	cn.act(c, "search", q, nil, len(found))
	if len(found) == 1 {
		return c.Redirect(http.StatusSeeOther, "/console/tx/"+url.PathEscape(found[0].Project)+"/"+url.PathEscape(found[0].TransactionID))
	}
	if found == nil {
		found = []txSummary{}
	}
	return cn.page(c, "search-results", "Search", map[string]any{"Q": q, "Found": found})
}

func (cn *console) tx(c echo.Context) error {
	project, id := c.Param("project"), txParam(c)
	if !slices.Contains(cn.s.cfg.Projects, project) || id == "" || len(id) > 128 {
		return echo.NewHTTPError(http.StatusNotFound, "no such transaction")
	}
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	tl, err := cn.s.timeline(ctx, project, id)
	if errors.Is(err, receiver.ErrNoTransaction) {
		return echo.NewHTTPError(http.StatusNotFound, "no such transaction")
	}
	if err != nil {
		return err
	}
	return cn.page(c, "tx", tl.Transaction.MerchantRef, map[string]any{"T": tl})
}

// latestEvents are the newest n events, newest first.
func (cn *console) latestEvents(ctx context.Context, n uint64) ([]eventView, error) {
	st, err := cn.s.cfg.JetStream.Stream(ctx, event.StreamEvents)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []eventView
	if info.State.Msgs == 0 {
		return out, nil
	}
	from := uint64(1)
	if info.State.LastSeq > n {
		from = info.State.LastSeq - n + 1
	}
	_, err = cn.s.scanEvents(ctx, listQuery{cursor: max(from, info.State.FirstSeq)}, func(v eventView) bool {
		out = append(out, v)
		return v.Seq < info.State.LastSeq
	})
	slices.Reverse(out)
	return out, err
}

func (cn *console) events(c echo.Context) error {
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	evs, err := cn.latestEvents(ctx, 50)
	if err != nil {
		return err
	}
	return cn.page(c, "events", "Live events", evs)
}

func (cn *console) eventTable(c echo.Context) error {
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	evs, err := cn.latestEvents(ctx, 50)
	if err != nil {
		return err
	}
	return cn.render(c, http.StatusOK, "eventTable", evs)
}

func (cn *console) endpoints(c echo.Context) error {
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	eps, err := cn.s.endpointStatuses(ctx)
	if err != nil {
		return err
	}
	return cn.page(c, "endpoints", "Endpoints", eps)
}

// fields refuses a field, in the query or the posted form, that none of
// the console's own links and forms for the route sends
// (unknown_parameter), and one sent empty or twice (empty_filter): a
// field the route does not read would leave its selection wider than
// asked. A purge of dead letters posted with transaction=t1 purged every
// one.
func fields(c echo.Context, names ...string) error {
	form, err := c.FormParams() // the query's and the body's
	if err != nil {
		return apiError(http.StatusBadRequest, "bad_query", "the query or the form cannot be read")
	}
	return checkValues(form, names)
}

// replayFields refuses a field that the console's replay forms do not
// send (unknown_parameter: the API's status or merchantRef, or endpoints,
// were ignored, and the replay ran for every event of the window to every
// endpoint), and one of theirs sent twice, statuses aside (empty_filter:
// only the first was read). Empty values are the forms' own: every
// endpoint, until now.
func replayFields(form url.Values) error {
	names := []string{"endpoint", "since", "until", "statuses", "project", "transaction", "merchant_ref", "dry_run", csrfField}
	for _, k := range slices.Sorted(maps.Keys(form)) {
		if !slices.Contains(names, k) {
			return apiError(http.StatusBadRequest, "unknown_parameter", fmt.Sprintf("%.40q is not a parameter of this route", k))
		}
		if k != "statuses" && k != "endpoint" && len(form[k]) > 1 {
			return apiError(http.StatusBadRequest, "empty_filter", k+" is repeated: give one value, or leave it out")
		}
	}
	return nil
}

// dlqSelection reads ?seq= or ?endpoint= (or neither: every dead letter),
// and refuses any field but those and more.
func (cn *console) dlqSelection(c echo.Context, more ...string) (dispatcher.DLQFilter, string, error) {
	var f dispatcher.DLQFilter
	if err := fields(c, append([]string{"seq", "endpoint"}, more...)...); err != nil {
		return f, "", err
	}
	if v := c.FormValue("seq"); v != "" {
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil || seq == 0 {
			return f, "", echo.NewHTTPError(http.StatusBadRequest, "seq must be a positive integer")
		}
		f.Seq = seq
		return f, "dead letter #" + v, nil
	}
	if ep := c.FormValue("endpoint"); ep != "" {
		if !slices.ContainsFunc(cn.s.cfg.Endpoints, func(e dispatcher.Endpoint) bool { return e.Name == ep }) {
			return f, "", echo.NewHTTPError(http.StatusBadRequest, "no such endpoint")
		}
		f.Endpoint = ep
		return f, "the dead letters of " + ep, nil
	}
	return f, "every dead letter", nil
}

func (cn *console) dlq(c echo.Context) error {
	f, _, err := cn.dlqSelection(c, "after", "done", "sig")
	if err != nil {
		return err
	}
	if v := c.QueryParam("after"); v != "" {
		if f.After, err = strconv.ParseUint(v, 10, 64); err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "after must be a sequence")
		}
	}
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	f.Limit = consoleDLQPage + 1 // one more tells whether a next page exists
	f.MaxBytes = maxDLQAnswer
	entries, err := dispatcher.ListDLQ(ctx, cn.s.cfg.JetStream, f)
	if err != nil {
		return err
	}
	var next uint64
	if len(entries) > consoleDLQPage || f.Full(entries) {
		entries = entries[:min(consoleDLQPage, len(entries))]
		next = entries[len(entries)-1].Seq
	}
	return cn.page(c, "dlq", "Dead letters", map[string]any{"Entries": entries, "Endpoint": f.Endpoint, "After": f.After, "Next": next})
}

// consoleDLQPage is how many dead letters the page shows at a time.
const consoleDLQPage = 200

// confirmData is the confirmation step of an action: what it would touch,
// counted first (a dry run), and the form that does it.
type confirmData struct {
	Question, Detail, Verb, Action, Back string
	Count                                int
	Danger                               bool
	Fields                               map[string]string
}

func (cn *console) dlqConfirm(c echo.Context) error {
	f, what, err := cn.dlqSelection(c, "action")
	if err != nil {
		return err
	}
	action := c.QueryParam("action")
	if action != "redrive" && action != "purge" {
		return echo.NewHTTPError(http.StatusBadRequest, "action must be redrive or purge")
	}
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	// Counted from their headers: a long outage's dead letters are never
	// read whole, within the read bound.
	count, top, err := dispatcher.CountDLQ(ctx, cn.s.cfg.JetStream, f)
	if err != nil {
		return err
	}
	d := confirmData{Action: "/console/dlq/" + action, Back: "/console/dlq", Count: count, Fields: map[string]string{}}
	if f.Seq > 0 {
		d.Fields["seq"] = strconv.FormatUint(f.Seq, 10)
	}
	if f.Endpoint != "" {
		d.Fields["endpoint"] = f.Endpoint
	}
	d.Fields["upto"] = strconv.FormatUint(top, 10) // the action touches what was counted, no more
	if action == "redrive" {
		d.Question, d.Verb = fmt.Sprintf("Redrive %d dead letter(s)?", count), "Redrive"
		d.Detail = "Each goes back to its endpoint with a fresh retry budget and the same webhook-id (" + what + "). It stays listed until delivered."
	} else {
		d.Question, d.Verb, d.Danger = fmt.Sprintf("Purge %d dead letter(s) for good?", count), "Purge", true
		d.Detail = "They are deleted from SENGO_DLQ (" + what + "); the events stay in SENGO_EVENTS and can be replayed."
	}
	return cn.page(c, "confirm", d.Question, d)
}

func (cn *console) dlqAct(c echo.Context) error {
	action := strings.TrimPrefix(c.Path(), "/console/dlq/")
	f, what, err := cn.dlqSelection(c, "upto", csrfField)
	refused := func(err error) error { // audited too, with nothing touched
		cn.act(c, "dead letters "+action, what, err, 0)
		return err
	}
	if err != nil {
		return refused(err)
	}
	var top uint64 // what the confirmation counted; a form without one: all
	if v := c.FormValue("upto"); v != "" {
		if top, err = strconv.ParseUint(v, 10, 64); err != nil || top == 0 {
			return refused(echo.NewHTTPError(http.StatusBadRequest, "upto must be a sequence"))
		}
	}
	ctx := c.Request().Context() // an action is not cut at the read timeout: as the API's
	do := dispatcher.Purge
	if action == "redrive" {
		do = dispatcher.Redrive
	}
	var n int
	err = dispatcher.EachDLQPage(ctx, cn.s.cfg.JetStream, f, top, func(page []dispatcher.DLQEntry) error {
		k, err := do(ctx, cn.s.cfg.JetStream, page)
		n += k
		return err
	})
	cn.act(c, "dead letters "+action, what, err, n)
	if err != nil {
		return cn.incomplete(c, err, n, "/console/dlq")
	}
	return c.Redirect(http.StatusSeeOther, cn.done("/console/dlq", fmt.Sprintf("%s: %d dead letter(s).", action, n)))
}

// setUpTo puts in a confirmation form the highest sequence it counted, so
// that the action touches only what the operator was shown: a dead letter
// or a quarantined notification stored after the count is left alone.
func setUpTo[E any](fields map[string]string, entries []E, seq func(E) uint64) {
	var top uint64
	for _, e := range entries {
		top = max(top, seq(e))
	}
	fields["upto"] = strconv.FormatUint(top, 10)
}

// quarantineFilter reads ?seq= (or none: every quarantined notification),
// and refuses any field but that and more.
func (cn *console) quarantineFilter(c echo.Context, more ...string) (receiver.QuarantineFilter, error) {
	var f receiver.QuarantineFilter
	if err := fields(c, append([]string{"seq"}, more...)...); err != nil {
		return f, err
	}
	if v := c.FormValue("seq"); v != "" {
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil || seq == 0 {
			return f, echo.NewHTTPError(http.StatusBadRequest, "seq must be a positive integer")
		}
		f.Seq = seq
	}
	return f, nil
}

func (cn *console) quarantine(c echo.Context) error {
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	// As the API lists them: the bodies (which the page does not show)
	// cut, the newest within the API's bound.
	kept, left, err := cn.s.listQuarantine(ctx, receiver.QuarantineFilter{})
	if err != nil {
		return err
	}
	entries := make([]quarantineView, len(kept))
	for i, it := range kept {
		entries[i] = it.view
	}
	return cn.page(c, "quarantine", "Quarantine", map[string]any{"Entries": entries, "LeftOut": left})
}

func (cn *console) quarantineConfirm(c echo.Context) error {
	f, err := cn.quarantineFilter(c, "action")
	if err != nil {
		return err
	}
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	action := c.QueryParam("action")
	if action == "" {
		action = "redrive"
	}
	if action != "redrive" && action != "purge" {
		return echo.NewHTTPError(http.StatusBadRequest, "action must be redrive or purge")
	}
	// The count is of every notification the action will touch: one, or
	// the whole stream (not the newest 10,000 the page lists).
	var count int
	fields := map[string]string{}
	if f.Seq > 0 {
		entries, err := receiver.ListQuarantine(ctx, cn.s.cfg.JetStream, f)
		if err != nil {
			return err
		}
		count = len(entries)
		setUpTo(fields, entries, func(e receiver.QuarantineEntry) uint64 { return e.Seq })
	} else {
		st, err := cn.s.cfg.JetStream.Stream(ctx, event.StreamQuarantine) // its info, fresh
		if err != nil {
			return err
		}
		info := st.CachedInfo()
		count = int(info.State.Msgs)
		fields["upto"] = strconv.FormatUint(info.State.LastSeq, 10)
	}
	d := confirmData{Action: "/console/quarantine/" + action, Back: "/console/quarantine", Count: count, Verb: "Redrive", Fields: fields,
		Question: fmt.Sprintf("Redrive %d quarantined notification(s)?", count),
		Detail:   "They go back into the inbox and are processed again, confirmed with SenGo's API like any notification."}
	if action == "purge" {
		d.Verb, d.Danger = "Purge", true
		d.Question = fmt.Sprintf("Purge %d quarantined notification(s) for good?", count)
		d.Detail = "They are deleted from SENGO_QUARANTINE; each stays in SENGO_INBOX for the inbox's retention, and the transaction's story keeps its notifications."
	}
	if f.Seq > 0 {
		d.Fields["seq"] = strconv.FormatUint(f.Seq, 10)
	}
	return cn.page(c, "confirm", d.Question, d)
}

func (cn *console) quarantineAct(c echo.Context) error {
	action := strings.TrimPrefix(c.Path(), "/console/quarantine/")
	f, err := cn.quarantineFilter(c, "upto", csrfField)
	refused := func(err error) error { // audited too, with nothing touched
		cn.act(c, "quarantine "+action, fmt.Sprintf("seq %d (0: all)", f.Seq), err, 0)
		return err
	}
	if err != nil {
		return refused(err)
	}
	counted := true // a confirmation's "upto" 0 counted nothing: nothing is touched
	if v := c.FormValue("upto"); v != "" {
		if f.UpTo, err = strconv.ParseUint(v, 10, 64); err != nil {
			return refused(echo.NewHTTPError(http.StatusBadRequest, "upto must be a sequence"))
		}
		counted = f.UpTo > 0
	}
	ctx := c.Request().Context() // an action is not cut at the read timeout: as the API's
	var n int
	if counted {
		n, _, err = receiver.EachQuarantinedBatch(ctx, cn.s.cfg.JetStream, f, func(batch []receiver.QuarantineEntry) (int, error) {
			if action == "purge" {
				return receiver.PurgeQuarantine(ctx, cn.s.cfg.JetStream, batch)
			}
			return receiver.RedriveQuarantine(ctx, cn.s.cfg.JetStream, batch, cn.s.cfg.Durable)
		})
	}
	cn.act(c, "quarantine "+action, fmt.Sprintf("seq %d (0: all)", f.Seq), err, n)
	if err != nil {
		return cn.incomplete(c, err, n, "/console/quarantine")
	}
	return c.Redirect(http.StatusSeeOther, cn.done("/console/quarantine", fmt.Sprintf("%s: %d notification(s).", action, n)))
}

// incomplete shows an action that the store stopped part way, and how much
// of it was done (the API's action_incomplete); a refusal is shown as is.
func (cn *console) incomplete(c echo.Context, err error, n int, back string) error {
	if _, refused := errors.AsType[*echo.HTTPError](err); refused {
		return err
	}
	cn.s.cfg.Logger.Error().Err(err).Str("path", c.Path()).Int("done", n).Msg("console action stopped part way")
	return cn.render(c, http.StatusServiceUnavailable, "confirm", view{Title: "Stopped part way", CSRF: cn.csrf(c),
		Data: confirmData{Question: "This action stopped part way", Detail: incomplete(n), Back: back}})
}

func (cn *console) replays(c echo.Context) error {
	var names []string
	for _, e := range cn.s.cfg.Endpoints {
		names = append(names, e.Name)
	}
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	jobs, err := cn.s.replays.list(ctx, time.Now())
	if err != nil {
		return cn.s.storeUnavailable(err)
	}
	slices.SortFunc(jobs, func(a, b job) int { return b.Started.Compare(a.Started) })
	return cn.page(c, "replays", "Replays", map[string]any{"Endpoints": names, "Projects": cn.s.cfg.Projects, "Jobs": jobs,
		"Statuses": []event.Status{event.StatusSuccess, event.StatusPending, event.StatusExpired, event.StatusFailed}})
}

func (cn *console) replayStart(c echo.Context) error {
	form, err := c.FormParams()
	if err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "unreadable form")
	}
	if err := replayFields(form); err != nil {
		return err
	}
	// Several endpoints come from the forms that run a job again: a job
	// for every endpoint names each, so that it is the same job whatever
	// endpoints are configured now. transaction, merchant_ref and project
	// come from those forms too (the API's jobs may select by them):
	// without them it would replay the whole window.
	eps := slices.DeleteFunc(slices.Clone(form["endpoint"]), func(e string) bool { return e == "" })
	ep := strings.Join(eps, ",")
	req, err := ReplayRequest(cn.s.cfg.Endpoints, cn.s.cfg.Projects, ReplayInput{
		Endpoints: eps, All: len(eps) == 0, Since: form.Get("since"), Until: form.Get("until"), Statuses: form["statuses"],
		Project: form.Get("project"), Transaction: form.Get("transaction"), MerchantRef: form.Get("merchant_ref"), DryRun: form.Get("dry_run") == "true",
	}, time.Now())
	cannot := func(status int, err error) error {
		cn.act(c, "replay", ep, err, 0)
		return cn.render(c, status, "confirm", view{Title: "Replay", CSRF: cn.csrf(c), Data: confirmData{Question: "This replay cannot start", Detail: err.Error(), Back: "/console/replays"}})
	}
	if err != nil {
		return cannot(http.StatusBadRequest, err)
	}
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	j, started, err := cn.s.startReplay(ctx, req)
	if errors.Is(err, errJobTooLarge) {
		return cannot(http.StatusBadRequest, err)
	}
	if errors.Is(err, errTooManyReplays) {
		return cannot(http.StatusTooManyRequests, err)
	}
	if err != nil {
		cn.s.cfg.Logger.Warn().Err(err).Msg("replay jobs: store unavailable")
		return cannot(http.StatusServiceUnavailable, errors.New("the replay was not started: the store that keeps replay jobs is unavailable or full; try again"))
	}
	action := "replay"
	if !started {
		action = "replay (already running)" // nothing started: the operator is shown the running one
	}
	cn.act(c, action, strings.Join(req.Endpoints, ",")+" since "+req.Since.UTC().Format(time.RFC3339)+map[bool]string{true: " (dry run)"}[req.DryRun], nil, 0)
	return c.Redirect(http.StatusSeeOther, "/console/replays/"+url.PathEscape(j.Progress.Job))
}

func (cn *console) csrf(c echo.Context) string {
	if s, ok := c.Get("session").(*session); ok {
		return s.csrf
	}
	return ""
}

// job is the replay job named in the path, from the store: any relay
// answers for a job any relay runs.
func (cn *console) job(c echo.Context) (job, error) {
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	j, _, err := cn.s.replays.get(ctx, c.Param("id"), time.Now())
	if errors.Is(err, errNoJob) {
		return job{}, echo.NewHTTPError(http.StatusNotFound, "no such replay job")
	}
	if err != nil {
		return job{}, cn.s.storeUnavailable(err)
	}
	return j, nil
}

func (cn *console) replay(c echo.Context) error {
	j, err := cn.job(c)
	if err != nil {
		return err
	}
	return cn.page(c, "replay", "Replay", j)
}

func (cn *console) replayProgress(c echo.Context) error {
	j, err := cn.job(c)
	if err != nil {
		return err
	}
	return cn.render(c, http.StatusOK, "progress", progressView{j, cn.csrf(c)})
}

func (cn *console) reconciliations(c echo.Context) error {
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	runs, err := history.Reconciliations(ctx, cn.s.cfg.JetStream, "", 50)
	if err != nil {
		return err
	}
	return cn.page(c, "reconciliations", "Reconciliation", runs)
}

// endpointControl pauses, resumes or test-sends an endpoint.
func (cn *console) endpointControl(c echo.Context) error {
	name := c.Param("name")
	w := cn.s.cfg.Workers[name]
	if w == nil {
		return echo.NewHTTPError(http.StatusNotFound, "no endpoint of that name runs here")
	}
	ctx, cancel := cn.s.readCtx(c)
	defer cancel()
	s, _ := c.Get("session").(*session)
	var msg string
	var err error
	action := c.Path()[strings.LastIndex(c.Path(), "/")+1:]
	switch action {
	case "pause":
		err = dispatcher.Hold(ctx, cn.s.cfg.JetStream, name, "console "+s.who)
		msg = name + " held: deliveries wait in the stream."
	case "resume":
		err = dispatcher.Release(ctx, cn.s.cfg.JetStream, name)
		msg = name + " resumed."
	default:
		r := w.TestSend(ctx)
		if !r.OK { // audited as failed; the page says how
			err = errTestSendFailed
		}
		msg = fmt.Sprintf("Test event %s to %s: ", r.EventID, name)
		if r.Status > 0 {
			msg += fmt.Sprintf("HTTP %d in %.0f ms", r.Status, r.DurationMs)
		} else {
			msg += r.Error
		}
	}
	cn.act(c, "endpoint "+action, name, err, 1)
	if err != nil && !errors.Is(err, errTestSendFailed) {
		return err
	}
	return c.Redirect(http.StatusSeeOther, cn.done("/console/endpoints", msg))
}
