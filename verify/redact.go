package verify

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
)

// RedactURL is what may be shown of a URL that can hold its own secret (a
// webhook endpoint's, or one a consumer echoes): scheme, host (RedactHost)
// and the first path segment when it reads as a word. Credentials, the
// query, the fragment, the deeper path (where tokens live) and a first
// segment that could be a token are left out; a URL that does not parse
// shows nothing.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	host := RedactHost(u.Host)
	first, rest, _ := strings.Cut(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	switch {
	case first != "" && !plainSegment(first):
		// It may be the token itself (https://hooks.example/3f9aK2…).
		return u.Scheme + "://" + host + "/…"
	case rest != "":
		return u.Scheme + "://" + host + "/" + first + "/…"
	}
	out := u.String()
	if origin := u.Scheme + "://" + u.Host; strings.HasPrefix(out, origin) {
		return u.Scheme + "://" + host + out[len(origin):]
	}
	return u.Scheme + "://" + host + u.EscapedPath() // not reached for http(s) URLs
}

// RedactPath is what may be shown of a URL path that can hold a secret
// (a request for a slightly wrong callback URL: /relay/callbacks/sengo/
// main/<token>, //callbacks/…): its first segment when it reads as a word,
// and "…" for the rest.
func RedactPath(p string) string {
	first, _, more := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	switch {
	case !plainSegment(first):
		return "/…"
	case more:
		return "/" + first + "/…"
	}
	return "/" + first
}

// plainSegment reports a path segment that reads as a word ("hook",
// "webhooks", "sengo-callback"), not as a token: at most 16 lowercase
// letters, hyphens, underscores and dots (a random token of letters and
// digits is almost never all lowercase letters; one of 20 with no digit
// is, about one in 30).
func plainSegment(s string) bool {
	if len(s) > 16 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// URLSecrets are the parts of raw that RedactURL hides and that read as
// secrets rather than words, for scrubbing text that may echo the URL (a
// consumer's "Cannot POST /hooks/<token>"): its user and password, its
// query (whole, and each value), its fragment, every path segment that
// is not a plainSegment word, and every host label RedactHost hides.
// Each in its escaped and unescaped forms; none shorter than 4 bytes
// (replacing "1" or "ab" everywhere would garble the text and hide
// nothing), longest first.
func URLSecrets(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	add := func(vs ...string) {
		for _, v := range vs {
			if len(v) >= 4 {
				seen[v] = true
			}
		}
	}
	if u.User != nil {
		p, _ := u.User.Password()
		// Go's client sends them as Basic authentication too: an endpoint
		// echoing its request's headers shows them so.
		add(u.User.Username(), p, u.User.String(), base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+p)))
	}
	add(u.RawQuery, u.Fragment, u.RawFragment)
	if q, err := url.ParseQuery(u.RawQuery); err == nil {
		for _, vs := range q {
			add(vs...)
		}
	}
	for _, seg := range strings.Split(strings.Trim(u.EscapedPath(), "/"), "/") {
		if !plainSegment(seg) {
			plain, _ := url.PathUnescape(seg)
			add(seg, plain)
		}
	}
	if _, err := netip.ParseAddr(u.Hostname()); err != nil { // an address hides nothing
		for _, l := range strings.Split(u.Hostname(), ".") {
			if !plainSegment(strings.ToLower(l)) || strings.Contains(l, "_") {
				add(l)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) || len(out[i]) == len(out[j]) && out[i] < out[j] })
	return out
}

// Scrub replaces every occurrence of each secret in s with "…" (secrets
// longest first, as URLSecrets returns them).
func Scrub(s string, secrets []string) string {
	for _, v := range secrets {
		if v != "" && strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, "…")
		}
	}
	return s
}

// RedactHost is what may be shown of a URL's host (with or without its
// port): an IP address whole, and of a name each label that reads as a
// word (plainSegment, case aside); any other label shows as "…". A
// capability URL can keep its token in the name
// (https://eo3h0p8w4v9h6b5.m.pipedream.net), and the transport's errors
// repeat it ("lookup eo3h…: no such host").
func RedactHost(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, ""
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return hostport
	}
	labels := strings.Split(host, ".")
	for i, l := range labels {
		if !plainSegment(strings.ToLower(l)) || strings.ContainsAny(l, "_") {
			labels[i] = "…"
		}
	}
	host = strings.Join(labels, ".")
	if port != "" {
		return net.JoinHostPort(host, port)
	}
	return host
}

// RedactServerURL is what may be shown of a server's URL (nats.url, an
// API's base URL): all of it but its credentials. A password shows as
// xxxxx, and so does a user without one, which NATS takes as a token
// (nats://TOKEN@host). A URL without its scheme is read as nats.go reads
// it, nats://…: parsed as it is, its user (relay:PASSWORD@host) was taken
// for the scheme and nothing was hidden. One with a fragment (a # in a
// password splits it there) or a query is not shown.
func RedactServerURL(raw string) string {
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Fragment != "" || u.RawFragment != "" || strings.Contains(raw, "#") || u.RawQuery != "" || CredentialsInPath(u) {
		return "(unparsable URL)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); !ok {
			u.User = url.User("xxxxx")
		}
	}
	return u.Redacted()
}

// CredentialsInPath reports whether u's path holds an '@': credentials
// with a '/' in them (nats://TOK/EN@host, https://u:/pw@host), which put
// their end and the host in the path. Such a URL parses, with no
// credentials to hide, and was shown whole.
func CredentialsInPath(u *url.URL) bool {
	return strings.Contains(u.Path, "@") || strings.Contains(u.RawPath, "@")
}

// RedactServerURLs is RedactServerURL of each URL in a comma-separated
// list (nats.url of a cluster).
func RedactServerURLs(list string) string {
	urls := strings.Split(list, ",")
	for i, u := range urls {
		urls[i] = RedactServerURL(strings.TrimSpace(u))
	}
	return strings.Join(urls, ",")
}

// LoopbackNames are the names of this machine a Host header may carry.
var LoopbackNames = []string{"localhost", "127.0.0.1", "::1"}

// HostIn reports whether a Host header (host or host:port, an IPv6
// address in brackets) names one of names, case aside.
func HostIn(hostHeader string, names []string) bool {
	h := hostHeader
	if name, _, err := net.SplitHostPort(h); err == nil {
		h = name
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	for _, n := range names {
		if strings.EqualFold(h, n) {
			return true
		}
	}
	return false
}

// FromAnotherSite reports whether the browser that sent r says it comes
// from another site: an Origin other than r's own host ("null" included),
// or a Sec-Fetch-Site of cross-site or same-site (a sibling subdomain is
// another origin too). A client that sends neither is no browser a page
// elsewhere can drive, and passes.
func FromAnotherSite(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || u.Host != r.Host {
			return true
		}
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return true
	}
	return false
}

// Redacted stands in for a secret taken out of stored bytes (Redactor).
const Redacted = "[redacted]"

// Redactor takes one secret out of stored bytes: its forms are worked
// out once (NewRedactor), for bytes on the callback path.
type Redactor struct{ forms [][]byte }

// NewRedactor is the Redactor of secret: it finds the secret as it is,
// query-escaped, and with every character but letters, digits, - . _
// escaped, each escape in upper and lower case hex (the forms a URL
// echoed in a JSON object carries a callback_token of letters, digits
// and - . _ ~ + = in; config.RedactableToken). An empty secret takes out
// nothing.
func NewRedactor(secret string) Redactor {
	if secret == "" {
		return Redactor{}
	}
	var r Redactor
	seen := map[string]bool{}
	for _, f := range []string{secret, url.QueryEscape(secret), lowerEscapes(url.QueryEscape(secret)), escapeAll(secret), lowerEscapes(escapeAll(secret))} {
		if !seen[f] {
			seen[f] = true
			r.forms = append(r.forms, []byte(f))
		}
	}
	return r
}

// Redact returns b with every form of the secret replaced by Redacted;
// b itself when it holds none.
func (r Redactor) Redact(b []byte) []byte {
	for _, f := range r.forms {
		if bytes.Contains(b, f) {
			b = bytes.ReplaceAll(b, f, []byte(Redacted))
		}
	}
	return b
}

// RedactIn is NewRedactor(secret).Redact(b), for bytes off the hot path.
func RedactIn(b []byte, secret string) []byte { return NewRedactor(secret).Redact(b) }

// escapeAll is s with every byte but letters, digits, '-', '.' and '_'
// escaped as %XX: how PHP's urlencode and Java's URLEncoder write '~'
// (%7E), which url.QueryEscape leaves.
func escapeAll(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// lowerEscapes is q with the hex digits of its %XX escapes in lower case.
func lowerEscapes(q string) string {
	b := []byte(q)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerHex(b[i+1]), lowerHex(b[i+2])
		}
	}
	return string(b)
}

func lowerHex(c byte) byte {
	if 'A' <= c && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}
