package receiver

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
)

// A quarantine purge or redrive with a stale list (entries removed
// meanwhile) handles what is left, counts only that, and does not fail
// on the ones already gone.
func TestQuarantineStaleEntries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	for _, id := range []string{"tx-a", "tx-b", "tx-c"} {
		msg := &nats.Msg{Subject: event.QuarantineTxSubject("main", id), Data: []byte(`{"id":"` + id + `"}`), Header: nats.Header{event.HeaderProject: []string{"main"}}}
		if _, err := h.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := ListQuarantine(ctx, h.js, QuarantineFilter{})
	if err != nil || len(entries) != 3 {
		t.Fatalf("list: %v %d", err, len(entries))
	}
	if n, err := PurgeQuarantine(ctx, h.js, entries[:1]); err != nil || n != 1 {
		t.Fatalf("first purge: %d, %v", n, err)
	}
	if n, err := PurgeQuarantine(ctx, h.js, entries[:2]); err != nil || n != 1 {
		t.Fatalf("purge of a stale list: %d, %v; want 1 and no error", n, err)
	}
	if n, err := RedriveQuarantine(ctx, h.js, entries, nil); err != nil || n != 1 {
		t.Fatalf("redrive of a stale list: %d, %v; want 1 and no error", n, err)
	}
}

// A listing by project or transaction reads by subject, every matching
// notification however many others came after it: the old listing read
// the newest 10,000 sequences one request each, so a project's older
// notifications behind 10,000 of another's were never listed (nor
// redriven nor purged), and the read took seconds.
func TestQuarantineListedBySubject(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false, withProjects(Project{Name: "main"}, Project{Name: "other"}))
	ctx := context.Background()
	entry := func(project, id string) *nats.Msg {
		return &nats.Msg{Subject: event.QuarantineTxSubject(project, id), Data: callback(id, event.StatusSuccess), Header: nats.Header{event.HeaderProject: []string{project}}}
	}
	natstest.PublishMany(t, h.js, 1, func(int) *nats.Msg { return entry("main", "tx-early") })
	// An older one stored on the project's subject alone.
	natstest.PublishMany(t, h.js, 1, func(int) *nats.Msg {
		return &nats.Msg{Subject: event.QuarantineSubject("main"), Data: callback("tx-early", event.StatusPending), Header: nats.Header{event.HeaderProject: []string{"main"}}}
	})
	natstest.PublishMany(t, h.js, maxQuarantineScan+500, func(i int) *nats.Msg { return entry("other", fmt.Sprintf("tx-%d", i)) })
	for _, f := range []QuarantineFilter{{Project: "main"}, {TransactionID: "tx-early"}, {Project: "main", TransactionID: "tx-early"}} {
		got, err := ListQuarantine(ctx, h.js, f)
		if err != nil || len(got) != 2 || got[0].TransactionID != "tx-early" || got[1].Status != event.StatusPending {
			t.Fatalf("%+v: %v, %d entries, want tx-early's two", f, err, len(got))
		}
	}
	if all, err := ListQuarantine(ctx, h.js, QuarantineFilter{}); err != nil || len(all) != maxQuarantineScan {
		t.Fatalf("no filter: %v, %d entries, want the newest %d", err, len(all), maxQuarantineScan)
	}
}

// The listing with no filter shows the newest notifications kept, not the
// newest sequences: after a flood of another project's was purged, the
// stream's last sequence stayed where the flood ended, the window of the
// newest 10,000 sequences held nothing, and the project's genuine
// notifications set aside before it were listed nowhere (the console hid
// its "Redrive all" with them).
func TestQuarantineListAfterAPurgedFloodShowsWhatIsKept(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false, withProjects(Project{Name: "main"}, Project{Name: "other"}))
	ctx := context.Background()
	entry := func(project, id string) *nats.Msg {
		return &nats.Msg{Subject: event.QuarantineTxSubject(project, id), Data: callback(id, event.StatusSuccess), Header: nats.Header{event.HeaderProject: []string{project}}}
	}
	natstest.PublishMany(t, h.js, 5, func(i int) *nats.Msg { return entry("main", fmt.Sprintf("kept-%d", i)) })
	natstest.PublishMany(t, h.js, maxQuarantineScan, func(i int) *nats.Msg { return entry("other", fmt.Sprintf("flood-%d", i)) })
	s, err := h.js.Stream(ctx, event.StreamQuarantine)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(event.QuarantineSubject("other")+".>")); err != nil {
		t.Fatal(err)
	}
	if all, err := ListQuarantine(ctx, h.js, QuarantineFilter{}); err != nil || len(all) != 5 {
		t.Fatalf("no filter after the flood was purged: %v, %d entries, want main's 5", err, len(all))
	}
}
