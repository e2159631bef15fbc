package dispatcher

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
)

// A replay's job id names what it selects: two selections never share
// one (a job's copies are deduplicated by it, so a second selection under
// the same id would queue nothing), and the ids of jobs already recorded
// stay what they were.
func TestJobIDNamesTheSelection(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	base := ReplayRequest{Endpoints: []string{"orders"}, Since: since, Statuses: []event.Status{event.StatusSuccess}}
	if got := base.JobID(); got != "rp_13fac8efec526621" {
		t.Errorf("the id of a recorded kind of job changed: %s", got)
	}
	a, b := base, base
	a.TransactionID, a.MerchantRef = "a|b", ""
	b.TransactionID, b.MerchantRef = "a", "b|"
	if a.JobID() == b.JobID() {
		t.Errorf("transaction %q and transaction %q with merchantRef %q share job %s", a.TransactionID, b.TransactionID, b.MerchantRef, a.JobID())
	}
	// One selection is one job whatever the order of its statuses: asked
	// again in another order (the CLI's flag, then the console's boxes),
	// it was a second job that queued every event again.
	c, d := base, base
	c.Statuses = []event.Status{event.StatusSuccess, event.StatusExpired}
	d.Statuses = []event.Status{event.StatusExpired, event.StatusSuccess, event.StatusExpired}
	if c.JobID() != d.JobID() {
		t.Errorf("statuses %v and %v: jobs %s and %s", c.Statuses, d.Statuses, c.JobID(), d.JobID())
	}
}

// A running replay looked again every 30 s whether a relay still
// delivers its endpoint, and one retired sooner than that
// (delivery.retire_removed_after: 20s) had copies queued for the rest of
// it where nothing read them. It looks within the shortest retirement the
// configuration allows (1 s).
func TestAReplayLooksAgainWithinTheShortestRetirement(t *testing.T) {
	t.Parallel()
	if replayRecheck > time.Second {
		t.Fatalf("a replay looks again every %s, longer than delivery.retire_removed_after's 1 s at least", replayRecheck)
	}
}

// A replay checked its endpoint only when it started: an endpoint
// retired while a long replay ran (a deploy that removed it) had copies
// queued where nothing read them, until SENGO_REPLAY dropped them, and
// the job said done. It checks again as it goes, and stops (to be
// resumed) once no relay delivers the endpoint.
func TestAReplayStopsWhenItsEndpointIsRetired(t *testing.T) {
	h := newHarness(t)
	defer func(d time.Duration) { replayRecheck = d }(replayRecheck)
	replayRecheck = 0
	ep := h.endpoint("orders", "http://127.0.0.1:1/")
	h.worker(ep) // its consumers, not run
	for i := range 5 {
		h.publish(fmt.Sprintf("tx-%d", i), event.StatusSuccess, "")
	}
	retired := false
	p, err := Replay(t.Context(), h.js, []Endpoint{ep}, ReplayRequest{Endpoints: []string{"orders"}, Since: time.Now().Add(-time.Hour)}, func(p ReplayProgress) {
		if p.Queued == 2 && !retired {
			retired = true
			if err := h.js.DeleteConsumer(t.Context(), event.StreamReplay, ConsumerName("orders")); err != nil {
				t.Error(err)
			}
		}
	})
	if err == nil || !strings.Contains(err.Error(), "no relay delivers it") || p.Done || p.Queued >= 5 {
		t.Fatalf("replay went on after its endpoint was retired: queued %d, done %v, %v", p.Queued, p.Done, err)
	}
}
