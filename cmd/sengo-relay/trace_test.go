package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
)

// One trace crosses the whole path: the callback's server span, intake,
// the confirmation with SenGo's API and each delivery attempt share its
// trace id, and the consumer receives it as a W3C traceparent. No span
// attribute holds a secret.
func TestOneTraceFromCallbackToWebhook(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp) // serve's Setup leaves it: no OTEL_* variable is set
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	var mu sync.Mutex
	var parents []string
	fail := 1
	consumer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		parents = append(parents, r.Header.Get("traceparent"))
		if fail > 0 {
			fail--
			w.WriteHeader(500)
			return
		}
		w.WriteHeader(200)
	}))
	defer consumer.Close()
	sb, client, sbURL := startSandbox(t, sandbox.CallbackPolicy{})
	p := filepath.Join(t.TempDir(), "config.yaml")
	cfg := fmt.Sprintf(`projects:
  main: {api_key: %s, token: %s, base_url: %q}
intake: {retry_initial: 50ms, retry_max: 500ms, confirm_attempts: 3}
reconcile: {interval: "0s"}  # its notifications start traces of their own
endpoints:
  orders: {url: %q, secrets: [%s], filter: {statuses: [success]}, deliver_from: all, timeout: 2s, retry: {schedule: [100ms], jitter: 0}}
`, sbKey, sbToken, sbURL, consumer.URL, testSecret)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	base, _ := startRunWith(t, p, relayEnv(t.TempDir()))
	waitReady(t, base)
	tx, err := client.CreateRetail(context.Background(), sengo.RetailRequest{
		Reference: "INV-7007", PhoneNumber: "0812", Channel: "alfamart", Amount: 10000, ViewName: "Toko",
		AdditionalInfo: sengo.AdditionalInfo{Callback: base + "/callbacks/sengo/main"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Transition(tx.ID, event.StatusSuccess); err != nil {
		t.Fatal(err)
	}
	eventually(t, "two attempts", func() bool { mu.Lock(); defer mu.Unlock(); return len(parents) == 2 })

	// The trace the webhooks carry is the success callback's: its server
	// span, intake (which saw the success), the confirmation and both
	// attempts are in it.
	mu.Lock()
	f := strings.Split(parents[0], "-")
	mu.Unlock()
	if len(f) != 4 {
		t.Fatalf("traceparent %q", parents[0])
	}
	traceID := f[1]
	inTrace := func() map[string]int {
		names := map[string]int{}
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() != traceID {
				continue
			}
			names[s.Name()]++
			if s.Name() == "sengo.intake" {
				for _, a := range s.Attributes() {
					if a.Key == "sengo.status" && a.Value.AsString() == "success" {
						names["intake of the success"]++
					}
				}
			}
		}
		return names
	}
	eventually(t, "both attempts' spans ended", func() bool { return inTrace()["sengo.deliver"] == 2 })
	if names := inTrace(); names["POST /callbacks/sengo/{project}"] != 1 || names["intake of the success"] < 1 || names["sengo.confirm"] < 1 {
		t.Errorf("spans of the webhooks' trace %v, want the callback, intake of the success, the confirmation and two attempts", names)
	}
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			for _, secret := range []string{sbKey, sbToken, testSecret} {
				if strings.Contains(a.Value.Emit(), secret) {
					t.Errorf("span %s attribute %s holds a secret", s.Name(), a.Key)
				}
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, tp := range parents {
		if f := strings.Split(tp, "-"); len(f) != 4 || f[1] != traceID {
			t.Errorf("attempt %d: traceparent %q, want trace %s", i+1, tp, traceID)
		}
	}
}
