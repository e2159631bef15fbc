package admin

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/poll"
)

// jobView is a replay job as the API answers it.
type jobView struct {
	Progress dispatcher.ReplayProgress `json:"progress"`
	Relay    string                    `json:"relay"`
	Stalled  bool                      `json:"stalled"`
	Error    string                    `json:"error"`
}

// publishEvent stores one success event in SENGO_EVENTS.
func publishEvent(t *testing.T, js jetstream.JetStream, id string) {
	t.Helper()
	ev := event.Event{SpecVersion: "1.0", ID: id, Source: "sengo/main", Type: event.Type(event.StatusSuccess),
		Data: event.Data{TransactionID: "t-" + id, Status: event.StatusSuccess, Product: event.ProductQRIS, Raw: json.RawMessage(`{}`)}}
	b, _ := event.Marshal(ev)
	if _, err := js.Publish(context.Background(), event.EventSubject("main", event.ProductQRIS, event.StatusSuccess), b); err != nil {
		t.Fatal(err)
	}
}

// startJob posts body to /admin/replays at hs: the status and the job.
func startJob(t *testing.T, hs *httptest.Server, body string) (int, jobView) {
	t.Helper()
	code, got := call(t, hs, http.MethodPost, "/admin/replays", body, token)
	var j jobView
	if code < 300 {
		if err := json.Unmarshal([]byte(got), &j); err != nil {
			t.Fatalf("POST /admin/replays: %v in %s", err, got)
		}
	}
	return code, j
}

// getJob is GET /admin/replays/{id} at hs: the status and the job.
func getJob(t *testing.T, hs *httptest.Server, id string) (int, jobView) {
	t.Helper()
	code, body := call(t, hs, http.MethodGet, "/admin/replays/"+id, "", token)
	var j jobView
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &j); err != nil {
			t.Fatalf("GET /admin/replays/%s: %v in %s", id, err, body)
		}
	}
	return code, j
}

// consolePage is a console page (or fragment) read with c: its status and body.
func consolePage(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// The console's form that sends a dry run for real runs the job the dry
// run counted: a job of the API that selects by merchantRef or
// transaction keeps that selection (the form dropped it, and the "real"
// run replayed the whole window).
func TestConsoleRunForRealKeepsTheSelection(t *testing.T) {
	hs, js := newServer(t)
	publishEvent(t, js, "evt_1")
	code, j := startJob(t, hs, `{"endpoint":"orders","since":"1h","until":"0s","merchantRef":"INV-1","transaction":"t-evt_1","dryRun":true}`)
	if code != http.StatusAccepted {
		t.Fatalf("dry run: %d", code)
	}
	id := j.Progress.Job
	poll.Until(t, "the dry run to finish", func() bool { _, j = getJob(t, hs, id); return j.Progress.Done })
	c := browser(t)
	signIn(t, c, hs.URL)
	_, frag := consolePage(t, c, hs.URL+"/console/replays/"+id+"/progress")
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(frag, -1) {
		form.Add(m[1], html.UnescapeString(m[2]))
	}
	if form.Get("_csrf") == "" || !strings.Contains(frag, `id="run-replay"`) {
		t.Fatalf("no form to send the dry run for real:\n%s", frag)
	}
	resp, err := c.PostForm(hs.URL+"/console/replays", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/console/replays/"+id {
		t.Fatalf("sent for real: %d → %q, want the dry run's job %s (form %v)", resp.StatusCode, loc, id, form)
	}
}
