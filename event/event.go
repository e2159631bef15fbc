package event

import (
	"encoding/json"
	"strings"
	"time"
)

// SpecVersion is the CloudEvents version of Event.
const SpecVersion = "1.0"

// TypePrefix begins every event type: id.sengo.transaction.<status>.
const TypePrefix = "id.sengo.transaction."

// Currency of every amount SenGo reports.
const Currency = "IDR"

// Event is a normalized status change in CloudEvents 1.0 structured JSON.
// The same bytes are stored in SENGO_EVENTS and POSTed to webhooks.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            Data      `json:"data"`
}

// Data is the payload of an Event.
type Data struct {
	TransactionID  string  `json:"transactionId"`
	MerchantRef    string  `json:"merchantRef"`
	Status         Status  `json:"status"`
	PreviousStatus *Status `json:"previousStatus"` // null on the first sighting
	Product        Product `json:"product"`
	// Channel is the retail chain or e-wallet (alfamart, ovo, …), the bank
	// code for virtual accounts and disbursements, or the product for QRIS
	// and credit cards.
	Channel     string  `json:"channel"`
	Amount      int64   `json:"amount"`
	Fee         int64   `json:"fee"`
	TotalAmount int64   `json:"totalAmount"`
	FeePayer    string  `json:"feePayer"`
	Currency    string  `json:"currency"`
	PaymentCode string  `json:"paymentCode,omitempty"` // retail only
	VANumber    string  `json:"vaNumber,omitempty"`    // virtual account only
	ExpiredAt   *string `json:"expiredAt"`             // as SenGo sent it (RFC 3339, +07:00), or null
	PaidAt      *string `json:"paidAt"`                // as SenGo sent it, or null
	// Confirmed is true when SenGo's API agreed with the callback.
	Confirmed bool `json:"confirmed"`
	// Raw is SenGo's transaction object as received, compacted when the
	// event is encoded (whitespace between tokens dropped).
	Raw json.RawMessage `json:"raw"`
}

// Source returns the CloudEvents source of events for project.
func Source(project string) string { return "sengo/" + project }

// ProjectOf is the project of an event source ("sengo/<project>"); a
// source of another form is returned as it is.
func ProjectOf(source string) string {
	if p, ok := strings.CutPrefix(source, "sengo/"); ok && p != "" {
		return p
	}
	return source
}

// Type returns the CloudEvents type for a status.
func Type(s Status) string { return TypePrefix + string(s) }
