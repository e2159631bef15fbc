package verify

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
	"errors"
)

// Sentinel errors. They carry no detail on purpose: nothing about the
// expected or received value may leak into a log or a response.
var (
	// ErrBadSignature: an X-Signature is present but does not match.
	ErrBadSignature = errors.New("signature does not match")
	// ErrMissingSignature: a signature is required and none was sent.
	ErrMissingSignature = errors.New("signature missing")
)

// SenGoSignature returns SenGo's request signature: lowercase hex of
// HMAC-SHA512 keyed with token over apiKey followed by body. For requests
// without a body, pass a nil body: the message is the apiKey alone.
func SenGoSignature(apiKey, token string, body []byte) string {
	return hex.EncodeToString(senGoMAC(apiKey, token, body))
}

// CheckSenGoSignature reports whether signature is SenGo's signature of
// body. It compares in constant time, accepts upper- or lowercase hex, and
// returns ErrMissingSignature for an empty signature and ErrBadSignature
// for any other mismatch.
func CheckSenGoSignature(apiKey, token string, body []byte, signature string) error {
	if signature == "" {
		return ErrMissingSignature
	}
	got, err := hex.DecodeString(signature)
	if err != nil || len(got) != sha512.Size {
		return ErrBadSignature
	}
	if !hmac.Equal(got, senGoMAC(apiKey, token, body)) {
		return ErrBadSignature
	}
	return nil
}

func senGoMAC(apiKey, token string, body []byte) []byte {
	m := hmac.New(sha512.New, []byte(token))
	m.Write([]byte(apiKey))
	m.Write(body)
	return m.Sum(nil)
}
