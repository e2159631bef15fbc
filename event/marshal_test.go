package event

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// An event is stored with <, > and & as they are: data.raw keeps what
// SenGo sent (escaped, each is six bytes, and a large callback's event
// outgrew what the store takes).
func TestMarshalKeepsHTMLCharacters(t *testing.T) {
	b, err := Marshal(Event{ID: "evt_1", Data: Data{MerchantRef: "PO&1<a>", Raw: json.RawMessage(`{"a":"<&>"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`\u00`)) || !bytes.Contains(b, []byte(`"PO&1<a>"`)) || !bytes.Contains(b, []byte(`{"a":"<&>"}`)) {
		t.Fatalf("marshalled: %s", b)
	}
}

// A project's or an endpoint's name is one subject token of a-z, 0-9, '_'
// and '-', starting with a letter or digit: '_' first is the relay's own
// keys in SENGO_DELIVERY (_relay.…, _hold.…), where an endpoint named so
// would write its delivery records; a dot is two tokens, and a project
// main.x's events would match main's filters.
func TestValidName(t *testing.T) {
	long := string(bytes.Repeat([]byte("a"), 63))
	for s, want := range map[string]bool{
		"main": true, "a-b_c": true, "0x": true, long: true, long + "a": false,
		"": false, "_relay": false, "-x": false, "main.x": false, "Main": false, "a*": false, "a>": false, "a b": false,
	} {
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
}

// A transaction id is anyone's text (a forged callback's): in a subject it
// is always 16 hex digits of its hash, whatever it holds (dots, wildcards,
// kilobytes), so it never adds a token, a wildcard or length; and the
// filters by transaction take its subject and no other transaction's.
func TestATransactionIDInASubjectIsItsHash(t *testing.T) {
	hostile := []string{"a.b", ">", "*", "x.>", string(bytes.Repeat([]byte("9"), 5000)), "", " "}
	seen := map[string]bool{}
	for _, id := range hostile {
		for _, subj := range []string{InboxTxSubject("main", id), QuarantineTxSubject("main", id), DLQTxSubject("orders", id)} {
			toks := strings.Split(subj, ".")
			last := toks[len(toks)-1]
			if len(toks) != 4 || len(last) != 16 || strings.Trim(last, "0123456789abcdef") != "" {
				t.Errorf("the subject of transaction %.20q: %.80q", id, subj)
			}
		}
		h := InboxTxSubject("main", id)
		if seen[h] {
			t.Errorf("transaction %.20q shares its subject with another", id)
		}
		seen[h] = true
		if id == "" {
			continue // no transaction: the filters take any
		}
		f := QuarantineFilters("main", id)
		if !slices.Contains(f, QuarantineTxSubject("main", id)) || slices.Contains(f, QuarantineTxSubject("main", id+"x")) {
			t.Errorf("the quarantine filters of transaction %.20q: %q", id, f)
		}
		if f := DLQFilters("", id); !slices.Contains(f, "sengo.dlq.*."+strings.TrimPrefix(DLQTxSubject("x", id), "sengo.dlq.x.")) {
			t.Errorf("the dead-letter filters of transaction %.20q: %q", id, f)
		}
	}
}
