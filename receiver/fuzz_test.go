package receiver

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
	"github.com/sengo-relay/sengo-relay/internal/poll"
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

// FuzzIntake stores whatever body in the inbox directly (as an older
// version, reconciliation or a redrive would) and runs the real intake on
// it: intake settles it (event, duplicate, stale, conflict or quarantine,
// never a loop) and a genuine notification stored after it is still
// published, so no input can wedge processing. The seeds include the
// 3,000-byte id that once closed the work connection for good.
func FuzzIntake(f *testing.F) {
	for _, fx := range fixtures.Callbacks() {
		f.Add(fx.Body)
	}
	f.Add(callback(strings.Repeat("é", 1500), event.StatusSuccess))
	f.Add(callback(strings.Repeat("a", 5000), event.StatusPending))
	f.Add([]byte(`{"id":"x","status":"success"}`))
	f.Add([]byte("\x00\xff not json"))
	h := newHarness(f, true)
	n := 0
	f.Fuzz(func(t *testing.T, body []byte) {
		n++
		canary := fmt.Sprintf("canary-%d", n)
		for _, b := range [][]byte{body, callback(canary, event.StatusSuccess)} {
			msg := &nats.Msg{Subject: event.InboxSubject("main"), Data: b, Header: nats.Header{event.HeaderProject: []string{"main"}}}
			if _, err := h.js.PublishMsg(t.Context(), msg); err != nil {
				t.Fatal(err)
			}
		}
		poll.Until(t, "intake settles the input and publishes the canary after it", func() bool {
			return h.intakeIdle() && len(statuses(readEvents(t, h.js), canary)) == 1
		})
	})
}
