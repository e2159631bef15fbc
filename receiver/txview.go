package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/stream"
)

// Transaction is what SENGO_TX holds of one transaction, for operators.
type Transaction struct {
	Project       string        `json:"project"`
	TransactionID string        `json:"transactionId"`
	MerchantRef   string        `json:"merchantRef"`
	Product       event.Product `json:"product"`
	Status        event.Status  `json:"status"`
	UpdatedAt     time.Time     `json:"updatedAt"`
	// Changes are the status changes published, oldest first.
	Changes []StatusChange `json:"changes"`
	// Unpublished counts changes decided but not yet acknowledged by
	// SENGO_EVENTS (a crash between the two; flushed by the next touch).
	Unpublished int `json:"unpublished"`
	// Rejected are late (stale) and conflicting notifications, newest last.
	Rejected []Rejected `json:"rejected"`
}

// StatusChange is one published status change.
type StatusChange struct {
	Status     event.Status `json:"status"`
	EventID    string       `json:"eventId"`
	AcceptedAt time.Time    `json:"acceptedAt"`
	// Seq is the event's sequence in SENGO_EVENTS, 0 until acknowledged.
	Seq    uint64 `json:"seq"`
	Source string `json:"source,omitempty"`
	// Note says why the status differs from the notification's (SenGo's
	// API said otherwise), if it does.
	Note string `json:"note,omitempty"`
	// Confirmed is whether SenGo's API confirmed it (absent: decided by a
	// relay that did not record it; its event says).
	Confirmed *bool `json:"confirmed,omitempty"`
}

// Rejected is a notification recorded but not published.
type Rejected struct {
	Status   event.Status `json:"status"`
	Decision string       `json:"decision"`
	At       time.Time    `json:"at"`
	InboxSeq uint64       `json:"inboxSeq"`
}

// ErrNoTransaction: SENGO_TX has no entry for the transaction.
var ErrNoTransaction = errors.New("no such transaction")

// ReadTransaction returns the state of one transaction.
func ReadTransaction(ctx context.Context, js jetstream.JetStream, project, transactionID string) (Transaction, error) {
	kv, err := js.KeyValue(ctx, event.BucketTx)
	if err != nil {
		return Transaction{}, fmt.Errorf("open %s: %w", event.BucketTx, err)
	}
	return ReadTransactionFrom(ctx, kv, project, transactionID)
}

// ReadTransactionFrom is ReadTransaction from the SENGO_TX bucket kv,
// already opened: one request.
func ReadTransactionFrom(ctx context.Context, kv jetstream.KeyValue, project, transactionID string) (Transaction, error) {
	e, err := kv.Get(ctx, txKey(project, transactionID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Transaction{}, ErrNoTransaction
	}
	if err != nil {
		return Transaction{}, fmt.Errorf("read transaction: %w", err)
	}
	var s txState
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return Transaction{}, fmt.Errorf("decode transaction: %w", err)
	}
	if s.TransactionID != transactionID {
		return Transaction{}, ErrNoTransaction // a key shared by a hashed id, or a state with nothing applied
	}
	t := Transaction{Project: s.Project, TransactionID: s.TransactionID, MerchantRef: s.MerchantRef, Product: s.Product,
		Status: s.Status, UpdatedAt: s.UpdatedAt, Unpublished: len(s.Outbox), Changes: []StatusChange{}, Rejected: []Rejected{}}
	for _, h := range s.History {
		t.Changes = append(t.Changes, StatusChange(h))
	}
	for _, r := range s.Rejected {
		t.Rejected = append(t.Rejected, Rejected(r))
	}
	return t, nil
}

// Notification is one notification of a transaction as stored in
// SENGO_INBOX: how it arrived and what it claimed.
type Notification struct {
	Seq        uint64       `json:"seq"`
	Stored     time.Time    `json:"stored"`
	ReceivedAt string       `json:"receivedAt,omitempty"`
	Source     string       `json:"source"`
	RequestID  string       `json:"requestId,omitempty"`
	SourceIP   string       `json:"sourceIp,omitempty"`
	Signature  string       `json:"signature,omitempty"`
	Status     event.Status `json:"status,omitempty"`
	// Body is the notification as received.
	Body json.RawMessage `json:"body"`
}

// EachNotification visits the notifications of one transaction still in
// SENGO_INBOX (its retention), oldest first, until visit returns false.
// Each Body is the whole notification (up to http.max_body_bytes): a
// caller that keeps many keeps less of each.
func EachNotification(ctx context.Context, js jetstream.JetStream, project, transactionID string, visit func(Notification) bool) error {
	return stream.ReadSubject(ctx, js, event.StreamInbox, event.InboxTxSubject(project, transactionID), func(m *jetstream.RawStreamMsg) bool {
		tx, perr := sengo.ParseCallback(m.Data)
		if perr != nil || tx.ID != transactionID {
			return true // another id with the same subject hash
		}
		h := m.Header
		return visit(Notification{
			Seq: m.Sequence, Stored: m.Time.UTC(), ReceivedAt: h.Get(event.HeaderReceivedAt),
			Source: h.Get(event.HeaderSource), RequestID: h.Get(event.HeaderRequestID), SourceIP: h.Get(event.HeaderSourceIP),
			Signature: h.Get(event.HeaderSignature), Status: tx.Status, Body: rawOrString(m.Data),
		})
	})
}
