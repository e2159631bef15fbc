package main

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// retryStart rides out NATS being unreachable or JetStream unavailable,
// and gives up at once on an error JetStream answers with.
func TestRetryStart(t *testing.T) {
	unavailable := &jetstream.APIError{Code: http.StatusServiceUnavailable, Description: "JetStream system temporarily unavailable"}
	refused := &jetstream.APIError{Code: http.StatusBadRequest, Description: "consumer config invalid"}
	tests := []struct {
		name   string
		errs   []error // returned by successive calls; nil after the last
		calls  int
		failed error
	}{
		{"succeeds at once", nil, 1, nil},
		{"timeouts, then up", []error{context.DeadlineExceeded, nats.ErrNoResponders}, 3, nil},
		{"unavailable, then up", []error{unavailable}, 2, nil},
		{"refused", []error{refused}, 1, refused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := retryStart(t.Context(), zerolog.Nop(), "starting", func() error {
				calls++
				if calls <= len(tt.errs) {
					return tt.errs[calls-1]
				}
				return nil
			})
			if calls != tt.calls || !errors.Is(err, tt.failed) {
				t.Fatalf("%d calls, err %v; want %d, %v", calls, err, tt.calls, tt.failed)
			}
		})
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := retryStart(ctx, zerolog.Nop(), "starting", func() error { return context.DeadlineExceeded }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
