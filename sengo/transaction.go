package sengo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"github.com/go-json-experiment/json/jsontext"

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

// productKeys lists the product objects, in the order their errors are
// reported, with the fields the event takes from each: channel (empty: the
// product's name is the channel) and code (the retail payment code or the
// virtual account number).
var productKeys = []struct {
	key           string
	product       event.Product
	channel, code string
}{
	{"retail", event.ProductRetail, "channel", "paymentCode"},
	{"virtualAccount", event.ProductVirtualAccount, "bankCode", "vaNumber"},
	{"eWallet", event.ProductEWallet, "channel", ""},
	{"qris", event.ProductQRIS, "", ""},
	{"disbursement", event.ProductDisbursement, "bankCode", ""},
	{"creditCard", event.ProductCreditCard, "", ""},
}

// ParseCallback parses a callback body in either form SenGo is seen to use:
// the response envelope {"responseCode":…, "responseData":{…}} or the bare
// transaction object. Unknown fields are accepted and kept in Raw.
//
// It returns an error matching ErrMalformed when the body is not one JSON
// object of valid UTF-8 without repeated keys, and an *InvalidError
// (matching ErrInvalid) naming every bad field otherwise: missing or
// non-string id, merchantRef or status, an unknown status, amounts that
// are not non-negative integers, and anything but exactly one known
// product object.
//
// The body is read once, token by token (jsontext), keeping only the
// fields the event needs. Keys match exactly, as in a JSON object; a key
// that appears twice makes the body malformed rather than letting the
// relay and the sender disagree on which one counts.
func ParseCallback(body []byte) (Transaction, error) {
	d := decoders.Get().(*jsontext.Decoder)
	defer func() { d.Reset(emptyReader); decoders.Put(d) }()
	d.Reset(bytes.NewBuffer(body))

	if k := d.PeekKind(); k != '{' {
		return Transaction{}, notObject(d, k)
	}
	var flat, env txFields
	envelope, envelopeIsObject := false, false
	err := members(d, func(name []byte) error {
		if string(name) != "responseData" {
			return flat.member(d, name)
		}
		envelope = true
		if d.PeekKind() != '{' {
			return d.SkipValue()
		}
		envelopeIsObject = true
		start := valueStart(body, d.InputOffset())
		if err := members(d, func(name []byte) error { return env.member(d, name) }); err != nil {
			return err
		}
		env.raw = body[start:d.InputOffset()]
		return nil
	})
	if err == nil {
		if _, err = d.ReadToken(); err == io.EOF {
			err = nil
		} else if err == nil {
			err = &jsontext.SyntacticError{ByteOffset: d.InputOffset()}
		}
	}
	if err != nil {
		return Transaction{}, fmt.Errorf("%w: %s", ErrMalformed, describe(err))
	}

	fields, prefix := &flat, ""
	flat.raw = bytes.TrimSpace(body)
	if envelope {
		if !envelopeIsObject {
			return Transaction{}, &InvalidError{Fields: []FieldError{{"responseData", "must be a transaction object"}}}
		}
		fields, prefix = &env, "responseData."
	}
	return fields.transaction(prefix)
}

var kindNames = map[jsontext.Kind]string{'n': "null", 't': "bool", 'f': "bool", '"': "string", '0': "number", '[': "array"}

var (
	decoders    = sync.Pool{New: func() any { return jsontext.NewDecoder(emptyReader) }}
	emptyReader = bytes.NewReader(nil)
)

// notObject explains why a body that does not start an object is
// malformed (k is the kind it starts with, 0 when it does not start a
// value at all).
func notObject(d *jsontext.Decoder, k jsontext.Kind) error {
	if what, ok := kindNames[k]; ok {
		return fmt.Errorf("%w: body must be a JSON object, not %s", ErrMalformed, what)
	}
	_, err := d.ReadToken()
	return fmt.Errorf("%w: %s", ErrMalformed, describe(err))
}

// describe turns a decoding error into a message that names the problem
// without echoing the body.
func describe(err error) string {
	var syn *jsontext.SyntacticError
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of JSON input"
	case errors.As(err, &syn) && errors.Is(err, jsontext.ErrDuplicateName):
		return fmt.Sprintf("repeated key at byte %d", syn.ByteOffset)
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.ByteOffset)
	default:
		return "syntax error"
	}
}

// members reads the object d is at, calling member with each key; member
// must consume the key's value.
func members(d *jsontext.Decoder, member func(name []byte) error) error {
	if _, err := d.ReadToken(); err != nil { // {
		return err
	}
	for d.PeekKind() != '}' {
		name, err := d.ReadValue()
		if err != nil {
			return err
		}
		if err := member(unquote(name)); err != nil {
			return err
		}
	}
	_, err := d.ReadToken() // }
	return err
}

// unquote returns the contents of a valid JSON string.
func unquote(v jsontext.Value) []byte {
	if s := v[1 : len(v)-1]; bytes.IndexByte(s, '\\') < 0 {
		return s
	}
	s, _ := jsontext.AppendUnquote(nil, v)
	return s
}

// valueStart is where the value after the key ending at off begins.
func valueStart(body []byte, off int64) int {
	i := int(off)
	for i < len(body) && strings.IndexByte(" \t\r\n:", body[i]) >= 0 {
		i++
	}
	return i
}

// value is one field as read: its kind (0 when absent) and, for a string,
// its contents or, for a number, whether it is a non-negative integer.
type value struct {
	kind jsontext.Kind
	str  string
	num  int64
	int  bool
}

func read(d *jsontext.Decoder) (value, error) {
	v, err := d.ReadValue()
	if err != nil {
		return value{}, err
	}
	out := value{kind: v.Kind()}
	switch out.kind {
	case '"':
		out.str = string(unquote(v))
	case '0':
		// Not "-0": ParseInt reads it as 0, and the event's amount would
		// then say other than its raw object.
		n, err := strconv.ParseInt(string(v), 10, 64)
		out.num, out.int = n, err == nil && n >= 0 && v[0] != '-'
	}
	return out, nil
}

// absent: missing or null, which SenGo's PHP treats alike.
func (v value) absent() bool { return v.kind == 0 || v.kind == 'n' }

// Transaction fields read by key.
const (
	fID = iota
	fMerchantRef
	fStatus
	fFeePayer
	fAmount
	fFee
	fTotalAmount
	fExpiredDate
	fPaidDate
	fSettleDate
	numFields
)

var fieldKeys = map[string]int{
	"id": fID, "merchantRef": fMerchantRef, "status": fStatus, "feePayer": fFeePayer,
	"amount": fAmount, "fee": fFee, "totalAmount": fTotalAmount,
	"expiredDate": fExpiredDate, "paidDate": fPaidDate, "settleDate": fSettleDate,
}

// txFields is one transaction object as read.
type txFields struct {
	v        [numFields]value
	products [6]struct {
		kind          jsontext.Kind // of the product's value; 0 when absent
		channel, code value
	}
	raw []byte
}

// member reads the value of key name into f, or skips it.
func (f *txFields) member(d *jsontext.Decoder, name []byte) error {
	if i, ok := fieldKeys[string(name)]; ok {
		v, err := read(d)
		f.v[i] = v
		return err
	}
	for i, pk := range productKeys {
		if string(name) != pk.key {
			continue
		}
		p := &f.products[i]
		p.kind, p.channel, p.code = d.PeekKind(), value{}, value{}
		if p.kind != '{' {
			return d.SkipValue()
		}
		return members(d, func(name []byte) error {
			var err error
			switch {
			case pk.channel != "" && string(name) == pk.channel:
				p.channel, err = read(d)
			case pk.code != "" && string(name) == pk.code:
				p.code, err = read(d)
			default:
				err = d.SkipValue()
			}
			return err
		})
	}
	return d.SkipValue()
}

// transaction validates f; prefix is the path of the object in the body.
func (f *txFields) transaction(prefix string) (Transaction, error) {
	p := checker{prefix: prefix}
	t := Transaction{
		ID:          p.identifier("id", f.v[fID], MaxIDBytes),
		MerchantRef: p.reference("merchantRef", f.v[fMerchantRef]),
		FeePayer:    p.optionalString("feePayer", f.v[fFeePayer]),
		Amount:      p.amount("amount", f.v[fAmount]),
		Fee:         p.amount("fee", f.v[fFee]),
		TotalAmount: p.amount("totalAmount", f.v[fTotalAmount]),
		ExpiredDate: p.nullableString("expiredDate", f.v[fExpiredDate]),
		PaidDate:    p.nullableString("paidDate", f.v[fPaidDate]),
		SettleDate:  p.nullableString("settleDate", f.v[fSettleDate]),
		Raw:         bytes.Clone(f.raw),
	}
	if s := p.requiredString("status", f.v[fStatus]); s != "" {
		st, err := event.ParseStatus(s)
		if err != nil {
			p.fail("status", fmt.Sprintf("must be one of pending, success, expired, failed (got %q)", truncate(s, 32)))
		}
		t.Status = st
	}
	found := 0
	for i, pk := range productKeys {
		pv := f.products[i]
		if pv.kind == 0 || pv.kind == 'n' {
			continue
		}
		found++
		if pv.kind != '{' {
			p.fail(pk.key, "must be an object")
			continue
		}
		t.Product = pk.product
		sub := checker{prefix: prefix + pk.key + "."}
		t.Channel = string(pk.product)
		if pk.channel != "" {
			t.Channel = sub.optionalString(pk.channel, pv.channel)
		}
		if pk.code != "" {
			code := sub.optionalString(pk.code, pv.code)
			if pk.product == event.ProductRetail {
				t.PaymentCode = code
			} else {
				t.VANumber = code
			}
		}
		p.errs = append(p.errs, sub.errs...)
	}
	switch found {
	case 0:
		p.fail("product", "is required: one of retail, virtualAccount, eWallet, qris, disbursement, creditCard")
	case 1:
	default:
		p.fail("product", fmt.Sprintf("must be exactly one object, found %d", found))
	}
	if len(p.errs) > 0 {
		return Transaction{}, &InvalidError{Fields: p.errs}
	}
	return t, nil
}

// checker collects field errors while validating one object.
type checker struct {
	prefix string
	errs   []FieldError
}

func (p *checker) fail(field, problem string) {
	p.errs = append(p.errs, FieldError{Field: p.prefix + field, Problem: problem})
}

func (p *checker) requiredString(key string, v value) string {
	switch {
	case v.absent():
		p.fail(key, "is required")
	case v.kind != '"':
		p.fail(key, "must be a string")
	case v.str == "":
		p.fail(key, "must not be empty")
	}
	return v.str
}

func (p *checker) optionalString(key string, v value) string {
	switch {
	case !v.absent() && v.kind != '"':
		p.fail(key, "must be a string")
	case len(v.str) > MaxFieldBytes:
		p.fail(key, fmt.Sprintf("must be at most %d bytes", MaxFieldBytes))
	}
	return v.str
}

// Bounds on what a notification may carry. SenGo's ids are UUIDs and a
// merchantRef is the merchant's own reference; both become parts of keys
// and log lines, so anything beyond these is refused (422) before it is
// stored. Other strings (channel, codes, dates) are bounded too.
const (
	MaxIDBytes          = 128
	MaxMerchantRefBytes = 255
	MaxFieldBytes       = 255
)

// reference is a required string of at most MaxMerchantRefBytes without
// control characters: the merchant chose it, so spaces and any script are
// allowed.
func (p *checker) reference(key string, v value) string {
	s := p.requiredString(key, v)
	switch {
	case len(s) > MaxMerchantRefBytes:
		p.fail(key, fmt.Sprintf("must be at most %d bytes", MaxMerchantRefBytes))
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		p.fail(key, "must not contain control characters")
	}
	return s
}

// identifier is a required string of printable ASCII without spaces (the
// bytes '!' to '~'), at most max bytes, and not a dot segment: the id is
// the last segment of GET /check/{id}, and "." or ".." names another URL
// once a server or proxy cleans the path (a 404 without SenGo's code,
// which confirmation must retry for days).
func (p *checker) identifier(key string, v value, max int) string {
	s := p.requiredString(key, v)
	switch {
	case len(s) > max:
		p.fail(key, fmt.Sprintf("must be at most %d bytes", max))
	case strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
		p.fail(key, "must be printable ASCII without spaces")
	case s == "." || s == "..":
		p.fail(key, "must not be . or ..")
	}
	return s
}

func (p *checker) nullableString(key string, v value) *string {
	switch {
	case v.absent():
		return nil
	case v.kind != '"':
		p.fail(key, "must be a string or null")
		return nil
	case len(v.str) > MaxFieldBytes:
		p.fail(key, fmt.Sprintf("must be at most %d bytes", MaxFieldBytes))
		return nil
	}
	return &v.str
}

// amount is a required non-negative integer in rupiah. A quoted "10000"
// is not one: SenGo sends numbers.
func (p *checker) amount(key string, v value) int64 {
	switch {
	case v.absent():
		p.fail(key, "is required")
	case !v.int:
		p.fail(key, "must be a non-negative integer")
	}
	return v.num
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Compact is the transaction as a flat object holding only the fields
// ParseCallback reads: parsed again, it gives the same Transaction, with
// this object as Raw. It stands in for an object too large to keep (a QRIS
// image of megabytes in SenGo's answer).
func (t Transaction) Compact() json.RawMessage {
	obj := map[string]any{
		"id": t.ID, "merchantRef": t.MerchantRef, "status": string(t.Status),
		"amount": t.Amount, "fee": t.Fee, "totalAmount": t.TotalAmount,
		"expiredDate": t.ExpiredDate, "paidDate": t.PaidDate, "settleDate": t.SettleDate,
	}
	if t.FeePayer != "" {
		obj["feePayer"] = t.FeePayer
	}
	for _, pk := range productKeys {
		if pk.product != t.Product {
			continue
		}
		product := map[string]string{}
		if pk.channel != "" && t.Channel != "" {
			product[pk.channel] = t.Channel
		}
		code := t.VANumber
		if pk.product == event.ProductRetail {
			code = t.PaymentCode
		}
		if pk.code != "" && code != "" {
			product[pk.code] = code
		}
		obj[pk.key] = product
	}
	b, _ := json.Marshal(obj) // strings, integers and string pointers only
	return b
}
