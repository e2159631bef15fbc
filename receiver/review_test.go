package receiver

import (
	"context"
	"fmt"
	"testing"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/sengo"
)

// An id that is a dot segment ("." or "..") passed the callback checks
// (printable ASCII without spaces), and GET /check/.. is a different URL
// once the path is cleaned: SenGo (here the sandbox behind Go's ServeMux)
// answers a 404 without its code, which confirmation takes for a
// misconfigured base_url and retries for as long as the inbox keeps it.
// Each such forged notification held one of intake's max_ack_pending
// slots for 7 days; max_ack_pending of them stopped intake for everyone.
func TestDotSegmentIDsDoNotStallIntake(t *testing.T) {
	sb, client := startSandbox(t)
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client})
		ic.ConfirmAttempts = 2
		ic.Workers, ic.MaxAckPending = 2, 4
	})
	for i := range 4 {
		id := []string{"..", "."}[i%2]
		body := fmt.Appendf(nil, `{"id":%q,"merchantRef":"FORGED-%d","status":"success","amount":10000,"fee":0,"totalAmount":10000,"qris":{}}`, id, i)
		resp, got := h.post("/callbacks/sengo/main", body)
		if e, _ := got["error"].(map[string]any); resp.StatusCode != 422 || e == nil || e["code"] != "invalid_notification" {
			t.Errorf("forged id %q: %d %v, want 422 invalid_notification", id, resp.StatusCode, got)
		}
	}
	tx, err := client.CreateQRIS(context.Background(), sengo.QRISRequest{Reference: "INV-DOT", Amount: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	paid, err := client.Check(context.Background(), tx.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := h.post("/callbacks/sengo/main", append(append([]byte(`{"responseData":`), paid.Raw...), '}')); resp.StatusCode != 200 {
		t.Fatalf("genuine callback: %d %v", resp.StatusCode, body)
	}
	eventually(t, "the genuine success published", func() bool { return len(statuses(h.events(), tx.ID)) == 1 })
}
