package sengo

// The parser before the single-pass rewrite (encoding/json into
// map[string]json.RawMessage), kept as the oracle of FuzzParserAgrees.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"testing"
	"unicode/utf8"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
)

// ParseCallback parses a callback body in either form SenGo is seen to use:
// the response envelope {"responseCode":…, "responseData":{…}} or the bare
// transaction object. Unknown fields are accepted and kept in Raw.
//
// It returns an error matching ErrMalformed when the body is not a JSON
// object, and an *InvalidError (matching ErrInvalid) naming every bad field
// otherwise: missing or non-string id, merchantRef or status, an unknown
// status, amounts that are not non-negative integers, and anything but
// exactly one known product object.
func refParseCallback(body []byte) (Transaction, error) {
	top, err := refObject(body)
	if err != nil {
		return Transaction{}, err
	}
	raw, prefix := json.RawMessage(body), ""
	if rd, ok := top["responseData"]; ok {
		prefix = "responseData."
		if top, err = refObject(rd); err != nil {
			return Transaction{}, &InvalidError{Fields: []FieldError{{"responseData", "must be a transaction object"}}}
		}
		raw = rd
	}
	p := refParser{fields: top, prefix: prefix}
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
func refObject(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrMalformed, refDescribe(err))
	}
	if m == nil {
		return nil, fmt.Errorf("%w: body must be a JSON object, not null", ErrMalformed)
	}
	return m, nil
}

// describe turns a decoding error into a message that names the problem
// without echoing the body.
func refDescribe(err error) string {
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
type refParser struct {
	fields map[string]json.RawMessage
	prefix string
	errs   []FieldError
}

func (p *refParser) fail(field, problem string) {
	p.errs = append(p.errs, FieldError{Field: p.prefix + field, Problem: problem})
}

func (p *refParser) requiredString(key string) string {
	v, ok := p.fields[key]
	if !ok || refIsNull(v) {
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

func (p *refParser) optionalString(fields map[string]json.RawMessage, key string) string {
	v, ok := fields[key]
	if !ok || refIsNull(v) {
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		p.fail(key, "must be a string")
	}
	return s
}

func (p *refParser) nullableString(key string) *string {
	v, ok := p.fields[key]
	if !ok || refIsNull(v) {
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
func (p *refParser) amount(key string) int64 {
	v, ok := p.fields[key]
	if !ok || refIsNull(v) {
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
	if err != nil || i < 0 || v[0] == '-' {
		p.fail(key, "must be a non-negative integer")
		return 0
	}
	return i
}

// product finds exactly one known, non-null product object and reads the
// fields the event carries from it.
func (p *refParser) product(t *Transaction) {
	var found []string
	for _, pk := range productKeys {
		v, ok := p.fields[pk.key]
		if !ok || refIsNull(v) {
			continue
		}
		found = append(found, pk.key)
		obj, err := refObject(v)
		if err != nil {
			p.fail(pk.key, "must be an object")
			continue
		}
		t.Product = pk.product
		sub := refParser{fields: obj, prefix: p.prefix + pk.key + "."}
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

func refIsNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// FuzzParserAgrees: the single-pass parser reads every body as the map
// parser did: the same transaction, the same field errors, malformed where
// it was malformed. The only bodies it may reject that the old one took
// are those with a repeated key or invalid UTF-8 (raw, or a lone surrogate
// escape), which the old parser silently resolved (last key wins, U+FFFD).
func FuzzParserAgrees(f *testing.F) {
	for _, fx := range fixtures.Callbacks() {
		f.Add(fx.Body)
	}
	for _, b := range [][]byte{
		retail("", ""), retail("retail", `{"channel":7}`), retail("id", `""`), retail("amount", `-1`),
		retail("qris", `{"content":"x"}`), retail("paidDate", `5`), retail("status", `"paid"`),
		[]byte(`{"responseData":{}}`), []byte(`{"responseCode":200,"responseData":null}`),
		[]byte(`{"id":"a","id":"b","merchantRef":"b","status":"pending","amount":0,"fee":0,"totalAmount":0,"qris":{}}`),
		[]byte(`{"id":"\u0061","merchantRef":"b","status":"pending","amount":0,"fee":0,"totalAmount":0,"qris":{}} `),
		[]byte(`{"id":"\ud800","merchantRef":"b","status":"pending","amount":0,"fee":0,"totalAmount":0,"qris":{}}`),
		[]byte(` {"responseData" : {"id":"a"} } `), []byte(`{}{}`), []byte(`[`), []byte(`nul`),
	} {
		f.Add(b)
	}
	loose := regexp.MustCompile(`(?i)\\ud[89a-f]`)
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gotErr := ParseCallback(body)
		want, wantErr := refParseCallback(body)
		if errors.Is(gotErr, ErrMalformed) && !errors.Is(wantErr, ErrMalformed) {
			if !utf8.Valid(body) || loose.Match(body) || hasRepeatedKey(body) {
				return
			}
			t.Fatalf("new parser: %v; old parser: %v", gotErr, wantErr)
		}
		if errors.Is(wantErr, ErrMalformed) != errors.Is(gotErr, ErrMalformed) {
			t.Fatalf("new parser: %v; old parser: %v", gotErr, wantErr)
		}
		var gotInv, wantInv *InvalidError
		errors.As(gotErr, &gotInv)
		errors.As(wantErr, &wantInv)
		if (gotInv == nil) != (wantInv == nil) || gotInv != nil && !reflect.DeepEqual(gotInv.Fields, wantInv.Fields) {
			t.Fatalf("new parser: %v; old parser: %v", gotErr, wantErr)
		}
		if gotErr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("new parser: %+v\nold parser: %+v", got, want)
		}
	})
}

// hasRepeatedKey reports whether some object in body (valid JSON) has a key
// twice, using encoding/json's tokenizer.
func hasRepeatedKey(body []byte) bool {
	d := json.NewDecoder(bytes.NewReader(body))
	type obj struct {
		keys    map[string]bool
		wantKey bool
	}
	var stack []*obj
	for {
		tok, err := d.Token()
		if err != nil {
			return false
		}
		var top *obj
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.wantKey {
			if top.keys[s] {
				return true
			}
			top.keys[s], top.wantKey = true, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &obj{keys: map[string]bool{}, wantKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, nil)
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1] != nil {
			stack[len(stack)-1].wantKey = true // a value ended
		}
	}
}

// BenchmarkParseCallback compares the single-pass parser with the old one
// on the shared envelope fixture.
func BenchmarkParseCallback(b *testing.B) {
	body := fixtures.Body("callback-retail-success")
	for _, p := range []struct {
		name  string
		parse func([]byte) (Transaction, error)
	}{{"single-pass", ParseCallback}, {"map-decode", refParseCallback}} {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := p.parse(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
