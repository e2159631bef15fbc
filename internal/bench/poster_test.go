package bench

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// The poster reads each kind of answer the relay gives, reuses the
// connection when it may, and refuses what it cannot frame.
func TestPoster(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || string(b) != `{"n":1}` {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		switch r.URL.Path {
		case "/ok":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"status":"accepted"}`)
		case "/busy":
			w.Header().Set("Retry-After", "1")
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		case "/chunked":
			_, _ = io.WriteString(w, strings.Repeat("x", 8<<10)) // too big to be sized: chunked
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	tests := []struct {
		path      string
		status    int
		err       bool
		reconnect bool // the next request needs a new connection
	}{
		{"/ok", 200, false, false},
		{"/ok", 200, false, false},
		{"/busy", 503, false, false},
		{"/empty", 204, false, false},
		{"/close", 200, false, true},
		{"/chunked", 200, true, true},
		{"/ok", 200, false, false},
	}
	p, err := newPoster(srv.URL+"/", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	want := int64(1)
	for _, tt := range tests {
		p.path = tt.path
		status, err := p.post([]byte(`{"n":1}`))
		if status != tt.status || (err != nil) != tt.err {
			t.Fatalf("%s: status %d, err %v; want %d, error %v", tt.path, status, err, tt.status, tt.err)
		}
		if got := conns.Load(); got != want {
			t.Fatalf("%s: %d connections, want %d", tt.path, got, want)
		}
		if tt.reconnect {
			want++
		}
	}
	for path, ok := range map[string]bool{"/ok": true, "/busy": false} {
		p.path = path
		if err := p.accept([]byte(`{"n":1}`)); (err == nil) != ok {
			t.Fatalf("accept %s: %v", path, err)
		}
	}
	if _, err := newPoster("https://example.com/", 1); err == nil {
		t.Fatal("https accepted")
	}
}
