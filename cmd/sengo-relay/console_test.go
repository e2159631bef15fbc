package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/sengo-relay/sengo-relay/event"
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
}

// text is the visible text of the page.
func (p *page) text() string {
	p.t.Helper()
	var s string
	p.run("read the page", chromedp.Text("body", &s, chromedp.ByQuery))
	return s
}

// html is the page's markup.
func (p *page) html() string {
	p.t.Helper()
	var s string
	p.run("read the markup", chromedp.OuterHTML("html", &s, chromedp.ByQuery))
	return s
}

// until reloads the page until its text contains want.
func (p *page) until(what, want string) {
	p.t.Helper()
	eventually(p.t, what, func() bool {
		var s string
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Run(ctx, chromedp.Reload(), chromedp.Text("body", &s, chromedp.ByQuery)); err != nil {
			return false
		}
		return strings.Contains(s, want)
	})
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
// confirmed, event, every attempt); the endpoint fails until the event is
// dead-lettered, is redriven from the console and delivered; a replay runs
// to 100%; an action without the CSRF token or the session is refused.
func TestConsoleInABrowser(t *testing.T) {
	sb, client, sbURL := startSandbox(t, sandbox.CallbackPolicy{})
	orders := newHook(t)
	orders.fail.Store(1 << 30) // down until we say
	p := filepath.Join(t.TempDir(), "config.yaml")
	cfg := fmt.Sprintf(`projects:
  main: {api_key: %s, token: %s, base_url: %q}
intake: {retry_initial: 50ms, retry_max: 500ms, confirm_attempts: 3}
admin: {listen: "127.0.0.1:0", token: %s}
endpoints:
  orders: {url: %q, secrets: [%s], filter: {statuses: [success]}, deliver_from: all, timeout: 2s, retry: {schedule: [300ms, 300ms], jitter: 0}, breaker: {failures: 0}}
`, sbKey, sbToken, sbURL, adminToken, orders.URL, testSecret)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	base, logs := startRunWith(t, p, relayEnv(t.TempDir()))
	waitReady(t, base)
	console := "http://" + logs.field(t, "admin listening", "addr") + "/console"
	b := newPage(t, console, 1280, 900)

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
	eventually(t, "three failed attempts", func() bool { return orders.fail.Load() <= 1<<30-3 })

	// Search the merchantRef: one match opens its story.
	b.run("search INV-5005", chromedp.Navigate(console+"/"), chromedp.SendKeys(`input[name=q]`, "INV-5005", chromedp.ByQuery),
		chromedp.Submit(`input[name=q]`, chromedp.ByQuery), chromedp.WaitVisible(`#steps`, chromedp.ByQuery))
	b.until("the dead letter in the story", "dead_letter")
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

	// The endpoint fails again and a replayed copy is dead-lettered: the
	// operator purges it from the console after the count.
	orders.fail.Store(1 << 30)
	adminAddr := strings.TrimSuffix(strings.TrimPrefix(console, "http://"), "/console")
	req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/admin/replays", strings.NewReader(`{"endpoint":"orders","since":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("replay for the purge: %v %v", resp, err)
	}
	b.run("dead letters again", chromedp.Navigate(console+"/dlq"), chromedp.WaitVisible(`#dlq`, chromedp.ByQuery))
	b.until("the replayed copy dead-lettered", "retries_exhausted after 3")
	b.run("purge…", chromedp.Click(`#dlq a.button.plain`, chromedp.ByQuery), chromedp.WaitVisible(`#confirm`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "Purge 1 dead letter(s) for good?") {
		t.Errorf("the purge does not count first:\n%s", s)
	}
	b.run("confirm the purge", chromedp.Click(`#confirm`, chromedp.ByQuery), chromedp.WaitVisible(`[role=status]`, chromedp.ByQuery))
	if s := b.text(); !strings.Contains(s, "purge: 1 dead letter(s).") || !strings.Contains(s, "No dead letter.") {
		t.Errorf("after the purge:\n%s", s)
	}
	orders.fail.Store(0)

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

	// From the page itself: an action without the CSRF token is refused,
	// and after signing out the session is gone.
	var status int
	b.run("a forged action", chromedp.Evaluate(`fetch("/console/dlq/purge", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "endpoint=orders"}).then(r => r.status)`, &status,
		func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if status != 403 {
		t.Errorf("a POST without the CSRF token answered %d, want 403", status)
	}

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
	phone.run("sign in on a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)), chromedp.Navigate(console+"/login"), chromedp.SendKeys(`input[name=token]`, adminToken, chromedp.ByQuery),
		chromedp.Submit(`input[name=token]`, chromedp.ByQuery), chromedp.WaitVisible(`input[name=q]`, chromedp.ByQuery),
		chromedp.Navigate(console+"/search?q=INV-5005"), chromedp.WaitVisible(`#steps`, chromedp.ByQuery))
	phone.screenshot("console-phone.png")
	var scrollW, clientW int
	phone.run("page width", chromedp.Evaluate(`document.documentElement.scrollWidth`, &scrollW), chromedp.Evaluate(`document.documentElement.clientWidth`, &clientW))
	if scrollW > clientW+1 {
		t.Errorf("on a phone the page is %d px wide in a %d px screen", scrollW, clientW)
	}

	for _, html := range []string{b.html(), phone.html()} {
		for _, secret := range []string{adminToken, testSecret, sbKey, sbToken} {
			if strings.Contains(html, secret) {
				t.Errorf("a page shows a secret")
			}
		}
	}
	b.run("sign out", chromedp.Click(`header button`, chromedp.ByQuery), chromedp.WaitVisible(`input[name=token]`, chromedp.ByQuery))
	b.run("a page after sign-out", chromedp.Navigate(console+"/dlq"), chromedp.WaitVisible(`input[name=token]`, chromedp.ByQuery))
	if !strings.Contains(logs.text(), `"audit":true`) {
		t.Error("no audit line for the console's actions")
	}
}
