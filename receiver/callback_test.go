package receiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
	"github.com/sengo-relay/sengo-relay/verify"
)

const (
	apiKey        = "SC-TESTKEY0000000001"
	apiToken      = "test-api-token-not-for-logs-0001"
	callbackToken = "cb-token-not-for-logs-0123456789"
)

func mustAllow(t testing.TB, cidrs ...string) verify.IPAllowlist {
	t.Helper()
	l, err := verify.ParseIPAllowlist(cidrs)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testProjects(t testing.TB) []Project {
	return []Project{
		{Name: "main"},
		{Name: "tokened", CallbackToken: callbackToken},
		{Name: "signed", APIKey: apiKey, Token: apiToken, Signature: SignatureRequired},
		{Name: "optional", APIKey: apiKey, Token: apiToken, Signature: SignatureOptional},
		{Name: "fenced", AllowedIPs: mustAllow(t, "203.0.113.0/24")},
	}
}

// Every rejection answers the documented status and code and stores nothing.
func TestCallbackRejections(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false, withProjects(testProjects(t)...))
	good := fixtures.Body("callback-retail-success")
	sig := verify.SenGoSignature(apiKey, apiToken, good)
	big := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 70<<10)...), []byte(`"}`)...)

	tests := []struct {
		name    string
		method  string
		path    string
		ctype   string
		body    []byte
		headers []string
		chunked bool
		status  int
		code    string
	}{
		{"no such route", "", "/callbacks/other/main", "application/json", good, nil, false, 404, "not_found"},
		{"GET", http.MethodGet, "/callbacks/sengo/main", "application/json", nil, nil, false, 405, "method_not_allowed"},
		{"PUT", http.MethodPut, "/callbacks/sengo/main", "application/json", good, nil, false, 405, "method_not_allowed"},
		{"OPTIONS", http.MethodOptions, "/callbacks/sengo/main", "", nil, nil, false, 405, "method_not_allowed"},
		{"text/plain", "", "/callbacks/sengo/main", "text/plain", good, nil, false, 415, "unsupported_media_type"},
		{"form", "", "/callbacks/sengo/main", "application/x-www-form-urlencoded", good, nil, false, 415, "unsupported_media_type"},
		{"no content type", "", "/callbacks/sengo/main", "", good, nil, false, 415, "unsupported_media_type"},
		{"too large", "", "/callbacks/sengo/main", "application/json", big, nil, false, 413, "body_too_large"},
		{"too large chunked", "", "/callbacks/sengo/main", "application/json", big, nil, true, 413, "body_too_large"},
		{"unknown project", "", "/callbacks/sengo/nope", "application/json", good, nil, false, 404, "unknown_project"},
		{"token missing", "", "/callbacks/sengo/tokened", "application/json", good, nil, false, 401, "unauthorized"},
		{"token wrong", "", "/callbacks/sengo/tokened/" + strings.Repeat("x", 32), "application/json", good, nil, false, 401, "unauthorized"},
		{"token on tokenless project", "", "/callbacks/sengo/main/whatever", "application/json", good, nil, false, 401, "unauthorized"},
		{"ip not allowed", "", "/callbacks/sengo/fenced", "application/json", good, nil, false, 403, "forbidden"},
		{"xff from untrusted peer ignored", "", "/callbacks/sengo/fenced", "application/json", good, []string{"X-Forwarded-For", "203.0.113.5"}, false, 403, "forbidden"},
		{"signature missing (required)", "", "/callbacks/sengo/signed", "application/json", good, nil, false, 401, "invalid_signature"},
		{"signature wrong (required)", "", "/callbacks/sengo/signed", "application/json", good, []string{"X-Signature", strings.Repeat("ab", 64)}, false, 401, "invalid_signature"},
		{"signature of another body", "", "/callbacks/sengo/signed", "application/json", fixtures.Body("callback-va-success"), []string{"X-Signature", sig}, false, 401, "invalid_signature"},
		{"signature wrong (optional)", "", "/callbacks/sengo/optional", "application/json", good, []string{"X-Signature", "00"}, false, 401, "invalid_signature"},
		{"malformed json", "", "/callbacks/sengo/main", "application/json", []byte(`{"responseData":`), nil, false, 400, "malformed_json"},
		{"empty body", "", "/callbacks/sengo/main", "application/json", nil, nil, false, 400, "malformed_json"},
		{"array body", "", "/callbacks/sengo/main", "application/json", []byte(`[]`), nil, false, 400, "malformed_json"},
		{"repeated status key", "", "/callbacks/sengo/main", "application/json", bytes.Replace(good, []byte(`"status":"success"`), []byte(`"status":"pending","status":"success"`), 1), nil, false, 400, "malformed_json"},
		{"invalid utf-8", "", "/callbacks/sengo/main", "application/json", bytes.Replace(good, []byte(`"success"`), []byte("\"succ\xffess\""), 1), nil, false, 400, "malformed_json"},
		{"wrong types", "", "/callbacks/sengo/main", "application/json", []byte(`{"id":1,"merchantRef":"r","status":"success","amount":"10","fee":0,"totalAmount":0,"qris":{}}`), nil, false, 422, "invalid_notification"},
		{"unknown status", "", "/callbacks/sengo/main", "application/json", bytes.Replace(good, []byte(`"status":"success"`), []byte(`"status":"paid"`), 1), nil, false, 422, "invalid_notification"},
		{"missing id", "", "/callbacks/sengo/main", "application/json", bytes.Replace(good, []byte(`"id":`), []byte(`"xid":`), 1), nil, false, 422, "invalid_notification"},
		{"no product", "", "/callbacks/sengo/main", "application/json", bytes.Replace(good, []byte(`"retail":`), []byte(`"shop":`), 1), nil, false, 422, "invalid_notification"},
		{"negative amount", "", "/callbacks/sengo/main", "application/json", bytes.Replace(good, []byte(`"amount":10000`), []byte(`"amount":-1`), 1), nil, false, 422, "invalid_notification"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			var body io.Reader = bytes.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(bytes.NewReader(tt.body)) // unknown length: sent chunked
			}
			req, err := http.NewRequest(method, h.http.URL+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			for i := 0; i+1 < len(tt.headers); i += 2 {
				req.Header.Set(tt.headers[i], tt.headers[i+1])
			}
			resp, got := h.do(req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (%v)", resp.StatusCode, tt.status, got)
			}
			e, _ := got["error"].(map[string]any)
			if e == nil || e["code"] != tt.code {
				t.Fatalf("body = %v, want error code %q", got, tt.code)
			}
			if msg, _ := e["message"].(string); msg == "" {
				t.Fatalf("error without a message: %v", got)
			}
			if n := h.msgs(event.StreamInbox); n != 0 {
				t.Fatalf("a rejected callback stored %d inbox messages", n)
			}
		})
	}
}

func TestCallbackFieldErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	resp, body := h.post("/callbacks/sengo/main", []byte(`{"responseData":{"id":"x","merchantRef":"r","status":"success","amount":1.5,"fee":0,"totalAmount":0}}`))
	if resp.StatusCode != 422 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	fields, _ := body["error"].(map[string]any)["fields"].([]any)
	var names []string
	for _, f := range fields {
		names = append(names, f.(map[string]any)["field"].(string))
	}
	if got := strings.Join(names, ","); got != "responseData.amount,responseData.product" {
		t.Fatalf("fields = %s", got)
	}
}

// The accepted paths: each stores exactly one inbox message with the
// headers intake relies on.
func TestCallbackAccepted(t *testing.T) {
	t.Parallel()
	projects := append(testProjects(t), Project{Name: "proxied", AllowedIPs: mustAllow(t, "203.0.113.0/24")})
	h := newHarness(t, false, withProjects(projects...), func(c *Config, _ *IntakeConfig) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	body := fixtures.Body("callback-qris-success")
	sig := verify.SenGoSignature(apiKey, apiToken, body)
	tests := []struct {
		name    string
		path    string
		headers []string
	}{
		{"open project", "/callbacks/sengo/main", nil},
		{"path token", "/callbacks/sengo/tokened/" + callbackToken, nil},
		{"required signature", "/callbacks/sengo/signed", []string{"X-Signature", sig}},
		{"optional signature absent", "/callbacks/sengo/optional", nil},
		{"allowed ip through trusted proxy", "/callbacks/sengo/proxied", []string{"X-Forwarded-For", "198.51.100.1, 203.0.113.9"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, got := h.post(tt.path, body, tt.headers...)
			if resp.StatusCode != 200 || got["status"] != "accepted" {
				t.Fatalf("status %d body %v", resp.StatusCode, got)
			}
			if n := h.msgs(event.StreamInbox); n != uint64(i+1) {
				t.Fatalf("inbox holds %d, want %d", n, i+1)
			}
		})
	}
	// Charset parameters and +json types are JSON too.
	resp, _ := h.post("/callbacks/sengo/main", fixtures.Body("callback-va-success"), "Content-Type", "application/json; charset=utf-8")
	if resp.StatusCode != 200 {
		t.Fatalf("application/json; charset=utf-8: %d", resp.StatusCode)
	}
}

func TestCallbackStoresRawWithHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	body := fixtures.Body("callback-retail-expired")
	resp, got := h.post("/callbacks/sengo/main", body)
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	s, _ := h.js.Stream(t.Context(), event.StreamInbox)
	m, err := s.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Data, body) {
		t.Error("inbox message is not the body as received")
	}
	wantID := event.ID("main", "0b8e2c51-7d0a-4f2e-9a59-3f1f6c9d2a10", event.StatusExpired)
	if !strings.HasPrefix(m.Header.Get("Nats-Msg-Id"), wantID+".callback.") || got["id"] != wantID {
		t.Errorf("Nats-Msg-Id %q, response id %v, want %s", m.Header.Get("Nats-Msg-Id"), got["id"], wantID)
	}
	if m.Subject != event.InboxTxSubject("main", "0b8e2c51-7d0a-4f2e-9a59-3f1f6c9d2a10") || m.Header.Get(event.HeaderProject) != "main" || m.Header.Get(event.HeaderSource) != "callback" {
		t.Errorf("subject %s headers %v", m.Subject, m.Header)
	}
	if m.Header.Get(event.HeaderReceivedAt) == "" || m.Header.Get(event.HeaderRequestID) == "" {
		t.Errorf("missing received-at or request id: %v", m.Header)
	}
}

// A repeated callback is a 200 duplicate and is stored once.
func TestCallbackDuplicate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	body := fixtures.Body("callback-va-success")
	for i, want := range []string{"accepted", "duplicate", "duplicate"} {
		resp, got := h.post("/callbacks/sengo/main", body)
		if resp.StatusCode != 200 || got["status"] != want {
			t.Fatalf("call %d: %d %v, want %s", i, resp.StatusCode, got, want)
		}
	}
	if n := h.msgs(event.StreamInbox); n != 1 {
		t.Fatalf("inbox holds %d, want 1", n)
	}
	if n := testutil.ToFloat64(h.metrics.Callbacks.WithLabelValues("main", "duplicate")); n != 2 {
		t.Fatalf("duplicate count = %v", n)
	}
}

// With JetStream gone the callback gets 503 with Retry-After; once it is
// back the same callback is stored.
func TestCallbackStoreUnavailable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	body := fixtures.Body("callback-retail-success")
	h.nats.Stop()
	resp, got := h.post("/callbacks/sengo/main", body)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "3" {
		t.Fatalf("status %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if e := got["error"].(map[string]any); e["code"] != "store_unavailable" {
		t.Fatalf("body %v", got)
	}
	h.nats.Restart()
	eventually(t, "a 200 after NATS is back", func() bool {
		resp, _ := h.post("/callbacks/sengo/main", body)
		return resp.StatusCode == 200
	})
	if n := h.msgs(event.StreamInbox); n != 1 {
		t.Fatalf("inbox holds %d after recovery, want 1", n)
	}
}

func TestUnknownProjectsShareOneMetricLabel(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	for _, p := range []string{"a", "b", "c"} {
		h.post("/callbacks/sengo/"+p, fixtures.Body("callback-va-success"))
	}
	if n := testutil.ToFloat64(h.metrics.Callbacks.WithLabelValues("unknown", "unknown_project")); n != 3 {
		t.Fatalf("unknown/unknown_project = %v, want 3", n)
	}
}

// Secrets never reach a log line or a response, whatever the outcome.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false, withProjects(testProjects(t)...))
	body := fixtures.Body("callback-retail-success")
	sig := verify.SenGoSignature(apiKey, apiToken, body)
	var answers strings.Builder
	record := func(resp *http.Response, got map[string]any) {
		answers.WriteString(resp.Header.Get("Location"))
		for _, v := range got {
			answers.WriteString(strings.ToLower(strings.TrimSpace(toString(v))))
		}
	}
	record(h.post("/callbacks/sengo/tokened/"+callbackToken, body))
	record(h.post("/callbacks/sengo/tokened/"+callbackToken+"x", body))
	record(h.post("/callbacks/sengo/tokened/"+callbackToken+"/extra", body))
	record(h.post("/callbacks/sengo/signed", body, "X-Signature", sig))
	record(h.post("/callbacks/sengo/signed", fixtures.Body("callback-va-success"), "X-Signature", sig))
	record(h.post("/callbacks/sengo/nope/"+callbackToken, body))
	logs := h.logs.String()
	if !strings.Contains(logs, "/callbacks/sengo/tokened/[redacted]") {
		t.Fatalf("expected redacted request lines, got:\n%s", logs)
	}
	for _, secret := range []string{callbackToken, apiToken, apiKey, sig} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains a secret %.8s…", secret)
		}
		if strings.Contains(answers.String(), strings.ToLower(secret)) {
			t.Errorf("a response contains a secret %.8s…", secret)
		}
	}
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		var b strings.Builder
		for _, x := range v {
			b.WriteString(toString(x))
		}
		return b.String()
	}
	return ""
}

func TestRedactPath(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"/callbacks/sengo/main":              "/callbacks/sengo/main",
		"/callbacks/sengo/main/s3cret":       "/callbacks/sengo/main/[redacted]",
		"/callbacks/sengo/main/s3cret/extra": "/callbacks/sengo/main/[redacted]",
		"/callbacks/sengo/s3cret":            "/callbacks/sengo/[unknown]",
		"/callbacks/sengo/s3cret/x":          "/callbacks/sengo/[unknown]/[redacted]",
		"/healthz":                           "/healthz",
		// Paths a slightly wrong callback URL makes (URL joining, a proxy
		// that keeps its prefix, a typo) hold the token as well: they were
		// logged as sent.
		"//callbacks/sengo/main/s3cret":      "//…",
		"/relay/callbacks/sengo/main/s3cret": "/relay/…",
		"/Callbacks/sengo/main/s3cret":       "/…",
		"/s3cret":                            "/…",
		"/callbacks/sengo":                   "/callbacks/…",
	}
	known := projectNames{"main": {Name: "main"}}
	for in, want := range tests {
		if got := redactPath(in, known); got != want {
			t.Errorf("redactPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// /readyz answers anyone who reaches the public listener, and each check
// costs the store about 14 requests on the connection intake and delivery
// use: 200 at once ran it 200 times. Checks at once now share one, and an
// answer is reused for a second.
func TestReadinessChecksAreShared(t *testing.T) {
	t.Parallel()
	var checks atomic.Int64
	h := newHarness(t, false, func(c *Config, _ *IntakeConfig) {
		c.Ready = func(ctx context.Context) error {
			checks.Add(1)
			return nil
		}
	})
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			resp, err := http.Get(h.http.URL + "/readyz")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("readyz %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if n := checks.Load(); n > 20 { // one per second of the run at most, and the run is short
		t.Fatalf("200 readiness requests ran the check %d times; want them to share it", n)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	var ready atomic.Bool
	h := newHarness(t, false, func(c *Config, _ *IntakeConfig) {
		c.Ready = func(ctx context.Context) error {
			if !ready.Load() {
				return errors.New("streams not provisioned yet")
			}
			return nil
		}
	})
	get := func(path string) int {
		resp, err := http.Get(h.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("/healthz") != 200 || get("/readyz") != 503 {
		t.Fatal("healthz must be 200 and readyz 503 before ready")
	}
	if _, body := h.do(mustRequest(t, http.MethodGet, h.http.URL+"/readyz")); fmt.Sprint(body["error"]) != "map[code:not_ready message:not ready]" {
		t.Fatalf("readyz before ready answered %v, want the documented not_ready", body)
	}
	ready.Store(true)
	eventually(t, "readyz 200 once ready (its answer is reused for a second)", func() bool { return get("/readyz") == 200 })
	h.post("/callbacks/sengo/main", fixtures.Body("callback-va-success"))
	resp, err := http.Get(h.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, m := range []string{`sengo_relay_callbacks_total{outcome="accepted",project="main"} 1`, "sengo_relay_inbox_publish_seconds_count 1"} {
		if !strings.Contains(string(b), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// A byte-identical repeat is dropped by the inbox (its message id holds
// the body's hash). Posted first by someone without the key, a copy of the
// success SenGo would send (its body predictable to the second) was set
// aside as unconfirmed, and the genuine signed one, the same bytes, was
// answered "duplicate" and dropped: the payment waited for a recheck or
// reconciliation. The signature's verdict is part of the id: a verified
// callback is never a duplicate of an unsigned copy.
func TestAnUnsignedCopyDoesNotMakeTheSignedOneADuplicate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false, withProjects(testProjects(t)...))
	body := fixtures.Body("callback-retail-success")
	if resp, got := h.post("/callbacks/sengo/optional", body); resp.StatusCode != 200 || got["status"] != "accepted" {
		t.Fatalf("the unsigned copy: %d %v", resp.StatusCode, got)
	}
	sig := verify.SenGoSignature(apiKey, apiToken, body)
	if resp, got := h.post("/callbacks/sengo/optional", body, "X-Signature", sig); resp.StatusCode != 200 || got["status"] != "accepted" {
		t.Fatalf("the signed callback after an unsigned copy: %d %v, want stored (accepted)", resp.StatusCode, got)
	}
	if resp, got := h.post("/callbacks/sengo/optional", body, "X-Signature", sig); resp.StatusCode != 200 || got["status"] != "duplicate" {
		t.Fatalf("SenGo's repeat of the signed callback: %d %v, want duplicate", resp.StatusCode, got)
	}
}

// With trusted_proxies set, X-Forwarded-For is believed from the listed
// proxies only: Echo's extractor believes loopback, link-local and
// private peers unless told not to, and any pod or sidecar could then
// name SenGo's address and pass allowed_ips.
func TestOnlyTheListedProxiesAreBelieved(t *testing.T) {
	t.Parallel()
	extract := IPExtractor([]netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")})
	for peer, want := range map[string]string{
		"192.0.2.1:4000":   "203.0.113.5", // the proxy
		"127.0.0.1:4000":   "127.0.0.1",
		"10.1.2.3:4000":    "10.1.2.3",
		"169.254.1.1:4000": "169.254.1.1",
		"[::1]:4000":       "::1",
	} {
		req, _ := http.NewRequest(http.MethodPost, "/callbacks/sengo/main", nil)
		req.RemoteAddr = peer
		req.Header.Set("X-Forwarded-For", "203.0.113.5")
		if got := extract(req); got != want {
			t.Errorf("from %s: client %s, want %s", peer, got, want)
		}
	}
}

// A replicated stream refuses a conditional write with 10164, not 10071,
// when another message of the subject is still being stored: a final
// status racing its pending was answered 503 instead of being stored
// again without the condition.
func TestBothWrongLastSequenceCodesAreARefusal(t *testing.T) {
	t.Parallel()
	for _, code := range []jetstream.ErrorCode{jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant} {
		if !wrongLastSequence(fmt.Errorf("publish: %w", &jetstream.APIError{ErrorCode: code})) {
			t.Errorf("code %d is not taken for a refused condition", code)
		}
	}
	if wrongLastSequence(&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound}) {
		t.Error("another error is taken for a refused condition")
	}
}
