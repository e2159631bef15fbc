package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
)

// Dead-letter reasons.
const (
	ReasonExhausted   = "retries_exhausted" // every attempt of the schedule failed
	ReasonGone        = "gone"              // the endpoint answered 410
	ReasonAborted     = "aborted"           // webhook-delivery: abort-message
	ReasonUndecodable = "undecodable"       // not an event (never delivered)
	// ReasonExpiring: the endpoint stayed paused until the event was about
	// to age out of SENGO_EVENTS; it is dead-lettered before it is lost.
	ReasonExpiring = "expiring_while_paused"
	// ReasonExpiringBeforeRetry: the event's next attempt would come after
	// its stream dropped it (an old event's first attempts, a long
	// Retry-After); it is dead-lettered before it is lost.
	ReasonExpiringBeforeRetry = "expiring_before_retry"
	// ReasonExpiringInBacklog: the endpoint, not paused but slower than its
	// events came (a rate limit, a slow consumer), had not reached the
	// event when it was about to age out; it is dead-lettered before it is
	// lost.
	ReasonExpiringInBacklog = "expiring_in_backlog"
)

// DeadLetter is a message of SENGO_DLQ (subject sengo.dlq.<endpoint>.<16 hex
// digits of its transaction>; sengo.dlq.<endpoint> before): the
// event exactly as stored, and why, where and how often delivery failed.
type DeadLetter struct {
	Endpoint        string    `json:"endpoint"`
	EventID         string    `json:"eventId"`
	TransactionID   string    `json:"transactionId"`
	MerchantRef     string    `json:"merchantRef"`
	Reason          string    `json:"reason"`
	Attempts        int       `json:"attempts"`
	FirstAttemptAt  time.Time `json:"firstAttemptAt"`
	LastAttemptAt   time.Time `json:"lastAttemptAt"`
	LastStatus      int       `json:"lastStatus"` // 0: no response
	LastError       string    `json:"lastError,omitempty"`
	ResponseExcerpt string    `json:"responseExcerpt,omitempty"`
	StreamSeq       uint64    `json:"streamSeq"` // the event's sequence in SENGO_EVENTS
	// Subject is the event's subject in SENGO_EVENTS (what the endpoint's
	// filter matched), carried by a redrive's copy; empty when unknown.
	Subject  string          `json:"subject,omitempty"`
	Replayed bool            `json:"replayed,omitempty"`
	DeadAt   time.Time       `json:"deadAt"`
	Event    json.RawMessage `json:"event"`
	// EventTruncated: the event was too large to keep whole in its dead
	// letter (another publisher's, near the server's max_payload): Event is
	// its first 4 KiB as a JSON string and EventBytes its size; StreamSeq
	// names it. No redrive sends it.
	EventTruncated bool `json:"eventTruncated,omitempty"`
	EventBytes     int  `json:"eventBytes,omitempty"`
}

// deadLetterRoom is what a dead letter leaves of the server's max_payload
// for its headers and the client's framing; deadLetterExcerpt is how much
// of an event too large to keep whole it keeps.
const (
	deadLetterRoom    = 16 << 10
	deadLetterExcerpt = 4 << 10
)

// excerptString is the first n bytes of b (not cut inside a character) as
// a JSON string.
func excerptString(b []byte, n int) json.RawMessage {
	if len(b) > n {
		b = b[:n]
	}
	return stringJSON(strings.ToValidUTF8(string(b), ""))
}

// stringJSON is s as a JSON string, without HTML escaping (json.Marshal
// wrote each <, > and & as six bytes).
func stringJSON(s string) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// publishDeadLetter stores d with the event as stored (raw). Its
// Nats-Msg-Id makes a repeated publish (after a crash between publishing
// and terminating) a duplicate.
func publishDeadLetter(ctx context.Context, js jetstream.JetStream, key string, d DeadLetter, raw []byte) error {
	d.Event = rawOrString(raw)
	subject := event.DLQTxSubject(d.Endpoint, d.TransactionID) // of the whole id: a story finds it
	b, err := encodeDeadLetter(d)
	if err != nil {
		return err
	}
	if limit := js.Conn().MaxPayload() - deadLetterRoom; int64(len(b)+len(d.EventID)+len(d.Reason)) > limit {
		// Too large for the server (the event, or another publisher's
		// ids): stored, it would fail at every retry until retention
		// dropped the event with no dead letter. The event keeps its
		// start, and each id its first 256 bytes.
		d.EventTruncated, d.EventBytes = true, len(raw)
		d.Event = excerptString(raw, deadLetterExcerpt)
		d.EventID, d.TransactionID, d.MerchantRef = clip(d.EventID), clip(d.TransactionID), clip(d.MerchantRef)
		if b, err = encodeDeadLetter(d); err != nil {
			return err
		}
	}
	msg := &nats.Msg{Subject: subject, Data: b, Header: nats.Header{
		event.HeaderEventID: []string{d.EventID},
		"Sengo-Reason":      []string{d.Reason},
	}}
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID("dlq."+key), jetstream.WithExpectStream(event.StreamDLQ)); err != nil {
		return fmt.Errorf("publish dead letter %s: %w", clip(d.EventID), err)
	}
	return nil
}

// encodeDeadLetter is d as JSON without HTML escaping: the embedded event
// is kept as stored (json's default rewrote its &, < and > as \u0026…,
// and a redrive posted those bytes, not the event's).
func encodeDeadLetter(d DeadLetter) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode dead letter: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
