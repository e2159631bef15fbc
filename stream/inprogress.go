package stream

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KeepInProgress tells the server every `every` that msg is in progress,
// until the returned function is called: the server then hands it to no
// other worker, whatever ack wait the consumer has. Relays share their
// consumers, and the last one started sets the ack wait: one with a
// shorter wait would otherwise have another relay's message, still being
// worked on, handed out again. A message settled within `every` costs
// nothing.
func KeepInProgress(msg jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress() // after an ack or nak: refused by the client, sent nowhere
			}
		}
	}()
	return func() { close(done) }
}
