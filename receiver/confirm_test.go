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
	t.Parallel()
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
	// The state says it was confirmed, as the event does: the story tells
	// it from there once the event has aged out.
	if c := st.History[0].Confirmed; c == nil || !*c {
		t.Fatalf("history %+v: want it recorded confirmed", st.History)
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
	t.Parallel()
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

// SenGo echoes additionalInfo.callback, the URL the merchant gave it, in
// every callback and every answer of its API: with a callback_token, the
// token is in it. It was kept in the inbox, in each event's data.raw (to
// every endpoint and subscriber), and in a quarantined notification's
// SenGo object: anyone reading events could then post callbacks as SenGo.
// It is replaced by [redacted] before anything is stored.
func TestTheCallbackTokenIsStoredNowhere(t *testing.T) {
	t.Parallel()
	sb, client := startSandbox(t)
	const openToken = "open-token-0123456789abcdef"
	h := newHarness(t, true, withProjects(Project{Name: "tokened", CallbackToken: callbackToken}, Project{Name: "open", CallbackToken: openToken}), func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"tokened": client})
		ic.ConfirmAttempts = 1
		ic.CallbackTokens = map[string]string{"tokened": callbackToken, "open": openToken}
	})
	url := h.http.URL + "/callbacks/sengo/tokened/" + callbackToken
	paid, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: "Q-T1", Amount: 5000, AdditionalInfo: sengo.AdditionalInfo{Callback: url}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(paid.ID, event.StatusSuccess); err != nil { // SenGo calls the relay
		t.Fatal(err)
	}
	eventually(t, "the payment published", func() bool { return h.msgs(event.StreamEvents) == 1 })
	// A forged claim of another order: quarantined with SenGo's object.
	other, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: "Q-T2", Amount: 5000, AdditionalInfo: sengo.AdditionalInfo{Callback: url}})
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(other.Raw), `"amount":5000`, `"amount":1`, 1)
	if resp, _ := h.post("/callbacks/sengo/tokened/"+callbackToken, []byte(`{"responseData":`+forged+`}`)); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	eventually(t, "the forged claim quarantined", func() bool { return h.msgs(event.StreamQuarantine) == 1 })
	// A payment whose callback never came, fed by reconciliation from
	// SenGo's list.
	lost, err := client.CreateQRIS(t.Context(), sengo.QRISRequest{Reference: "Q-T3", Amount: 5000,
		AdditionalInfo: sengo.AdditionalInfo{Callback: "http://127.0.0.1:1/callbacks/sengo/tokened/" + callbackToken}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(lost.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	sum, err := Reconcile(t.Context(), ReconcileConfig{JetStream: h.js, Projects: map[string]Lister{"tokened": client}, Window: time.Hour,
		CallbackTokens: map[string]string{"tokened": callbackToken}, Metrics: h.metrics, Logger: h.cfgLogger()}, nil)
	if err != nil || sum.Fed == 0 {
		t.Fatalf("reconcile fed %d: %v; want the lost payment", sum.Fed, err)
	}
	eventually(t, "the lost payment published", func() bool { return len(statuses(h.events(), lost.ID)) > 0 })
	// Notifications stored with the token, by a relay of an earlier
	// version (a rolling deploy's old one): one of a project that does not
	// confirm, published with its own object, and a forged one, quarantined.
	old := func(project, token, body string) {
		echoed := strings.Replace(body, `"status"`, `"additionalInfo":{"callback":"https:\/\/relay\/callbacks\/sengo\/`+project+`\/`+token+`"},"status"`, 1)
		var tx struct {
			ResponseData struct{ ID string } `json:"responseData"`
		}
		if err := json.Unmarshal([]byte(echoed), &tx); err != nil {
			t.Fatalf("%v: %s", err, echoed)
		}
		if _, err := h.js.PublishMsg(t.Context(), &nats.Msg{Subject: event.InboxTxSubject(project, tx.ResponseData.ID), Data: []byte(echoed), Header: nats.Header{
			event.HeaderProject: {project}, event.HeaderSource: {SourceCallback}, event.HeaderReceivedAt: {time.Now().UTC().Format(time.RFC3339Nano)},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	inboxBefore := h.msgs(event.StreamInbox) // what this relay stored; not the old ones
	old("open", openToken, string(callback("tx-open", event.StatusSuccess)))
	old("tokened", callbackToken, `{"responseData":`+strings.Replace(string(other.Raw), `"amount":5000`, `"amount":2`, 1)+`}`)
	eventually(t, "the old notifications processed", func() bool {
		return len(statuses(h.events(), "tx-open")) == 1 && h.msgs(event.StreamQuarantine) == 2
	})
	eventually(t, "intake idle", h.intakeIdle)
	for _, name := range []string{event.StreamInbox, event.StreamEvents, event.StreamQuarantine} {
		s, err := h.js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		last := h.msgs(name)
		if name == event.StreamInbox {
			last = inboxBefore
		}
		for seq := uint64(1); seq <= last; seq++ {
			m, err := s.GetMsg(t.Context(), seq)
			if err != nil {
				t.Fatal(err)
			}
			all := string(m.Data)
			for k, v := range m.Header {
				all += k + ": " + strings.Join(v, ",")
			}
			if strings.Contains(all, callbackToken) || strings.Contains(all, openToken) {
				t.Errorf("%s message %d holds the callback token: %.300s", name, seq, all)
			}
			if name == event.StreamEvents && !strings.Contains(all, `\/[redacted]"`) && !strings.Contains(all, `/[redacted]"`) {
				t.Errorf("event %d: no redacted callback URL: %.300s", seq, all)
			}
		}
	}
}
