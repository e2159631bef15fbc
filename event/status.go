package event

import "fmt"

// Status is a SenGo transaction status as it appears on the wire (lowercase).
type Status string

// The four statuses SenGo reports. New transactions are pending; the other
// three are final.
const (
	StatusPending Status = "pending"
	StatusSuccess Status = "success"
	StatusExpired Status = "expired"
	StatusFailed  Status = "failed"
)

// Statuses lists every known status, pending first.
var Statuses = []Status{StatusPending, StatusSuccess, StatusExpired, StatusFailed}

// ParseStatus returns the Status named by s, or an error if s is not one of
// the four known statuses. Matching is exact: SenGo sends lowercase.
func ParseStatus(s string) (Status, error) {
	switch st := Status(s); st {
	case StatusPending, StatusSuccess, StatusExpired, StatusFailed:
		return st, nil
	}
	return "", fmt.Errorf("unknown status %q", s)
}

// Final reports whether s ends a transaction: success, expired or failed.
func (s Status) Final() bool {
	return s == StatusSuccess || s == StatusExpired || s == StatusFailed
}

// Decision is what to do with a newly seen status given the current one.
type Decision int

const (
	// Publish: the status is new for this transaction and moves it forward.
	Publish Decision = iota + 1
	// Duplicate: the transaction already has this status.
	Duplicate
	// Stale: the transaction is final and the new status is pending; a late
	// or replayed callback that must not regress it.
	Stale
	// Conflict: the transaction is final and the new status is a different
	// final status. SenGo contradicted itself; a human must look.
	Conflict
)

func (d Decision) String() string {
	switch d {
	case Publish:
		return "publish"
	case Duplicate:
		return "duplicate"
	case Stale:
		return "stale"
	case Conflict:
		return "conflict"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// Decide applies the status rules. current is the transaction's status so
// far, or "" when the transaction has never been seen.
//
//	first sighting            → Publish
//	same status again         → Duplicate
//	pending → final           → Publish
//	final → pending           → Stale
//	final → other final       → Conflict
func Decide(current, next Status) Decision {
	switch {
	case current == "":
		return Publish
	case current == next:
		return Duplicate
	case !current.Final():
		return Publish
	case !next.Final():
		return Stale
	default:
		return Conflict
	}
}
