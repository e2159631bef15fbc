package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
)

// jobView is a replay job as the API answers it.
type jobView struct {
	Request  dispatcher.ReplayRequest  `json:"request"`
	Progress dispatcher.ReplayProgress `json:"progress"`
	Relay    string                    `json:"relay"`
	Stalled  bool                      `json:"stalled"`
	Error    string                    `json:"error"`
}

// publishReplayable stores one success event in SENGO_EVENTS.
func publishReplayable(t *testing.T, js jetstream.JetStream, id string) {
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

// listJobs is GET /admin/replays at hs.
func listJobs(t *testing.T, hs *httptest.Server) map[string]jobView {
	t.Helper()
	code, body := call(t, hs, http.MethodGet, "/admin/replays", "", token)
	var out map[string]jobView
	if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("GET /admin/replays: %d %s", code, body)
	}
	return out
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

const doneMark = `class="o-delivered done"`

// Two relays behind one address: a replay started on one (by the API or
// the console) is listed, shown and its progress polled on the other,
// which sees it reach done. (The jobs lived in the memory of the relay
// that ran them: the other answered 404.)
func TestReplayIsSharedByRelays(t *testing.T) {
	js := provision(t)
	a, _ := newRelayNamed(t, js, "relay-a", zerolog.Nop())
	b, _ := newRelayNamed(t, js, "relay-b", zerolog.Nop())
	publishReplayable(t, js, "evt_1")

	code, j := startJob(t, a, `{"endpoint":"orders","since":"1h"}`)
	if code != http.StatusAccepted || j.Progress.Job == "" {
		t.Fatalf("start at relay A: %d %+v", code, j)
	}
	id := j.Progress.Job
	poll.Until(t, "relay B to see the job done", func() bool {
		if code, j = getJob(t, b, id); code != http.StatusOK {
			t.Fatalf("relay B answers %d for the job relay A started", code)
		}
		return j.Progress.Done
	})
	if j.Progress.Queued != 1 || j.Progress.Total != 1 || j.Relay != "relay-a" || j.Stalled || j.Error != "" {
		t.Errorf("the job at relay B: %+v; want 1 of 1 queued by relay-a", j)
	}
	if got, ok := listJobs(t, b)[id]; !ok || !got.Progress.Done {
		t.Errorf("relay B lists %+v for %s", got, id)
	}

	// The console: started at A, the redirect and the poll land on B.
	c := browser(t)
	csrf := signIn(t, c, a.URL)
	resp, err := c.PostForm(a.URL+"/console/replays", url.Values{"_csrf": {csrf}, "endpoint": {"orders"}, "since": {"2h"}, "dry_run": {"true"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/replays/rp_") {
		t.Fatalf("console start at A: %d → %q", resp.StatusCode, loc)
	}
	if code, body := consolePage(t, c, b.URL+loc); code != http.StatusOK || !strings.Contains(body, "dry run") {
		t.Fatalf("the job's page at B: %d\n%.300s", code, body)
	}
	poll.Until(t, "relay B's progress fragment to say done", func() bool {
		code, body := consolePage(t, c, b.URL+loc+"/progress")
		if code != http.StatusOK {
			t.Fatalf("progress at B: %d %.300s", code, body)
		}
		return strings.Contains(body, doneMark)
	})
	code, body := consolePage(t, c, b.URL+"/console/replays")
	if code != http.StatusOK || !strings.Contains(body, id) || !strings.Contains(body, strings.TrimPrefix(loc, "/console/replays/")) {
		t.Errorf("relay B's replays page %d does not list both jobs (%s, %s)", code, id, loc)
	}
	if code, body := consolePage(t, c, b.URL+"/console/replays/"+id+"/progress"); code != http.StatusOK || !strings.Contains(body, doneMark) || !strings.Contains(body, "relay-a") {
		t.Errorf("the API's job at B's console: %d %.300s; want done, by relay-a", code, body)
	}
}

// A relay started again (or a new one) still lists a finished job.
func TestReplayOutlivesRestart(t *testing.T) {
	js := provision(t)
	hs, a := newRelayNamed(t, js, "relay-a", zerolog.Nop())
	publishReplayable(t, js, "evt_1")
	_, j := startJob(t, hs, `{"endpoint":"orders","since":"1h"}`)
	id := j.Progress.Job
	poll.Until(t, "the job to finish", func() bool { _, j = getJob(t, hs, id); return j.Progress.Done })
	hs.Close()
	a.Close()

	again, _ := newRelayNamed(t, js, "relay-a", zerolog.Nop())
	got, ok := listJobs(t, again)[id]
	if !ok || !got.Progress.Done || got.Progress.Queued != 1 || got.Stalled {
		t.Fatalf("after a restart the relay lists %+v for %s (ok %v), want it done with 1 queued", got, id, ok)
	}
	c := browser(t)
	signIn(t, c, again.URL)
	if code, body := consolePage(t, c, again.URL+"/console/replays/"+id); code != http.StatusOK || !strings.Contains(body, doneMark) {
		t.Errorf("the job's page after a restart: %d", code)
	}
}

// A replay the store refuses to record is not started: 503
// store_unavailable at the API, 503 at the console; nothing is queued.
func TestReplayStoreRefusing(t *testing.T) {
	hs, js := newServer(t)
	publishReplayable(t, js, "evt_1")
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	restore := natstest.RefuseWrites(t, js, "KV_"+BucketReplays)
	code, body := call(t, hs, http.MethodPost, "/admin/replays", `{"endpoint":"orders","since":"1h"}`, token)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"store_unavailable"`) {
		t.Errorf("start with the store refusing: %d %s; want 503 store_unavailable", code, body)
	}
	resp, err := c.PostForm(hs.URL+"/console/replays", url.Values{"_csrf": {csrf}, "endpoint": {"orders"}, "since": {"2h"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("console start with the store refusing: %d, want 503", resp.StatusCode)
	}
	restore()
	// Had either run, it would have queued the event by now: a job
	// started after them (the same window) finds nothing queued before.
	code, j := startJob(t, hs, `{"endpoint":"orders","since":"3h"}`)
	if code != http.StatusAccepted {
		t.Fatalf("start after the store is back: %d", code)
	}
	poll.Until(t, "the job to finish", func() bool { _, j = getJob(t, hs, j.Progress.Job); return j.Progress.Done })
	if n := len(natstest.Messages(t, js, event.StreamReplay)); n != 1 {
		t.Errorf("%d copies queued, want only the last job's", n)
	}
}

// A job whose relay stopped writing (it died mid-run) shows as stalled,
// not running for ever, and can be started again; a job whose relay is
// alive is returned as it is, by any relay.
func TestReplayStalled(t *testing.T) {
	hs, js := newServer(t)
	publishReplayable(t, js, "evt_1")
	since, until, now := pastWindow()
	body := fmt.Sprintf(`{"endpoint":"orders","since":%q,"until":%q}`, since, until)
	req, err := ReplayRequest([]dispatcher.Endpoint{{Name: "orders"}}, []string{"main"}, ReplayInput{Endpoints: []string{"orders"}, Since: since, Until: until}, now)
	if err != nil {
		t.Fatal(err)
	}
	id := req.JobID()
	kv, err := js.KeyValue(t.Context(), BucketReplays)
	if err != nil {
		t.Fatal(err)
	}
	// put writes the job as a relay running it leaves it.
	put := func(relay string, heartbeat time.Time, done bool) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"request": req, "started": heartbeat.Add(-time.Minute), "relay": relay, "heartbeat": heartbeat,
			"progress": dispatcher.ReplayProgress{Job: id, Total: 10, Scanned: 3, PerEndpoint: map[string]uint64{"orders": 0}, Done: done}})
		if _, err := kv.Put(t.Context(), id, b); err != nil {
			t.Fatal(err)
		}
	}

	put("relay-b", time.Now(), false)
	if code, j := startJob(t, hs, body); code != http.StatusOK || j.Relay != "relay-b" || j.Progress.Scanned != 3 || j.Stalled {
		t.Fatalf("starting a job relay-b runs: %d %+v; want 200 and relay-b's job", code, j)
	}

	put("relay-b", time.Now().Add(-time.Minute), true)
	if _, j := getJob(t, hs, id); j.Stalled {
		t.Errorf("a finished job without news for a minute shows stalled: %+v", j)
	}

	put("relay-b", time.Now().Add(-time.Minute), false) // relay-b died
	if code, j := getJob(t, hs, id); code != http.StatusOK || !j.Stalled || j.Progress.Done {
		t.Fatalf("a running job without news for a minute: %d %+v; want stalled", code, j)
	}
	if j := listJobs(t, hs)[id]; !j.Stalled {
		t.Errorf("the list shows %+v; want stalled", j)
	}
	c := browser(t)
	signIn(t, c, hs.URL)
	code, frag := consolePage(t, c, hs.URL+"/console/replays/"+id+"/progress")
	if code != http.StatusOK || !strings.Contains(frag, "stalled") || strings.Contains(frag, "hx-get") || !strings.Contains(frag, `class="restart-replay"`) {
		t.Errorf("the console's fragment of a stalled job: %d %s; want it to say stalled, stop polling and offer to start it again", code, frag)
	}

	code, j := startJob(t, hs, body)
	if code != http.StatusAccepted || j.Relay != "relay-a" {
		t.Fatalf("starting a stalled job again: %d %+v; want 202 at relay-a", code, j)
	}
	poll.Until(t, "the job started again to finish", func() bool { _, j = getJob(t, hs, id); return j.Progress.Done })
	if j.Stalled || j.Progress.Queued != 1 || j.Relay != "relay-a" {
		t.Errorf("the job run again: %+v", j)
	}
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// The console's form that sends a dry run for real runs the selection the
// dry run counted: a job of the API that selects by merchantRef or
// transaction keeps that selection (the form dropped it, and the "real"
// run replayed the whole window).
func TestConsoleRunForRealKeepsTheSelection(t *testing.T) {
	hs, js := newServer(t)
	publishReplayable(t, js, "evt_1")
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
	real := j.Request
	real.DryRun = false // a dry run's id is its own: the real run's is the selection's
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/console/replays/"+real.JobID() {
		t.Fatalf("sent for real: %d → %q, want the dry run's selection, job %s (form %v)", resp.StatusCode, loc, real.JobID(), form)
	}
}

// A replay the command line runs (RecordedReplay) is a job like the
// API's: the API and the console show it with its progress and end, and
// the same job started again while it runs, from the API or the command
// line, does not run twice at once.
func TestRecordedReplay(t *testing.T) {
	hs, js := newServer(t)
	publishReplayable(t, js, "evt_1")
	since, until, now := pastWindow()
	eps := []dispatcher.Endpoint{{Name: "orders", FilterSubjects: []string{"sengo.events.>"}}}
	req, err := ReplayRequest(eps, []string{"main"}, ReplayInput{Endpoints: []string{"orders"}, Since: since, Until: until}, now)
	if err != nil {
		t.Fatal(err)
	}
	id := req.JobID()
	replay := func(ctx context.Context, progress func(dispatcher.ReplayProgress)) (dispatcher.ReplayProgress, error) {
		return dispatcher.Replay(ctx, js, eps, req, progress)
	}
	warned := func(err error) { t.Errorf("warned: %v", err) }

	// While the command line's replay runs, the API sees it running and
	// does not start it again.
	release := make(chan struct{})
	running := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := RecordedReplay(t.Context(), js, "sengo-relay replay cli-host:1", req, zerolog.Nop(), warned, func(ctx context.Context, progress func(dispatcher.ReplayProgress)) (dispatcher.ReplayProgress, error) {
			progress(dispatcher.ReplayProgress{Job: id, Total: 1, PerEndpoint: map[string]uint64{"orders": 0}})
			close(running)
			<-release
			return replay(ctx, progress)
		})
		done <- err
	}()
	<-running
	poll.Until(t, "the command line's job recorded with its first progress", func() bool {
		code, j := getJob(t, hs, id)
		return code == http.StatusOK && j.Relay == "sengo-relay replay cli-host:1" && j.Progress.Total == 1
	})
	body := fmt.Sprintf(`{"endpoint":"orders","since":%q,"until":%q}`, since, until)
	if code, j := startJob(t, hs, body); code != http.StatusOK || j.Relay != "sengo-relay replay cli-host:1" {
		t.Errorf("the API starting the job the command line runs: %d %+v; want 200 and the command line's job", code, j)
	}
	ran := false
	if _, err := RecordedReplay(t.Context(), js, "sengo-relay replay cli-host:2", req, zerolog.Nop(), warned, func(context.Context, func(dispatcher.ReplayProgress)) (dispatcher.ReplayProgress, error) {
		ran = true
		return dispatcher.ReplayProgress{}, nil
	}); !errors.Is(err, ErrReplayRunning) || ran || !strings.Contains(err.Error(), "cli-host:1") {
		t.Errorf("a second command line for the running job: ran %v, %v; want ErrReplayRunning naming cli-host:1", ran, err)
	}

	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	code, j := getJob(t, hs, id)
	if code != http.StatusOK || !j.Progress.Done || j.Progress.Queued != 1 || j.Error != "" || j.Stalled {
		t.Fatalf("the command line's job after it ended: %d %+v; want done with 1 queued", code, j)
	}
	if lj := listJobs(t, hs)[id]; lj.Relay != "sengo-relay replay cli-host:1" || !lj.Progress.Done {
		t.Errorf("the list shows %+v", lj)
	}
	c := browser(t)
	signIn(t, c, hs.URL)
	if code, page := consolePage(t, c, hs.URL+"/console/replays"); code != http.StatusOK || !strings.Contains(page, id) {
		t.Errorf("the console's replays page: %d, without %s", code, id)
	}
}

// A store without the jobs' bucket (provisioned by an older relay) does
// not stop a command line's replay: it runs, unrecorded, with a warning.
func TestRecordedReplayWithoutTheBucket(t *testing.T) {
	js := provision(t)
	if err := js.DeleteKeyValue(t.Context(), BucketReplays); err != nil {
		t.Fatal(err)
	}
	publishReplayable(t, js, "evt_1")
	now := time.Now().UTC()
	eps := []dispatcher.Endpoint{{Name: "orders", FilterSubjects: []string{"sengo.events.>"}}}
	req, err := ReplayRequest(eps, []string{"main"}, ReplayInput{Endpoints: []string{"orders"}, Since: "1h", Until: ""}, now)
	if err != nil {
		t.Fatal(err)
	}
	var warnings []error
	p, err := RecordedReplay(t.Context(), js, "cli", req, zerolog.Nop(), func(err error) { warnings = append(warnings, err) }, func(ctx context.Context, progress func(dispatcher.ReplayProgress)) (dispatcher.ReplayProgress, error) {
		return dispatcher.Replay(ctx, js, eps, req, progress)
	})
	if err != nil || p.Queued != 1 || len(warnings) != 1 {
		t.Fatalf("replay without the bucket: %+v, %v, warnings %v; want 1 queued and one warning", p, err, warnings)
	}
}

// A dry run of a window is running (a command line's --dry-run, or the
// console's first step); the operator then asks for the real replay of
// the same window. The real replay must run: it queues copies, the dry run
// queues none. A dry run shares its job id with the real run, and the
// request was answered "already running" with the dry run's job, nothing
// ever queued.
func TestRealReplayIsNotTakenForARunningDryRun(t *testing.T) {
	hs, js := newServer(t)
	publishReplayable(t, js, "evt_1")
	since, until, now := pastWindow()
	eps := []dispatcher.Endpoint{{Name: "orders", FilterSubjects: []string{"sengo.events.>"}}}
	dry, err := ReplayRequest(eps, []string{"main"}, ReplayInput{Endpoints: []string{"orders"}, Since: since, Until: until, DryRun: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	release := runningReplay(t, js, eps, dry)
	body := fmt.Sprintf(`{"endpoint":"orders","since":%q,"until":%q,"dryRun":false}`, since, until)
	code, j := startJob(t, hs, body)
	release()
	if code != http.StatusAccepted {
		t.Errorf("the real replay while its dry run runs: %d, job %+v; want 202 (started)", code, j)
	}
	poll.Until(t, "the real replay to finish", func() bool { _, j = getJob(t, hs, j.Progress.Job); return j.Progress.Done || j.Error != "" })
	if n := len(natstest.Messages(t, js, event.StreamReplay)); n != 1 {
		t.Fatalf("%d copies queued on %s after the real replay was asked for; want 1", n, event.StreamReplay)
	}
}

// A replay that ran is a record of what was sent: a later dry run of the
// same selection (to see what running it again would send) must not
// replace it. Dry runs shared the real run's job id, and the dry run's
// record overwrote the real run's "queued 1".
func TestDryRunKeepsTheRealRunsRecord(t *testing.T) {
	hs, js := newServer(t)
	publishReplayable(t, js, "evt_1")
	since, until, _ := pastWindow()
	body := `{"endpoint":"orders","since":%q,"until":%q,"dryRun":%v}`
	_, real := startJob(t, hs, fmt.Sprintf(body, since, until, false))
	poll.Until(t, "the real replay to finish", func() bool { _, real = getJob(t, hs, real.Progress.Job); return real.Progress.Done || real.Error != "" })
	if real.Progress.Queued != 1 {
		t.Fatalf("the real replay queued %d; want 1", real.Progress.Queued)
	}
	code, dry := startJob(t, hs, fmt.Sprintf(body, since, until, true))
	if code != http.StatusAccepted || !dry.Request.DryRun {
		t.Fatalf("the dry run after it: %d, job %+v; want 202 and a dry run", code, dry)
	}
	poll.Until(t, "the dry run to finish", func() bool { _, dry = getJob(t, hs, dry.Progress.Job); return dry.Progress.Done || dry.Error != "" })
	if dry.Progress.Matched != 1 || dry.Progress.Queued != 0 {
		t.Errorf("the dry run: %+v; want 1 matched, 0 queued", dry.Progress)
	}
	if _, j := getJob(t, hs, real.Progress.Job); j.Request.DryRun || j.Progress.Queued != 1 {
		t.Errorf("the real run's record after a dry run of its selection: dry run %v, queued %d; want the real run's, queued 1", j.Request.DryRun, j.Progress.Queued)
	}
}

// runningReplay starts req as "sengo-relay replay cli-host:1" would (a
// recorded job) and returns once it runs; it runs on when release is
// called, which returns when it has finished.
func runningReplay(t *testing.T, js jetstream.JetStream, eps []dispatcher.Endpoint, req dispatcher.ReplayRequest) (release func()) {
	t.Helper()
	proceed, running, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := RecordedReplay(t.Context(), js, "sengo-relay replay cli-host:1", req, zerolog.Nop(), func(error) {}, func(ctx context.Context, progress func(dispatcher.ReplayProgress)) (dispatcher.ReplayProgress, error) {
			close(running)
			<-proceed
			return dispatcher.Replay(ctx, js, eps, req, progress)
		})
		done <- err
	}()
	<-running
	return func() {
		close(proceed)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// Asking for a replay that is already running starts nothing; its audit
// line said "replay" all the same, as if a second one had been sent.
func TestReplayAlreadyRunningIsAuditedAsSuch(t *testing.T) {
	var logs syncbuf.Buffer
	hs, js := newServerLogging(t, zerolog.New(&logs))
	publishReplayable(t, js, "evt_1")
	since, until, now := pastWindow()
	eps := []dispatcher.Endpoint{{Name: "orders", FilterSubjects: []string{"sengo.events.>"}}}
	req, err := ReplayRequest(eps, []string{"main"}, ReplayInput{Endpoints: []string{"orders"}, Since: since, Until: until}, now)
	if err != nil {
		t.Fatal(err)
	}
	release := runningReplay(t, js, eps, req)
	code, j := startJob(t, hs, fmt.Sprintf(`{"endpoint":"orders","since":%q,"until":%q}`, since, until))
	c := browser(t)
	csrf := signIn(t, c, hs.URL)
	resp, err := c.PostForm(hs.URL+"/console/replays", url.Values{"_csrf": {csrf}, "endpoint": {"orders"}, "since": {since}, "until": {until}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	release()
	if code != http.StatusOK || j.Relay != "sengo-relay replay cli-host:1" {
		t.Fatalf("the API's answer: %d %+v; want 200 and the running job", code, j)
	}
	var actions []string
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && (m["audit"] == true || m["message"] == "console action") && strings.HasPrefix(fmt.Sprint(m["action"]), "replay") {
			actions = append(actions, fmt.Sprint(m["action"]))
		}
	}
	if strings.Join(actions, ",") != "replay (already running),replay (already running)" {
		t.Fatalf("audit actions %q; want the API's and the console's both as already running", actions)
	}
}

// The jobs were listed with a watch of the bucket, which ends at the
// first entry the server reports nothing pending after: while running
// jobs write their progress that count can reach zero early, and the list
// (the API's and the console's replays page) missed running jobs. Every
// job writing all the time, every list must still have each of them.
func TestEveryReplayJobIsListedWhileJobsWriteTheirProgress(t *testing.T) {
	js := provision(t)
	r := &replays{js: js}
	kv, err := r.bucket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const jobs = 8
	for i := range jobs {
		j := newJob(dispatcher.ReplayRequest{}, "relay-a", time.Now().UTC())
		id := fmt.Sprintf("rp_%016x", i)
		b, _ := json.Marshal(j)
		if _, err := kv.Put(ctx, id, b); err != nil {
			t.Fatal(err)
		}
		go func() {
			for ctx.Err() == nil {
				_, _ = kv.Put(ctx, id, b)
			}
		}()
	}
	for look := range 300 {
		got, err := r.list(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != jobs {
			t.Fatalf("list %d: %d of the %d running jobs", look, len(got), jobs)
		}
	}
}

// A progress write the store applied but answered too late (the client's
// deadline first) left the writer with the revision before it: its next
// write found another and took the job for one another relay had started
// again, and the replay stopped part way, when the store was slow. The
// job's own record (same relay, same start) is taken up again; another
// relay's still stops it.
func TestAReplaysOwnLateWriteIsNoTakeover(t *testing.T) {
	js := provision(t)
	kv, err := js.KeyValue(t.Context(), ReplaysBucket().Name)
	if err != nil {
		t.Fatal(err)
	}
	j := newJob(dispatcher.ReplayRequest{Endpoints: []string{"orders"}, Since: time.Now().Add(-time.Hour)}, "relay-a", time.Now().UTC())
	b, _ := json.Marshal(j)
	rev, err := kv.Create(t.Context(), j.Progress.Job, b)
	if err != nil {
		t.Fatal(err)
	}
	w := &jobWriter{kv: kv, j: j, rev: rev}
	if _, err := kv.Update(t.Context(), j.Progress.Job, b, rev); err != nil { // the write whose answer was lost
		t.Fatal(err)
	}
	w.progress(dispatcher.ReplayProgress{Job: j.Progress.Job, Scanned: 10, PerEndpoint: map[string]uint64{"orders": 10}})
	for range 2 { // taken up at once, or with the next tick
		if err = w.write(false); err == nil || errors.Is(err, errTakenOver) {
			break
		}
	}
	if err != nil {
		t.Fatalf("after its own write answered late: %v", err)
	}
	other := j
	other.Relay = "relay-b"
	other.Started = j.Started.Add(time.Minute)
	ob, _ := json.Marshal(other)
	if _, err := kv.Put(t.Context(), j.Progress.Job, ob); err != nil {
		t.Fatal(err)
	}
	w.progress(dispatcher.ReplayProgress{Job: j.Progress.Job, Scanned: 20, PerEndpoint: map[string]uint64{"orders": 20}})
	if err := w.write(false); !errors.Is(err, errTakenOver) {
		t.Fatalf("after another relay started it again: %v, want taken over", err)
	}
}

// A replay's window ends where its run starts (dispatcher.Replay), so an
// until later than now named a window no run kept: the job id stood for
// it, a dry run counted up to its own start, and "send these for real", a
// resume, or "start it again" later queued what live traffic had stored
// meanwhile (already delivered) under the same job. Such an until is now.
func TestAReplaysUntilIsAtMostNow(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	eps := []dispatcher.Endpoint{{Name: "orders", FilterSubjects: []string{"sengo.events.>"}}}
	since := now.Add(-time.Hour).Format(time.RFC3339)
	late, err := ReplayRequest(eps, []string{"main"}, ReplayInput{Endpoints: []string{"orders"}, Since: since, Until: now.Add(24 * time.Hour).Format(time.RFC3339)}, now)
	if err != nil {
		t.Fatal(err)
	}
	open, err := ReplayRequest(eps, []string{"main"}, ReplayInput{Endpoints: []string{"orders"}, Since: since}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !late.Until.Equal(now) || late.JobID() != open.JobID() {
		t.Fatalf("until tomorrow: %s (job %s), want now (job %s)", late.Until, late.JobID(), open.JobID())
	}
}

// pastWindow is the hour up to now, ended before any request names it (a
// replay's until is at most its start): requests of it at any later time
// name one job.
func pastWindow() (since, until string, now time.Time) {
	end := time.Now().UTC()
	return end.Add(-time.Hour).Format(time.RFC3339Nano), end.Format(time.RFC3339Nano), time.Now().UTC()
}
