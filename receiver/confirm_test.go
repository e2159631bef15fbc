package receiver

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/sengo"
)

// A late pending callback for a transaction SenGo already reports as
// paid publishes SenGo's status, confirmed, with the reason recorded.
func TestConfirmationTakesSenGosStatus(t *testing.T) {
	sb, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 2
	})
	tx, err := client.CreateQRIS(context.Background(), sengo.QRISRequest{Reference: "Q-9", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	late := append(append([]byte(`{"responseData":`), tx.Raw...), '}') // still says pending
	if resp, _ := h.post("/callbacks/sengo/main", late); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "intake idle", h.intakeIdle)
	evs := h.events()
	if len(evs) != 1 || evs[0].Data.Status != event.StatusSuccess || !evs[0].Data.Confirmed {
		t.Fatalf("events %+v", evs)
	}
	kv, _ := h.js.KeyValue(t.Context(), event.BucketTx)
	e, err := kv.Get(t.Context(), txKey("main", tx.ID))
	if err != nil {
		t.Fatal(err)
	}
	var st txState
	json.Unmarshal(e.Value(), &st)
	if len(st.History) != 1 || !strings.Contains(st.History[0].Note, "callback said pending; SenGo's API says success") {
		t.Fatalf("history %+v", st.History)
	}
	if n := h.intakeCount("main", "published"); n != 1 {
		t.Fatalf("published %v", n)
	}
}

// Every relay's intake reads the one inbox, and each confirms only the
// projects of its own configuration. A project another relay has (a
// rolling deploy that adds it with require_confirmation), or that was
// removed (its unconfirmed claims rechecked into the inbox), was published
// unconfirmed: no client for it, and no requirement either. A relay now
// decides only its own projects' notifications; others are retried (for
// a relay that has the project) and set aside when the inbox would drop
// them.
func TestAProjectThisRelayDoesNotHaveIsNeverPublished(t *testing.T) {
	_, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.RequireConfirmation = map[string]bool{"main": true}
	})
	// What a relay configured with project shop stores for a forged claim.
	if _, err := h.js.PublishMsg(t.Context(), &nats.Msg{Subject: event.InboxTxSubject("shop", "tx-f"), Data: callback("tx-f", event.StatusSuccess), Header: nats.Header{
		event.HeaderProject: {"shop"}, event.HeaderSource: {SourceCallback}, event.HeaderReceivedAt: {time.Now().UTC().Format(time.RFC3339Nano)},
	}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the notification published or retried", func() bool {
		return h.msgs(event.StreamEvents) > 0 || h.intakeCount("shop", "retry") >= 2
	})
	if n := h.msgs(event.StreamEvents); n != 0 {
		t.Fatalf("%d events published for a project this relay does not have", n)
	}
}
