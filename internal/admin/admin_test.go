package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/stream"
)

const token = "admin-token-0123456789abcdef"

func newServer(t *testing.T) (*httptest.Server, jetstream.JetStream) {
	t.Helper()
	return newServerLogging(t, zerolog.Nop())
}

// newServerLogging is newServer writing its log to log.
func newServerLogging(t *testing.T, log zerolog.Logger) (*httptest.Server, jetstream.JetStream) {
	t.Helper()
	js := newJetStream(t)
	hs, _ := newRelay(t, js, "relay-a", log)
	return hs, js
}

// newJetStream starts a JetStream server with the streams and buckets
// the relay provisions.
func newJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	l := stream.Limits{MaxAge: time.Hour, Duplicates: time.Minute}
	err := stream.Provision(context.Background(), js, stream.Spec{Replicas: 1, Storage: jetstream.FileStorage, Streams: []stream.StreamSpec{
		{Name: event.StreamEvents, Subjects: []string{event.SubjectsEvents}, Limits: l},
		{Name: event.StreamDLQ, Subjects: []string{event.SubjectsDLQ}, Limits: l},
		{Name: event.StreamReplay, Subjects: []string{event.SubjectsReplay}, Limits: l},
		{Name: event.StreamQuarantine, Subjects: []string{event.SubjectsQuarantine}, Limits: l},
		{Name: event.StreamInbox, Subjects: []string{event.SubjectsInbox}, Limits: l},
		{Name: history.StreamAttempts, Subjects: []string{history.SubjectsAttempts}, Limits: l},
		{Name: history.StreamRefs, Subjects: []string{history.SubjectsRefs}, Limits: l},
	}, Buckets: []stream.BucketSpec{{Name: event.BucketTx, History: 1}, SessionsBucket(), ReplaysBucket()}})
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// newRelay serves the admin API of one relay named name on js: several
// on one js are relays behind one address.
func newRelay(t *testing.T, js jetstream.JetStream, name string, log zerolog.Logger) (*httptest.Server, *Server) {
	t.Helper()
	a := New(Config{Token: token, JetStream: js, Projects: []string{"main"}, Relay: name, Endpoints: []dispatcher.Endpoint{
		{Name: "orders", URL: "https://user:pw@orders.example/hook?key=secret", FilterSubjects: []string{"sengo.events.>"}},
	}, Logger: log})
	hs := httptest.NewServer(a.Handler())
	t.Cleanup(func() { hs.Close(); a.Close() })
	return hs, a
}

func call(t *testing.T, hs *httptest.Server, method, path, body, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	checkResponse(t, req, resp, b)
	return resp.StatusCode, string(b)
}

func TestAdminRequiresToken(t *testing.T) {
	hs, _ := newServer(t)
	for _, tok := range []string{"", "wrong-token-0123456789abcdef", token + "x"} {
		if code, _ := call(t, hs, http.MethodGet, "/admin/dlq", "", tok); code != 401 {
			t.Errorf("token %q: %d", tok, code)
		}
	}
	if code, body := call(t, hs, http.MethodGet, "/admin/dlq", "", token); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("empty DLQ: %d %s", code, body)
	}
}

func TestAdminEndpointsHideCredentials(t *testing.T) {
	hs, _ := newServer(t)
	code, body := call(t, hs, http.MethodGet, "/admin/endpoints", "", token)
	if code != 200 || strings.Contains(body, "pw") || strings.Contains(body, "secret") || !strings.Contains(body, "orders.example/hook") {
		t.Fatalf("%d %s", code, body)
	}
}

func TestAdminInputErrors(t *testing.T) {
	hs, _ := newServer(t)
	tests := []struct{ method, path, body string }{
		{http.MethodDelete, "/admin/dlq", ""},                        // purge needs a filter
		{http.MethodGet, "/admin/dlq?since=yesterday", ""},           // bad time
		{http.MethodGet, "/admin/dlq/abc", ""},                       // bad seq
		{http.MethodPost, "/admin/replays", `{"since":"1h"}`},        // no endpoint
		{http.MethodPost, "/admin/replays", `{"endpoint":"orders"}`}, // no since
		{http.MethodPost, "/admin/replays", `{"endpoint":"orders","all":true,"since":"1h"}`},
		{http.MethodPost, "/admin/replays", `{"endpoint":"orders","since":"1h","statuses":["paid"]}`},
		{http.MethodPost, "/admin/replays", `not json`},
	}
	for _, tt := range tests {
		if code, body := call(t, hs, tt.method, tt.path, tt.body, token); code != 400 {
			t.Errorf("%s %s %s: %d %s", tt.method, tt.path, tt.body, code, body)
		}
	}
	if code, _ := call(t, hs, http.MethodGet, "/admin/dlq/99", "", token); code != 404 {
		t.Errorf("unknown dead letter: %d", code)
	}
	if code, _ := call(t, hs, http.MethodGet, "/admin/replays/rp_nope", "", token); code != 404 {
		t.Errorf("unknown job: %d", code)
	}
}

func TestAdminReplayJob(t *testing.T) {
	hs, js := newServer(t)
	ev := event.Event{SpecVersion: "1.0", ID: "evt_1", Source: "sengo/main", Type: event.Type(event.StatusSuccess),
		Data: event.Data{TransactionID: "t1", Status: event.StatusSuccess, Product: event.ProductQRIS, Raw: json.RawMessage(`{}`)}}
	b, _ := event.Marshal(ev)
	if _, err := js.Publish(context.Background(), event.EventSubject("main", event.ProductQRIS, event.StatusSuccess), b); err != nil {
		t.Fatal(err)
	}
	code, body := call(t, hs, http.MethodPost, "/admin/replays", `{"endpoint":"orders","since":"1h"}`, token)
	if code != 202 {
		t.Fatalf("start: %d %s", code, body)
	}
	var j struct{ Progress dispatcher.ReplayProgress }
	json.Unmarshal([]byte(body), &j)
	poll.Until(t, "the replay job to finish", func() bool {
		_, body = call(t, hs, http.MethodGet, "/admin/replays/"+j.Progress.Job, "", token)
		json.Unmarshal([]byte(body), &j)
		return j.Progress.Done
	})
	if j.Progress.Queued != 1 || j.Progress.Total != 1 {
		t.Fatalf("progress %+v", j.Progress)
	}
}

// DELETE /admin/dlq once purged every dead letter when any query
// parameter was present (?all=false, an empty ?transaction=). Purging all
// takes all=true; an empty filter value is an error with a stable code.
func TestAdminPurgeNeedsAllTrueOrAFilter(t *testing.T) {
	hs, js := newServer(t)
	for i := range 3 {
		d := dispatcher.DeadLetter{Endpoint: "orders", EventID: fmt.Sprintf("evt_%d", i), TransactionID: fmt.Sprintf("t%d", i), Reason: dispatcher.ReasonGone, Event: json.RawMessage(`{}`)}
		b, _ := json.Marshal(d)
		if _, err := js.Publish(context.Background(), event.DLQSubject("orders"), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"?all=false", "?transaction=", "?endpoint=", "?merchant_ref=", "?all=yes", "?all=true&transaction="} {
		code, body := call(t, hs, http.MethodDelete, "/admin/dlq"+q, "", token)
		if code != 400 || !strings.Contains(body, `"code"`) {
			t.Errorf("DELETE /admin/dlq%s: %d %s, want 400 with a code", q, code, body)
		}
	}
	if _, body := call(t, hs, http.MethodGet, "/admin/dlq", "", token); strings.Count(body, `"eventId"`) != 3 {
		t.Fatalf("dead letters were purged by a refused request: %s", body)
	}
	if code, body := call(t, hs, http.MethodDelete, "/admin/dlq?transaction=t1", "", token); code != 200 || !strings.Contains(body, `"purged":1`) {
		t.Fatalf("filtered purge: %d %s", code, body)
	}
	if code, body := call(t, hs, http.MethodDelete, "/admin/dlq?all=true", "", token); code != 200 || !strings.Contains(body, `"purged":2`) {
		t.Fatalf("purge all: %d %s", code, body)
	}
}

// Quarantined notifications can be listed, shown and redriven into the
// inbox; a redrive with no filter needs all=true.
func TestAdminQuarantine(t *testing.T) {
	hs, js := newServer(t)
	ctx := context.Background()
	msg := &nats.Msg{Subject: event.QuarantineSubject("main"), Data: []byte(`{"id":"tx-1"}`), Header: nats.Header{
		event.HeaderProject: []string{"main"}, event.HeaderReason: []string{"SenGo's API disagrees with the notification: fields differ"},
	}}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, hs, http.MethodGet, "/admin/quarantine?project=main", "", token); code != 200 || !strings.Contains(body, `"reason":"SenGo's API disagrees`) {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, body := call(t, hs, http.MethodGet, "/admin/quarantine/1", "", token); code != 200 || !strings.Contains(body, `"seq":1`) {
		t.Fatalf("show: %d %s", code, body)
	}
	if code, body := call(t, hs, http.MethodGet, "/admin/quarantine/7", "", token); code != 404 || !strings.Contains(body, `"code":"not_found"`) {
		t.Fatalf("show missing: %d %s", code, body)
	}
	for _, q := range []string{"", "?project=", "?seq=x"} {
		if code, _ := call(t, hs, http.MethodPost, "/admin/quarantine/redrive"+q, "", token); code != 400 {
			t.Errorf("redrive%s: %d, want 400", q, code)
		}
	}
	if code, body := call(t, hs, http.MethodPost, "/admin/quarantine/redrive?seq=1", "", token); code != 200 || !strings.Contains(body, `"redriven":1`) {
		t.Fatalf("redrive: %d %s", code, body)
	}
	in := natstest.Messages(t, js, event.StreamInbox)
	if len(in) != 1 || in[0].Header.Get(event.HeaderSource) != "redrive" || string(in[0].Data) != `{"id":"tx-1"}` {
		t.Fatalf("inbox after redrive: %+v", in)
	}
	if len(natstest.Messages(t, js, event.StreamQuarantine)) != 0 {
		t.Fatal("still quarantined after the redrive")
	}
}

// A body that is not declared JSON gets 415 (curl -d sends a form), and
// every refusal carries a stable code.
func TestAdminBodyMustBeJSON(t *testing.T) {
	hs, _ := newServer(t)
	send := func(ctype, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, hs.URL+"/admin/replays", strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, ctype := range []string{"", "application/x-www-form-urlencoded", "text/plain"} {
		if code, body := send(ctype, `{"endpoint":"orders","since":"1h"}`); code != 415 || !strings.Contains(body, `"code":"unsupported_media_type"`) {
			t.Errorf("content type %q: %d %s", ctype, code, body)
		}
	}
	for body, want := range map[string]string{
		`not json`: `"code":"bad_body"`,
		`{"endpoint":"orders","since":"1h","sinse":"2h"}`: `"code":"bad_body"`,
		`{"endpoint":"nope","since":"1h"}`:                `"code":"unknown_endpoint"`,
		`{"endpoint":"orders"}`:                           `"code":"invalid_replay"`,
	} {
		if code, got := send("application/json; charset=utf-8", body); code != 400 || !strings.Contains(got, want) {
			t.Errorf("%s: %d %s; want 400 with %s", body, code, got, want)
		}
	}
}

// Quarantined notifications can be purged by filter (never by an empty
// one), and only what is purged is counted.
func TestAdminQuarantinePurge(t *testing.T) {
	hs, js := newServer(t)
	ctx := context.Background()
	for _, id := range []string{"tx-1", "tx-2"} {
		msg := &nats.Msg{Subject: event.QuarantineTxSubject("main", id), Data: []byte(`{"id":"` + id + `"}`), Header: nats.Header{
			event.HeaderProject: []string{"main"}, event.HeaderReason: []string{"not confirmed"},
		}}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"", "?project=", "?seq=0"} {
		if code, body := call(t, hs, http.MethodDelete, "/admin/quarantine"+q, "", token); code != 400 {
			t.Errorf("purge%s: %d %s, want 400", q, code, body)
		}
	}
	if code, body := call(t, hs, http.MethodDelete, "/admin/quarantine", "", token); !strings.Contains(body, `"code":"purge_needs_filter"`) {
		t.Errorf("purge without a filter: %d %s", code, body)
	}
	if code, body := call(t, hs, http.MethodDelete, "/admin/quarantine?seq=1", "", token); code != 200 || !strings.Contains(body, `"purged":1`) {
		t.Fatalf("purge seq 1: %d %s", code, body)
	}
	if code, body := call(t, hs, http.MethodDelete, "/admin/quarantine?seq=1", "", token); code != 200 || !strings.Contains(body, `"purged":0`) {
		t.Fatalf("purge seq 1 again: %d %s, want nothing counted", code, body)
	}
	left := natstest.Messages(t, js, event.StreamQuarantine)
	if len(left) != 1 || string(left[0].Data) != `{"id":"tx-2"}` {
		t.Fatalf("left in quarantine: %+v", left)
	}
	if code, body := call(t, hs, http.MethodDelete, "/admin/quarantine?all=true", "", token); code != 200 || !strings.Contains(body, `"purged":1`) {
		t.Fatalf("purge all: %d %s", code, body)
	}
}

// Every admin API action is an audit line: who (the address that
// connected, never one the request claims in X-Forwarded-For), what, on
// what, how many. Redriving dead letters names a filter, or all=true.
func TestAdminActionsAreAudited(t *testing.T) {
	var logs syncBuffer
	hs, js := newServerLogging(t, zerolog.New(&logs))
	ctx := context.Background()
	msg := &nats.Msg{Subject: event.QuarantineTxSubject("main", "tx-1"), Data: []byte(`{"id":"tx-1"}`), Header: nats.Header{
		event.HeaderProject: []string{"main"}, event.HeaderReason: []string{"not confirmed"},
	}}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	spoofed := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Header.Set("X-Real-Ip", "203.0.113.9")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		checkResponse(t, req, resp, b)
		return resp.StatusCode, string(b)
	}
	if code, body := spoofed(http.MethodPost, "/admin/dlq/redrive", ""); code != 400 || !strings.Contains(body, `"code":"redrive_needs_filter"`) {
		t.Fatalf("redrive without a filter: %d %s, want 400 redrive_needs_filter", code, body)
	}
	steps := []struct{ method, path, body, action, target string }{
		{http.MethodPost, "/admin/dlq/redrive?endpoint=orders", "", "redrive dead letters", "endpoint=orders"},
		{http.MethodDelete, "/admin/dlq?all=true", "", "purge dead letters", "all=true"},
		{http.MethodPost, "/admin/quarantine/redrive?seq=1", "", "redrive quarantined", "seq=1"},
		{http.MethodDelete, "/admin/quarantine?seq=1", "", "purge quarantined", "seq=1"},
		{http.MethodPost, "/admin/replays", `{"endpoint":"orders","since":"1h","dryRun":true}`, "replay dry run", ""},
	}
	for _, st := range steps {
		if code, body := spoofed(st.method, st.path, st.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", st.method, st.path, code, body)
		}
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["audit"] == true {
			lines = append(lines, m)
		}
	}
	if len(lines) != len(steps) {
		t.Fatalf("%d audit lines, want %d:\n%s", len(lines), len(steps), logs.String())
	}
	for i, st := range steps {
		l := lines[i]
		if l["who"] != "admin API@127.0.0.1" || l["action"] != st.action || l["count"] == nil {
			t.Errorf("audit line %d: %v; want who admin API@127.0.0.1, action %q and a count", i, l, st.action)
		}
		if st.target != "" && l["target"] != st.target {
			t.Errorf("audit line %d: target %v, want %q", i, l["target"], st.target)
		}
	}
	if lines[2]["count"] != float64(1) {
		t.Errorf("quarantine redrive counted %v, want 1", lines[2]["count"])
	}
	if job, _ := lines[4]["target"].(string); job == "" {
		t.Errorf("the replay's audit line names no job: %v", lines[4])
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
