package dispatcher

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/stream"
)

// BenchmarkDeliveries: b.N events stored first, then one endpoint worker
// (concurrency 32) delivers them to a local consumer that answers 200 at
// once. Reports deliveries per second.
func BenchmarkDeliveries(b *testing.B) {
	emb, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: b.TempDir(), Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Shutdown()
	nc, err := stream.Connect(stream.ConnectConfig{Name: "bench", Logger: zerolog.Nop()}, emb.ConnectOption())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := stream.Provision(context.Background(), js, testSpec()); err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		if got.Add(1) == int64(b.N) {
			close(done)
		}
	}))
	defer srv.Close()
	body := []byte(`{"specversion":"1.0","id":"%s","source":"sengo/main","type":"id.sengo.transaction.success","data":{"transactionId":"x","status":"success","raw":{}}}`)
	natstest.PublishMany(b, js, b.N, func(i int) *nats.Msg {
		return &nats.Msg{Subject: "sengo.events.main.retail.success", Data: fmt.Appendf(nil, string(body), fmt.Sprintf("evt_bench_%d", i))}
	})
	metrics := NewMetrics(prometheus.NewRegistry())
	ep := (&harness{}).endpoint("bench", srv.URL)
	ep.Concurrency = 32
	w, err := NewWorker(context.Background(), WorkerConfig{Endpoint: ep, JetStream: js, UserAgent: "bench", Metrics: metrics, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); w.Run(ctx) }()
	<-done
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	<-stopped
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
}

// BenchmarkCountDLQ: what the console's "Redrive all / Purge all"
// confirmation costs with a long outage's dead letters (DLQ_LETTERS,
// 100,000 by default, of about 2 KiB each): counted from their headers
// (CountDLQ, today) and read whole a page at a time (the count before).
func BenchmarkCountDLQ(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("DLQ_LETTERS")); err == nil && v > 0 {
		n = v
	}
	srv := natstest.Start(b)
	_, js := srv.Connect(b)
	if err := stream.Provision(context.Background(), js, testSpec()); err != nil {
		b.Fatal(err)
	}
	letter := []byte(`{"endpoint":"orders","reason":"max_attempts","event":{"raw":"` + strings.Repeat("x", 2000) + `"}}`)
	natstest.PublishMany(b, js, n, func(i int) *nats.Msg {
		return &nats.Msg{Subject: event.DLQTxSubject("orders", fmt.Sprint("tx", i)), Data: letter}
	})
	for _, c := range []struct {
		name  string
		count func() (int, error)
	}{
		{"headers", func() (int, error) {
			count, _, err := CountDLQ(context.Background(), js, DLQFilter{})
			return count, err
		}},
		{"whole", func() (int, error) {
			count := 0
			err := EachDLQPage(context.Background(), js, DLQFilter{}, 0, func(page []DLQEntry) error {
				count += len(page)
				return nil
			})
			return count, err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if count, err := c.count(); err != nil || count != n {
					b.Fatalf("counted %d of %d (%v)", count, n, err)
				}
			}
		})
	}
}
