package sengo

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// acceptedAt is the fixed acceptance time of golden events.
var acceptedAt = time.Date(2025, 3, 23, 3, 5, 13, 0, time.UTC)

// TestGolden: the normalized event of every shared fixture.
func TestGolden(t *testing.T) {
	for _, fx := range fixtures.Callbacks() {
		t.Run(fx.Name, func(t *testing.T) {
			tx, err := ParseCallback(fx.Body)
			if err != nil {
				t.Fatalf("ParseCallback: %v", err)
			}
			got, err := event.Marshal(tx.Event("main", "", acceptedAt, false))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", fx.Name+".golden")
			if *update {
				if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./sengo -update to create it)", err)
			}
			if !bytes.Equal(got, bytes.TrimSuffix(want, []byte("\n"))) {
				t.Errorf("event differs from %s:\n got %s\nwant %s", golden, got, want)
			}
		})
	}
}

// The envelope and the flat form of the same transaction normalize to the
// same event, with raw being the transaction object in both.
func TestEnvelopeAndFlatAgree(t *testing.T) {
	env, err := ParseCallback(fixtures.Body("callback-retail-success"))
	if err != nil {
		t.Fatal(err)
	}
	flat, err := ParseCallback(fixtures.Body("callback-retail-success-flat"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := event.Marshal(env.Event("main", "", acceptedAt, false))
	b, _ := event.Marshal(flat.Event("main", "", acceptedAt, false))
	if !bytes.Equal(a, b) {
		t.Fatalf("envelope and flat differ:\n%s\n%s", a, b)
	}
	if !bytes.Equal(env.Raw, fixtures.Body("callback-retail-success-flat")) {
		t.Fatalf("raw is not the responseData object as sent:\n%s", env.Raw)
	}
}

func TestParseCallbackFields(t *testing.T) {
	tx, err := ParseCallback(fixtures.Body("callback-va-success"))
	if err != nil {
		t.Fatal(err)
	}
	if tx.Product != event.ProductVirtualAccount || tx.Channel != "014" || tx.VANumber != "036709208150" {
		t.Errorf("VA fields: %+v", tx)
	}
	if tx.Status != event.StatusSuccess || tx.Amount != 15000 || tx.Fee != 5000 || tx.TotalAmount != 20000 {
		t.Errorf("status/amounts: %+v", tx)
	}
	d, err := ParseCallback(fixtures.Body("callback-disbursement-success"))
	if err != nil {
		t.Fatal(err)
	}
	if d.TotalAmount != 7500 || d.Amount != 10500 {
		t.Errorf("disbursement amounts must be carried as sent, got %+v", d)
	}
	if d.ExpiredDate != nil {
		t.Errorf("null expiredDate became %q", *d.ExpiredDate)
	}
}

// retail builds a flat retail transaction with one field replaced (or
// removed, for a value of "-").
func retail(field, value string) []byte {
	fields := []struct{ k, v string }{
		{"id", `"tx-1"`}, {"merchantRef", `"REF-1"`}, {"status", `"pending"`},
		{"feePayer", `"customer"`}, {"amount", `10000`}, {"fee", `85`}, {"totalAmount", `10085`},
		{"expiredDate", `"2025-03-23T10:24:58+07:00"`}, {"paidDate", `null`},
		{"retail", `{"viewName":"M","channel":"alfamart","paymentCode":"123"}`},
	}
	var b strings.Builder
	b.WriteString("{")
	first := true
	for _, f := range fields {
		v := f.v
		if f.k == field {
			v = value
		}
		if v == "-" {
			continue
		}
		if !first {
			b.WriteString(",")
		}
		first = false
		b.WriteString(`"` + f.k + `":` + v)
	}
	if field != "" && !strings.Contains(b.String(), `"`+field+`"`) && value != "-" {
		b.WriteString(`,"` + field + `":` + value)
	}
	b.WriteString("}")
	return []byte(b.String())
}

func TestParseCallbackRejects(t *testing.T) {
	tests := []struct {
		name      string
		body      []byte
		malformed bool   // else invalid
		field     string // expected field in the error
	}{
		{"empty", []byte(``), true, ""},
		{"not json", []byte(`hello`), true, ""},
		{"truncated", []byte(`{"id":"x"`), true, ""},
		{"array", []byte(`[1,2]`), true, ""},
		{"string", []byte(`"x"`), true, ""},
		{"null", []byte(`null`), true, ""},
		{"two objects", []byte(`{}{}`), true, ""},
		{"repeated key", retail("status", `"pending","status":"success"`), true, ""},
		{"repeated key in envelope", []byte(`{"responseData":{},"responseData":{}}`), true, ""},
		{"repeated key in product", retail("retail", `{"channel":"a","channel":"b"}`), true, ""},
		{"invalid utf-8", retail("merchantRef", "\"r\xff\""), true, ""},
		{"lone surrogate", retail("merchantRef", `"\ud800"`), true, ""},
		{"envelope data is array", []byte(`{"responseCode":200,"responseData":[]}`), false, "responseData"},
		{"envelope data is null", []byte(`{"responseCode":200,"responseData":null}`), false, "responseData"},
		{"missing id", retail("id", "-"), false, "id"},
		{"empty id", retail("id", `""`), false, "id"},
		{"numeric id", retail("id", `12`), false, "id"},
		{"missing merchantRef", retail("merchantRef", "-"), false, "merchantRef"},
		{"missing status", retail("status", "-"), false, "status"},
		{"unknown status", retail("status", `"paid"`), false, "status"},
		{"uppercase status", retail("status", `"SUCCESS"`), false, "status"},
		{"negative amount", retail("amount", `-1`), false, "amount"},
		// ParseInt reads it as 0: the event's amount would say other than
		// its raw object.
		{"negative zero amount", retail("amount", `-0`), false, "amount"},
		{"fractional amount", retail("amount", `100.5`), false, "amount"},
		{"string amount", retail("amount", `"10000"`), false, "amount"},
		{"missing totalAmount", retail("totalAmount", "-"), false, "totalAmount"},
		{"huge amount", retail("fee", `1e40`), false, "fee"},
		{"paidDate number", retail("paidDate", `5`), false, "paidDate"},
		{"no product", retail("retail", "-"), false, "product"},
		{"product not object", retail("retail", `"alfamart"`), false, "retail"},
		{"two products", retail("qris", `{"content":"x"}`), false, "product"},
		{"channel wrong type", retail("retail", `{"channel":7}`), false, "retail.channel"},
		// Bounded before they reach a log line, a subject or the console.
		{"merchantRef with a newline", retail("merchantRef", `"INV\n1"`), false, "merchantRef"},
		{"paidDate too long", retail("paidDate", `"`+strings.Repeat("2", 256)+`"`), false, "paidDate"},
		{"channel too long", retail("retail", `{"channel":"`+strings.Repeat("a", 256)+`"}`), false, "retail.channel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCallback(tt.body)
			if err == nil {
				t.Fatal("accepted")
			}
			if tt.malformed {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			var inv *InvalidError
			if !errors.As(err, &inv) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want *InvalidError", err)
			}
			for _, f := range inv.Fields {
				if strings.HasSuffix(f.Field, tt.field) {
					return
				}
			}
			t.Fatalf("error %v does not name field %q", err, tt.field)
		})
	}
}

func TestParseCallbackReportsEveryField(t *testing.T) {
	_, err := ParseCallback([]byte(`{"responseData":{"status":"nope","amount":-5,"fee":1,"totalAmount":1}}`))
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("err = %v", err)
	}
	want := []string{"responseData.id", "responseData.merchantRef", "responseData.status", "responseData.amount", "responseData.product"}
	for _, w := range want {
		found := false
		for _, f := range inv.Fields {
			found = found || f.Field == w
		}
		if !found {
			t.Errorf("missing %s in %v", w, err)
		}
	}
}

func TestParseCallbackAcceptsUnknownFields(t *testing.T) {
	body := retail("somethingNew", `{"nested":[1,2,3]}`)
	tx, err := ParseCallback(body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(tx.Raw, []byte("somethingNew")) {
		t.Fatal("unknown field dropped from raw")
	}
}

// FuzzParseCallback: no input panics; whatever parses normalizes to an event
// that encodes and decodes back to the same id and raw object.
func FuzzParseCallback(f *testing.F) {
	for _, fx := range fixtures.Callbacks() {
		f.Add(fx.Body)
	}
	f.Add(retail("", ""))
	f.Add([]byte(`{"responseData":{}}`))
	f.Add([]byte(`{"id":"a","merchantRef":"b","status":"pending","amount":0,"fee":0,"totalAmount":0,"qris":{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tx, err := ParseCallback(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		ev := tx.Event("p", "", acceptedAt, false)
		b, err := event.Marshal(ev)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := event.Unmarshal(b)
		if err != nil {
			t.Fatalf("unmarshal: %v", err)
		}
		if back.ID != ev.ID || back.Data.TransactionID != tx.ID {
			t.Fatalf("round trip changed the event: %s", b)
		}
	})
}

// Compact keeps every field the relay reads: parsed again, each fixture is
// the same transaction.
func TestCompactParsesToTheSameTransaction(t *testing.T) {
	for _, fx := range fixtures.Callbacks() {
		t.Run(fx.Name, func(t *testing.T) {
			tx, err := ParseCallback(fx.Body)
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseCallback(tx.Compact())
			if err != nil {
				t.Fatalf("%v: %s", err, tx.Compact())
			}
			tx.Raw, again.Raw = nil, nil
			want, _ := event.Marshal(tx.Event("main", "", acceptedAt, false))
			got, _ := event.Marshal(again.Event("main", "", acceptedAt, false))
			if !reflect.DeepEqual(again, tx) || len(got) == 0 || !bytes.Equal(got, want) {
				t.Fatalf("compact parses to\n%s\nwant\n%s", got, want)
			}
		})
	}
}
