package stream

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KeepInProgress tells the server every `every` that msg is in progress,
// until the returned function is called: the server then hands it to no
// other worker, whatever ack wait the consumer has. Relays share their
// consumers, and the last one started sets the ack wait: one with a
// shorter wait would otherwise have another relay's message, still being
// worked on, handed out again. A message settled within `every` costs a
// timer, no goroutine and no message.
func KeepInProgress(msg jetstream.Msg, every time.Duration) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = msg.InProgress() // after an ack or nak: refused by the client, sent nowhere
		t.Reset(every)
	})
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		t.Stop()
	}
}
