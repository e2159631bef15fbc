package verify

import (
	"net/url"
	"strings"
)

// RedactURL is what may be shown of a URL that can hold its own secret (a
// webhook endpoint's, or one a consumer echoes): scheme, host and the first
// path segment when it reads as a word. Credentials, the query, the
// fragment, the deeper path (where tokens live) and a first segment that
// could be a token are left out; a URL that does not parse shows nothing.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	first, rest, _ := strings.Cut(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
	switch {
	case first != "" && !plainSegment(first):
		// It may be the token itself (https://hooks.example/3f9aK2…).
		return u.Scheme + "://" + u.Host + "/…"
	case rest != "":
		return u.Scheme + "://" + u.Host + "/" + first + "/…"
	}
	return u.String()
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

// RedactServerURL is what may be shown of a server's URL (nats.url, an
// API's base URL): all of it but its credentials. A password shows as
// xxxxx, and so does a user without one, which NATS takes as a token
// (nats://TOKEN@host).
func RedactServerURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); !ok {
			u.User = url.User("xxxxx")
		}
	}
	return u.Redacted()
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
