package sandbox_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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

const (
	key   = "SC-SANDBOXKEY0000001"
	token = "sandbox-token-0000000000000001"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// receiver records callbacks; fail makes it answer 500 to that many first.
type receiver struct {
	*httptest.Server
	mu    sync.Mutex
	got   []sengo.Transaction
	fails atomic.Int64
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.fails.Add(-1) >= 0 {
			w.WriteHeader(500)
			return
		}
		b, _ := io.ReadAll(req.Body)
		tx, err := sengo.ParseCallback(b)
		if err != nil {
			t.Errorf("callback is not a valid notification: %v\n%s", err, b)
		}
		r.mu.Lock()
		r.got = append(r.got, tx)
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) n() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.got) }

func start(t *testing.T, cfg sandbox.Config) (*sandbox.Server, *sengo.Client) {
	t.Helper()
	cfg.Projects = []sandbox.Project{{Key: key, Token: token, Active: 100_000}}
	sb, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { hs.Close(); sb.Close() })
	return sb, sengo.NewClient(hs.URL+"/api", key, token)
}

func retail(t *testing.T, c *sengo.Client, ref, callback string, expiry int) sengo.Transaction {
	t.Helper()
	tx, err := c.CreateRetail(context.Background(), sengo.RetailRequest{Reference: ref, PhoneNumber: "0812", Channel: "alfamart", Amount: 10000, ExpiryMinutes: expiry, ViewName: "Toko", AdditionalInfo: sengo.AdditionalInfo{Callback: callback}})
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// Paying sends one envelope callback with the new status and moves the balance.
func TestPaySendsCallbackAndSettles(t *testing.T) {
	sb, c := start(t, sandbox.Config{})
	r := newReceiver(t)
	tx := retail(t, c, "P-1", r.URL, 0)
	if r.n() != 0 {
		t.Fatal("a callback on creation")
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the callback", func() bool { return r.n() == 1 })
	if got := r.got[0]; got.Status != event.StatusSuccess || got.ID != tx.ID || got.PaidDate == nil {
		t.Fatalf("callback %+v", got)
	}
	b, _ := c.Balance(context.Background())
	if b.Active != 110_000 {
		t.Fatalf("balance %+v, want 100000 + 10000", b)
	}
	if _, err := sb.Transition(tx.ID, event.StatusFailed); err == nil {
		t.Fatal("a final transaction changed status")
	}
}

func TestCallbackPolicies(t *testing.T) {
	t.Run("retries", func(t *testing.T) {
		sb, c := start(t, sandbox.Config{Callbacks: sandbox.CallbackPolicy{Retries: 2, RetryDelay: sandbox.Duration(time.Millisecond)}})
		r := newReceiver(t)
		r.fails.Store(2)
		tx := retail(t, c, "R-1", r.URL, 0)
		sb.Transition(tx.ID, event.StatusSuccess)
		// The sandbox logs an attempt once its answer is in, after the
		// receiver counted it: both are waited for.
		poll.Until(t, "delivery on the third try, logged", func() bool { return r.n() == 1 && len(sb.Sent()) >= 3 })
		if n := len(sb.Sent()); n != 3 {
			t.Fatalf("%d attempts logged, want 3", n)
		}
	})
	t.Run("never retries", func(t *testing.T) {
		sb, c := start(t, sandbox.Config{})
		r := newReceiver(t)
		r.fails.Store(1)
		tx := retail(t, c, "N-1", r.URL, 0)
		sb.Transition(tx.ID, event.StatusSuccess)
		poll.Until(t, "one logged attempt", func() bool { return len(sb.Sent()) == 1 })
		sb.Close() // waits for the sender: nothing more will come
		if r.n() != 0 || sb.Sent()[0].HTTPStatus != 500 {
			t.Fatalf("received %d, log %+v", r.n(), sb.Sent())
		}
	})
	t.Run("duplicates", func(t *testing.T) {
		sb, c := start(t, sandbox.Config{Callbacks: sandbox.CallbackPolicy{Duplicates: 2}})
		r := newReceiver(t)
		tx := retail(t, c, "D-1", r.URL, 0)
		sb.Transition(tx.ID, event.StatusSuccess)
		poll.Until(t, "three copies", func() bool { return r.n() == 3 })
	})
	t.Run("drop", func(t *testing.T) {
		sb, c := start(t, sandbox.Config{Callbacks: sandbox.CallbackPolicy{Drop: true}})
		r := newReceiver(t)
		tx := retail(t, c, "X-1", r.URL, 0)
		sb.Transition(tx.ID, event.StatusSuccess)
		sb.Close()
		if r.n() != 0 || len(sb.Sent()) != 1 || !sb.Sent()[0].Dropped {
			t.Fatalf("received %d, log %+v", r.n(), sb.Sent())
		}
	})
	t.Run("resendCallback", func(t *testing.T) {
		_, c := start(t, sandbox.Config{})
		r := newReceiver(t)
		tx := retail(t, c, "S-1", r.URL, 0)
		if _, err := c.Check(context.Background(), tx.ID, true); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, "the resent callback", func() bool { return r.n() == 1 })
		if r.got[0].Status != event.StatusPending {
			t.Fatalf("resent %s", r.got[0].Status)
		}
	})
}

// Transactions expire after expiryMinutes (with a callback) and leave the
// listing after 7 days.
func TestExpiryAndListingWindow(t *testing.T) {
	clk := &clock{t: time.Date(2025, 3, 23, 3, 0, 0, 0, time.UTC)}
	sb, c := start(t, sandbox.Config{Now: clk.now})
	r := newReceiver(t)
	tx := retail(t, c, "E-1", r.URL, 30)
	clk.add(29 * time.Minute)
	sb.ExpireDue()
	if got, _ := c.Check(context.Background(), tx.ID, false); got.Status != event.StatusPending {
		t.Fatalf("expired early: %s", got.Status)
	}
	clk.add(2 * time.Minute)
	sb.ExpireDue()
	poll.Until(t, "the expiry callback", func() bool { return r.n() == 1 })
	if r.got[0].Status != event.StatusExpired {
		t.Fatalf("callback %s", r.got[0].Status)
	}
	list, _ := c.ListTransactions(context.Background(), sengo.ListQuery{Date: "2025-03-23", Status: event.StatusExpired})
	if len(list) != 1 {
		t.Fatalf("listed %d on its day", len(list))
	}
	clk.add(7 * 24 * time.Hour)
	if list, _ := c.ListTransactions(context.Background(), sengo.ListQuery{}); len(list) != 0 {
		t.Fatalf("listed %d after 7 days", len(list))
	}
}

// A state dir keeps transactions across restarts.
func TestStatePersists(t *testing.T) {
	dir := t.TempDir()
	sb, c := start(t, sandbox.Config{StateDir: dir})
	tx := retail(t, c, "K-1", "", 0)
	sb.Close()
	sb2, err := sandbox.New(sandbox.Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sb2.Close()
	all := sb2.Transactions()
	b, _ := json.Marshal(all)
	if len(all) != 1 || !json.Valid(b) {
		t.Fatalf("after restart: %s", b)
	}
	if _, err := sb2.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
}

// A control request with a wrong field says which field and why, instead
// of a generic "key and token are required".
func TestControlDecodeErrorsAreShown(t *testing.T) {
	sb, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { hs.Close(); sb.Close() })
	for _, tc := range []struct{ path, body, want string }{
		{"/sandbox/projects", `{"key":"k","token":"t","active":true}`, "field active: want a JSON int64, got bool"},
		{"/sandbox/projects", `{"key":"k","token":"t","balance":5}`, `unknown field \"balance\"`},
		{"/sandbox/projects", `{"key":"k"}`, "key and token are required"},
		{"/sandbox/faults", `{"callbacks":{"drop":"yes"}}`, "field callbacks.drop: want a JSON bool, got string"},
	} {
		resp, err := http.Post(hs.URL+tc.path, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 422 || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s %s: %d %s; want 422 with %q", tc.path, tc.body, resp.StatusCode, b, tc.want)
		}
	}
}

// A transaction can be paid by the merchant's own reference, as the
// README's walkthrough does.
func TestPayByMerchantRef(t *testing.T) {
	sb, c := start(t, sandbox.Config{})
	r := newReceiver(t)
	tx := retail(t, c, "INV-7", r.URL, 0)
	if _, err := sb.Transition("INV-7", event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the callback", func() bool { return r.n() == 1 })
	if got := r.got[0]; got.ID != tx.ID || got.Status != event.StatusSuccess {
		t.Fatalf("callback %+v", got)
	}
	if _, err := sb.Transition("INV-none", event.StatusSuccess); err == nil {
		t.Fatal("unknown reference paid")
	}
}

// The sandbox's controls take no credentials (it is a local tool), and
// any web page the developer had open could drive them: a form or a
// no-cors fetch from another site paid a transaction (the relay then
// confirmed it against the sandbox and published it), or replaced the
// project's token; a page whose name was rebound to 127.0.0.1 could read
// every transaction too. A browser's request from elsewhere is refused,
// and a sandbox told its names answers to no other.
func TestABrowserElsewhereCannotDriveTheSandbox(t *testing.T) {
	sb, err := sandbox.New(sandbox.Config{Projects: []sandbox.Project{{Key: key, Token: token, Active: 100_000}}, Hosts: []string{"localhost", "127.0.0.1", "::1"}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { hs.Close(); sb.Close() })
	c := sengo.NewClient(hs.URL+"/api", key, token)
	tx := retail(t, c, "P-X", "", 0)
	do := func(method, path, host string, header map[string]string, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		if host != "" {
			req.Host = host
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	pay := "/sandbox/transactions/" + tx.ID + "/pay"
	for name, h := range map[string]map[string]string{
		"another site's form": {"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
		"a sandboxed frame":   {"Origin": "null"},
		"a cross-site fetch":  {"Sec-Fetch-Site": "cross-site"},
	} {
		if code := do(http.MethodPost, pay, "", h, ""); code != http.StatusForbidden {
			t.Errorf("%s paying: %d, want 403", name, code)
		}
	}
	if code := do(http.MethodPost, "/sandbox/projects", "", map[string]string{"Origin": "https://evil.example", "Content-Type": "text/plain"}, `{"key":"`+key+`","token":"x"}`); code != http.StatusForbidden {
		t.Errorf("another site replacing the token: %d, want 403", code)
	}
	if code := do(http.MethodGet, "/sandbox/transactions", "rebind.attacker.example:8090", nil, ""); code != http.StatusMisdirectedRequest {
		t.Errorf("a rebound page reading the transactions: %d, want 421", code)
	}
	if got, _ := c.Check(context.Background(), tx.ID, false); got.Status != event.StatusPending {
		t.Fatalf("the transaction is %s after the refused requests", got.Status)
	}
	// The CLI (no browser headers) still drives it.
	if code := do(http.MethodPost, pay, "", nil, ""); code != http.StatusOK {
		t.Fatalf("the CLI paying: %d", code)
	}
}
