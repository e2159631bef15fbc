package verify_test

import (
	"encoding/json"
	"io"
	"log"
	"net/http"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/verify"
)

// A merchant's order service receiving sengo-relay webhooks: verify the
// signature, deduplicate on webhook-id, answer 2xx only once the event is
// safely handled.
func ExampleWebhookVerifier() {
	v, err := verify.NewWebhookVerifier("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") // list old and new secrets while rotating
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/hooks/sengo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20)) // refused, not cut: a cut body fails the signature
		if err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := v.Verify(r.Header, body); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev event.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		// Idempotent on ev.ID (= webhook-id): a retry or replay repeats it.
		if ev.Data.Status == event.StatusSuccess && ev.Data.Confirmed { // confirmed: SenGo's API agreed
			log.Printf("order %s paid: %d IDR", ev.Data.MerchantRef, ev.Data.TotalAmount)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	log.Fatal(http.ListenAndServe(":9000", nil))
}
