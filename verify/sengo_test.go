package verify

import (
	"errors"
	"strings"
	"testing"

	"github.com/sengo-relay/sengo-relay/internal/fixtures"
)

func TestSenGoSignatureVector(t *testing.T) {
	v := fixtures.SignatureVector()
	body := []byte(strings.TrimPrefix(v.Message, v.APIKey))
	if got := SenGoSignature(v.APIKey, v.Token, body); got != v.Signature {
		t.Fatalf("SenGoSignature = %s, want %s", got, v.Signature)
	}
	if err := CheckSenGoSignature(v.APIKey, v.Token, body, v.Signature); err != nil {
		t.Fatalf("CheckSenGoSignature(vector) = %v", err)
	}
	if err := CheckSenGoSignature(v.APIKey, v.Token, body, strings.ToUpper(v.Signature)); err != nil {
		t.Fatalf("uppercase hex rejected: %v", err)
	}
}

// The vector's body built from a Go value: only PHP's escaping of "/"
// reproduces the published digest.
func TestPHPJSONReproducesVector(t *testing.T) {
	type info struct {
		Callback string `json:"callback"`
	}
	type vaRequest struct {
		Reference      string `json:"reference"`
		BankCode       string `json:"bankCode"`
		ViewName       string `json:"viewName"`
		Type           string `json:"type"`
		Amount         int    `json:"amount"`
		AdditionalInfo info   `json:"additionalInfo"`
	}
	v := fixtures.SignatureVector()
	body, err := PHPJSON(vaRequest{"12345678", "014", "Guntur Brahmaputra", "ClosedAmount", 10000, info{"https://google.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimPrefix(v.Message, v.APIKey); string(body) != want {
		t.Fatalf("PHPJSON =\n%s\nwant\n%s", body, want)
	}
	if got := SenGoSignature(v.APIKey, v.Token, body); got != v.Signature {
		t.Fatalf("signature over PHPJSON = %s, want %s", got, v.Signature)
	}
	unescaped := strings.ReplaceAll(string(body), `\/`, `/`)
	if SenGoSignature(v.APIKey, v.Token, []byte(unescaped)) == v.Signature {
		t.Fatal("unescaped body gave the same digest; escaping must matter")
	}
}

func TestPHPJSONLeavesHTMLCharacters(t *testing.T) {
	got, err := PHPJSON(map[string]string{"v": "a<b>&c/d"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"v":"a<b>&c\/d"}`; string(got) != want {
		t.Fatalf("PHPJSON = %s, want %s", got, want)
	}
}

func TestCheckSenGoSignatureRejects(t *testing.T) {
	v := fixtures.SignatureVector()
	body := []byte(strings.TrimPrefix(v.Message, v.APIKey))
	tests := []struct {
		name, apiKey, token, sig string
		body                     []byte
		want                     error
	}{
		{"empty", v.APIKey, v.Token, "", body, ErrMissingSignature},
		{"not hex", v.APIKey, v.Token, strings.Repeat("z", 128), body, ErrBadSignature},
		{"short", v.APIKey, v.Token, v.Signature[:64], body, ErrBadSignature},
		{"wrong token", v.APIKey, v.Token + "x", v.Signature, body, ErrBadSignature},
		{"wrong key", v.APIKey + "x", v.Token, v.Signature, body, ErrBadSignature},
		{"body changed", v.APIKey, v.Token, v.Signature, append([]byte(nil), append(body, ' ')...), ErrBadSignature},
		{"key-only signature for a body", v.APIKey, v.Token, SenGoSignature(v.APIKey, v.Token, nil), body, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSenGoSignature(tt.apiKey, tt.token, tt.body, tt.sig)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err != nil && (strings.Contains(err.Error(), v.Token) || strings.Contains(err.Error(), v.Signature[:16])) {
				t.Fatal("error text leaks a secret")
			}
		})
	}
}

// FuzzSenGoSignature: what SenGoSignature makes, CheckSenGoSignature
// accepts; flipping any bit of the body or of the signature is rejected.
func FuzzSenGoSignature(f *testing.F) {
	v := fixtures.SignatureVector()
	f.Add(v.APIKey, v.Token, []byte(strings.TrimPrefix(v.Message, v.APIKey)), uint(0))
	f.Add("", "", []byte{}, uint(3))
	f.Add("k", "t", []byte(`{"a":1}`), uint(1000))
	f.Fuzz(func(t *testing.T, apiKey, token string, body []byte, pos uint) {
		sig := SenGoSignature(apiKey, token, body)
		if err := CheckSenGoSignature(apiKey, token, body, sig); err != nil {
			t.Fatalf("round trip rejected: %v", err)
		}
		if len(body) > 0 {
			changed := append([]byte(nil), body...)
			changed[pos%uint(len(body))] ^= 1 << (pos % 8)
			if CheckSenGoSignature(apiKey, token, changed, sig) == nil {
				t.Fatalf("changed body byte %d accepted", pos%uint(len(body)))
			}
		}
		raw := []byte(sig)
		i := pos % uint(len(raw))
		if raw[i] == '0' {
			raw[i] = '1'
		} else {
			raw[i] = '0'
		}
		if CheckSenGoSignature(apiKey, token, body, string(raw)) == nil {
			t.Fatalf("changed signature digit %d accepted", i)
		}
	})
}
