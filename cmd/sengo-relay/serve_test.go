package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
	"github.com/sengo-relay/sengo-relay/receiver"
	"github.com/sengo-relay/sengo-relay/stream"
)

// retryStart rides out NATS being unreachable or JetStream unavailable,
// and gives up at once on an error JetStream answers with; provisioning
// retries even that.
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
	// Provisioning retries even what JetStream refuses: readyz says why.
	calls := 0
	ctx, cancel := context.WithCancel(t.Context())
	err := retry(ctx, zerolog.Nop(), "provisioning", anyError, func() error {
		if calls++; calls == 2 {
			return nil
		}
		return refused
	})
	if err != nil || calls != 2 {
		t.Fatalf("provisioning: %d calls, %v", calls, err)
	}

	cancel()
	if err := retryStart(ctx, zerolog.Nop(), "starting", func() error { return context.DeadlineExceeded }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// provision keeps retrying a configuration JetStream refuses (here a stream
// that exists with another storage type), so the relay stays up and says
// why, instead of exiting.
func TestProvisionRetriesRefusals(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	spec := provisionSpec(config.Default())
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: spec.Streams[0].Name, Subjects: []string{"elsewhere.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	err := provision(ctx, js, spec, zerolog.New(&logs))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(logs.String(), "provisioning streams failed; retrying") {
		t.Fatalf("provision: %v; logs %s", err, logs.String())
	}
}

// SENGO_DELIVERY's records of replayed copies (done, a redrive's place)
// aged out with the events' max_age: with events kept 3 days and copies 7,
// a copy outlived its record, and a redrive queued it again, or a replay
// consumer made anew posted it again. They live as long as the longer of
// the two, and a day at least (a retired consumer's place).
func TestTheDeliveryRecordsOutliveTheCopies(t *testing.T) {
	cfg := config.Default()
	cfg.Streams.Events.MaxAge = config.Duration(3 * 24 * time.Hour)
	cfg.Streams.Replay.MaxAge = config.Duration(7 * 24 * time.Hour)
	ttl := func(cfg config.Config) time.Duration {
		for _, b := range provisionSpec(cfg).Buckets {
			if b.Name == event.BucketDelivery {
				return b.TTL
			}
		}
		t.Fatal("no delivery bucket")
		return 0
	}
	if got := ttl(cfg); got != 7*24*time.Hour {
		t.Fatalf("records kept %s, want the copies' 7 days", got)
	}
	cfg.Streams.Events.MaxAge, cfg.Streams.Replay.MaxAge = config.Duration(time.Hour), config.Duration(2*time.Hour)
	if got := ttl(cfg); got != 24*time.Hour {
		t.Fatalf("records kept %s, want a day", got)
	}
}

// A subscriber password set in the configuration replaces the one
// generated on the first start, which stayed in store_dir: taken out of
// the configuration again (a rotation away from a leaked generated one,
// undone by someone tidying the file), the old one was valid again. The
// chosen one retires it: the next generated one is new.
func TestAChosenSubscriberPasswordRetiresTheGeneratedOne(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	first, err := embeddedAuth(cfg)
	if err != nil {
		t.Fatal(err)
	}
	chosen := cfg
	chosen.NATS.Embedded.Subscriber.Password = config.Secret("a-chosen-password-0123456789")
	if a, err := embeddedAuth(chosen); err != nil || a.SubscriberPassword != "a-chosen-password-0123456789" {
		t.Fatalf("the chosen password: %v", err)
	}
	again, err := embeddedAuth(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if again.SubscriberPassword == first.SubscriberPassword {
		t.Fatal("the generated password retired by a chosen one is valid again")
	}
}

// A lowered max_age waits for the retries the relay's own consumers may
// have scheduled under the old one (intake's on the inbox, the
// endpoints' on the events and the copies), not for a subscriber's.
func TestTheRelaysConsumersGetTheRetryMargin(t *testing.T) {
	cfg := config.Default()
	retries := map[string]func(string) bool{}
	for _, s := range provisionSpec(cfg).Streams {
		retries[s.Name] = s.Retries
	}
	for stream, consumer := range map[string]string{event.StreamInbox: receiver.IntakeConsumer, event.StreamEvents: dispatcher.ConsumerName("orders"), event.StreamReplay: dispatcher.ConsumerName("orders")} {
		if r := retries[stream]; r == nil || !r(consumer) || r("orders-service") {
			t.Errorf("%s: the margin for %s and not for a subscriber's consumer is not given", stream, consumer)
		}
	}
}

// A second relay on a store another one holds stops at once and changes
// nothing in it: it retired the generated subscriber password (its own
// configuration chose one) before it found the store locked, and every
// subscriber of the running relay lost the password it reads.
func TestASecondRelayOnAStoreChangesNothingInIt(t *testing.T) {
	dir := t.TempDir()
	_, logs, _ := startRun(t, relayEnv(dir))
	storeDir := logs.field(t, "embedded nats started", "store_dir")
	path := filepath.Join(storeDir, stream.SubscriberPasswordFile)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SENGO_RELAY_NATS_EMBEDDED_SUBSCRIBER_PASSWORD", "a-chosen-password-0123456789")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // a second relay that started would run until then
	defer cancel()
	err = run(ctx, []string{"serve", "--config", checkedInConfig}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "in use by PID") {
		t.Fatalf("a second relay on the store: %v", err)
	}
	if after, err := os.ReadFile(path); err != nil || string(after) != string(before) {
		t.Fatalf("the running relay's subscriber password file after a second relay stopped: %q, %v", after, err)
	}
}

// A part that cannot start stops the relay with its own reason: a busy
// admin.listen ended the run with "intake failed to start".
func TestABusyAdminListenIsNamed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, kv := range relayEnv(t.TempDir(), "SENGO_RELAY_ADMIN_LISTEN="+ln.Addr().String(), "SENGO_RELAY_ADMIN_TOKEN="+adminToken) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = run(ctx, []string{"serve", "--config", checkedInConfig}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "admin.listen "+ln.Addr().String()) {
		t.Fatalf("a busy admin.listen: %v", err)
	}
}

// A quarantined notification can be redriven as long as the quarantine
// keeps it (30 days by default), but its transaction's state expired
// after streams.transactions.ttl (14 days): a redrive after that found no
// state, so intake published its status change again (a pending after the
// transaction's success, under an id never seen). SENGO_TX keeps its
// entries at least as long as the quarantine keeps notifications.
func TestATransactionOutlivesItsQuarantinedNotifications(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	cfg := config.Default()
	cfg.Streams.Transactions.TTL = config.Duration(14 * 24 * time.Hour) // the checked-in config's before
	cfg.Streams.Quarantine.MaxAge = config.Duration(30 * 24 * time.Hour)
	var logs syncbuf.Buffer
	if err := provision(t.Context(), js, provisionSpec(cfg), zerolog.New(&logs)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "bucket SENGO_TX keeps its entries 720h0m0s, not the 336h0m0s configured") {
		t.Errorf("the longer ttl is not told: %s", logs.String())
	}
	age := func(name string) time.Duration {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.MaxAge
	}
	if tx, q := age("KV_"+event.BucketTx), age(event.StreamQuarantine); tx < q {
		t.Fatalf("transactions kept %s, quarantined notifications %s: one redriven after its transaction expired is published again", tx, q)
	}
}
