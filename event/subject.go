package event

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

// Stream and bucket names provisioned by sengo-relay.
const (
	// StreamInbox holds raw notifications as received, before intake.
	StreamInbox = "SENGO_INBOX"
	// StreamEvents holds normalized events: the public contract.
	StreamEvents = "SENGO_EVENTS"
	// StreamQuarantine holds notifications that can never be processed,
	// with the reason in a header.
	StreamQuarantine = "SENGO_QUARANTINE"
	// StreamDLQ holds events whose delivery to an endpoint was given up.
	StreamDLQ = "SENGO_DLQ"
	// BucketTx is the KV bucket with one entry per SenGo transaction.
	BucketTx = "SENGO_TX"
)

// Subject wildcards each stream captures.
const (
	SubjectsInbox      = "sengo.inbox.>"
	SubjectsEvents     = "sengo.events.>"
	SubjectsQuarantine = "sengo.quarantine.>"
	SubjectsDLQ        = "sengo.dlq.>"
)

// Headers set on inbox and quarantine messages.
const (
	// HeaderProject names the project a notification arrived for.
	HeaderProject = "Sengo-Project"
	// HeaderReceivedAt is when the relay accepted the notification (RFC 3339, UTC, nanoseconds).
	HeaderReceivedAt = "Sengo-Received-At"
	// HeaderSource is how the notification reached the relay: "callback" or "reconcile".
	HeaderSource = "Sengo-Source"
	// HeaderRequestID carries the HTTP request id of the callback, for tracing.
	HeaderRequestID = "Sengo-Request-Id"
	// HeaderSourceIP is the caller's address as the relay judged it (the
	// TCP peer, or behind trusted proxies the client X-Forwarded-For names).
	HeaderSourceIP = "Sengo-Source-Ip"
	// HeaderSignature is what became of the callback's X-Signature:
	// verified, absent (optional and not sent) or not_checked (off).
	HeaderSignature = "Sengo-Signature"
	// HeaderReason says why a notification was quarantined.
	HeaderReason = "Sengo-Quarantine-Reason"
	// HeaderEventID is the event id, on event messages (also sent as Nats-Msg-Id).
	HeaderEventID = "Sengo-Event-Id"
)

// InboxSubject is where raw notifications for project are published
// when the transaction is not known (older messages, unparsable ones).
func InboxSubject(project string) string { return "sengo.inbox." + project }

// InboxTxSubject is where raw notifications of one transaction are
// published: "sengo.inbox.<project>.<16 hex digits of SHA-256 of the
// id>", fixed-length whatever the id, so intake can find the earlier
// notifications of a transaction in receipt order.
func InboxTxSubject(project, transactionID string) string {
	return "sengo.inbox." + project + "." + txHash(transactionID)
}

// EventSubject is where normalized events are published.
func EventSubject(project string, p Product, s Status) string {
	return "sengo.events." + project + "." + string(p) + "." + string(s)
}

// ProjectEvents is the filter subject of project's events.
func ProjectEvents(project string) string { return "sengo.events." + project + ".>" }

// QuarantineSubject is where unprocessable notifications of project go
// when their transaction is not known (unparsable ones).
func QuarantineSubject(project string) string { return "sengo.quarantine." + project }

// QuarantineTxSubject is where quarantined notifications of one known
// transaction go: "sengo.quarantine.<project>.<16 hex digits>", the same
// hash as its inbox subject, so its story finds them by subject.
func QuarantineTxSubject(project, transactionID string) string {
	return "sengo.quarantine." + project + "." + txHash(transactionID)
}

// QuarantineFilters are the filter subjects of the quarantined
// notifications of project ("" any) and transactionID ("" any), in both
// forms (QuarantineSubject's, with no transaction, matches a transaction
// filter too: the reader checks the notification).
func QuarantineFilters(project, transactionID string) []string {
	return txFilters("sengo.quarantine.", project, transactionID)
}

// DLQSubject is where dead letters for an endpoint went before they
// carried their transaction (DLQTxSubject); still read, never written.
func DLQSubject(endpoint string) string { return "sengo.dlq." + endpoint }

// DLQTxSubject is where a dead letter of one transaction's event to
// endpoint goes: "sengo.dlq.<endpoint>.<16 hex digits>", the hash of the
// transaction's inbox subject, so its story finds it by subject instead of
// reading every dead letter.
func DLQTxSubject(endpoint, transactionID string) string {
	return DLQSubject(endpoint) + "." + txHash(transactionID)
}

// DLQFilters are the filter subjects of the dead letters of endpoint (""
// any) and of transactionID ("" any), in both forms (DLQSubject's, with
// no transaction, matches a transaction filter too: the reader checks the
// record).
func DLQFilters(endpoint, transactionID string) []string {
	return txFilters("sengo.dlq.", endpoint, transactionID)
}

// txFilters are the filter subjects under prefix of owner ("" any) and
// transactionID ("" any): "<prefix><owner>" (the form without the
// transaction) and "<prefix><owner>.<txHash>".
func txFilters(prefix, owner, transactionID string) []string {
	tx := "*"
	if owner == "" {
		owner = "*"
	}
	if transactionID != "" {
		tx = txHash(transactionID)
	}
	return []string{prefix + owner, prefix + owner + "." + tx}
}

// txHash is the 16 hex digits of SHA-256 of a transaction id that its
// per-transaction subjects end with.
func txHash(transactionID string) string {
	sum := sha256.Sum256([]byte(transactionID))
	return hex.EncodeToString(sum[:8])
}

// Replay subjects: copies of events queued for one endpoint again (replay
// by time window, or redrive from the dead-letter stream).
const (
	StreamReplay   = "SENGO_REPLAY"
	SubjectsReplay = "sengo.replay.>"
	// BucketDelivery holds delivery attempt records per endpoint and event.
	BucketDelivery = "SENGO_DELIVERY"
)

// ReplaySubject is where events queued again for endpoint go.
func ReplaySubject(endpoint string) string { return "sengo.replay." + endpoint }

// SubjectMatches reports whether subject matches the NATS filter (with
// "*" for one token and a final ">" for the rest).
func SubjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return i < len(s)
		}
		if i >= len(s) || tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(f) == len(s)
}

// name is what a project or endpoint name may be: one subject token.
var name = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidName reports whether s may name a project or an endpoint: 1 to 63
// of a-z, 0-9, '_' and '-', starting with a letter or digit. Such a name
// is one subject token, never a wildcard.
func ValidName(s string) bool { return name.MatchString(s) }
