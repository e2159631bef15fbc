// Package verify owns every check of authenticity in sengo-relay: SenGo's
// request signature (hex HMAC-SHA512 keyed with the project token over
// apiKey + body), the PHP json_encode byte form that signature is computed
// over, constant-time comparison of callback path tokens, and source-IP
// allowlists.
//
// It is a leaf: it imports only the standard library, never logs, and never
// puts a secret, token or signature into an error.
package verify
