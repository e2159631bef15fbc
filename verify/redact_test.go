package verify

import (
	"slices"
	"strings"
	"testing"
)

// A URL that is its own credential must not show its token: deeper path
// segments were always dropped, but a token that is the only segment
// (https://hooks.example/3f9aK2…) was shown whole.
func TestRedactURLHidesTokenPaths(t *testing.T) {
	for raw, want := range map[string]string{
		"https://hooks.example/AbC123secretTOKENxyz":                 "https://hooks.example/…",
		"https://hooks.example/AbC123secretTOKENxyz/":                "https://hooks.example/…",
		"https://hooks.example/3f9a2b7c-1d2e-4f5a-8b9c-0d1e2f3a4b5c": "https://hooks.example/…",
		"https://hooks.example/T00/B00/secret":                       "https://hooks.example/…",
		"https://hooks.example/services/T00/B00/secret":              "https://hooks.example/services/…",
		"https://user:pw@orders.example/hook?key=secret#frag":        "https://orders.example/hook",
		"https://orders.example/hook/":                               "https://orders.example/hook/",
		"https://orders.example/webhooks/sengo":                      "https://orders.example/webhooks/…",
		"http://127.0.0.1:9000":                                      "http://127.0.0.1:9000",
		"http://127.0.0.1:9000/":                                     "http://127.0.0.1:9000/",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

// A capability URL can keep its token in the host name
// (https://eo3h0p8w4v9h6b5.m.pipedream.net): a label that does not read
// as a word is hidden, as a path segment is; addresses and names of words
// are shown whole, with their port.
func TestRedactURLHidesTokenHosts(t *testing.T) {
	for raw, want := range map[string]string{
		"https://eo3h0p8w4v9h6b5.m.pipedream.net":            "https://….m.pipedream.net",
		"https://eo3h0p8w4v9h6b5.m.pipedream.net/hook?k=v":   "https://….m.pipedream.net/hook",
		"https://abcdefghijklmnopqrstu.example/hook":         "https://….example/hook",
		"https://orders.toko-maju.co.id/hook":                "https://orders.toko-maju.co.id/hook",
		"https://Orders.Example:8443/hook":                   "https://Orders.Example:8443/hook",
		"http://localhost:8080/hook":                         "http://localhost:8080/hook",
		"http://127.0.0.1:9000/hook":                         "http://127.0.0.1:9000/hook",
		"http://[::1]:9000/hook":                             "http://[::1]:9000/hook",
		"https://a1b2c3d4.example:8443/AbC123secretTOKENxyz": "https://….example:8443/…",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
	for host, want := range map[string]string{
		"eo3h0p8w4v9h6b5.m.pipedream.net": "….m.pipedream.net",
		"orders.example:443":              "orders.example:443",
		"[::1]:9000":                      "[::1]:9000",
		"10.0.0.7":                        "10.0.0.7",
	} {
		if got := RedactHost(host); got != want {
			t.Errorf("RedactHost(%q) = %q, want %q", host, got, want)
		}
	}
}

// URLSecrets names what a consumer's echo of an endpoint URL must not
// keep: credentials, the query and its values, token-like path segments
// and host labels; never a word, an IP address or a value too short to
// replace without garbling the text.
func TestURLSecrets(t *testing.T) {
	got := URLSecrets("https://user:pa55word@eo3h0p8w4v9h6b5.m.pipedream.net/hooks/sengo/tok-9f8e7d%2Fx?key=s3cr3t&n=1#frag-ment")
	for _, want := range []string{"pa55word", "user:pa55word", "dXNlcjpwYTU1d29yZA==" /* Basic, as Go's client sends it */, "eo3h0p8w4v9h6b5", "tok-9f8e7d%2Fx", "tok-9f8e7d/x", "key=s3cr3t&n=1", "s3cr3t", "frag-ment", "user"} {
		if !slices.Contains(got, want) {
			t.Errorf("URLSecrets lacks %q: %q", want, got)
		}
	}
	for _, not := range []string{"hooks", "sengo", "pipedream", "net", "1", "m"} {
		if slices.Contains(got, not) {
			t.Errorf("URLSecrets holds the word %q: %q", not, got)
		}
	}
	for i := 1; i < len(got); i++ {
		if len(got[i]) > len(got[i-1]) {
			t.Fatalf("not longest first: %q", got)
		}
	}
	if got := URLSecrets("http://127.0.0.1:8080/hook"); len(got) != 0 {
		t.Errorf("an IP and a word hide nothing: %q", got)
	}
	// A host label with an underscore is no plain word (RedactHost hides
	// it): an endpoint echoing it in its error kept it in the dead letter.
	if got := URLSecrets("https://ab_tok.example/"); !slices.Contains(got, "ab_tok") {
		t.Errorf("URLSecrets of a host label with an underscore: %q", got)
	}
	if got := Scrub("Cannot POST /hooks/sengo/tok-9f8e7d%2Fx?key=s3cr3t&n=1", URLSecrets("https://h.example/hooks/sengo/tok-9f8e7d%2Fx?key=s3cr3t&n=1")); got != "Cannot POST /hooks/sengo/…?…" {
		t.Errorf("Scrub: %q", got)
	}
}

// What RedactServerURL(s) show of a server's URL keeps no credential in
// any form nats.go accepts: a password, a token written as the user, a URL
// without its scheme (nats.go and the configuration read it as nats://; a
// plain url.Parse read the user as the scheme and hid nothing), and a
// member of a cluster's list.
func TestRedactServerURLHidesCredentials(t *testing.T) {
	for raw, want := range map[string]string{
		"nats://relay:S3cretPass@nats1:4222":           "nats://relay:xxxxx@nats1:4222",
		"nats://S3cretToken@nats1:4222":                "nats://xxxxx@nats1:4222",
		"relay:S3cretPass@nats1:4222":                  "nats://relay:xxxxx@nats1:4222",
		"S3cretToken@nats1:4222":                       "nats://xxxxx@nats1:4222",
		"nats1:4222":                                   "nats://nats1:4222",
		"nats://S3cret#Token@nats1:4222":               "(unparsable URL)",
		"tls://relay:S3cretPass@nats1:4222":            "tls://relay:xxxxx@nats1:4222",
		"https://api.sengo.example/v1":                 "https://api.sengo.example/v1",
		"https://user:S3cretPass@api.sengo.example/v1": "https://user:xxxxx@api.sengo.example/v1",
		"nats://n1:4222, relay:S3cretPass@n2:4222":     "nats://n1:4222,nats://relay:xxxxx@n2:4222",
		"nats://n1:4222,nats://S3cretToken@n2:4222":    "nats://n1:4222,nats://xxxxx@n2:4222",
		// A query may carry a key (an API gateway's ?key=): not shown.
		"https://api.sengo.example/v1?key=S3cret": "(unparsable URL)",
	} {
		got := RedactServerURLs(raw)
		if got != want {
			t.Errorf("RedactServerURLs(%q) = %q, want %q", raw, got, want)
		}
		if strings.Contains(got, "S3cret") {
			t.Errorf("RedactServerURLs(%q) shows a credential: %q", raw, got)
		}
	}
}

// A secret is taken out of stored bytes as it is and query-escaped (upper
// and lower case hex), and bytes without it are returned as they are.
func TestRedactIn(t *testing.T) {
	const tok = "abc+def=0123456789~x"
	for in, want := range map[string]string{
		`{"callback":"https:\/\/relay\/callbacks\/sengo\/main\/abc+def=0123456789~x"}`:                                                                `{"callback":"https:\/\/relay\/callbacks\/sengo\/main\/[redacted]"}`,
		`{"callback":"https://relay/cb?t=abc%2Bdef%3D0123456789~x"}`:                                                                                  `{"callback":"https://relay/cb?t=[redacted]"}`,
		`{"callback":"https://relay/cb?t=abc%2bdef%3d0123456789~x&u=abc+def=0123456789~x&v=abc%2Bdef%3D0123456789%7Ex&w=abc%2bdef%3d0123456789%7ex"}`: `{"callback":"https://relay/cb?t=[redacted]&u=[redacted]&v=[redacted]&w=[redacted]"}`,
		`{"callback":"https://relay/cb"}`: `{"callback":"https://relay/cb"}`,
	} {
		if got := string(RedactIn([]byte(in), tok)); got != want {
			t.Errorf("RedactIn(%s) = %s, want %s", in, got, want)
		}
	}
	// A secret that ends in a character escaped in lowercase (base64's
	// padding, '+'): its last escape is matched too.
	if got := string(RedactIn([]byte(`{"callback":"https://relay/cb?t=abc%2bdef%3d0123456789%3d"}`), "abc+def=0123456789=")); got != `{"callback":"https://relay/cb?t=[redacted]"}` {
		t.Errorf("a secret ending in an escape: %s", got)
	}
	if got := string(RedactIn([]byte(`{"a":"b"}`), "")); got != `{"a":"b"}` {
		t.Errorf("an empty secret changed %s", got)
	}
}
