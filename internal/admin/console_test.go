package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"

	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/receiver"
)

func TestRupiah(t *testing.T) {
	for n, want := range map[int64]string{0: "Rp 0", 85: "Rp 85", 10085: "Rp 10.085", 1000000: "Rp 1.000.000", -2500: "-Rp 2.500", 123456789: "Rp 123.456.789"} {
		if got := Rupiah(n); got != want {
			t.Errorf("Rupiah(%d) = %q, want %q", n, got, want)
		}
	}
}

// The embedded htmx is the npm release named in console/static/VENDOR.md.
func TestVendoredHTMXIsTheRelease(t *testing.T) {
	b, err := consoleFS.ReadFile("console/static/htmx.min.js")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717" {
		t.Fatalf("htmx.min.js is not htmx.org@2.0.11's dist/htmx.min.js (sha256 %s)", got)
	}
}

// browser is an HTTP client with a cookie jar that does not follow redirects.
func browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfInput = regexp.MustCompile(`name="_csrf" value="([^"]+)"`)

// signIn signs c in and returns the page's CSRF token.
func signIn(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	resp, err := c.PostForm(base+"/console/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	ck := resp.Cookies()
	if len(ck) != 1 || ck[0].Name != sessionCookie || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Path != "/console" {
		t.Fatalf("session cookie %+v, want HttpOnly, SameSite=Strict, Path=/console", ck)
	}
	// A test with a short read timeout may see the page answer 503
	// (read_timeout) on a loaded machine: it is asked again.
	var m []string
	poll.Until(t, "the replays page with a CSRF token", func() bool {
		r, err := c.Get(base + "/console/replays")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		m = csrfInput.FindStringSubmatch(string(b))
		return r.StatusCode == 200 && m != nil
	})
	return m[1]
}

// Pages need a session; every action needs the session and its CSRF
// token, and a request from another origin is refused even with both.
func TestConsoleRefusesWithoutSessionOrCSRF(t *testing.T) {
	hs, _ := newServer(t)
	anon := browser(t)
	resp, _ := anon.Get(hs.URL + "/console/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Errorf("a page without a session: %d → %q, want the sign-in page", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := anon.PostForm(hs.URL+"/console/login", url.Values{"token": {"wrong-token-0123456789abcdef"}}); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Errorf("a wrong token: %d with cookies %v", resp.StatusCode, resp.Cookies())
	}
	// The token in the query string (access logs, history) signs no one in.
	if resp, _ := anon.PostForm(hs.URL+"/console/login?token="+token, url.Values{}); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Errorf("the token in the query string: %d with cookies %v, want 401 and none", resp.StatusCode, resp.Cookies())
	}
	if resp, _ := anon.PostForm(hs.URL+"/console/dlq/purge", url.Values{"endpoint": {"orders"}}); resp.StatusCode != 401 {
		t.Errorf("an action without a session: %d, want 401", resp.StatusCode)
	}

	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	if resp, _ := c.PostForm(hs.URL+"/console/dlq/purge", url.Values{"endpoint": {"orders"}}); resp.StatusCode != 403 {
		t.Errorf("an action without the CSRF token: %d, want 403", resp.StatusCode)
	}
	if resp, _ := c.PostForm(hs.URL+"/console/dlq/purge", url.Values{"endpoint": {"orders"}, "_csrf": {csrf + "x"}}); resp.StatusCode != 403 {
		t.Errorf("an action with a wrong CSRF token: %d, want 403", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/console/dlq/purge", strings.NewReader(url.Values{"endpoint": {"orders"}, "_csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, _ := c.Do(req); resp.StatusCode != 403 {
		t.Errorf("an action from another origin: %d, want 403", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodPost, hs.URL+"/console/dlq/purge", strings.NewReader(url.Values{"endpoint": {"orders"}, "_csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, _ := c.Do(req); resp.StatusCode != 403 {
		t.Errorf("an action a browser says is cross-site: %d, want 403", resp.StatusCode)
	}
	if resp, _ := c.PostForm(hs.URL+"/console/dlq/purge", url.Values{"endpoint": {"orders"}, "_csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the same action with session and token: %d, want it done (303)", resp.StatusCode)
	}
	// Signed out, the old cookie is worth nothing.
	if resp, _ := c.PostForm(hs.URL+"/console/logout", url.Values{"_csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	if resp, _ := c.Get(hs.URL + "/console/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after sign-out a page answers %d", resp.StatusCode)
	}
}

// The sign-in is refused from another site as actions are (login CSRF:
// a page elsewhere could sign the operator's browser in, or post wrong
// tokens from the operator's address until its attempts were spent and
// the operator was refused). A form of the console's own origin, or a
// client that is no browser (no Origin, no Sec-Fetch-Site), signs in.
func TestConsoleSignInRefusesOtherSites(t *testing.T) {
	hs, _ := newServer(t)
	post := func(tok string, header map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, hs.URL+"/console/login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := browser(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, h := range []map[string]string{
		{"Origin": "https://evil.example"},
		{"Origin": "null"}, // a sandboxed frame
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"}, // a sibling subdomain is another origin
	} {
		if resp := post(token, h); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("the right token posted with %v: %d with cookies %v, want 403 and none", h, resp.StatusCode, resp.Cookies())
		}
	}
	for i := range 20 {
		post(fmt.Sprintf("wrong-token-%02d-0123456789", i), map[string]string{"Origin": "https://evil.example"})
	}
	for _, h := range []map[string]string{
		{"Origin": hs.URL, "Sec-Fetch-Site": "same-origin"},
		{"Sec-Fetch-Site": "none"}, // typed or bookmarked by the operator
		{},
	} {
		if resp := post(token, h); resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
			t.Errorf("the right token posted with %v after 20 wrong ones from another site: %d, want 303 and a session", h, resp.StatusCode)
		}
	}
}

// With SecureCookie (a console behind a TLS-terminating proxy), the
// session cookie is Secure, and so is the one that ends it at sign-out;
// without it, over the plain-HTTP listener, it is not (a browser would
// drop it).
func TestConsoleSessionCookieSecure(t *testing.T) {
	js := provision(t)
	for _, secure := range []bool{false, true} {
		s := New(Config{Token: token, JetStream: js, Projects: []string{"main"}, SecureCookie: secure, Logger: zerolog.Nop()})
		t.Cleanup(s.Close)
		w := loginTry(s, "192.0.2.1", token)
		ck := w.Result().Cookies()
		if w.Code != http.StatusSeeOther || len(ck) != 1 {
			t.Fatalf("sign in: %d, cookies %v", w.Code, ck)
		}
		if ck[0].Secure != secure {
			t.Errorf("SecureCookie %v: the session cookie's Secure is %v", secure, ck[0].Secure)
		}
		req := httptest.NewRequest(http.MethodPost, "/console/logout", strings.NewReader(url.Values{"_csrf": {consoleCSRF(t, s, ck[0])}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(ck[0])
		w = from(s, "192.0.2.1", req)
		out := w.Result().Cookies()
		if w.Code != http.StatusSeeOther || len(out) != 1 || out[0].MaxAge >= 0 {
			t.Fatalf("sign out: %d, cookies %v", w.Code, out)
		}
		if out[0].Secure != secure {
			t.Errorf("SecureCookie %v: the sign-out's cookie's Secure is %v", secure, out[0].Secure)
		}
	}
}

// consoleCSRF is the CSRF token of the session in ck, read from a page.
func consoleCSRF(t *testing.T, s *Server, ck *http.Cookie) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/console/replays", nil)
	req.AddCookie(ck)
	w := from(s, "192.0.2.1", req)
	m := csrfInput.FindStringSubmatch(w.Body.String())
	if w.Code != http.StatusOK || m == nil {
		t.Fatalf("replays page %d without a CSRF token", w.Code)
	}
	return m[1]
}

// Console pages forbid foreign scripts, framing and caching.
func TestConsoleSecurityHeaders(t *testing.T) {
	hs, _ := newServer(t)
	c := browser(t)
	signIn(t, c, hs.URL)
	resp, err := c.Get(hs.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := resp.Header
	if resp.StatusCode != 200 || !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") || h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("%d %v", resp.StatusCode, h)
	}
}

// Every page renders with every part filled (a template error shows only
// at run time, as a 500).
func TestConsoleTemplatesRender(t *testing.T) {
	tm := template.Must(template.New("").Funcs(consoleFuncs).ParseFS(consoleFS, "console/*.html"))
	now := time.Now()
	st := event.StatusSuccess
	big := []byte(`{"pad":"` + strings.Repeat("<", maxExcerpt) + `"}`) // shown as an excerpt
	tl := timeline{
		Transaction:   txSummary{MerchantRef: "INV-1", Status: st, TotalAmount: 10085, UpdatedAt: now},
		Notifications: []notificationView{viewNotification(receiver.Notification{Seq: 1, Stored: now, Source: "callback", Body: []byte(`{}`)}), viewNotification(receiver.Notification{Body: big})},
		Events:        []eventView{{Seq: 1, PreviousStatus: &st}},
		Attempts:      []history.Attempt{{Endpoint: "orders", Number: 1, Status: 500, RequestHeaders: map[string]string{"A": "b"}, ResponseExcerpt: "x"}},
		DeadLetters:   []dispatcher.DLQEntry{{Seq: 3}},
		Quarantined:   []quarantineView{viewQuarantined(receiver.QuarantineEntry{Seq: 4, SenGo: []byte(`{}`), Notification: []byte(`{}`)}), viewQuarantined(receiver.QuarantineEntry{SenGo: big, Notification: big})},
		Steps:         []step{{At: now, Kind: "attempt"}},
	}
	j := job{Request: dispatcher.ReplayRequest{Endpoints: []string{"orders"}, DryRun: true}, Progress: dispatcher.ReplayProgress{Job: "j", Done: true}}
	stalled := job{Request: dispatcher.ReplayRequest{Endpoints: []string{"orders"}, MerchantRef: "INV-1"}, Progress: dispatcher.ReplayProgress{Job: "k"}, Relay: "relay-b", Heartbeat: now, Stalled: true}
	for name, d := range map[string]any{
		"tx":              map[string]any{"T": tl},
		"home":            homeData{Counts: []statusCount{{st, 1}}, Rates: []rateRow{{Name: "x", Windows: make([]uint64, rateWindows)}}, From: now, Endpoints: []endpointStatus{{Name: "orders"}}, Recent: []txSummary{tl.Transaction}},
		"dlq":             map[string]any{"Entries": []dispatcher.DLQEntry{{Seq: 1}}, "Endpoint": "orders"},
		"replays":         map[string]any{"Endpoints": []string{"orders"}, "Jobs": []job{j, stalled}, "Statuses": []event.Status{st}},
		"replay":          j,
		"events":          []eventView{{Seq: 1}},
		"quarantine":      map[string]any{"Entries": []quarantineView{{QuarantineEntry: receiver.QuarantineEntry{Seq: 1}}}, "LeftOut": 2},
		"endpoints":       []endpointStatus{{Name: "orders"}},
		"search-results":  map[string]any{"Q": "x", "Found": []txSummary{{}}},
		"confirm":         confirmData{Count: 1, Fields: map[string]string{"seq": "1"}},
		"reconciliations": []history.Reconciliation{{Project: "main", Missing: 1, Found: []history.Found{{MerchantRef: "INV-1"}}}, {Error: "x"}},
	} {
		if err := tm.ExecuteTemplate(io.Discard, name, view{Data: d, CSRF: "c"}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The overview's rates count what each stream stored in the last hour,
// and dead letters still waiting.
func TestConsoleOverviewRates(t *testing.T) {
	hs, js := newServer(t)
	ctx := t.Context()
	for subject, n := range map[string]int{
		event.InboxTxSubject("main", "TX-1"): 3,
		"sengo.events.main.retail.success":   2,
		event.DLQSubject("orders"):           1,
	} {
		for i := 0; i < n; i++ {
			if _, err := js.Publish(ctx, subject, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := browser(t)
	signIn(t, c, hs.URL)
	resp, err := c.Get(hs.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	row := regexp.MustCompile(`(?s)<a href="[^"]+">([a-z ]+)</a><div class="muted">[^<]*</div></td>\s*<td><b>(\d+)</b>`)
	got := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		got[m[1]] = m[2]
	}
	want := map[string]string{"notifications received": "3", "events published": "2", "delivery attempts": "0", "dead letters": "1", "quarantined": "0"}
	if resp.StatusCode != 200 || len(got) != len(want) {
		t.Fatalf("overview %d, rates %v, want %v", resp.StatusCode, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s in the hour, want %s", k, got[k], v)
		}
	}
	if n := strings.Count(string(b), "<rect "); n != 12*len(want) {
		t.Errorf("%d bars, want 12 per row", n)
	}
}

// A sign-in is kept in JetStream, so every relay behind one load balancer
// knows it (and a restart keeps it); signing out on one ends it on all.
// The store holds the session id's hash only, never the id or its token.
func TestConsoleSessionIsSharedByRelays(t *testing.T) {
	hs, js := newServer(t)
	other := New(Config{Token: token, JetStream: js, Projects: []string{"main"}, Logger: zerolog.Nop()})
	hs2 := httptest.NewServer(other.Handler())
	t.Cleanup(func() { hs2.Close(); other.Close() })

	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	ck := c.Jar.Cookies(mustURL(t, hs.URL+"/console"))
	if len(ck) != 1 {
		t.Fatalf("cookies %v", ck)
	}
	// The same cookie at the other relay.
	c2 := browser(t)
	c2.Jar.SetCookies(mustURL(t, hs2.URL+"/console"), ck)
	resp, err := c2.Get(hs2.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the other relay answers %d to a session signed in at the first", resp.StatusCode)
	}
	for _, m := range natstest.Messages(t, js, "KV_"+BucketSessions) {
		if strings.Contains(string(m.Data), ck[0].Value) || strings.Contains(string(m.Data), csrf) || strings.Contains(m.Subject, ck[0].Value) {
			t.Errorf("the session store holds the session id or its CSRF token: %s %s", m.Subject, m.Data)
		}
	}
	// A relay started with a new admin token (after a leak, say) does not
	// take the sessions signed in under the old one.
	rotated := New(Config{Token: token + "-rotated", JetStream: js, Projects: []string{"main"}, Logger: zerolog.Nop()})
	hs3 := httptest.NewServer(rotated.Handler())
	t.Cleanup(func() { hs3.Close(); rotated.Close() })
	c3 := browser(t)
	c3.Jar.SetCookies(mustURL(t, hs3.URL+"/console"), ck)
	if resp, _ := c3.Get(hs3.URL + "/console/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a relay with a new admin token answers %d to a session of the old one", resp.StatusCode)
	}
	// Signed out at the other relay: the first one refuses the cookie too.
	if resp, _ := c2.PostForm(hs2.URL+"/console/logout", url.Values{"_csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out at the other relay: %d", resp.StatusCode)
	}
	if resp, _ := c.Get(hs.URL + "/console/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("signed out at one relay, the other still answers %d", resp.StatusCode)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A sign-in the store refuses is not a sign-in: 503, no cookie; and a
// sign-out that does not reach the store says so (the session lives on).
func TestConsoleSessionStoreRefusing(t *testing.T) {
	hs, js := newServer(t)
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	restore := natstest.RefuseWrites(t, js, "KV_"+BucketSessions)
	resp, err := browser(t).PostForm(hs.URL+"/console/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || len(resp.Cookies()) != 0 {
		t.Errorf("sign-in with the store refusing: %d, cookies %v; want 503 and none", resp.StatusCode, resp.Cookies())
	}
	if resp, _ := c.PostForm(hs.URL+"/console/logout", url.Values{"_csrf": {csrf}}); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("sign-out with the store refusing: %d, want 503", resp.StatusCode)
	}
	restore()
	if resp, _ := c.Get(hs.URL + "/console/"); resp.StatusCode != 200 {
		t.Errorf("the session after a refused sign-out: %d, want it still live", resp.StatusCode)
	}
}

// A purge confirmed in the console touches only what its confirmation
// counted: a notification quarantined after the count stays.
func TestConsoleActsOnWhatItCounted(t *testing.T) {
	hs, js := newServer(t)
	ctx := t.Context()
	quarantine := func(id string) {
		msg := &nats.Msg{Subject: event.QuarantineTxSubject("main", id), Data: []byte(`{"id":"` + id + `"}`), Header: nats.Header{event.HeaderProject: []string{"main"}}}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	quarantine("tx-1")
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	upto := confirmPurge(t, c, hs.URL, 1)
	quarantine("tx-2") // after the count
	resp, err := c.PostForm(hs.URL+"/console/quarantine/purge", url.Values{"_csrf": {csrf}, "upto": {upto}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "purge%3A+1+") {
		t.Fatalf("purge: %d → %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	left := natstest.Messages(t, js, event.StreamQuarantine)
	if len(left) != 1 || string(left[0].Data) != `{"id":"tx-2"}` {
		t.Fatalf("left in quarantine: %d messages", len(left))
	}
}

// confirmPurge opens the console's confirmation of a quarantine purge,
// wants it to count n, and returns the "upto" its form carries.
func confirmPurge(t *testing.T, c *http.Client, base string, n int) string {
	t.Helper()
	resp, err := c.Get(base + "/console/quarantine/confirm?action=purge")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="upto" value="(\d+)"`).FindStringSubmatch(string(b))
	if want := fmt.Sprintf("Purge %d quarantined notification(s) for good?", n); m == nil || !strings.Contains(string(b), want) {
		t.Fatalf("confirmation without %q:\n%s", want, b)
	}
	return m[1]
}

// A redrive or purge of the whole quarantine confirmed in the console
// counts, and acts on, every quarantined notification: it counted and
// touched only the newest 10,000 the page lists, and the rest stayed
// behind an operator told the quarantine was handled.
func TestConsoleQuarantineActionsReachEveryOne(t *testing.T) {
	if raceDetector {
		// Volume, not concurrency (the smaller tests of the same paths run
		// under the detector): one of the three slowest tests under it.
		// The -short pass runs it without.
		t.Skip("not under the race detector: the -short pass runs it")
	}
	hs, js := newServer(t)
	const n = 10050
	natstest.PublishMany(t, js, n, func(i int) *nats.Msg {
		id := fmt.Sprintf("tx-%d", i)
		return &nats.Msg{Subject: event.QuarantineTxSubject("main", id), Data: []byte(`{"id":"` + id + `"}`), Header: nats.Header{
			event.HeaderProject: []string{"main"}, event.HeaderReason: []string{"SenGo's API disagrees"},
		}}
	})
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	resp, err := c.PostForm(hs.URL+"/console/quarantine/purge", url.Values{"_csrf": {csrf}, "upto": {confirmPurge(t, c, hs.URL, n)}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := fmt.Sprintf("purge%%3A+%d+", n); resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), want) {
		t.Fatalf("purge: %d → %s, want %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if left := natstest.Messages(t, js, event.StreamQuarantine); len(left) != 0 {
		t.Fatalf("%d left in quarantine after the console purged it all", len(left))
	}
}

// The dead-letters page shows a page at a time with a link to the next;
// its confirmation counts every one, a page at a time, and the purge
// touches exactly what was counted, however many pages that is.
func TestConsoleDeadLettersByPage(t *testing.T) {
	hs, js := newServer(t)
	storeDeadLetters(t, js, dispatcher.DLQPage+1)
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	read := func(path string) string {
		resp, err := c.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		return string(b)
	}
	page := read("/console/dlq")
	if n := strings.Count(page, ">Purge…</a></td></tr>"); n != consoleDLQPage || !strings.Contains(page, `id="dlq-next"`) {
		t.Fatalf("first page: %d rows (want %d) and a next link: %v", n, consoleDLQPage, strings.Contains(page, `id="dlq-next"`))
	}
	next := regexp.MustCompile(`id="dlq-next" href="([^"]+)"`).FindStringSubmatch(page)
	if next == nil || !strings.Contains(read(strings.ReplaceAll(next[1], "&amp;", "&")), "after #") {
		t.Fatalf("no next page link in the first page")
	}
	confirm := read("/console/dlq/confirm?action=purge")
	m := regexp.MustCompile(`name="upto" value="(\d+)"`).FindStringSubmatch(confirm)
	if m == nil || !strings.Contains(confirm, fmt.Sprintf("Purge %d dead letter(s) for good?", dispatcher.DLQPage+1)) {
		t.Fatalf("confirmation without its count of every page:\n%.400s", confirm)
	}
	storeDeadLetters(t, js, 1) // after the count
	resp, err := c.PostForm(hs.URL+"/console/dlq/purge", url.Values{"_csrf": {csrf}, "upto": {m[1]}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := fmt.Sprintf("purge%%3A+%d+", dispatcher.DLQPage+1); resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), want) {
		t.Fatalf("purge: %d → %s, want %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if left := natstest.Messages(t, js, event.StreamDLQ); len(left) != 1 {
		t.Fatalf("%d dead letters left, want the one stored after the count", len(left))
	}
}

// The console's messages after an action ("Purged: 1 dead letter(s).")
// come back through the redirect's query string: only those the console
// wrote are shown. A link with a text of someone else's ("session expired,
// paste your token at …") shows nothing on a signed-in operator's page, nor
// does the sign-in page take a message from its link.
func TestConsoleShowsOnlyItsOwnMessages(t *testing.T) {
	hs, js := newServer(t)
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	get := func(path string) string {
		t.Helper()
		resp, err := c.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	const lure = "Session expired: paste your admin token at evil.example"
	for _, p := range []string{"/console/dlq?done=", "/console/?done=", "/console/endpoints?done="} {
		if body := get(p + url.QueryEscape(lure)); strings.Contains(body, "evil.example") {
			t.Errorf("GET %s<lure> shows the link's text", p)
		}
	}
	anon := browser(t)
	if resp, err := anon.Get(hs.URL + "/console/login?error=" + url.QueryEscape(lure)); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "evil.example") {
			t.Error("the sign-in page shows its link's error text")
		}
	}
	// The console's own message still shows.
	if _, err := js.Publish(t.Context(), event.DLQTxSubject("orders", "t1"), []byte(`{"endpoint":"orders","eventId":"evt_1","transactionId":"t1","reason":"gone","event":{}}`)); err != nil {
		t.Fatal(err)
	}
	resp, err := c.PostForm(hs.URL+"/console/dlq/purge", url.Values{"_csrf": {csrf}, "endpoint": {"orders"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if body := get(loc); !strings.Contains(body, "dead letter(s).") {
		t.Errorf("after a purge, %s does not show the console's message", loc)
	}
}

// A field the console's forms do not have (a hand-made form, a typo in a
// bookmarked link) is refused, never read as no selection: a purge of
// dead letters posted with transaction=t1 purged every dead letter, and
// a quarantine purge with seqq=1 the whole quarantine.
func TestConsoleUnknownFieldsWidenNoAction(t *testing.T) {
	hs, js := newServer(t)
	storeDLQFor(t, js, "orders", "t1", nil)
	storeDLQFor(t, js, "orders", "t2", nil)
	storeQuarantinedFor(t, js, "tx-1")
	storeQuarantinedFor(t, js, "tx-2")
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	for _, f := range []struct {
		path string
		form url.Values
	}{
		{"/console/dlq/purge", url.Values{"transaction": {"t1"}}},
		{"/console/dlq/purge", url.Values{"endpoint_name": {"orders"}}},
		{"/console/dlq/redrive", url.Values{"seqq": {"1"}}},
		{"/console/quarantine/purge", url.Values{"seqq": {"1"}}},
		{"/console/quarantine/purge", url.Values{"project": {"main"}, "transaction": {"tx-1"}}},
		{"/console/quarantine/redrive", url.Values{"seqq": {"1"}}},
		// The API's spellings: without the check, a replay of every event of
		// the day to orders, not one payment's success.
		{"/console/replays", url.Values{"endpoint": {"orders"}, "since": {"24h"}, "status": {"success"}, "merchantRef": {"INV-1"}}},
		{"/console/replays", url.Values{"endpoints": {"orders"}, "since": {"24h"}, "dry_run": {"true"}}},
		// Last: it must not sign out (the rows after it would then be refused for want of a session).
		{"/console/logout", url.Values{"everywhere": {"yes"}}},
	} {
		f.form.Set("_csrf", csrf)
		resp, err := c.PostForm(hs.URL+f.path, f.form)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"unknown_parameter"`) {
			t.Errorf("POST %s %v: %d %s, want 400 unknown_parameter", f.path, f.form, resp.StatusCode, b)
		}
	}
	for _, p := range []string{"/console/dlq/confirm?action=purge&transaction=t1", "/console/quarantine/confirm?action=purge&seqq=1", "/console/dlq?endpoint_name=orders"} {
		resp, err := c.Get(hs.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", p, resp.StatusCode)
		}
	}
	// A field of the replay form sent twice: only the first was read.
	// (Not endpoint, which names each endpoint of a job started again.)
	resp, err := c.PostForm(hs.URL+"/console/replays", url.Values{"_csrf": {csrf}, "endpoint": {"orders"}, "since": {"24h", "30d"}, "dry_run": {"true"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"empty_filter"`) {
		t.Errorf("a replay with since twice: %d %s, want 400 empty_filter", resp.StatusCode, b)
	}
	// A transaction id longer than SenGo's is refused before it reaches a job's filter.
	resp, err = c.PostForm(hs.URL+"/console/replays", url.Values{"_csrf": {csrf}, "endpoint": {"orders"}, "since": {"24h"}, "dry_run": {"true"}, "transaction": {strings.Repeat("t", 129)}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a replay of a 129-byte transaction id: %d, want 400", resp.StatusCode)
	}
	if n := msgsIn(t, js, event.StreamDLQ); n != 2 {
		t.Errorf("%d of 2 dead letters left after refused purges", n)
	}
	if n := msgsIn(t, js, event.StreamReplay); n != 0 {
		t.Errorf("%d dead letters redriven by a refused redrive", n)
	}
	if n := msgsIn(t, js, event.StreamQuarantine); n != 2 {
		t.Errorf("%d of 2 quarantined notifications left after refused actions", n)
	}
}

// A console action on dead letters ran under the read timeout (10 s by
// default), so a redrive or purge of many stopped partway with 503
// read_timeout, as if the store had not answered, having done part of it.
// It is now bounded only by the operator's request, as the quarantine's
// actions and the API's are.
func TestConsoleDeadLetterActionIsNotCutAtTheReadTimeout(t *testing.T) {
	js := provision(t)
	a := New(Config{Token: token, JetStream: js, Projects: []string{"main"}, ReadTimeout: 100 * time.Millisecond, Logger: zerolog.Nop(),
		Endpoints: []dispatcher.Endpoint{{Name: "orders", URL: "https://orders.example/hook", FilterSubjects: []string{"sengo.events.>"}}}})
	hs := httptest.NewServer(a.Handler())
	t.Cleanup(func() { hs.Close(); a.Close() })
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	const n = 5000
	natstest.PublishMany(t, js, n, func(i int) *nats.Msg {
		d := dispatcher.DeadLetter{Endpoint: "orders", EventID: fmt.Sprintf("evt_%d", i), TransactionID: fmt.Sprintf("t%d", i), Reason: dispatcher.ReasonGone}
		b, _ := json.Marshal(d)
		return &nats.Msg{Subject: event.DLQTxSubject("orders", d.TransactionID), Data: b}
	})
	resp, err := c.PostForm(hs.URL+"/console/dlq/purge", url.Values{"endpoint": {"orders"}, "_csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("purge of %d dead letters: %d, want it done (303)", n, resp.StatusCode)
	}
	s, err := js.Stream(t.Context(), event.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("%d dead letters left of %d", info.State.Msgs, n)
	}
}

// A transaction id is any caller's text: a forged notification's id became
// a link's path as it was ("/console/tx/main/../../quarantine/confirm?…"),
// and the operator who clicked the merchantRef of a quarantined forgery
// landed on the confirmation to purge every quarantined notification. It
// is one path segment now, and the link opens that transaction's story.
func TestConsoleLinksKeepATransactionIdInItsSegment(t *testing.T) {
	hs, js := newServer(t)
	const id = "../../quarantine/confirm?action=purge#x"
	msg := &nats.Msg{Subject: event.QuarantineTxSubject("main", id), Data: bigNotification(id, 0), Header: nats.Header{event.HeaderProject: {"main"}}}
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	signIn(t, c, hs.URL)
	resp, err := c.Get(hs.URL + "/console/quarantine")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`href="(/console/tx/[^"]*)"`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no link to the transaction in %s", b)
	}
	want := "/console/tx/main/" + url.PathEscape(id)
	if got := html.UnescapeString(m[1]); got != want {
		t.Fatalf("link %q, want %q", got, want)
	}
	resp, err = c.Get(hs.URL + want)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(html.UnescapeString(string(b)), id) {
		t.Fatalf("the link: %d, want the transaction's story: %.300s", resp.StatusCode, b)
	}
}

// A page at http://rebind.attacker.example:8081 whose name the attacker
// rebinds to 127.0.0.1 is same-origin to itself: its posts carried an
// Origin equal to their Host and passed the cross-site check, and its
// wrong tokens, from the operator's own address, spent that address's
// attempts until the operator's own sign-in was refused (429). A listener
// told which names it serves (admin.hosts; the loopback names for one on
// loopback) refuses every other Host before any token is compared.
func TestARebindingPageCannotSpendTheOperatorsSignIns(t *testing.T) {
	js := provision(t)
	a := New(Config{Token: token, JetStream: js, Projects: []string{"main"}, Relay: "relay-a", Hosts: []string{"localhost", "127.0.0.1", "::1"}, Logger: zerolog.Nop()})
	hs := httptest.NewServer(a.Handler())
	t.Cleanup(func() { hs.Close(); a.Close() })
	const rebound = "rebind.attacker.example:8081"
	for i := range 15 {
		req, _ := http.NewRequest(http.MethodPost, hs.URL+"/console/login", strings.NewReader(url.Values{"token": {fmt.Sprintf("wrong-token-%02d-0123456789", i)}}.Encode()))
		req.Host = rebound
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "http://"+rebound)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := browser(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("sign-in %d from the rebound page: %d, want 421", i+1, resp.StatusCode)
		}
		req, _ = http.NewRequest(http.MethodGet, hs.URL+"/admin/endpoints", nil)
		req.Host = rebound
		req.Header.Set("Authorization", fmt.Sprintf("Bearer guess-%04d-0123456789abcdef", i))
		if resp, err = http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("bearer call %d from the rebound page: %d, want 421", i+1, resp.StatusCode)
		}
	}
	signIn(t, browser(t), hs.URL)
	if code, body := call(t, hs, http.MethodGet, "/admin/endpoints", "", token); code != http.StatusOK {
		t.Fatalf("the operator's own call after the rebound page's: %d %s", code, body)
	}
}

// A confirmation that counted nothing carries upto 0: its action touches
// nothing. Taken for no bound, a purge confirmed over an empty list (the
// dead letters, or the quarantine, of a moment before) purged every one
// stored since, none of which the operator was shown.
func TestAConfirmationThatCountedNothingTouchesNothing(t *testing.T) {
	hs, js := newServer(t)
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	storeDeadLetters(t, js, 1)
	msg := &nats.Msg{Subject: event.QuarantineTxSubject("main", "tx-q"), Data: []byte(`{"id":"tx-q"}`), Header: nats.Header{event.HeaderProject: []string{"main"}}}
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/console/dlq/purge", "/console/quarantine/purge"} {
		resp, err := c.PostForm(hs.URL+path, url.Values{"_csrf": {csrf}, "upto": {"0"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusSeeOther && !strings.Contains(resp.Header.Get("Location"), "purge%3A+0+") {
			t.Errorf("%s with upto 0: → %s, want nothing purged", path, resp.Header.Get("Location"))
		}
	}
	if n := len(natstest.Messages(t, js, event.StreamDLQ)); n != 1 {
		t.Errorf("%d dead letters left, want the one no confirmation counted", n)
	}
	if n := len(natstest.Messages(t, js, event.StreamQuarantine)); n != 1 {
		t.Errorf("%d quarantined left, want the one no confirmation counted", n)
	}
}

// A hold the store refused is not reported done, by the API or the
// console: answered 200 "held", the operator believed deliveries paused
// that went on.
func TestAHoldTheStoreRefusesIsNotReportedDone(t *testing.T) {
	hs, js, _ := newRelay(t)
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	natstest.RefuseWrites(t, js, "KV_"+event.BucketDelivery)
	if code, body := call(t, hs, http.MethodPost, "/admin/endpoints/orders/pause", "", token); code/100 == 2 {
		t.Errorf("a hold the store refused, by the API: %d %s", code, body)
	}
	resp, err := c.PostForm(hs.URL+"/console/endpoints/orders/pause", url.Values{"_csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 5 {
		t.Errorf("a hold the store refused, in the console: %d → %s, want a failure", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// A dead-letter action the store stops part way is shown so, not as
// done.
func TestAConsoleDeadLetterPurgeTheStoreRefusesIsNotDone(t *testing.T) {
	hs, js := newServer(t)
	storeDeadLetters(t, js, 1)
	s, err := js.Stream(t.Context(), event.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.DenyDelete = true
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	resp, err := c.PostForm(hs.URL+"/console/dlq/purge", url.Values{"_csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "stopped part way") {
		t.Fatalf("a purge the store refused: %d → %s %.200s, want 503 saying it stopped part way", resp.StatusCode, resp.Header.Get("Location"), b)
	}
}
