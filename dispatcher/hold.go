package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
)

// An operator's hold stops deliveries to an endpoint on every relay
// instance: events wait in the stream, nothing is lost or dead-lettered
// for it (the expiry guard still acts before retention would drop them),
// until the hold is released. It is a key of SENGO_DELIVERY, watched by
// each worker; it lasts until released, or for the bucket's TTL.

// HoldState is an endpoint's operator hold.
type HoldState struct {
	Held  bool      `json:"held"`
	By    string    `json:"by,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

func holdKey(endpoint string) string { return "_hold." + endpoint }

// Hold holds deliveries to endpoint; by says who, for the record.
func Hold(ctx context.Context, js jetstream.JetStream, endpoint, by string) error {
	kv, err := js.KeyValue(ctx, event.BucketDelivery)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(HoldState{Held: true, By: by, Since: time.Now().UTC()})
	if _, err := kv.Put(ctx, holdKey(endpoint), b); err != nil {
		return fmt.Errorf("hold %s: %w", endpoint, err)
	}
	return nil
}

// Release lifts the hold of endpoint (nothing when none is set).
func Release(ctx context.Context, js jetstream.JetStream, endpoint string) error {
	kv, err := js.KeyValue(ctx, event.BucketDelivery)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, holdKey(endpoint)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("release %s: %w", endpoint, err)
	}
	return nil
}

// watchHold keeps w.hold up to date with the endpoint's hold key until
// ctx ends.
func (w *Worker) watchHold(ctx context.Context) {
	sleepCtx(ctx, holdWatchDelay)
	for ctx.Err() == nil {
		kw, err := w.store.kv.Watch(ctx, holdKey(w.ep.Name))
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		tick := time.NewTicker(holdRecheck)
	watch:
		for {
			select {
			case e, ok := <-kw.Updates():
				if !ok {
					break watch
				}
				if e == nil { // the initial values are all in
					w.holdKnownOnce.Do(func() { close(w.holdKnown) })
					continue
				}
				var h HoldState
				if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &h) == nil && h.Held {
					w.hold.Store(&h)
					w.log.Warn().Str("by", h.By).Msg("endpoint held by an operator: deliveries wait in the stream")
				} else {
					w.unhold()
				}
				w.updateHealth()
			case <-tick.C:
				// A hold that outlives the bucket's TTL is removed without a
				// delete marker: the watch never tells.
				if w.hold.Load() == nil {
					continue
				}
				if _, err := w.store.kv.Get(ctx, holdKey(w.ep.Name)); errors.Is(err, jetstream.ErrKeyNotFound) {
					w.unhold()
					w.updateHealth()
				}
			case <-ctx.Done():
				break watch
			}
		}
		tick.Stop()
		_ = kw.Stop()
		sleepCtx(ctx, time.Second) // the watch ended (a reconnect): watch again
	}
}

// holdWatchDelay delays the hold's watch, as a slow store would: a
// variable for tests (0 otherwise).
var holdWatchDelay time.Duration

// holdRecheck is how often a held worker reads its hold key again.
var holdRecheck = time.Minute // a variable for tests

// unhold lifts the hold the worker obeys, if any.
func (w *Worker) unhold() {
	if w.hold.Load() == nil {
		return
	}
	w.active.Store(w.cfg.Now().UnixNano())
	w.hold.Store(nil)
	w.log.Info().Msg("endpoint hold released")
}

// Held reports the operator hold the worker obeys.
func (w *Worker) Held() HoldState {
	if h := w.hold.Load(); h != nil {
		return *h
	}
	return HoldState{}
}

// TestResult is what a test delivery got back.
type TestResult struct {
	EventID    string  `json:"eventId"`
	Status     int     `json:"status,omitempty"`
	Error      string  `json:"error,omitempty"`
	DurationMs float64 `json:"durationMs"`
	Excerpt    string  `json:"responseExcerpt,omitempty"`
	OK         bool    `json:"ok"`
}

// TestSend posts one signed test event (type id.sengo.test, never stored,
// never retried) to the endpoint, as a delivery would, and reports the
// answer. It ignores the hold and the breaker: it is how an operator
// checks the endpoint before resuming.
func (w *Worker) TestSend(ctx context.Context) TestResult {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	id := "evt_test_" + hex.EncodeToString(b)
	now := w.cfg.Now()
	body, _ := json.Marshal(map[string]any{
		"specversion": "1.0", "id": id, "source": "sengo-relay", "type": "id.sengo.test", "time": now.UTC(),
		"datacontenttype": "application/json", "data": map[string]any{"test": true, "endpoint": w.ep.Name},
	})
	r := post(ctx, w.httpc, w.ep, delivery{userAgent: w.cfg.UserAgent, hide: w.hide, eventID: id, body: body, now: now})
	out := TestResult{EventID: id, Status: r.Status, DurationMs: float64(r.Duration.Microseconds()) / 1000, Excerpt: r.Excerpt, OK: r.ok()}
	if r.Err != nil {
		out.Error = r.Err.Error()
	}
	return out
}
