package verify

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

func webhookHeaders(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set(HeaderWebhookID, id)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderWebhookSignature, sig)
	return h
}

func keys(t testing.TB, secrets ...string) []WebhookKey {
	t.Helper()
	var out []WebhookKey
	for _, s := range secrets {
		k, err := ParseWebhookSecret(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

// Interoperability with the Standard Webhooks reference library, both ways.
func TestWebhookMatchesReferenceLibrary(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"id.sengo.transaction.success"}`)
	id, ts := "evt_1", time.Now()
	ref, err := standardwebhooks.NewWebhook(secretA)
	if err != nil {
		t.Fatal(err)
	}
	refSig, err := ref.Sign(id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	if ours := WebhookSignature(keys(t, secretA), id, ts, body); ours != refSig {
		t.Fatalf("signature %q, reference %q", ours, refSig)
	}
	// Two secrets: the reference library (one secret) accepts ours.
	h := webhookHeaders(id, ts, WebhookSignature(keys(t, secretB, secretA), id, ts, body))
	if err := ref.Verify(body, h); err != nil {
		t.Fatalf("reference rejects our rotated signature: %v", err)
	}
	v, _ := NewWebhookVerifier(secretA)
	if err := v.Verify(webhookHeaders(id, ts, refSig), body); err != nil {
		t.Fatalf("we reject the reference signature: %v", err)
	}
}

func TestWebhookVerifierRotationAndRejections(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	body := []byte(`{"a":1}`)
	sigA := WebhookSignature(keys(t, secretA), "evt_x", now, body)
	sigB := WebhookSignature(keys(t, secretB), "evt_x", now, body)
	both, _ := NewWebhookVerifier(secretA, secretB)
	onlyA, _ := NewWebhookVerifier(secretA)
	clock := func() time.Time { return now }
	both, onlyA = both.WithClock(clock), onlyA.WithClock(clock)

	if err := both.Verify(webhookHeaders("evt_x", now, sigB), body); err != nil {
		t.Errorf("second secret during rotation: %v", err)
	}
	if err := onlyA.Verify(webhookHeaders("evt_x", now, sigB), body); !errors.Is(err, ErrBadSignature) {
		t.Errorf("unknown secret: %v", err)
	}
	tests := []struct {
		name string
		h    http.Header
		body []byte
		want error
	}{
		{"ok", webhookHeaders("evt_x", now, sigA), body, nil},
		{"within tolerance", webhookHeaders("evt_x", now, sigA), body, nil},
		{"body changed", webhookHeaders("evt_x", now, sigA), []byte(`{"a":2}`), ErrBadSignature},
		{"id changed", webhookHeaders("evt_y", now, sigA), body, ErrBadSignature},
		{"v2 prefix", webhookHeaders("evt_x", now, strings.Replace(sigA, "v1,", "v2,", 1)), body, ErrBadSignature},
		{"no headers", http.Header{}, body, ErrMissingHeaders},
		{"no id", without(webhookHeaders("evt_x", now, sigA), HeaderWebhookID), body, ErrMissingHeaders},
		{"no timestamp", without(webhookHeaders("evt_x", now, sigA), HeaderWebhookTimestamp), body, ErrMissingHeaders},
		{"no signature", without(webhookHeaders("evt_x", now, sigA), HeaderWebhookSignature), body, ErrMissingHeaders},
		{"timestamp not a number", func() http.Header {
			h := webhookHeaders("evt_x", now, sigA)
			h.Set(HeaderWebhookTimestamp, "x")
			return h
		}(), body, ErrBadTimestamp},
	}
	for _, tt := range tests {
		if err := onlyA.Verify(tt.h, tt.body); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	for _, skew := range []time.Duration{-6 * time.Minute, 6 * time.Minute} {
		late := onlyA.WithClock(func() time.Time { return now.Add(skew) })
		if err := late.Verify(webhookHeaders("evt_x", now, sigA), body); !errors.Is(err, ErrBadTimestamp) {
			t.Errorf("clock skew %s: %v", skew, err)
		}
	}
	early := onlyA.WithClock(func() time.Time { return now.Add(4 * time.Minute) })
	if err := early.Verify(webhookHeaders("evt_x", now, sigA), body); err != nil {
		t.Errorf("4 minutes old: %v", err)
	}
}

// without is h with header k taken out.
func without(h http.Header, k string) http.Header {
	h.Del(k)
	return h
}

// A secret is at least 24 bytes (the Standard Webhooks spec's floor): 23
// are refused, 24 taken.
func TestAWebhookSecretIsAtLeast24Bytes(t *testing.T) {
	if _, err := ParseWebhookSecret(SecretPrefix + base64.StdEncoding.EncodeToString(make([]byte, 23))); !errors.Is(err, ErrBadSecret) {
		t.Errorf("a secret of 23 bytes: %v", err)
	}
	if _, err := ParseWebhookSecret(SecretPrefix + base64.StdEncoding.EncodeToString(make([]byte, 24))); err != nil {
		t.Errorf("a secret of 24 bytes: %v", err)
	}
}

func TestParseWebhookSecret(t *testing.T) {
	for _, bad := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_!!!", "whsec_" + base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, err := ParseWebhookSecret(bad); !errors.Is(err, ErrBadSecret) {
			t.Errorf("%q accepted", bad)
		}
		if _, err := NewWebhookVerifier(bad); err == nil {
			t.Errorf("NewWebhookVerifier(%q) accepted", bad)
		}
	}
	if _, err := NewWebhookVerifier("whsec_SECRETMATERIAL!!"); err == nil || strings.Contains(err.Error(), "SECRETMATERIAL") {
		t.Errorf("error leaks the secret: %v", err)
	}
}

// FuzzWebhookSignature: what WebhookSignature makes, the verifier accepts;
// any flipped bit of the body or the signature is rejected.
func FuzzWebhookSignature(f *testing.F) {
	f.Add("evt_5d4150d6208661f31ba1de8be892e27d", []byte(`{"specversion":"1.0"}`), int64(1_750_000_000), uint(3))
	f.Add("", []byte{}, int64(0), uint(0))
	f.Fuzz(func(t *testing.T, id string, body []byte, unix int64, pos uint) {
		if id == "" || strings.ContainsAny(id, "\r\n") {
			return // not a header value
		}
		ts := time.Unix(unix%4_000_000_000, 0)
		v, _ := NewWebhookVerifier(secretA, secretB)
		v = v.WithClock(func() time.Time { return ts })
		sig := WebhookSignature(keys(t, secretA), id, ts, body)
		if err := v.Verify(webhookHeaders(id, ts, sig), body); err != nil {
			t.Fatalf("round trip rejected: %v", err)
		}
		if len(body) > 0 {
			changed := append([]byte(nil), body...)
			changed[pos%uint(len(body))] ^= 1 << (pos % 8)
			if v.Verify(webhookHeaders(id, ts, sig), changed) == nil {
				t.Fatal("changed body accepted")
			}
		}
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sig, "v1,"))
		raw[pos%uint(len(raw))] ^= 1 << (pos % 8)
		if v.Verify(webhookHeaders(id, ts, "v1,"+base64.StdEncoding.EncodeToString(raw)), body) == nil {
			t.Fatal("changed signature accepted")
		}
	})
}
