package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
)

// chromium finds a Chromium to drive: $CHROMIUM, then Debian's. Without
// one the browser tests are skipped, except in CI (.ci/run installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium: .ci/run installs Debian's chromium; set CHROMIUM to another")
	}
	t.Skip("no Chromium installed (apt-get install chromium, or set CHROMIUM): the console's browser tests need one")
	return ""
}

// page is one headless browser tab on the console.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string // where screenshots go
	// secrets, by name, must not be in any page the tab shows (its
	// markup or its address): each run and until checks.
	secrets map[string]string
}

func newPage(t *testing.T, base string, width, height int) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(width, height))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	// The first Run starts the browser and ties it to its context: that
	// one must have no deadline (later runs have their own).
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start %s: %v", chromium(t), err)
	}
	dir := os.Getenv("SENGO_CONSOLE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	return &page{t: t, ctx: ctx, base: base, shot: dir}
}

// run runs browser actions with a deadline.
func (p *page) run(what string, actions ...chromedp.Action) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		var s, loc string
		sctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		_ = chromedp.Run(sctx, chromedp.Location(&loc), chromedp.Text("body", &s, chromedp.ByQuery))
		p.t.Fatalf("%s: %v\nat %s:\n%.2000s", what, err, loc, s)
	}
	p.noSecrets(what)
}

// noSecrets fails the test if the page shows one of p.secrets in its
// markup (as is or HTML-escaped) or its address; it names the secret,
// never prints it.
func (p *page) noSecrets(what string) {
	p.t.Helper()
	if len(p.secrets) == 0 {
		return
	}
	var markup, loc string
	p.read(what+": read the page for secrets", chromedp.Location(&loc), chromedp.OuterHTML("html", &markup, chromedp.ByQuery))
	path := loc
	if u, err := url.Parse(loc); err == nil {
		path = u.Path
	}
	for name, v := range p.secrets {
		if strings.Contains(markup, v) || strings.Contains(markup, template.HTMLEscapeString(v)) || strings.Contains(loc, v) || strings.Contains(loc, url.QueryEscape(v)) {
			p.t.Errorf("%s: the page at %s shows %s", what, path, name)
		}
	}
}

// text is the visible text of the page.
func (p *page) text() string {
	p.t.Helper()
	var s string
	p.read("read the page", chromedp.Text("body", &s, chromedp.ByQuery))
	return s
}

// read runs actions that only read the page, again until they succeed
// within 10 s: just after a navigation, chromedp may still hold node ids
// of the document it is replacing ("No node with given id found"), which
// failed a clean-clone run of TestConsoleInABrowser.
func (p *page) read(what string, actions ...chromedp.Action) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		err := chromedp.Run(ctx, actions...)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}

// until reloads the page until its text contains want.
func (p *page) until(what, want string) {
	p.t.Helper()
	eventually(p.t, what, func() bool { return p.reloadShows(want) })
	p.noSecrets(what)
}

// shows is until that reports, instead of failing the test, whether the
// text came within poll.Deadline (each reload paces the next).
func (p *page) shows(what, want string) bool {
	p.t.Helper()
	for deadline := time.Now().Add(poll.Deadline); time.Now().Before(deadline); {
		if p.reloadShows(want) {
			p.noSecrets(what)
			return true
		}
	}
	return false
}

// reloadShows reloads the page and reports whether its text contains want.
func (p *page) reloadShows(want string) bool {
	var s string
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, chromedp.Reload(), chromedp.Text("body", &s, chromedp.ByQuery)); err != nil {
		return false
	}
	return strings.Contains(s, want)
}

func (p *page) screenshot(name string) {
	p.t.Helper()
	var b []byte
	p.run("screenshot "+name, chromedp.FullScreenshot(&b, 100)) // quality 100: PNG
	if err := os.WriteFile(filepath.Join(p.shot, name), b, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// An operator's whole session in a real browser: sign in; a payment made
// in the sandbox is found by its merchantRef and its story read (callback,
// confirmed, event, every attempt); the endpoint fails, its retries show
// in the story before the event is dead-lettered, is redriven from the
// console and delivered; a replay runs to 100%; an action without the CSRF
// token or the session is refused; no page shows a secret.
func TestConsoleInABrowser(t *testing.T) {
	sb, client, sbURL := startSandbox(t, sandbox.CallbackPolicy{})
	orders := newHook(t)
	orders.fail.Store(1 << 30) // down until we say
	// The third attempt, the last before the dead letter, waits at the
	// endpoint until the story has shown the two before it.
	releaseThird := orders.holdFailure(t, 1<<30-3)
	const (
		hookUser, hookPassword = "relay", "hookpass0123456789" // in the endpoint's URL
		hookKey                = "hook-query-key-0123456789"   // in its query
		hookHeader             = "hook-header-secret-0123456789"
	)
	hookURL := "http://" + hookUser + ":" + hookPassword + "@" + strings.TrimPrefix(orders.URL, "http://") + "/?key=" + hookKey
	p := filepath.Join(t.TempDir(), "config.yaml")
	cfg := fmt.Sprintf(`projects:
  main: {api_key: %s, token: %s, base_url: %q}
intake: {retry_initial: 50ms, retry_max: 500ms, confirm_attempts: 3}
admin: {listen: "127.0.0.1:0", token: %s}
endpoints:
  orders: {url: %q, secrets: [%s], headers: {X-Consumer-Key: %s}, filter: {statuses: [success]}, deliver_from: all, timeout: 1m, retry: {schedule: [300ms, 300ms], jitter: 0}, breaker: {failures: 0}}
`, sbKey, sbToken, sbURL, adminToken, hookURL, testSecret, hookHeader)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	base, logs := startRunWith(t, p, relayEnv(t.TempDir()))
	waitReady(t, base)
	console := "http://" + logs.field(t, "admin listening", "addr") + "/console"
	secrets := map[string]string{
		"the admin token":                  adminToken,
		"the webhook secret":               strings.TrimPrefix(testSecret, "whsec_"),
		"SenGo's API key":                  sbKey,
		"SenGo's token":                    sbToken,
		"the endpoint URL's password":      hookPassword,
		"the endpoint URL's query key":     hookKey,
		"the endpoint URL's Basic auth":    base64.StdEncoding.EncodeToString([]byte(hookUser + ":" + hookPassword)),
		"the endpoint's configured header": hookHeader,
	}
	adminAddr := strings.TrimSuffix(strings.TrimPrefix(console, "http://"), "/console")
	// deadLetters counts the dead letters, as the admin API lists them.
	deadLetters := func() int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+adminAddr+"/admin/dlq", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var dlq []json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&dlq); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /admin/dlq: %d %v", resp.StatusCode, err)
		}
		return len(dlq)
	}
	b := newPage(t, console, 1280, 900)
	b.secrets = secrets

	// Sign in: a wrong token first.
	b.run("open the console", chromedp.Navigate(console+"/"), chromedp.WaitVisible(`input[name=token]`, chromedp.ByQuery))
	b.run("a wrong token", chromedp.SendKeys(`input[name=token]`, "not-the-token-0123456789", chromedp.ByQuery), chromedp.Submit(`input[name=token]`, chromedp.ByQuery),
		chromedp.WaitVisible(`[role=alert]`, chromedp.ByQuery))
	b.run("sign in", chromedp.SendKeys(`input[name=token]`, adminToken, chromedp.ByQuery), chromedp.Submit(`input[name=token]`, chromedp.ByQuery),
		chromedp.WaitVisible(`input[name=q]`, chromedp.ByQuery))

	tx, err := client.CreateRetail(context.Background(), sengo.RetailRequest{
		Reference: "INV-5005", PhoneNumber: "081234567890", Channel: "alfamart", Amount: 10000, ViewName: "Toko Contoh",
		AdditionalInfo: sengo.AdditionalInfo{Callback: base + "/callbacks/sengo/main"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the third attempt held at the endpoint", func() bool { return orders.fail.Load() <= 1<<30-3 })

	// Search the merchantRef: one match opens its story, where the
	// retries appear while the last attempt is still under way, before
	// any dead letter.
	b.run("search INV-5005", chromedp.Navigate(console+"/"), chromedp.SendKeys(`input[name=q]`, "INV-5005", chromedp.ByQuery),
		chromedp.Submit(`input[name=q]`, chromedp.ByQuery), chromedp.WaitVisible(`#steps`, chromedp.ByQuery))
	retried := regexp.MustCompile(`orders attempt 1 \(live\): HTTP 500 in \d+ ms, retry`)
	if !b.shows("the failed attempts in the story", "orders attempt 2 (live): HTTP 500") {
		t.Errorf("the story did not show the failed attempts while the event was retried:\n%s", b.text())
	} else if s := b.text(); !retried.MatchString(s) || strings.Contains(s, "dead_letter") || strings.Contains(s, "dead letter:") || strings.Contains(s, "retries_exhausted") {
		t.Errorf("while the last attempt is under way, the story shows no retry, or a dead letter:\n%s", s)
	}
	if n := deadLetters(); n != 0 {
		t.Errorf("%d dead letters while the last attempt was under way", n)
	}
	releaseThird()
	// The dead letter itself, not the last attempt's "dead_letter": the
	// attempt is recorded as decided, before its dead letter is stored,
	// and a page between the two showed one without the other.
	b.until("the dead letter in the story", "orders dead letter: retries_exhausted")
	story := b.text()
	for _, want := range []string{"INV-5005", "Rp 10.085", "callback notification: success from 127.0.0.1", "published success, confirmed by SenGo's API",
		"orders attempt 1 (live): HTTP 500", "orders attempt 2 (live): HTTP 500", "retry", "orders dead letter: retries_exhausted after 3 attempts", "WIB"} {
		if !strings.Contains(story, want) {
			t.Errorf("the story lacks %q:\n%s", want, story)
		}
	}
	b.screenshot("console-transaction.png")

	// The endpoint is back: redrive from the dead-letter page, confirmed
	// after the count.
	orders.fail.Store(0)
	b.run("dead letters", chromedp.Navigate(console+"/dlq"), chromedp.WaitVisible(`#dlq`, chromedp.ByQuery))
	b.screenshot("console-dead-letters.png")
	b.run("redrive…", chromedp.Click(`#dlq a.button`, chromedp.ByQuery), chromedp.WaitVisible(`#confirm`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "Redrive 1 dead letter(s)?") {
		t.Errorf("the confirmation does not count first:\n%s", s)
	}
	b.run("confirm", chromedp.Click(`#confirm`, chromedp.ByQuery), chromedp.WaitVisible(`[role=status]`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "redrive: 1 dead letter(s).") {
		t.Errorf("after redrive:\n%s", s)
	}
	eventually(t, "the redriven event delivered", func() bool { return len(orders.received()) == 1 })
	b.run("the story again", chromedp.Navigate(console+"/search?q=INV-5005"), chromedp.WaitVisible(`#steps`, chromedp.ByQuery))
	b.until("the redriven delivery in the story", "(redrive): HTTP 200")

	// Replay the last hour: a dry run counts, then it runs for real.
	b.run("replays", chromedp.Navigate(console+"/replays"), chromedp.WaitVisible(`#start-replay`, chromedp.ByQuery),
		chromedp.Click(`#start-replay`, chromedp.ByQuery), chromedp.WaitVisible(`.done`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "100%") || !strings.Contains(s, "matched 1") {
		t.Errorf("dry run:\n%s", s)
	}
	b.run("run it", chromedp.Click(`#run-replay`, chromedp.ByQuery), chromedp.WaitNotPresent(`#run-replay`, chromedp.ByQuery), chromedp.WaitVisible(`.done`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "100%") || !strings.Contains(s, "queued 1") {
		t.Errorf("replay:\n%s", s)
	}
	b.screenshot("console-replay.png")
	eventually(t, "the replayed copy delivered", func() bool { return len(orders.received()) == 2 })

	// A forged success for a pending payment is quarantined with SenGo's
	// version; the operator sees it and redrives it after the count (it is
	// checked with SenGo again, and quarantined again).
	pending, err := client.CreateRetail(context.Background(), sengo.RetailRequest{Reference: "INV-6006", PhoneNumber: "0812", Channel: "alfamart", Amount: 50000, ViewName: "Toko"})
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(pending.Raw, []byte(`"status":"pending"`), []byte(`"status":"success"`), 1)
	forged = append(append([]byte(`{"responseCode":200,"responseMessage":"success","responseData":`), forged...), '}')
	if code := post(t, base+"/callbacks/sengo/main", forged); code != 200 {
		t.Fatalf("the forged callback: %d", code)
	}
	b.run("quarantine", chromedp.Navigate(console+"/quarantine"), chromedp.WaitVisible(`main table`, chromedp.ByQuery))
	b.until("the forged callback quarantined", "INV-6006")
	if s := b.text(); !strings.Contains(s, "SenGo says pending") {
		t.Errorf("the quarantine page does not say why:\n%s", s)
	}
	// Its story shows the forged claim beside SenGo's version.
	b.run("INV-6006's story", chromedp.Navigate(console+"/tx/main/"+pending.ID), chromedp.WaitVisible(`#steps`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "success notification quarantined") || !strings.Contains(s, "SenGo's version") {
		t.Errorf("the story of the forged payment:\n%s", s)
	}
	b.run("quarantine again", chromedp.Navigate(console+"/quarantine"), chromedp.WaitVisible(`main table`, chromedp.ByQuery))
	b.run("redrive it…", chromedp.Click(`main table a.button`, chromedp.ByQuery), chromedp.WaitVisible(`#confirm`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "Redrive 1 quarantined notification(s)?") {
		t.Errorf("the confirmation does not count first:\n%s", s)
	}
	b.run("confirm", chromedp.Click(`#confirm`, chromedp.ByQuery), chromedp.WaitVisible(`[role=status]`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "redrive: 1 notification(s).") {
		t.Errorf("after the quarantine redrive:\n%s", s)
	}
	// Checked again, SenGo still says pending: quarantined again. The
	// operator purges it, after the count.
	b.run("quarantine after the redrive", chromedp.Navigate(console+"/quarantine"), chromedp.WaitVisible(`#quarantine`, chromedp.ByQuery))
	b.until("the forged callback quarantined again", "INV-6006")
	b.run("purge it…", chromedp.Click(`#quarantine a.button.plain`, chromedp.ByQuery), chromedp.WaitVisible(`#confirm`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "Purge 1 quarantined notification(s) for good?") {
		t.Errorf("the purge confirmation does not count first:\n%s", s)
	}
	b.run("confirm the purge", chromedp.Click(`#confirm`, chromedp.ByQuery), chromedp.WaitVisible(`[role=status]`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "purge: 1 notification(s).") || !strings.Contains(s, "Nothing quarantined.") {
		t.Errorf("after the quarantine purge:\n%s", s)
	}

	// Endpoint controls: pause (held on every relay), a test send, resume.
	b.run("pause orders", chromedp.Navigate(console+"/endpoints"), chromedp.WaitVisible(`#pause-orders`, chromedp.ByQuery),
		chromedp.Click(`#pause-orders`, chromedp.ByQuery), chromedp.WaitVisible(`[role=status]`, chromedp.ByQuery))
	b.until("orders held", "held by console session:")
	b.screenshot("console-endpoints.png")
	// Each action from a fresh page: the flash of the one before must not
	// pass for its answer.
	b.run("test send", chromedp.Navigate(console+"/endpoints"), chromedp.WaitVisible(`#test-orders`, chromedp.ByQuery),
		chromedp.Click(`#test-orders`, chromedp.ByQuery), chromedp.WaitVisible(`[role=status]`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "to orders: HTTP 200") {
		t.Errorf("test send:\n%s", s)
	}
	b.run("resume orders", chromedp.Navigate(console+"/endpoints"), chromedp.WaitVisible(`#resume-orders`, chromedp.ByQuery),
		chromedp.Click(`#resume-orders`, chromedp.ByQuery), chromedp.WaitVisible(`[role=status]`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "orders resumed.") {
		t.Errorf("after resume:\n%s", s)
	}
	eventually(t, "the hold gone from the page", func() bool {
		var s string
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		return chromedp.Run(ctx, chromedp.Reload(), chromedp.Text("#endpoints", &s, chromedp.ByQuery)) == nil && !strings.Contains(s, "held by")
	})
	b.noSecrets("endpoints")

	// The endpoint fails again and a replayed copy is dead-lettered: the
	// operator purges it from the console after the count.
	orders.fail.Store(1 << 30)
	req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/admin/replays", strings.NewReader(`{"endpoint":"orders","since":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("replay for the purge: %v %v", resp, err)
	}
	b.run("dead letters again", chromedp.Navigate(console+"/dlq"), chromedp.WaitVisible(`#dlq`, chromedp.ByQuery))
	b.until("the replayed copy dead-lettered", "retries_exhausted after 3")

	// From the page itself: a purge without the CSRF token is refused; after
	// signing out, so is one with the token read before (the cookie gone),
	// and one with the old cookie put back (the session is dropped where
	// it is stored, for every relay). Nothing is purged.
	var csrf string
	var cookies []*network.Cookie
	b.run("the page's token and the session cookie", chromedp.Evaluate(`document.querySelector("header input[name=_csrf]").value`, &csrf),
		chromedp.ActionFunc(func(ctx context.Context) (err error) { cookies, err = network.GetCookies().Do(ctx); return err }))
	var old *network.Cookie
	for _, c := range cookies {
		if c.Name == "sengo_console" {
			old = c
		}
	}
	if csrf == "" || old == nil {
		t.Fatalf("no CSRF token (%d bytes) or no session cookie among %d", len(csrf), len(cookies))
	}
	purge := func(what, token string) int {
		t.Helper()
		var status int
		b.run(what, chromedp.Evaluate(fmt.Sprintf(`(() => {
	const f = new URLSearchParams({endpoint: "orders"});
	if (%q) f.set("_csrf", %q);
	return fetch("/console/dlq/purge", {method: "POST", body: f, credentials: "same-origin"}).then(r => r.status);
})()`, token, token), &status,
			func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
		return status
	}
	if status := purge("a purge without the CSRF token", ""); status != http.StatusForbidden {
		t.Errorf("a POST without the CSRF token answered %d, want 403", status)
	}
	b.run("sign out", chromedp.Click(`header button`, chromedp.ByQuery), chromedp.WaitVisible(`input[name=token]`, chromedp.ByQuery))
	if status := purge("a purge after sign-out", csrf); status != http.StatusUnauthorized {
		t.Errorf("a POST with the CSRF token after sign-out answered %d, want 401", status)
	}
	b.run("a page after sign-out", chromedp.Navigate(console+"/dlq"), chromedp.WaitVisible(`input[name=token]`, chromedp.ByQuery))
	b.run("the old session cookie put back", chromedp.ActionFunc(func(ctx context.Context) error {
		return network.SetCookie(old.Name, old.Value).WithURL(console + "/").WithPath(old.Path).WithHTTPOnly(true).Do(ctx)
	}))
	if status := purge("a purge with the old session after sign-out", csrf); status != http.StatusUnauthorized {
		t.Errorf("a POST with the old session cookie and CSRF token after sign-out answered %d, want 401", status)
	}
	if n := deadLetters(); n != 1 {
		t.Errorf("%d dead letters after the refused purges, want the 1 still there", n)
	}
	b.run("sign in again", chromedp.SendKeys(`input[name=token]`, adminToken, chromedp.ByQuery), chromedp.Submit(`input[name=token]`, chromedp.ByQuery),
		chromedp.WaitVisible(`input[name=q]`, chromedp.ByQuery), chromedp.Navigate(console+"/dlq"), chromedp.WaitVisible(`#dlq`, chromedp.ByQuery))
	b.run("purge…", chromedp.Click(`#dlq a.button.plain`, chromedp.ByQuery), chromedp.WaitVisible(`#confirm`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "Purge 1 dead letter(s) for good?") {
		t.Errorf("the purge does not count first:\n%s", s)
	}
	b.run("confirm the purge", chromedp.Click(`#confirm`, chromedp.ByQuery), chromedp.WaitVisible(`[role=status]`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "purge: 1 dead letter(s).") || !strings.Contains(s, "No dead letter.") {
		t.Errorf("after the purge:\n%s", s)
	}
	orders.fail.Store(0)

	b.run("overview", chromedp.Navigate(console+"/"), chromedp.WaitVisible(`#rates`, chromedp.ByQuery))
	// The hour's rates: this test's callbacks and events are in them.
	var bars int
	var received string
	b.run("rates", chromedp.Evaluate(`document.querySelectorAll("#rates rect").length`, &bars),
		chromedp.Text(`#rates tbody tr:first-child td:nth-child(2)`, &received, chromedp.ByQuery))
	if n, _ := strconv.Atoi(strings.TrimSpace(received)); bars < 5*12 || n == 0 {
		t.Errorf("overview rates: %d bars, %q notifications received in the hour", bars, received)
	}
	b.screenshot("console-overview.png")
	b.run("live events", chromedp.Navigate(console+"/events"), chromedp.WaitVisible(`#feed`, chromedp.ByQuery))
	// The relay reconciles at start: that run is listed.
	b.run("reconciliation", chromedp.Navigate(console+"/reconciliations"), chromedp.WaitVisible(`#runs`, chromedp.ByQuery))
	b.until("the run at start listed", "periodic")
	phone := newPage(t, console, 390, 844)
	phone.secrets = secrets
	phone.run("sign in on a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)), chromedp.Navigate(console+"/login"), chromedp.SendKeys(`input[name=token]`, adminToken, chromedp.ByQuery),
		chromedp.Submit(`input[name=token]`, chromedp.ByQuery), chromedp.WaitVisible(`input[name=q]`, chromedp.ByQuery),
		chromedp.Navigate(console+"/search?q=INV-5005"), chromedp.WaitVisible(`#steps`, chromedp.ByQuery))
	phone.screenshot("console-phone.png")
	var scrollW, clientW int
	phone.run("page width", chromedp.Evaluate(`document.documentElement.scrollWidth`, &scrollW), chromedp.Evaluate(`document.documentElement.clientWidth`, &clientW))
	if scrollW > clientW+1 {
		t.Errorf("on a phone the page is %d px wide in a %d px screen", scrollW, clientW)
	}

	if !strings.Contains(logs.text(), `"audit":true`) {
		t.Error("no audit line for the console's actions")
	}
}
