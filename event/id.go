package event

import (
	"crypto/sha256"
	"encoding/hex"
)

// ID returns the event id of one status change: "evt_" followed by 32 hex
// digits of SHA-256 over project, SenGo transaction id and status. The same
// status change always gets the same id, in any process, on any day, so
// duplicated callbacks, retries and replays can never mint a second one.
//
// It is also the Nats-Msg-Id on SENGO_INBOX and SENGO_EVENTS, and the
// webhook-id of deliveries.
func ID(project, transactionID string, s Status) string {
	h := sha256.New()
	// NUL separators: project names and statuses cannot contain NUL, so no
	// two different triples hash the same input.
	h.Write([]byte(project))
	h.Write([]byte{0})
	h.Write([]byte(transactionID))
	h.Write([]byte{0})
	h.Write([]byte(s))
	var sum [sha256.Size]byte
	return "evt_" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}
