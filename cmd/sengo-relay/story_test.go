package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/admin"
	"github.com/sengo-relay/sengo-relay/internal/apicheck"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
)

// adminAPI calls the relay's admin API and checks every answer against
// the OpenAPI document the relay serves (through internal/apicheck, which
// keeps the validator's generic types out of this package's build).
type adminAPI struct {
	t    *testing.T
	addr string
	doc  *apicheck.Document
}

func newAdminAPI(t *testing.T, addr string) *adminAPI {
	t.Helper()
	a := &adminAPI{t: t, addr: addr}
	code, doc := a.raw("/admin/openapi.yaml")
	if code != 200 || !bytes.Equal(doc, admin.OpenAPI) {
		t.Fatalf("GET /admin/openapi.yaml: %d, %d bytes", code, len(doc))
	}
	d, err := apicheck.New(doc)
	if err != nil {
		t.Fatal(err)
	}
	a.doc = d
	return a
}

func (a *adminAPI) raw(path string) (int, []byte) {
	a.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if a.doc != nil {
		for _, p := range a.doc.Check(req, resp, b) {
			a.t.Errorf("GET %s: %s", path, p)
		}
	}
	return resp.StatusCode, b
}

func (a *adminAPI) get(path string, v any) int {
	a.t.Helper()
	code, b := a.raw(path)
	if err := json.Unmarshal(b, v); err != nil {
		a.t.Fatalf("GET %s: %d %s", path, code, b)
	}
	return code
}

// The operator's question: "the customer paid INV-3003 at Alfamart; what
// happened?" Found by the merchant's reference, the transaction's story
// reads: SenGo's callback (from where, signature checked), the status
// published as confirmed by SenGo's API, and each webhook attempt, the two
// the consumer failed and the one it took. No secret is in any answer.
func TestTransactionStoryEndToEnd(t *testing.T) {
	sb, client, sbURL := startSandbox(t, sandbox.CallbackPolicy{})
	orders := newHook(t)
	orders.fail.Store(2)
	p := filepath.Join(t.TempDir(), "config.yaml")
	cfg := fmt.Sprintf(`projects:
  main: {api_key: %s, token: %s, base_url: %q}
intake: {retry_initial: 50ms, retry_max: 500ms, confirm_attempts: 3}
admin: {listen: "127.0.0.1:0", token: %s}
endpoints:
  orders: {url: %q, secrets: [%s], filter: {statuses: [success]}, deliver_from: all, timeout: 2s, retry: {schedule: [100ms, 100ms, 100ms], jitter: 0}}
`, sbKey, sbToken, sbURL, adminToken, orders.URL, testSecret)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	base, logs := startRunWith(t, p, relayEnv(t.TempDir()))
	waitReady(t, base)
	api := newAdminAPI(t, logs.field(t, "admin listening", "addr"))

	tx, err := client.CreateRetail(context.Background(), sengo.RetailRequest{
		Reference: "INV-3003", PhoneNumber: "081234567890", Channel: "alfamart", Amount: 10000, ViewName: "Toko Contoh",
		AdditionalInfo: sengo.AdditionalInfo{Callback: base + "/callbacks/sengo/main"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the webhook, after two failures", func() bool { return len(orders.received()) == 1 })

	type summary struct {
		TransactionID, MerchantRef, Status, Channel string
		TotalAmount                                 int64
		Confirmed                                   bool
	}
	var found struct{ Items []summary }
	if code := api.get("/admin/transactions?merchant_ref=INV-3003", &found); code != 200 || len(found.Items) != 1 {
		t.Fatalf("search by merchantRef: %d %+v", code, found)
	}
	if s := found.Items[0]; s.TransactionID != tx.ID || s.Status != "success" || !s.Confirmed || s.Channel != "alfamart" || s.TotalAmount != 10085 {
		t.Errorf("found %+v", s)
	}

	var tl struct {
		Notifications []struct{ Source, SourceIP, Signature, Status string }
		Events        []struct{ Status string }
		Attempts      []struct {
			Endpoint, Outcome string
			Attempt, Status   int
		}
		Steps []struct{ Kind, Summary string }
	}
	path := "/admin/transactions/main/" + url.PathEscape(tx.ID)
	// Attempt records are written off the delivery path: poll for the third.
	eventually(t, "three attempts in the timeline", func() bool { api.get(path, &tl); return len(tl.Attempts) == 3 })
	if len(tl.Notifications) == 0 || tl.Notifications[0].Source != "callback" || tl.Notifications[0].SourceIP != "127.0.0.1" || tl.Notifications[0].Signature == "" {
		t.Errorf("notifications %+v", tl.Notifications)
	}
	for i, want := range []struct {
		status  int
		outcome string
	}{{500, "retry"}, {500, "retry"}, {200, "delivered"}} {
		if a := tl.Attempts[i]; a.Endpoint != "orders" || a.Attempt != i+1 || a.Status != want.status || a.Outcome != want.outcome {
			t.Errorf("attempt %d: %+v, want %d %s", i+1, a, want.status, want.outcome)
		}
	}
	var kinds []string
	for _, s := range tl.Steps {
		kinds = append(kinds, s.Kind)
		if s.Kind == "published" && s.Summary != "published success, confirmed by SenGo's API" && !strings.HasPrefix(s.Summary, "published pending") {
			t.Errorf("published step %q", s.Summary)
		}
	}
	story := strings.Join(kinds, " ")
	if !strings.Contains(story, "notification") || !strings.Contains(story, "published attempt attempt attempt") {
		t.Errorf("steps %q, want the callback, then published, then the three attempts", story)
	}

	var evs struct {
		Items []struct{ TransactionID string }
	}
	if api.get("/admin/events?project=main&status=success", &evs); len(evs.Items) != 1 || evs.Items[0].TransactionID != tx.ID {
		t.Errorf("events %+v", evs)
	}
	for _, path := range []string{path, "/admin/transactions?merchant_ref=INV-3003", "/admin/events", "/admin/transactions"} {
		_, b := api.raw(path)
		for _, secret := range []string{sbKey, sbToken, testSecret, adminToken, strings.TrimPrefix(testSecret, "whsec_")} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("GET %s shows a secret", path)
			}
		}
	}
}
