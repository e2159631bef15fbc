package dispatcher

import (
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
)

// A replay's job id names what it selects: two selections never share
// one (a job's copies are deduplicated by it, so a second selection under
// the same id would queue nothing), and the ids of jobs already recorded
// stay what they were.
func TestJobIDNamesTheSelection(t *testing.T) {
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
