package receiver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
	"github.com/sengo-relay/sengo-relay/verify"
)

// FuzzCallbackRequest sends whole requests (body, content type, signature,
// path token) to the real handler on a real JetStream: nothing panics,
// every answer is one of the documented statuses, and only a 200 stores
// anything.
func FuzzCallbackRequest(f *testing.F) {
	for _, fx := range fixtures.Callbacks() {
		f.Add(fx.Body, "application/json", "", "")
	}
	good := fixtures.Body("callback-retail-success")
	f.Add(good, "application/json; charset=utf-8", verify.SenGoSignature(apiKey, apiToken, good), "")
	f.Add(good, "text/plain", "", callbackToken)
	f.Add([]byte(`{"responseData":[]}`), "application/json", "zz", "x/y")
	f.Add([]byte(`[[[[[[[[`), "application/problem+json", "", "")
	h := newHarness(f, false, withProjects(testProjects(f)...))
	inbox := func(t *testing.T) uint64 { // the iteration's t, not the harness's f
		s, err := h.js.Stream(t.Context(), event.StreamInbox)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	f.Fuzz(func(t *testing.T, body []byte, ctype, signature, token string) {
		before := inbox(t)
		for _, path := range []string{"/callbacks/sengo/main", "/callbacks/sengo/signed", "/callbacks/sengo/tokened/" + url.PathEscape(token)} {
			req := httptest.NewRequest(http.MethodPost, "http://relay"+path, bytes.NewReader(body))
			req.Header.Set("Content-Type", ctype)
			if signature != "" {
				req.Header.Set("X-Signature", signature)
			}
			rec := httptest.NewRecorder()
			h.app.ServeHTTP(rec, req)
			switch rec.Code {
			case 200, 400, 401, 403, 404, 413, 415, 422, 503:
			default:
				t.Fatalf("%s: undocumented status %d: %s", path, rec.Code, rec.Body)
			}
			after := inbox(t)
			if rec.Code != 200 && after != before {
				t.Fatalf("%s: a %d stored a message", path, rec.Code)
			}
			before = after
		}
	})
}
