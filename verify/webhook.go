package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (https://www.standardwebhooks.com) header names.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// SecretPrefix begins every webhook signing secret.
const SecretPrefix = "whsec_"

// DefaultTolerance is how far a webhook timestamp may be from now.
const DefaultTolerance = 5 * time.Minute

// Webhook verification errors.
var (
	ErrMissingHeaders = errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	ErrBadTimestamp   = errors.New("webhook timestamp outside the tolerance")
	ErrBadSecret      = errors.New("webhook secret must be whsec_ followed by base64 of at least 24 bytes")
)

// WebhookKey is a decoded signing secret.
type WebhookKey []byte

// ParseWebhookSecret decodes a "whsec_<base64>" secret. The error never
// contains the secret.
func ParseWebhookSecret(secret string) (WebhookKey, error) {
	b64, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, ErrBadSecret
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 24 {
		return nil, ErrBadSecret
	}
	return key, nil
}

// WebhookSignature returns the value of the webhook-signature header: one
// "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>" per key, separated by
// spaces. Every active secret signs, so receivers verify with whichever
// one they hold during a rotation.
func WebhookSignature(keys []WebhookKey, id string, ts time.Time, body []byte) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(webhookMAC(k, id, ts.Unix(), body)))
	}
	return b.String()
}

func webhookMAC(key WebhookKey, id string, unix int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(unix, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// WebhookVerifier checks Standard Webhooks signatures for a consumer.
// It is safe for concurrent use.
type WebhookVerifier struct {
	keys      []WebhookKey
	tolerance time.Duration
	now       func() time.Time
}

// NewWebhookVerifier accepts any of the given secrets (several during a
// rotation) with the default 5-minute timestamp tolerance.
func NewWebhookVerifier(secrets ...string) (*WebhookVerifier, error) {
	if len(secrets) == 0 {
		return nil, ErrBadSecret
	}
	v := &WebhookVerifier{tolerance: DefaultTolerance, now: time.Now}
	for i, s := range secrets {
		k, err := ParseWebhookSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i+1, err)
		}
		v.keys = append(v.keys, k)
	}
	return v, nil
}

// WithClock returns a copy of v that reads the time from now (for tests).
func (v *WebhookVerifier) WithClock(now func() time.Time) *WebhookVerifier {
	c := *v
	c.now = now
	return &c
}

// Verify checks the webhook headers against body. It returns
// ErrMissingHeaders, ErrBadTimestamp or ErrBadSignature. Comparison is
// constant-time; any "v1," signature made with any accepted secret passes.
func (v *WebhookVerifier) Verify(h http.Header, body []byte) error {
	id, tsRaw, sigs := h.Get(HeaderWebhookID), h.Get(HeaderWebhookTimestamp), h.Get(HeaderWebhookSignature)
	if id == "" || tsRaw == "" || sigs == "" {
		return ErrMissingHeaders
	}
	unix, err := strconv.ParseInt(tsRaw, 10, 64)
	if err != nil {
		return ErrBadTimestamp
	}
	now := v.now().Unix()
	if d := now - unix; d > int64(v.tolerance/time.Second) || -d > int64(v.tolerance/time.Second) {
		return ErrBadTimestamp
	}
	ok := 0
	for _, k := range v.keys {
		want := webhookMAC(k, id, unix, body)
		for _, s := range strings.Fields(sigs) {
			ver, b64, found := strings.Cut(s, ",")
			if !found || ver != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				continue
			}
			ok |= boolInt(hmac.Equal(got, want))
		}
	}
	if ok == 0 {
		return ErrBadSignature
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
