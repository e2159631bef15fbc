package receiver

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/natstest"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/sengo"
)

// Every relay sets the inbox consumer's ack wait to its own
// intake.ack_wait when it starts. A relay started later with a shorter
// one had the server hand a notification still in its check (up to a
// third of ack_wait, and the probe after it) to a second worker: a second
// check of SenGo, and the outbox flushed twice, so live subscribers saw
// the event twice. A worker now tells the server the notification is in
// progress while it works on it.
//
// The relay started later sets 3 s and SenGo takes 6 s to answer: a
// relay that sends no signal has the notification handed out again
// halfway through the check. With 1 s, a signal every 200 ms had to be
// late by 800 ms for a correct relay to have it handed out again, which a
// loaded CI machine running the race detector was.
func TestANotificationInItsCheckIsNotHandedToASecondWorker(t *testing.T) {
	// Restored after the harness's workers stop (cleanups run last first),
	// not when this function returns, while they still read it.
	t.Cleanup(func(d time.Duration) func() { return func() { intakeInProgressEvery = d } }(intakeInProgressEvery))
	intakeInProgressEvery = 200 * time.Millisecond
	var slow atomic.Bool
	sb, client := sandboxWithChecks(t, func(_ string, _ http.ResponseWriter, _ *http.Request) bool {
		if slow.CompareAndSwap(true, false) {
			<-time.After(6 * time.Second) // SenGo slow to answer this one check
		}
		return false
	})
	h := newHarness(t, true, func(_ *Config, ic *IntakeConfig) {
		ic.Confirmer = sengo.NewConfirmer(map[string]*sengo.Client{"main": client}, sengo.CheckTimeout(10*time.Second))
		ic.AckWait = 20 * time.Second
	})
	ctx := context.Background()
	cons := natstest.SetAckWait(t, h.js, event.StreamInbox, IntakeConsumer, 3*time.Second) // a relay started later, with a shorter ack_wait
	body := paidQRIS(t, sb, client, "INV-SLOW")
	slow.Store(true)
	if resp, got := h.post("/callbacks/sengo/main", body); resp.StatusCode != 200 {
		t.Fatalf("callback: %d %v", resp.StatusCode, got)
	}
	// Its own deadline: the check takes 6 s, most of the mutants' 6 s.
	poll.Within(t, 30*time.Second, "the notification settled", func() bool {
		info, err := cons.Info(ctx)
		return h.intakeCount("main", "published") == 1 && err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	if n := h.intakeCount("main", "duplicate"); n != 0 {
		t.Fatalf("the notification was processed %v more time(s) while its check ran", n)
	}
	// Handed out once: a second worker's outcome need not be a duplicate
	// (it may join the first's check, or wait for the claim).
	if info, err := cons.Info(ctx); err != nil || info.Delivered.Consumer != 1 {
		t.Fatalf("handed out %d times (%v), want once", info.Delivered.Consumer, err)
	}
}
