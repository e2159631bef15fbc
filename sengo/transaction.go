package sengo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sengo-relay/sengo-relay/event"
)

// Transaction is SenGo's transaction object, validated. Amounts are carried
// exactly as sent: SenGo's disbursement samples show total = amount - fee,
// so nothing is recomputed.
type Transaction struct {
	ID          string
	MerchantRef string
	Status      event.Status
	FeePayer    string
	Amount      int64
	Fee         int64
	TotalAmount int64
	ExpiredDate *string // as sent, nil when null or absent
	PaidDate    *string
	SettleDate  *string
	Product     event.Product
	Channel     string // see event.Data.Channel
	PaymentCode string // retail
	VANumber    string // virtual account
	// Raw is the transaction object exactly as received (for an envelope,
	// the value of responseData).
	Raw json.RawMessage
}

// productKeys maps the JSON key of each product object to its Product.
var productKeys = []struct {
	key     string
	product event.Product
}{
	{"retail", event.ProductRetail},
	{"virtualAccount", event.ProductVirtualAccount},
	{"eWallet", event.ProductEWallet},
	{"qris", event.ProductQRIS},
	{"disbursement", event.ProductDisbursement},
	{"creditCard", event.ProductCreditCard},
}

// ParseCallback parses a callback body in either form SenGo is seen to use:
// the response envelope {"responseCode":…, "responseData":{…}} or the bare
// transaction object. Unknown fields are accepted and kept in Raw.
//
// It returns an error matching ErrMalformed when the body is not a JSON
// object, and an *InvalidError (matching ErrInvalid) naming every bad field
// otherwise: missing or non-string id, merchantRef or status, an unknown
// status, amounts that are not non-negative integers, and anything but
// exactly one known product object.
func ParseCallback(body []byte) (Transaction, error) {
	top, err := object(body)
	if err != nil {
		return Transaction{}, err
	}
	raw, prefix := json.RawMessage(body), ""
	if rd, ok := top["responseData"]; ok {
		prefix = "responseData."
		if top, err = object(rd); err != nil {
			return Transaction{}, &InvalidError{Fields: []FieldError{{"responseData", "must be a transaction object"}}}
		}
		raw = rd
	}
	p := parser{fields: top, prefix: prefix}
	t := Transaction{
		ID:          p.requiredString("id"),
		MerchantRef: p.requiredString("merchantRef"),
		FeePayer:    p.optionalString(top, "feePayer"),
		Amount:      p.amount("amount"),
		Fee:         p.amount("fee"),
		TotalAmount: p.amount("totalAmount"),
		ExpiredDate: p.nullableString("expiredDate"),
		PaidDate:    p.nullableString("paidDate"),
		SettleDate:  p.nullableString("settleDate"),
		Raw:         bytes.Clone(bytes.TrimSpace(raw)),
	}
	if s := p.requiredString("status"); s != "" {
		st, err := event.ParseStatus(s)
		if err != nil {
			p.fail("status", fmt.Sprintf("must be one of pending, success, expired, failed (got %q)", truncate(s, 32)))
		}
		t.Status = st
	}
	p.product(&t)
	if len(p.errs) > 0 {
		return Transaction{}, &InvalidError{Fields: p.errs}
	}
	return t, nil
}

// object decodes a JSON object into its fields. json.Unmarshal rejects
// anything after the object, unlike a Decoder.
func object(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrMalformed, describe(err))
	}
	if m == nil {
		return nil, fmt.Errorf("%w: body must be a JSON object, not null", ErrMalformed)
	}
	return m, nil
}

// describe turns a decoding error into a message that names the problem
// without echoing the body.
func describe(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return "body must be a JSON object, not " + typ.Value
	default:
		return "unexpected end of JSON input"
	}
}

// parser collects field errors while reading one transaction object.
type parser struct {
	fields map[string]json.RawMessage
	prefix string
	errs   []FieldError
}

func (p *parser) fail(field, problem string) {
	p.errs = append(p.errs, FieldError{Field: p.prefix + field, Problem: problem})
}

func (p *parser) requiredString(key string) string {
	v, ok := p.fields[key]
	if !ok || isNull(v) {
		p.fail(key, "is required")
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		p.fail(key, "must be a string")
		return ""
	}
	if s == "" {
		p.fail(key, "must not be empty")
	}
	return s
}

func (p *parser) optionalString(fields map[string]json.RawMessage, key string) string {
	v, ok := fields[key]
	if !ok || isNull(v) {
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		p.fail(key, "must be a string")
	}
	return s
}

func (p *parser) nullableString(key string) *string {
	v, ok := p.fields[key]
	if !ok || isNull(v) {
		return nil
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		p.fail(key, "must be a string or null")
		return nil
	}
	return &s
}

// amount reads a required non-negative integer in rupiah.
func (p *parser) amount(key string) int64 {
	v, ok := p.fields[key]
	if !ok || isNull(v) {
		p.fail(key, "is required")
		return 0
	}
	// json.Number would also take a quoted "10000"; SenGo sends numbers.
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] == '"' {
		p.fail(key, "must be a non-negative integer")
		return 0
	}
	var n json.Number
	if json.Unmarshal(v, &n) != nil {
		p.fail(key, "must be a non-negative integer")
		return 0
	}
	i, err := n.Int64()
	if err != nil || i < 0 {
		p.fail(key, "must be a non-negative integer")
		return 0
	}
	return i
}

// product finds exactly one known, non-null product object and reads the
// fields the event carries from it.
func (p *parser) product(t *Transaction) {
	var found []string
	for _, pk := range productKeys {
		v, ok := p.fields[pk.key]
		if !ok || isNull(v) {
			continue
		}
		found = append(found, pk.key)
		obj, err := object(v)
		if err != nil {
			p.fail(pk.key, "must be an object")
			continue
		}
		t.Product = pk.product
		sub := parser{fields: obj, prefix: p.prefix + pk.key + "."}
		switch pk.product {
		case event.ProductRetail:
			t.Channel = sub.optionalString(obj, "channel")
			t.PaymentCode = sub.optionalString(obj, "paymentCode")
		case event.ProductVirtualAccount:
			t.Channel = sub.optionalString(obj, "bankCode")
			t.VANumber = sub.optionalString(obj, "vaNumber")
		case event.ProductEWallet:
			t.Channel = sub.optionalString(obj, "channel")
		case event.ProductDisbursement:
			t.Channel = sub.optionalString(obj, "bankCode")
		default:
			t.Channel = string(pk.product)
		}
		p.errs = append(p.errs, sub.errs...)
	}
	switch len(found) {
	case 0:
		p.fail("product", "is required: one of retail, virtualAccount, eWallet, qris, disbursement, creditCard")
	case 1:
	default:
		p.fail("product", fmt.Sprintf("must be exactly one object, found %d", len(found)))
	}
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
