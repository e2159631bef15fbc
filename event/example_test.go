package event_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
)

// An order service subscribing to successful payments of project "main"
// straight from the stream: a durable consumer remembers its position
// across restarts, and the event id deduplicates redeliveries.
func Example_orderService() {
	// The read-only subscriber identity; its password is in
	// data/jetstream/subscriber.password unless you configured one.
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.UserInfo("subscriber", os.Getenv("NATS_PASSWORD")))
	if err != nil {
		panic(err)
	}
	defer nc.Drain()
	js, _ := jetstream.New(nc)
	ctx := context.Background()

	cons, err := js.CreateOrUpdateConsumer(ctx, event.StreamEvents, jetstream.ConsumerConfig{
		Durable:       "orders",
		FilterSubject: "sengo.events.main.*.success",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy, // or DeliverByStartTimePolicy + OptStartTime to replay from a time
	})
	if err != nil {
		panic(err)
	}
	cc, _ := cons.Consume(func(m jetstream.Msg) {
		ev, err := event.Unmarshal(m.Data())
		if err != nil {
			_ = m.Term() // not an event: never redeliver
			return
		}
		// Mark the order paid idempotently, keyed by ev.ID, only when
		// SenGo's API confirmed it; a write that fails is redelivered.
		if ev.Data.Confirmed {
			fmt.Println(ev.ID, ev.Data.MerchantRef, ev.Data.TotalAmount)
		}
		_ = m.Ack()
	})
	defer cc.Stop()
	time.Sleep(time.Second) // a real service runs until it is told to stop
}
