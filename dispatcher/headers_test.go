package dispatcher

import (
	"net/http"
	"strings"
	"testing"
)

// What an attempt's record keeps of an endpoint's answer headers: names
// over 64 bytes left out (counted under "…"), values cut to 256 bytes,
// sessions and credentials (cookies, anything auth) redacted, and a
// redirect's URL without its path and query, wherever it points.
func TestKeptHeadersAreBoundedAndRedacted(t *testing.T) {
	t.Parallel()
	identity := func(s string) string { return s }
	out := keptHeaders(http.Header{
		strings.Repeat("N", 100): {"x"},
		"X-Long":                 {strings.Repeat("v", 1000)},
		"Set-Cookie":             {"sid=cookie-abcdef"},
		"X-Authorization":        {"auth-abcdef"},
		"Location":               {"https://other.example/sso/S3ssionTok3n?ticket=abcd1234"},
	}, identity)
	if _, ok := out[strings.Repeat("N", 100)]; ok || out["…"] == "" {
		t.Errorf("a 100-byte name kept, or not counted: %q", out)
	}
	if v := out["X-Long"]; len(v) > maxHeaderValue+len("…") || !strings.HasSuffix(v, "…") {
		t.Errorf("a 1,000-byte value kept as %d bytes", len(v))
	}
	for _, k := range []string{"Set-Cookie", "X-Authorization"} {
		if out[k] != redactedValue {
			t.Errorf("%s kept as %q", k, out[k])
		}
	}
	if v := out["Location"]; strings.Contains(v, "S3ssionTok3n") || strings.Contains(v, "abcd1234") || !strings.HasPrefix(v, "https://other.example/") {
		t.Errorf("a redirect elsewhere kept as %q", v)
	}
}
