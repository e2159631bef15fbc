package receiver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/stream"
)

// benchConns is the number of concurrent connections (and goroutines).
const benchConns = 64

// benchStore starts the embedded server exactly as `serve` does by default
// (file storage, default sync interval, in-process connection) and
// provisions the streams.
func benchStore(b *testing.B) jetstream.JetStream {
	b.Helper()
	emb, err := stream.StartEmbedded(stream.EmbeddedConfig{StoreDir: b.TempDir(), Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(emb.Shutdown)
	nc, err := stream.Connect(stream.ConnectConfig{Name: "bench", Logger: zerolog.Nop()}, emb.ConnectOption())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	spec := testSpec()
	spec.Streams[0].Limits.Duplicates = time.Hour
	if err := stream.Provision(context.Background(), js, spec); err != nil {
		b.Fatal(err)
	}
	return js
}

var benchSeq atomic.Int64

// benchPayload is a retail callback with a fresh transaction id, so no
// request is a duplicate.
func benchPayload() (string, []byte) {
	id := fmt.Sprintf("bench-%d", benchSeq.Add(1))
	return id, callback(id, event.StatusSuccess)
}

// runConcurrent runs op from benchConns goroutines until b.N operations are
// done, and reports throughput and latency percentiles.
func runConcurrent(b *testing.B, op func() error) {
	b.Helper()
	var next atomic.Int64
	lat := make([][]time.Duration, benchConns)
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for g := range benchConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := op(); err != nil {
					failed.Add(1)
					continue
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d operations failed", n, b.N)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(float64(len(all))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkJetStreamPublish is the store's limit: a synchronous publish of
// the same payloads with the same Nats-Msg-Id, at the same concurrency.
func BenchmarkJetStreamPublish(b *testing.B) {
	js := benchStore(b)
	ctx := context.Background()
	runConcurrent(b, func() error {
		id, body := benchPayload()
		_, err := js.PublishMsg(ctx, &nats.Msg{Subject: "sengo.inbox.main", Data: body, Header: nats.Header{event.HeaderProject: []string{"main"}}},
			jetstream.WithMsgID(event.ID("main", id, event.StatusSuccess)), jetstream.WithExpectStream(event.StreamInbox))
		return err
	})
}

// BenchmarkCallback is the relay's endpoint over loopback HTTP with
// keep-alive connections: every check, the parse, the publish and the
// PubAck. "with-intake" also runs the intake workers turning the same
// notifications into events on the two shared cores.
func BenchmarkCallback(b *testing.B) {
	for _, withIntake := range []bool{false, true} {
		name := "endpoint-only"
		if withIntake {
			name = "with-intake"
		}
		b.Run(name, func(b *testing.B) {
			js := benchStore(b)
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			srv := httptest.NewServer(New(Config{
				Projects: []Project{{Name: "main"}}, JetStream: js, MaxBodyBytes: 64 << 10,
				PublishTimeout: 5 * time.Second, RetryAfter: time.Second, Metrics: m, Logger: zerolog.Nop(),
			}))
			defer srv.Close()
			if withIntake {
				in, err := NewIntake(context.Background(), IntakeConfig{JetStream: js, Projects: []string{"main"}, Workers: 16, AckWait: 30 * time.Second, MaxAckPending: 1024,
					RetryInitial: 100 * time.Millisecond, RetryMax: time.Second, Metrics: m, Logger: zerolog.Nop()})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); _ = in.Run(ctx, 5*time.Second) }()
				defer func() { cancel(); <-done }()
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchConns, MaxConnsPerHost: benchConns}}
			url := srv.URL + "/callbacks/sengo/main"
			runConcurrent(b, func() error {
				_, body := benchPayload()
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			})
		})
	}
}

// BenchmarkKnownElsewhere is reconciliation's look for a transaction the
// project holds no entry of under the other projects' names (a renamed
// project), in a bucket of 200,000 transactions: one stream info with a
// subject filter, answered from the server's index of subjects, and a read
// of the entry it names.
//
//	go test ./receiver -run '^$' -bench BenchmarkKnownElsewhere -benchtime 2000x
func BenchmarkKnownElsewhere(b *testing.B) {
	js := benchStore(b)
	ctx := context.Background()
	const n = 200_000
	st := []byte(`{"project":"main","status":"success","history":[{"status":"success","eventId":"evt_x"}]}`)
	for i := 0; i < n; i += 1000 {
		var acks []jetstream.PubAckFuture
		for j := i; j < i+1000; j++ {
			f, err := js.PublishAsync(fmt.Sprintf("$KV.%s.main.tx-%d", event.BucketTx, j), st)
			if err != nil {
				b.Fatal(err)
			}
			acks = append(acks, f)
		}
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
	}
	kv, err := js.KeyValue(ctx, event.BucketTx)
	if err != nil {
		b.Fatal(err)
	}
	cfg := ReconcileConfig{JetStream: js, Configured: []string{"shop"}}
	b.ResetTimer()
	for i := range b.N {
		other, err := knownElsewhere(ctx, cfg, kv, "shop", sengo.Transaction{ID: fmt.Sprintf("tx-%d", i*97%n), Status: event.StatusSuccess})
		if err != nil || other != "main" {
			b.Fatalf("%q %v", other, err)
		}
	}
}
