package stream_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/stream"
)

// BenchmarkEarlierNotificationRead compares intake's receipt-order read
// (the first message on a transaction's inbox subject) from the stream's
// leader (LeaderGet, the stream API) with a direct get (Stream.GetMsg),
// which any replica answers: what reading from the leader costs a final
// status that is not its transaction's first. One embedded server, 10,000
// transactions of two notifications each, 16 readers at once.
//
//	go test ./stream -run '^$' -bench BenchmarkEarlierNotificationRead -benchtime 20000x
func BenchmarkEarlierNotificationRead(b *testing.B) {
	srv := natstest.Start(b)
	_, js := srv.Connect(b)
	ctx := context.Background()
	if err := stream.Provision(ctx, js, spec(time.Hour)); err != nil {
		b.Fatal(err)
	}
	const txs = 10_000
	for i := range 2 * txs {
		if _, err := js.Publish(ctx, fmt.Sprintf("t.inbox.tx%d", i%txs), make([]byte, 700)); err != nil {
			b.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, "T_INBOX")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		get  func(subject string) (*jetstream.RawStreamMsg, error)
	}{
		{"leader", func(subject string) (*jetstream.RawStreamMsg, error) {
			return stream.LeaderGet(ctx, js, "T_INBOX", 1, subject)
		}},
		{"direct", func(subject string) (*jetstream.RawStreamMsg, error) {
			return s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism(8) // 16 readers on 2 cores: intake's workers
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					if _, err := c.get(fmt.Sprintf("t.inbox.tx%d", i%txs)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
