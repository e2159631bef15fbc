package dispatcher

import (
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/sengo-relay/sengo-relay/verify"
)

// Bounds of the headers kept with an attempt.
const (
	maxKeptHeaders = 24
	maxHeaderValue = 256
	redactedValue  = "[redacted]"
	omittedValue   = "[omitted]"
)

// sentHeaders is what an attempt record shows of the request headers: the
// signature is left out, and the values of the endpoint's configured
// headers (often a consumer's own credentials) are redacted.
func sentHeaders(h http.Header, ep Endpoint) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		switch {
		case strings.EqualFold(k, verify.HeaderWebhookSignature):
			continue
		case configured(ep, k):
			out[k] = redactedValue
		default:
			out[k] = clip(strings.Join(v, ", "))
		}
	}
	return out
}

func configured(ep Endpoint, name string) bool {
	for k := range ep.Headers {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// keptHeaders bounds the response headers kept: at most maxKeptHeaders
// (the rest are counted under "…"), each value scrubbed (before it is
// clipped: a secret across the clip is hidden whole) and clipped, and the
// values of headers that carry credentials or sessions redacted.
// The headers that explain an answer are kept first, then the others in
// name order: the same answer keeps the same headers every time.
func keptHeaders(h http.Header, scrub func(string) string) map[string]string {
	out := make(map[string]string, min(len(h), maxKeptHeaders+1))
	dropped := 0
	names := slices.Collect(maps.Keys(h))
	slices.SortFunc(names, func(a, b string) int {
		if ea, eb := explains(a), explains(b); ea != eb {
			if ea {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, k := range names {
		v := h[k]
		if len(out) == maxKeptHeaders || len(k) > 64 {
			dropped++
			continue
		}
		if sensitive(k) {
			out[k] = redactedValue
			continue
		}
		if locates(k) { // a redirect echoes the endpoint's own URL, whose path and query may be its secret
			out[k] = clip(RedactURL(scrub(strings.Join(v, ", "))))
			continue
		}
		out[k] = clip(scrub(strings.Join(v, ", ")))
	}
	if dropped > 0 {
		out["…"] = omittedValue
	}
	return out
}

// explains reports a response header that says why an answer is what it
// is (when to retry, what the body is, whether to stop, where it points).
func explains(name string) bool {
	for _, n := range []string{"Retry-After", "Content-Type", "Webhook-Delivery", "Location"} {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	return false
}

func locates(name string) bool {
	return strings.EqualFold(name, "Location") || strings.EqualFold(name, "Content-Location")
}

// RedactURL is what may be shown of an endpoint's URL (or of a URL a
// consumer echoes): see verify.RedactURL.
func RedactURL(raw string) string { return verify.RedactURL(raw) }

func sensitive(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"cookie", "auth", "token", "secret", "key", "signature", "session", "pass", "credential", "bearer", "csrf", "xsrf", "jwt", "private"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

func clip(s string) string {
	if len(s) <= maxHeaderValue {
		return strings.ToValidUTF8(s, "?")
	}
	return strings.ToValidUTF8(s[:maxHeaderValue], "?") + "…"
}
