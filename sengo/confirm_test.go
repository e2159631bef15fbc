package sengo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
)

// Every disagreement with SenGo's API is a mismatch: an unknown
// transaction, another merchantRef, another amount or totalAmount. The
// same transaction as SenGo has it is confirmed.
func TestConfirmerComparesEveryField(t *testing.T) {
	_, base := startSandbox(t, sandbox.Config{})
	client := sengo.NewClient(base, key, token)
	c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": client})
	ctx := context.Background()
	tx, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-1", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Confirm(ctx, "shop", tx)
	if err != nil || !ok || got.ID != tx.ID {
		t.Fatalf("genuine: %v %v %+v", ok, err, got)
	}
	change := map[string]func(*sengo.Transaction){
		"unknown transaction": func(x *sengo.Transaction) { x.ID = "66e934f6-0000-0000-0000-000000000000" },
		"merchantRef":         func(x *sengo.Transaction) { x.MerchantRef = "INV-2" },
		"amount":              func(x *sengo.Transaction) { x.Amount = 1 },
		"totalAmount":         func(x *sengo.Transaction) { x.TotalAmount = 1 },
	}
	for name, f := range change {
		t.Run(name, func(t *testing.T) {
			forged := tx
			f(&forged)
			_, ok, err := c.Confirm(ctx, "shop", forged)
			if ok || !errors.Is(err, sengo.ErrMismatch) {
				t.Fatalf("confirmed %v, err %v: want ErrMismatch", ok, err)
			}
		})
	}
	claimed := tx
	claimed.Status = event.StatusSuccess // SenGo still says pending
	if _, _, err := c.Confirm(ctx, "shop", claimed); !errors.Is(err, sengo.ErrUnconfirmed) {
		t.Fatalf("unpaid success: %v", err)
	}
}

// Only SenGo's own TRANSACTION_NOT_FOUND means not found. A bare or HTML
// 404 (a base_url without /api, a proxy during a deploy) is an ordinary
// failure, retried: it must never quarantine a genuine payment.
func TestBare404IsNotTransactionNotFound(t *testing.T) {
	for name, body := range map[string]string{
		"html":       "<html><body>404 Not Found</body></html>",
		"empty":      "",
		"other json": `{"message":"no route"}`,
	} {
		t.Run(name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(404)
				w.Write([]byte(body))
			}))
			defer hs.Close()
			_, err := sengo.NewClient(hs.URL, key, token).Check(context.Background(), "tx-1", false)
			if err == nil || errors.Is(err, sengo.ErrTransactionNotFound) {
				t.Fatalf("err = %v: a bare 404 read as TRANSACTION_NOT_FOUND", err)
			}
			c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": sengo.NewClient(hs.URL, key, token)})
			_, _, err = c.Confirm(context.Background(), "shop", sengo.Transaction{ID: "tx-1"})
			if errors.Is(err, sengo.ErrMismatch) || !strings.Contains(err.Error(), "404") {
				t.Fatalf("Confirm: %v, want a retryable error naming the 404", err)
			}
		})
	}
}

// Checks of one transaction at the same moment share one call to SenGo's
// API: each forged body posted for a real transaction cost a check of
// its own (up to 30 with its rechecks), on the merchant's API key, and a
// flood of them could have SenGo throttle the key, delaying the genuine
// notifications' checks and the merchant's own calls. Each caller still
// compares SenGo's answer with its own notification.
func TestChecksOfOneTransactionAtOnceShareOneCall(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Config{})
	checks, counted := countingSandbox(t, base, func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/check/") })
	client := sengo.NewClient(counted+"/api", key, token)
	c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": client})
	ctx := context.Background()
	tx, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-FLOOD", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(500 * time.Millisecond)}) // every check in flight at once
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			claim := tx
			claim.Status = event.StatusSuccess // forged: SenGo says pending
			if i == 0 {
				claim = tx // the genuine pending
			}
			_, _, errs[i] = c.Confirm(ctx, "shop", claim)
		})
	}
	wg.Wait()
	if errs[0] != nil {
		t.Fatalf("the genuine pending: %v", errs[0])
	}
	for i, err := range errs[1:] {
		if !errors.Is(err, sengo.ErrUnconfirmed) {
			t.Fatalf("forged %d: %v, want ErrUnconfirmed", i+1, err)
		}
	}
	if got := checks.Load(); got > 2 {
		t.Fatalf("%d concurrent confirmations of one transaction made %d checks, want them to share one", n, got)
	}
}

// A probe that ran out of its caller's time (a caller that waited for its
// turn behind a slow probe, or had little time left) was recorded as "SenGo
// does not answer" for every caller for 5 s, replacing a fresh answer:
// checks failing for one transaction alone were then retried as in an
// outage. Only a probe given its whole time and left unanswered says so.
func TestAProbeCutShortByItsCallerSaysNothing(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Config{})
	probes, counted := countingSandbox(t, base, func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/check/"+sengo.ProbeIDPrefix) })
	c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": sengo.NewClient(counted+"/api", key, token)})
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(time.Second)}) // slow, but answering
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if c.ChecksAnswered(short, "shop", time.Now()) {
		t.Fatal("a probe cut short at 200 ms said SenGo answers")
	}
	if !c.ChecksAnswered(context.Background(), "shop", time.Now()) {
		t.Fatalf("a probe with its whole time: SenGo does not answer (%d probes sent)", probes.Load())
	}
	if n := probes.Load(); n != 2 {
		t.Fatalf("%d probes sent, want 2: the one cut short told nothing", n)
	}
}

// Asked without a time (any answer will do: intake asking whether SenGo
// refuses every check), a caller does not wait for another caller's
// probe: it is told "no" at once, and retries.
func TestAProbeAskedWithoutATimeDoesNotWaitForAnother(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Config{})
	probes, counted := countingSandbox(t, base, func(r *http.Request) bool { return true })
	c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": sengo.NewClient(counted+"/api", key, token)})
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(3 * time.Second)})
	done := make(chan bool)
	go func() { done <- c.ChecksAnswered(context.Background(), "shop", time.Now()) }()
	poll.Until(t, "the first probe sent", func() bool { return probes.Load() > 0 })
	if c.ChecksAnswered(context.Background(), "shop", time.Time{}) {
		t.Fatal("told yes while another caller's probe ran, with no answer yet")
	}
	select {
	case <-done:
		t.Fatal("the second caller waited for the first probe to end")
	default:
	}
	if !<-done {
		t.Fatal("SenGo answered the probe: no")
	}
	// A fresh answer stands for it while another caller's probe runs (one
	// whose check failed after that answer was sent).
	go func() { done <- c.ChecksAnswered(context.Background(), "shop", time.Now()) }()
	poll.Until(t, "the second probe sent", func() bool { return probes.Load() > 1 })
	if !c.ChecksAnswered(context.Background(), "shop", time.Time{}) {
		t.Fatal("told no while a fresh yes stood, because another caller's probe ran")
	}
	<-done
}

// A probe had 5 s to answer where a check had its check timeout (a third
// of intake's ack_wait, or confirm_timeout: 1.67 s with ack_wait 5s).
// With SenGo slow for everyone (every answer in 2 s), every check timed
// out and every probe answered: each genuine notification was taken for
// one failing alone and quarantined on its first try. A probe now has no
// more time than a check.
func TestAProbeWaitsNoLongerThanACheck(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Config{})
	client := sengo.NewClient(base, key, token)
	tx, err := client.CreateQRIS(context.Background(), sengo.QRISRequest{Reference: "INV-1", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": client}, sengo.CheckTimeout(time.Second))
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(2 * time.Second)}) // slow for everyone
	if _, _, err := c.Confirm(context.Background(), "shop", tx); !errors.Is(err, sengo.ErrCheckTimedOut) {
		t.Fatalf("a check answered in 2 s with 1 s to wait: %v, want ErrCheckTimedOut", err)
	}
	if c.ChecksAnswered(context.Background(), "shop", time.Now()) {
		t.Fatal("SenGo answering every check in 2 s, past the check timeout of 1 s: the probe said it answers checks")
	}
}

// The probe asked about an id that looked like none of SenGo's (theirs
// are UUIDs), and took any refusal of it (422 REQUEST_INVALID) for "SenGo
// answers checks". A SenGo that refuses a malformed id before looking it
// up answered the probe at once while every real check failed (503): each
// genuine notification was taken for one failing alone and quarantined.
// The probe's id is shaped as SenGo's are, and only SenGo's answer about
// it (TRANSACTION_NOT_FOUND) says its checks work.
func TestOnlyAnAnswerAboutTheProbesIdSaysChecksWork(t *testing.T) {
	uuid := regexp.MustCompile(`/check/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for name, refuse := range map[string]bool{
		"malformed ids refused, lookups failing": true,
		"every check refused as invalid":         false,
	} {
		t.Run(name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if refuse && uuid.MatchString(r.URL.Path) {
					w.WriteHeader(503)
					w.Write([]byte(`{"responseCode":503,"responseMessage":"PAYMENT_INTERNAL_ERROR"}`))
					return
				}
				w.WriteHeader(422)
				w.Write([]byte(`{"responseCode":422,"responseMessage":"REQUEST_INVALID"}`))
			}))
			defer hs.Close()
			c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": sengo.NewClient(hs.URL, key, token)})
			if c.ChecksAnswered(context.Background(), "shop", time.Now()) {
				t.Fatal("the probe said SenGo answers checks")
			}
		})
	}
	// SenGo's own "no such transaction" about the probe's id: it does.
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !uuid.MatchString(r.URL.Path) {
			t.Errorf("probe of %s: not shaped as SenGo's ids", r.URL.Path)
		}
		w.WriteHeader(404)
		w.Write([]byte(`{"responseCode":404,"responseMessage":"TRANSACTION_NOT_FOUND"}`))
	}))
	defer hs.Close()
	c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": sengo.NewClient(hs.URL, key, token)})
	if !c.ChecksAnswered(context.Background(), "shop", time.Now()) {
		t.Fatal("SenGo answered the probe TRANSACTION_NOT_FOUND: it answers checks")
	}
}

// SenGo's 400 CREATE_FAILED means "upstream switching failed, try
// again", and a proxy's 408 a request it gave up on: both were read as
// SenGo refusing to check this transaction, so a genuine payment was
// quarantined after a few tries during SenGo's own upstream outage,
// rechecked for 8.6 hours and then left to an operator. Both are
// transient now, retried as an outage; a bare 400 (no SenGo code) is
// still a refusal of this id.
func TestARetryLaterAnswerIsNotARefusal(t *testing.T) {
	for name, c := range map[string]struct {
		status  int
		body    string
		refused bool
	}{
		"CREATE_FAILED": {400, `{"responseCode":400,"responseMessage":"CREATE_FAILED"}`, false},
		"408":           {408, ``, false},
		"bare 400":      {400, `{"message":"bad id"}`, true},
	} {
		t.Run(name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(c.status)
				w.Write([]byte(c.body))
			}))
			defer hs.Close()
			conf := sengo.NewConfirmer(map[string]*sengo.Client{"shop": sengo.NewClient(hs.URL, key, token)})
			_, _, err := conf.Confirm(context.Background(), "shop", sengo.Transaction{ID: "66e934f6-0000-4000-8000-000000000001", Status: event.StatusSuccess})
			if err == nil {
				t.Fatal("confirmed")
			}
			if got := errors.Is(err, sengo.ErrUnconfirmed); got != c.refused {
				t.Fatalf("%v: read as a refusal of this transaction %v, want %v", err, got, c.refused)
			}
		})
	}
}

// countingSandbox puts a proxy before the sandbox at base that counts the
// requests count says yes to; it returns the count and the proxy's URL.
func countingSandbox(t *testing.T, base string, count func(*http.Request) bool) (*atomic.Int64, string) {
	t.Helper()
	var n atomic.Int64
	target, _ := url.Parse(strings.TrimSuffix(base, "/api"))
	proxy := httputil.NewSingleHostReverseProxy(target)
	counted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if count(r) {
			n.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(counted.Close)
	return &n, counted.URL
}

// SenGo's answer to the check of one id must be that transaction: a proxy
// or a lookup that ignores case answering the check of a forged id with
// another transaction (the same merchantRef and amounts) confirmed the
// forged id, and its change was published under a second event id.
func TestConfirmerRefusesAnAnswerForAnotherID(t *testing.T) {
	_, base := startSandbox(t, sandbox.Config{})
	client := sengo.NewClient(base, key, token)
	ctx := context.Background()
	tx, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-CASE", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(base)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		b = bytes.ReplaceAll(b, []byte(tx.ID), []byte(strings.ToUpper(tx.ID)))
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		resp.Header.Del("Content-Length")
		return nil
	}
	hs := httptest.NewServer(proxy)
	t.Cleanup(hs.Close)
	c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": sengo.NewClient(hs.URL, key, token)})
	if _, ok, err := c.Confirm(ctx, "shop", tx); ok || !errors.Is(err, sengo.ErrMismatch) {
		t.Fatalf("an answer for %s to the check of %s: confirmed %v, err %v; want ErrMismatch", strings.ToUpper(tx.ID), tx.ID, ok, err)
	}
}

// A project whose API stopped answering (a host that takes connections
// and never answers) held each of its checks for the check's whole time,
// every one of them: with intake's workers shared by every project, a
// few of its notifications a second held most of them, and the other
// projects' notifications waited behind for as long as the outage
// lasted. Once a probe has found no answer, one caller at a time asks
// SenGo (a probe), and the others are told at once.
func TestInAnOutageOneCallerAtATimeAsksSenGo(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Config{})
	checks, counted := countingSandbox(t, base, func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/check/") })
	client := sengo.NewClient(counted+"/api", key, token)
	c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": client}, sengo.CheckTimeout(300*time.Millisecond))
	ctx := context.Background()
	tx, err := client.CreateQRIS(ctx, sengo.QRISRequest{Reference: "INV-OUT", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(3 * time.Second)})
	if _, _, err := c.Confirm(ctx, "shop", tx); !errors.Is(err, sengo.ErrCheckTimedOut) {
		t.Fatalf("a check SenGo does not answer: %v", err)
	}
	if c.ChecksAnswered(ctx, "shop", time.Now()) {
		t.Fatal("a probe SenGo does not answer said yes")
	}
	before := checks.Load()
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Go(func() {
			claim := tx
			claim.ID = fmt.Sprintf("%s-%d", tx.ID, i) // none shares another's check
			_, _, errs[i] = c.Confirm(ctx, "shop", claim)
		})
	}
	wg.Wait()
	if n := checks.Load() - before; n > 1 {
		t.Errorf("16 confirmations in the outage asked SenGo %d times, want one probe at most", n)
	}
	for i, err := range errs {
		if !errors.Is(err, sengo.ErrChecksUnanswered) {
			t.Errorf("confirmation %d in the outage: %v", i, err)
		}
	}
	// Once SenGo answers again, the next probe after the last "no" went
	// stale lets the checks through.
	sb.SetFaults(sandbox.Faults{})
	poll.Until(t, "a confirmation after the outage", func() bool {
		_, ok, err := c.Confirm(ctx, "shop", tx)
		return ok && err == nil
	})
}

// A probe's "no" (no answer in its whole time) stands for the callers that
// waited for their turn behind it: none sends a probe of its own, though
// their checks failed after that probe was sent.
func TestAProbesNoStandsForThoseWaitingBehindIt(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Config{})
	probes, counted := countingSandbox(t, base, func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/check/"+sengo.ProbeIDPrefix) })
	c := sengo.NewConfirmer(map[string]*sengo.Client{"shop": sengo.NewClient(counted+"/api", key, token)}, sengo.CheckTimeout(500*time.Millisecond))
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(3 * time.Second)})
	first := make(chan bool)
	go func() { first <- c.ChecksAnswered(context.Background(), "shop", time.Now()) }()
	poll.Until(t, "the first probe sent", func() bool { return probes.Load() > 0 })
	second := make(chan bool)
	go func() { second <- c.ChecksAnswered(context.Background(), "shop", time.Now()) }() // waits for its turn
	if <-first || <-second {
		t.Fatal("a probe SenGo does not answer said yes")
	}
	if n := probes.Load(); n != 1 {
		t.Fatalf("%d probes, want the one: its no stands for the caller behind it", n)
	}
}
