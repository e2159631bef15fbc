package stream_test

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/stream"
)

// fakeMsg records what is sent for it; its InProgress waits for release,
// and its NakWithDelay tells nakked.
type fakeMsg struct {
	jetstream.Msg
	mu      sync.Mutex
	sent    []string
	started chan struct{}
	release chan struct{}
	nakked  chan struct{}
}

func (m *fakeMsg) record(s string) { m.mu.Lock(); m.sent = append(m.sent, s); m.mu.Unlock() }
func (m *fakeMsg) InProgress() error {
	select {
	case m.started <- struct{}{}:
		<-m.release
	default:
	}
	m.record("in progress")
	return nil
}
func (m *fakeMsg) NakWithDelay(time.Duration) error {
	m.record("nak")
	select {
	case m.nakked <- struct{}{}:
	default:
	}
	return nil
}

// An "in progress" sent after a NakWithDelay has the server forget the
// delay: it hands the message out again after its ack wait, and a
// notification waiting its retry delay was checked again early (its
// confirm_attempts spent sooner). Settling a message stops its signals
// first: one being sent is sent before the nak, none after.
func TestNothingIsSentInProgressAfterASettle(t *testing.T) {
	m := &fakeMsg{started: make(chan struct{}, 1), release: make(chan struct{}), nakked: make(chan struct{}, 1)}
	kept, stop := stream.KeepInProgress(m, time.Millisecond)
	defer stop()
	// Released on a failure too: stop waits for the signal being sent.
	release := sync.OnceFunc(func() { close(m.release) })
	defer release()
	<-m.started // a signal is being sent
	entered, naked := make(chan struct{}), make(chan struct{})
	go func() {
		close(entered)
		_ = kept.NakWithDelay(time.Minute)
		close(naked)
	}()
	// The signal is held until the settle has begun, and 200 ms more: a
	// relay that naks without waiting for the signal sends its nak then.
	// Released after a fixed 50 ms from the start, the signal could go
	// out before a loaded machine ran the settle at all, and such a relay
	// then sent the two in the right order by chance. (A relay that waits
	// sends nothing in the window: there is no outcome to wait for, only
	// the window.)
	<-entered
	select {
	case <-naked:
		t.Fatal("the settle returned while a signal was being sent")
	case <-m.nakked:
		t.Fatal("the nak went out while a signal was being sent")
	case <-time.After(200 * time.Millisecond):
	}
	release()
	<-naked
	m.mu.Lock()
	defer m.mu.Unlock()
	if last := m.sent[len(m.sent)-1]; last != "nak" {
		t.Fatalf("sent %v: the last is not the nak", m.sent)
	}
}
