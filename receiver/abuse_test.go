package receiver

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
)

// serveWithTimeouts serves the receiver with the server timeouts `serve` uses.
func serveWithTimeouts(t *testing.T, h *harness) string {
	srv := httptest.NewUnstartedServer(New(h.cfg))
	srv.Config.ReadHeaderTimeout = 300 * time.Millisecond
	srv.Config.ReadTimeout = 2 * time.Second
	srv.Config.WriteTimeout = 5 * time.Second
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// Malformed, huge, slow and deeply nested requests get their documented
// answers, store nothing, and the service keeps answering meanwhile.
func TestAbuseKeepsServiceResponsive(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	base := serveWithTimeouts(t, h)
	healthy := func() {
		t.Helper()
		resp, err := http.Get(base + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz during abuse: %v %v", err, resp)
		}
		resp.Body.Close()
	}

	// Slowloris: headers trickle in; the server hangs up at ReadHeaderTimeout.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /callbacks/sengo/main HTTP/1.1\r\nHost: x\r\n")
	healthy()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = bufio.NewReader(conn).ReadString('\n')
	if err == nil {
		// The server may answer 408 before closing; either way it must end it.
		_, err = io.ReadAll(conn)
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("slow headers held the connection for %s", waited)
	}

	huge := bytes.Repeat([]byte("x"), 10<<20)
	nested := append(bytes.Repeat([]byte("["), 200000), bytes.Repeat([]byte("]"), 200000)...)
	nestedSmall := append(bytes.Repeat([]byte("["), 30000), bytes.Repeat([]byte("]"), 30000)...) // under the size limit
	deepObject := []byte(`{"responseData":` + strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000) + "}")
	tests := []struct {
		name    string
		body    io.Reader
		ctype   string
		status  int
		chunked bool
	}{
		{"10 MiB announced", bytes.NewReader(huge), "application/json", 413, false},
		{"10 MiB chunked", io.MultiReader(bytes.NewReader(huge)), "application/json", 413, true},
		{"deeply nested array", bytes.NewReader(nested), "application/json", 413, false},
		{"deeply nested array under the limit", bytes.NewReader(nestedSmall), "application/json", 400, false},
		{"deeply nested object", bytes.NewReader(deepObject), "application/json", 422, false},
		{"binary garbage", bytes.NewReader([]byte{0, 1, 2, 0xff, 0xfe}), "application/json", 400, false},
		{"truncated fixture", bytes.NewReader(fixtures.Body("callback-va-success")[:100]), "application/json", 400, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, base+"/callbacks/sengo/main", tt.body)
			req.Header.Set("Content-Type", tt.ctype)
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				// Rejecting early can close the connection while a big body
				// is still being sent; that is an answer too.
				if !strings.Contains(err.Error(), "connection reset") && !strings.Contains(err.Error(), "broken pipe") {
					t.Fatal(err)
				}
			} else {
				resp.Body.Close()
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
				}
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %s", d)
			}
			healthy()
		})
	}
	if n := h.msgs(event.StreamInbox); n != 0 {
		t.Fatalf("abuse stored %d messages", n)
	}
}

// Beyond max_in_flight, callbacks are refused at once with 503 and
// Retry-After rather than queued.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false, func(c *Config, _ *IntakeConfig) { c.MaxInFlight = 1 })
	// Hold the only slot with a body that arrives slowly, written on a raw
	// connection: net/http's client may keep a request's first bytes in
	// its buffer, so the server would never see the request (the test then
	// waited for a 503 that could not come, and hung on cleanup).
	body := fixtures.Body("callback-va-success")
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /callbacks/sengo/main HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10])
	// Only then ask: a callback the server took first refused the held one
	// (one run in a hundred under load), and no later one was refused.
	eventually(t, "the held callback in flight", func() bool { return testutil.ToFloat64(h.metrics.InFlight) == 1 })
	var resp *http.Response
	eventually(t, "a callback refused for overload", func() bool {
		resp, _ = h.post("/callbacks/sengo/main", fixtures.Body("callback-qris-success"))
		return resp.StatusCode == 503
	})
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	if _, err := conn.Write(body[10:]); err != nil {
		t.Fatal(err)
	}
	held, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	held.Body.Close()
	if held.StatusCode != 200 {
		t.Fatalf("the held callback got %d", held.StatusCode)
	}
	if resp, _ := h.post("/callbacks/sengo/main", fixtures.Body("callback-qris-success")); resp.StatusCode != 200 {
		t.Fatalf("after the slot freed: %d", resp.StatusCode)
	}
	eventually(t, "nothing in flight", func() bool { return testutil.ToFloat64(h.metrics.InFlight) == 0 })
}

// Callers that fail the checks needing no body (an unknown project, a
// wrong callback token, an address not allowed) take none of
// max_in_flight's slots. They took one for as long as their body took to
// arrive (up to http.read_timeout), before any check: a few slow requests
// from anyone, one per slot, had every genuine callback refused as
// overloaded.
func TestRefusedCallersTakeNoSlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false, withProjects(testProjects(t)...), func(c *Config, _ *IntakeConfig) { c.MaxInFlight = 1 })
	body := fixtures.Body("callback-va-success")
	for _, path := range []string{"/callbacks/sengo/nosuch", "/callbacks/sengo/tokened/wrong-token", "/callbacks/sengo/fenced"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(h.http.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body[:10])
	}
	eventually(t, "the three slow callers being read", func() bool {
		return testutil.ToFloat64(h.metrics.InFlight)+testutil.ToFloat64(h.metrics.RefusedInFlight) == 3
	})
	if resp, _ := h.post("/callbacks/sengo/main", fixtures.Body("callback-qris-success")); resp.StatusCode != 200 {
		t.Fatalf("a genuine callback while three refused ones arrive slowly: %d", resp.StatusCode)
	}
}

// The callback's answers keep their documented order when every slot is
// taken: a wrong content type (415) or a declared body over the limit
// (413) is answered as such, not 503 overloaded, which tells SenGo to send
// the same request again. And a path with a segment after the token is
// no callback route (404), not a wrong token (401).
func TestHeaderChecksComeBeforeOverloadAndExtraSegmentsAreNotFound(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false, withProjects(testProjects(t)...), func(c *Config, _ *IntakeConfig) { c.MaxInFlight = 1 })
	body := fixtures.Body("callback-va-success")
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /callbacks/sengo/main HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10])
	eventually(t, "the slot taken", func() bool { return testutil.ToFloat64(h.metrics.InFlight) == 1 })
	if resp, b := h.post("/callbacks/sengo/main", body, "Content-Type", "text/plain"); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain with every slot taken: %d %v, want 415", resp.StatusCode, b)
	}
	req, _ := http.NewRequest(http.MethodPost, h.http.URL+"/callbacks/sengo/main", bytes.NewReader(make([]byte, 70<<10)))
	req.Header.Set("Content-Type", "application/json")
	if resp, b := h.do(req); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("70 KiB declared with every slot taken: %d %v, want 413", resp.StatusCode, b)
	}
	resp, b := h.post("/callbacks/sengo/tokened/x/y", body)
	if e, _ := b["error"].(map[string]any); resp.StatusCode != http.StatusNotFound || e["code"] != "not_found" {
		t.Errorf("a segment after the token: %d %v, want 404 not_found", resp.StatusCode, b)
	}
	// Whatever the method: a GET of that path was answered 405.
	req, _ = http.NewRequest(http.MethodGet, h.http.URL+"/callbacks/sengo/tokened/x/y", nil)
	if resp, b := h.do(req); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET with a segment after the token: %d %v, want 404 not_found", resp.StatusCode, b)
	}
}
