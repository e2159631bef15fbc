package dispatcher

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sengo-relay/sengo-relay/internal/tracing"
	"github.com/sengo-relay/sengo-relay/verify"
)

// maxExcerpt is how much of a response body is kept for diagnostics.
const maxExcerpt = 1024

// excerptMargin is how much more of a body is read than kept, so that a
// secret echoed across the excerpt's end is scrubbed whole (a longer one
// is dropped from the end: excerptOf).
const excerptMargin = 512

// answerBodyWait is how long the body of an answer is read once its
// status is in: the status decides the attempt, the body is only kept in
// part, and a consumer sending it a byte at a time must not hold the
// worker until the endpoint's timeout.
const answerBodyWait = time.Second

// attemptResult is what one POST to an endpoint produced.
type attemptResult struct {
	Status     int           // HTTP status; 0 when no response arrived
	Err        error         // transport error (timeout, refused, DNS …)
	Excerpt    string        // start of the response body
	RetryAfter time.Duration // a Retry-After on 429/503, clamped
	HasRetry   bool
	Abort      bool // 410 Gone or webhook-delivery: abort-message
	Duration   time.Duration
	// Sent and Received are the request headers sent (signature and
	// configured values left out) and the response headers kept, when the
	// delivery asked for them (delivery.record).
	Sent, Received map[string]string
}

func (r attemptResult) ok() bool { return r.Err == nil && r.Status >= 200 && r.Status < 300 }

// describe is a short text for logs and dead letters.
func (r attemptResult) describe() string {
	if r.Err != nil {
		return r.Err.Error()
	}
	return fmt.Sprintf("HTTP %d", r.Status)
}

// maxResponseHeaderBytes bounds an endpoint's response headers (Go's
// default is 10 MiB, which a hostile endpoint turns into a header map of
// about 150 MiB per attempt, on every worker at once).
const maxResponseHeaderBytes = 64 << 10

// newClient returns the HTTP client of one endpoint: no redirects (a 3xx
// is a failure), bounded response headers, bounded connection reuse.
func newClient(concurrency int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxResponseHeaderBytes = maxResponseHeaderBytes
	tr.MaxIdleConnsPerHost = concurrency
	tr.ResponseHeaderTimeout = 0 // the per-attempt context bounds everything
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// delivery is one POST to make.
type delivery struct {
	userAgent string
	eventID   string
	seq       uint64 // in SENGO_EVENTS; 0 if unknown
	body      []byte // the event exactly as stored
	replay    bool
	now       time.Time
	record    bool // fill attemptResult.Sent and Received
	// hide: the endpoint's secrets (endpointSecrets), scrubbed from what
	// is kept of the answer.
	hide []string
}

// post sends one signed delivery.
func post(ctx context.Context, client *http.Client, ep Endpoint, d delivery) attemptResult {
	ctx, cancel := context.WithTimeout(ctx, ep.Timeout)
	defer cancel()
	ctx, cutBody := context.WithCancel(ctx) // ends the body's read (answerBodyWait)
	defer cutBody()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(d.body))
	if err != nil { // its text repeats the URL; configuration checked it parses
		return attemptResult{Err: errors.New("the endpoint's URL does not parse")}
	}
	for k, v := range ep.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.userAgent)
	req.Header.Set(verify.HeaderWebhookID, d.eventID)
	req.Header.Set(verify.HeaderWebhookTimestamp, strconv.FormatInt(d.now.Unix(), 10))
	sig := verify.WebhookSignature(ep.Keys, d.eventID, d.now, d.body)
	req.Header.Set(verify.HeaderWebhookSignature, sig)
	if d.seq > 0 {
		req.Header.Set("sengo-event-sequence", strconv.FormatUint(d.seq, 10))
	}
	if d.replay {
		req.Header.Set("webhook-replay", "true")
	}
	tracing.InjectHTTP(ctx, req.Header) // W3C traceparent: the consumer's spans join the callback's trace
	var sent map[string]string
	if d.record {
		sent = sentHeaders(req.Header, ep)
	}
	// A consumer may echo the endpoint's URL ("Cannot POST /hooks/<token>",
	// a Link header, a TCP echo service's malformed status line that Go's
	// error repeats), a configured header's value or the signature it got
	// ("bad signature, got v1,…"): what the relay hides of them everywhere
	// else is hidden in what it keeps of the answer.
	secrets := append(signatures(sig), d.hide...)
	slices.SortStableFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	scrub := func(s string) string { return verify.Scrub(s, secrets) }
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		// Kept like an excerpt: scrubbed and bounded (a status line is
		// repeated whole, however long).
		text := excerptOf([]byte(transportError(err, req.URL.Hostname()).Error()), true, scrub, secrets)
		return attemptResult{Err: errors.New(strings.ToValidUTF8(text, "?")), Duration: time.Since(start), Sent: sent}
	}
	defer resp.Body.Close()
	defer time.AfterFunc(answerBodyWait, cutBody).Stop()
	// Read past the excerpt's end, so that a secret it would cut is
	// scrubbed whole.
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxExcerpt+excerptMargin))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	complete := err == nil && len(body) < maxExcerpt+excerptMargin
	r := attemptResult{Status: resp.StatusCode, Excerpt: excerptOf(body, complete, scrub, secrets), Duration: time.Since(start), Sent: sent}
	if d.record {
		r.Received = keptHeaders(resp.Header, scrub)
	}
	r.Abort = resp.StatusCode == http.StatusGone || strings.EqualFold(resp.Header.Get("webhook-delivery"), "abort-message")
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		r.RetryAfter, r.HasRetry = retryAfter(resp.Header, d.now, ep.RetryAfterMax)
	}
	return r
}

// endpointSecrets are the parts of ep's URL that read as secrets
// (verify.URLSecrets), its signing secrets (whsec_<base64> and the base64
// alone: a consumer's debug page "expected whsec_…"), and the values of its
// configured headers, each whole and each word after its first ("Bearer
// <token>": a consumer answers "invalid token <token>"), every one also
// JSON- and URL-escaped as a consumer may echo it, longest first.
func endpointSecrets(ep Endpoint) []string {
	plain := verify.URLSecrets(ep.URL)
	for _, k := range ep.Keys {
		b64 := base64.StdEncoding.EncodeToString(k)
		plain = append(plain, verify.SecretPrefix+b64, b64)
	}
	for _, v := range ep.Headers {
		plain = append(plain, v)
		if f := strings.Fields(v); len(f) > 1 {
			plain = append(plain, f[1:]...)
		}
	}
	var out []string
	for _, v := range plain {
		for _, e := range []string{v, strings.ReplaceAll(v, "/", `\/`), url.QueryEscape(v), url.PathEscape(v)} {
			if len(e) >= 4 && !slices.Contains(out, e) {
				out = append(out, e)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// excerptOf is what is kept of an answer's body as read (complete: to its
// end): scrubbed, then cut to maxExcerpt. When it is cut, or the read
// stopped before the body's end (its limit, answerBodyWait), its end keeps
// no start of a secret (bytes that begin one are dropped: the rest of it
// was not there to be scrubbed) and no part of a character.
func excerptOf(body []byte, complete bool, scrub func(string) string, secrets []string) string {
	s := scrub(string(body))
	if len(s) > maxExcerpt {
		s, complete = s[:maxExcerpt], false
	}
	if complete {
		return s
	}
	return string(wholeRunes([]byte(withoutSecretStart(s, secrets))))
}

// withoutSecretStart is s without the longest end of it that begins one
// of secrets.
func withoutSecretStart(s string, secrets []string) string {
	cut := 0
	for _, v := range secrets {
		for k := min(len(v)-1, len(s)); k > cut; k-- {
			if strings.HasSuffix(s, v[:k]) {
				cut = k
				break
			}
		}
	}
	return s[:len(s)-cut]
}

// wholeRunes is b without the start of a character cut at its end (a
// body's first maxExcerpt bytes may end inside one): kept, it would be
// stored as U+FFFD.
func wholeRunes(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			break
		}
	}
	return b
}

// signatures are the signatures of a webhook-signature value ("v1,<base64>
// v1,<base64>"), without their version, as a consumer echoing one may
// write them: as sent, JSON-escaped ("\/", as PHP's json_encode writes a
// "/") and URL-escaped.
func signatures(header string) []string {
	var out []string
	for _, s := range strings.Fields(header) {
		_, b64, _ := strings.Cut(s, ",")
		if b64 == "" {
			continue
		}
		for _, v := range []string{b64, strings.ReplaceAll(b64, "/", `\/`), url.QueryEscape(b64), url.PathEscape(b64)} {
			if !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}

// transportError shortens net/http's errors, which repeat the URL (and a
// URL may carry credentials), to their cause, and hides in the cause what
// RedactHost hides of host: a lookup or a certificate error names the host
// ("lookup eo3h0p8w4v9h6b5.m.pipedream.net: no such host"), which can be
// the endpoint's token.
func transportError(err error, host string) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return errors.New("timeout")
	case errors.Is(err, context.Canceled):
		return errors.New("canceled")
	}
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			err = inner
		}
	}
	if shown := verify.RedactHost(host); host != "" && shown != host && strings.Contains(err.Error(), host) {
		return errors.New(strings.ReplaceAll(err.Error(), host, shown))
	}
	return err
}
