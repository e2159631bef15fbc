package stream_test

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/stream"
)

// fakeMsg records what is sent for it; its InProgress waits for release.
type fakeMsg struct {
	jetstream.Msg
	mu      sync.Mutex
	sent    []string
	started chan struct{}
	release chan struct{}
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
func (m *fakeMsg) NakWithDelay(time.Duration) error { m.record("nak"); return nil }

// An "in progress" sent after a NakWithDelay has the server forget the
// delay: it hands the message out again after its ack wait, and a
// notification waiting its retry delay was checked again early (its
// confirm_attempts spent sooner). Settling a message stops its signals
// first: one being sent is sent before the nak, none after.
func TestNothingIsSentInProgressAfterASettle(t *testing.T) {
	m := &fakeMsg{started: make(chan struct{}, 1), release: make(chan struct{})}
	kept, stop := stream.KeepInProgress(m, time.Millisecond)
	defer stop()
	<-m.started // a signal is being sent
	naked := make(chan struct{})
	go func() { _ = kept.NakWithDelay(time.Minute); close(naked) }()
	select {
	case <-naked:
		t.Fatal("the nak went out while a signal was being sent")
	case <-time.After(50 * time.Millisecond):
	}
	close(m.release)
	<-naked
	m.mu.Lock()
	defer m.mu.Unlock()
	if last := m.sent[len(m.sent)-1]; last != "nak" {
		t.Fatalf("sent %v: the last is not the nak", m.sent)
	}
}
