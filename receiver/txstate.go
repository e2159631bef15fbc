package receiver

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"slices"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
)

// txState is the SENGO_TX entry of one transaction: its status so far, the
// events it produced, and an outbox of events decided but not yet confirmed
// published.
//
// The outbox is what makes intake crash-safe and ordered: a status change
// and the event it must publish are written in one compare-and-set, so a
// worker that dies after the write leaves the event behind for whoever
// touches the transaction next (the redelivered notification at the
// latest). Events leave the outbox only after JetStream acknowledged them,
// and are always published oldest first.
type txState struct {
	Project       string        `json:"project"`
	TransactionID string        `json:"transactionId"`
	MerchantRef   string        `json:"merchantRef"`
	Product       event.Product `json:"product"`
	Status        event.Status  `json:"status"`
	UpdatedAt     time.Time     `json:"updatedAt"`
	History       []txEvent     `json:"history"`
	Outbox        []outboxItem  `json:"outbox,omitempty"`
	// Rejected records late (stale) and conflicting notifications, newest
	// last, at most maxRejected.
	Rejected []rejected `json:"rejected,omitempty"`
}

// txEvent is one published status change.
type txEvent struct {
	Status     event.Status `json:"status"`
	EventID    string       `json:"eventId"`
	AcceptedAt time.Time    `json:"acceptedAt"`
	// Seq is the event's sequence in SENGO_EVENTS, 0 until published.
	Seq uint64 `json:"seq,omitempty"`
	// Source is how the change arrived: callback or reconcile.
	Source string `json:"source,omitempty"`
	// Note says why the status differs from the notification's, if it does.
	Note string `json:"note,omitempty"`
	// Confirmed is whether SenGo's API confirmed it (nil: decided by a
	// relay that did not record it): the story tells it when the event
	// itself is no longer kept.
	Confirmed *bool `json:"confirmed,omitempty"`
}

type outboxItem struct {
	EventID string          `json:"eventId"`
	Subject string          `json:"subject"`
	Event   json.RawMessage `json:"event"`
	// InboxSeq is the inbox message that decided it (0: unknown, written
	// before it was kept).
	InboxSeq uint64 `json:"inboxSeq,omitempty"`
}

type rejected struct {
	Status   event.Status `json:"status"`
	Decision string       `json:"decision"` // "stale" or "conflict"
	At       time.Time    `json:"at"`
	InboxSeq uint64       `json:"inboxSeq"`
}

const maxRejected = 20

// reject records a stale or conflicting notification once per inbox message.
func (s *txState) reject(st event.Status, d event.Decision, at time.Time, inboxSeq uint64) bool {
	for _, r := range s.Rejected {
		if r.InboxSeq == inboxSeq {
			return false
		}
	}
	s.Rejected = append(s.Rejected, rejected{Status: st, Decision: d.String(), At: at, InboxSeq: inboxSeq})
	if len(s.Rejected) > maxRejected {
		s.Rejected = s.Rejected[len(s.Rejected)-maxRejected:]
	}
	return true
}

// published marks the outbox items with the given ids as published at
// their sequences and removes them. It reports whether anything changed.
func (s *txState) published(seqs map[string]uint64) bool {
	changed := false
	kept := s.Outbox[:0]
	for _, it := range s.Outbox {
		if seq, ok := seqs[it.EventID]; ok {
			changed = true
			for i := range s.History {
				if s.History[i].EventID == it.EventID {
					s.History[i].Seq = seq
				}
			}
			continue
		}
		kept = append(kept, it)
	}
	s.Outbox = kept
	if len(s.Outbox) == 0 {
		s.Outbox = nil
	}
	return changed
}

// withdrawUnconfirmed takes the outbox's events decided unconfirmed out
// of s, as if never decided: their history entries go, and the status is
// the last one left (none: the transaction's identity goes too, what a
// forged claim said of it). A confirmed event after them stays: SenGo's
// API said so. It returns their ids. An event published whose removal
// from the outbox had not run yet is withdrawn too: decided again, it is
// published under the same id (a duplicate the stream drops within its
// window).
func (s *txState) withdrawUnconfirmed() []string {
	var ids []string
	for _, it := range s.Outbox {
		if s.unconfirmed(it) {
			ids = append(ids, it.EventID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	s.Outbox = slices.DeleteFunc(s.Outbox, func(it outboxItem) bool { return slices.Contains(ids, it.EventID) })
	if len(s.Outbox) == 0 {
		s.Outbox = nil
	}
	s.History = slices.DeleteFunc(s.History, func(h txEvent) bool { return slices.Contains(ids, h.EventID) })
	s.Status = ""
	if n := len(s.History); n > 0 {
		s.Status = s.History[n-1].Status
	} else {
		s.TransactionID, s.Product, s.MerchantRef = "", "", ""
	}
	return ids
}

// unconfirmed reports whether the event of outbox item it was decided
// without SenGo's confirmation: as its history entry records it, or, for
// one a relay before that record decided, as its event says (one that
// cannot be read is not known confirmed either).
func (s *txState) unconfirmed(it outboxItem) bool {
	for _, h := range s.History {
		if h.EventID == it.EventID && h.Confirmed != nil {
			return !*h.Confirmed
		}
	}
	var ev struct {
		Data struct {
			Confirmed bool `json:"confirmed"`
		} `json:"data"`
	}
	return json.Unmarshal(it.Event, &ev) != nil || !ev.Data.Confirmed
}

var plainID = regexp.MustCompile(`^[A-Za-z0-9-]{1,200}$`)

// maxKeyID bounds the id part of a SENGO_TX key, whatever the id: a key
// becomes a subject, and nats-server drops a connection whose protocol
// line exceeds 4 KiB.
const maxKeyID = 128

// txKey is the SENGO_TX key of a transaction: "<project>.<id>". SenGo ids
// are opaque strings; one that is not plain letters, digits and '-' is
// base64url-encoded behind "b64_" (which a plain id cannot contain), and
// an id whose key part would exceed maxKeyID is replaced by "h_" and the
// hex SHA-256 of the id. The callback parser bounds ids (sengo.MaxIDBytes);
// the hash keeps the key bounded for notifications that did not pass it.
func txKey(project, transactionID string) string {
	k := transactionID
	if !plainID.MatchString(transactionID) {
		k = "b64_" + base64.RawURLEncoding.EncodeToString([]byte(transactionID))
	}
	if len(k) > maxKeyID {
		sum := sha256.Sum256([]byte(transactionID))
		k = "h_" + hex.EncodeToString(sum[:])
	}
	return project + "." + k
}

// decidedBy reports whether inbox message seq (0: unknown) added an event
// to the outbox.
func (s *txState) decidedBy(seq uint64) bool {
	return seq > 0 && slices.ContainsFunc(s.Outbox, func(o outboxItem) bool { return o.InboxSeq == seq })
}
