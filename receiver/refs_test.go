package receiver

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
)

// withHistory gives intake a history writer, also stored in *w.
func withHistory(w **history.Writer) option {
	return func(_ *Config, ic *IntakeConfig) {
		hw, err := history.NewWriter(ic.JetStream.Conn(), history.WriterConfig{Logger: zerolog.Nop()})
		if err != nil {
			panic(err)
		}
		ic.History, *w = hw, hw
	}
}

// Each published transaction is indexed under its merchantRef, once per
// (reference, transaction) however many statuses it goes through; two
// transactions of one reference (a retried payment) are both found, and a
// reference full of dots and spaces is as findable as a plain one.
func TestMerchantRefFindsItsTransactions(t *testing.T) {
	t.Parallel()
	var w *history.Writer
	h := newHarness(t, true, withHistory(&w))
	odd := "INV 2025.03/ä*>1"
	for _, c := range []struct {
		id, ref string
		s       event.Status
	}{{"tx-r1", "INV-1001", event.StatusPending}, {"tx-r1", "INV-1001", event.StatusSuccess}, {"tx-r2", "INV-1001", event.StatusExpired}, {"tx-r3", odd, event.StatusSuccess}} {
		body := strings.Replace(string(callback(c.id, c.s)), `"REF-`+c.id+`"`, `"`+c.ref+`"`, 1)
		if resp, _ := h.post("/callbacks/sengo/main", []byte(body)); resp.StatusCode != 200 {
			t.Fatalf("%s %s answered %d", c.id, c.s, resp.StatusCode)
		}
	}
	eventually(t, "intake idle", h.intakeIdle)
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	refs, err := history.Lookup(context.Background(), h.js, "main", "INV-1001", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range refs {
		ids = append(ids, r.TransactionID)
	}
	slices.Sort(ids)
	if strings.Join(ids, ",") != "tx-r1,tx-r2" {
		t.Errorf("INV-1001 finds %v, want tx-r1 and tx-r2 once each", ids)
	}
	if refs, err := history.Lookup(context.Background(), h.js, "main", odd, 0); err != nil || len(refs) != 1 || refs[0].TransactionID != "tx-r3" {
		t.Errorf("%q finds %v, %v", odd, refs, err)
	}
	if refs, _ := history.Lookup(context.Background(), h.js, "other", "INV-1001", 0); len(refs) != 0 {
		t.Errorf("another project's lookup finds %v", refs)
	}
}

// A status whose event publish failed after its state was written is
// published from the outbox by the notification's retry, which finds
// itself a duplicate: it wrote no index record, and a search by the
// order's merchantRef found nothing for a paid transaction. The retry
// that publishes it indexes it.
func TestATransactionPublishedFromItsOutboxIsIndexed(t *testing.T) {
	t.Parallel()
	var w *history.Writer
	h := newHarness(t, true, withHistory(&w))
	restore := natstest.RefuseWrites(t, h.js, event.StreamEvents)
	if resp, _ := h.post("/callbacks/sengo/main", callback("tx-o", event.StatusSuccess)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the publish refused once", func() bool { return h.intakeCount("main", "retry") >= 1 })
	restore()
	eventually(t, "published", func() bool { return len(statuses(h.events(), "tx-o")) == 1 })
	eventually(t, "intake idle", h.intakeIdle)
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if refs, err := history.Lookup(context.Background(), h.js, "main", "REF-tx-o", 0); err != nil || len(refs) != 1 || refs[0].TransactionID != "tx-o" {
		t.Fatalf("REF-tx-o finds %v, %v", refs, err)
	}
}
