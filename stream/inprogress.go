package stream

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KeepInProgress tells the server every `every` that msg is in progress,
// until it is settled through the returned message (Ack, Nak, Term and
// their kinds) or stop is called: the server then hands it to no other
// worker, whatever ack wait the consumer has. Relays share their
// consumers, and the last one started sets the ack wait: one with a
// shorter wait would otherwise have another relay's message, still being
// worked on, handed out again.
//
// Settling stops the signals first, waiting for one being sent: an "in
// progress" after a NakWithDelay would have the server forget the delay.
// A message settled within `every` costs a timer, no goroutine and no
// message.
func KeepInProgress(msg jetstream.Msg, every time.Duration) (kept jetstream.Msg, stop func()) {
	k := &keptMsg{Msg: msg}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.t = time.AfterFunc(every, func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.stopped {
			return
		}
		_ = msg.InProgress()
		k.t.Reset(every)
	})
	return k, k.stop
}

// keptMsg is a message kept in progress until settled.
type keptMsg struct {
	jetstream.Msg
	mu      sync.Mutex
	stopped bool
	t       *time.Timer
}

func (k *keptMsg) stop() {
	k.mu.Lock()
	k.stopped = true
	k.mu.Unlock()
	k.t.Stop()
}

func (k *keptMsg) Ack() error                          { k.stop(); return k.Msg.Ack() }
func (k *keptMsg) DoubleAck(ctx context.Context) error { k.stop(); return k.Msg.DoubleAck(ctx) }
func (k *keptMsg) Nak() error                          { k.stop(); return k.Msg.Nak() }
func (k *keptMsg) NakWithDelay(d time.Duration) error  { k.stop(); return k.Msg.NakWithDelay(d) }
func (k *keptMsg) Term() error                         { k.stop(); return k.Msg.Term() }
func (k *keptMsg) TermWithReason(reason string) error  { k.stop(); return k.Msg.TermWithReason(reason) }
