package event

import (
	"bytes"
	"encoding/json"
	"testing"
)

// An event is stored with <, > and & as they are: data.raw is byte for
// byte what SenGo sent (escaped, each is six bytes, and a large callback's
// event outgrew what the store takes).
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
