// Command webhook-receiver is the smallest merchant endpoint: it verifies
// each sengo-relay webhook's signature, prints the event, and answers 204.
// The README's local walkthrough runs it as the "orders" endpoint.
//
//	go run ./examples/webhook-receiver --listen 127.0.0.1:9000 --secret-file webhook.secret
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/verify"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to listen on")
	secretFile := flag.String("secret-file", "webhook.secret", "file holding the endpoint's whsec_ secret (one per line while rotating)")
	flag.Parse()
	b, err := os.ReadFile(*secretFile)
	if err != nil {
		log.Fatal(err)
	}
	v, err := verify.NewWebhookVerifier(strings.Fields(string(b))...)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("POST /hooks/sengo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20)) // refused, not cut: a cut body fails the signature
		if err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := v.Verify(r.Header, body); err != nil { // signature, 5-minute timestamp tolerance
			fmt.Printf("refused: %v\n", err)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev event.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		// Ship goods only for a confirmed success, once per ev.ID.
		fmt.Printf("verified webhook %s: %s %s Rp %d confirmed=%t\n", ev.ID, ev.Data.MerchantRef, ev.Data.Status, ev.Data.TotalAmount, ev.Data.Confirmed)
		w.WriteHeader(http.StatusNoContent)
	})
	fmt.Printf("webhook receiver on http://%s/hooks/sengo\n", *listen)
	srv := &http.Server{Addr: *listen, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
