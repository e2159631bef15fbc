package sengo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/cenkalti/backoff/v4"

	"github.com/sengo-relay/sengo-relay/verify"
)

// Client calls SenGo's API for one project. It is safe for concurrent use.
type Client struct {
	baseURL string
	apiKey  string
	token   string
	http    *http.Client
	// attempts bounds tries of idempotent calls on 429, 5xx and transport errors.
	attempts int
	initial  time.Duration
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// CallTimeout bounds each call of the default HTTP client, whatever its
// context allows: a check may not be given longer (intake.confirm_timeout).
const CallTimeout = 15 * time.Second

// WithHTTPClient replaces the HTTP client (default: CallTimeout).
func WithHTTPClient(h *http.Client) ClientOption { return func(c *Client) { c.http = h } }

// WithRetry sets how often idempotent calls are tried and the first backoff.
func WithRetry(attempts int, initial time.Duration) ClientOption {
	return func(c *Client) { c.attempts, c.initial = attempts, initial }
}

// NewClient returns a client for baseURL (SandboxBaseURL, ProductionBaseURL
// or a local sandbox's http://host:port/api) with the project's API key and
// token.
func NewClient(baseURL, apiKey, token string, opts ...ClientOption) *Client {
	c := &Client{
		baseURL: strings.TrimRight(baseURL, "/"), apiKey: apiKey, token: token,
		http: &http.Client{Timeout: CallTimeout}, attempts: 3, initial: 200 * time.Millisecond,
	}
	for _, o := range opts {
		o(c)
	}
	// A redirect is never followed: the request would carry X-Client-Key,
	// X-Client-Token and X-Signature to the Location's host (net/http
	// drops only Authorization and Cookie across hosts). It is answered
	// as an error (CodeRedirect). A caller's client is copied, not changed.
	h := *c.http
	h.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if h.Transport == nil {
		// Answers are bounded (8 MiB of body, read below); so are their
		// headers (Go's default allows 10 MiB).
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxResponseHeaderBytes = 64 << 10
		h.Transport = tr
	}
	c.http = &h
	return c
}

// envelope is SenGo's response envelope.
type envelope struct {
	ResponseCode    int             `json:"responseCode"`
	ResponseMessage string          `json:"responseMessage"`
	ResponseData    json.RawMessage `json:"responseData"`
}

// CreateRetail creates an Alfamart or Indomaret payment.
func (c *Client) CreateRetail(ctx context.Context, r RetailRequest) (Transaction, error) {
	return c.create(ctx, "/retail", r)
}

// CreateVirtualAccount creates a virtual account.
func (c *Client) CreateVirtualAccount(ctx context.Context, r VirtualAccountRequest) (Transaction, error) {
	return c.create(ctx, "/virtual-account", r)
}

// CreateEWallet creates an e-wallet payment.
func (c *Client) CreateEWallet(ctx context.Context, r EWalletRequest) (Transaction, error) {
	return c.create(ctx, "/e-wallet", r)
}

// CreateQRIS creates a QRIS payment.
func (c *Client) CreateQRIS(ctx context.Context, r QRISRequest) (Transaction, error) {
	return c.create(ctx, "/qris", r)
}

// Disburse pays out to a bank account.
func (c *Client) Disburse(ctx context.Context, r DisbursementRequest) (Transaction, error) {
	return c.create(ctx, "/disburse", r)
}

// Check returns SenGo's current view of transaction id (SenGo's id, not the
// merchantRef). With resend, SenGo also sends the callback again.
func (c *Client) Check(ctx context.Context, id string, resend bool) (Transaction, error) {
	return c.check(ctx, id, resend, c.attempts)
}

// check is Check with at most tries tries.
func (c *Client) check(ctx context.Context, id string, resend bool, tries int) (Transaction, error) {
	var raw json.RawMessage
	path := "/check/" + url.PathEscape(id) + "?resendCallback=" + strconv.FormatBool(resend)
	if err := c.callTries(ctx, http.MethodGet, path, nil, &raw, tries); err != nil {
		return Transaction{}, err
	}
	return parseObject(raw)
}

// ListTransactions returns one page of transactions (SenGo keeps 7 days).
func (c *Client) ListTransactions(ctx context.Context, q ListQuery) ([]Transaction, error) {
	v := url.Values{}
	v.Set("page", strconv.Itoa(max(q.Page, 1)))
	if q.Status != "" {
		v.Set("status", string(q.Status))
	}
	if q.Date != "" {
		v.Set("date", q.Date)
	}
	if q.Type != "" {
		v.Set("type", q.Type)
	}
	var raws []json.RawMessage
	if err := c.call(ctx, http.MethodGet, "/transactions?"+v.Encode(), nil, &raws); err != nil {
		return nil, err
	}
	out := make([]Transaction, 0, len(raws))
	var bad *UnreadableError
	for _, r := range raws {
		t, err := parseObject(r)
		if err != nil {
			if bad == nil {
				bad = &UnreadableError{First: err}
			}
			bad.Count++
			continue
		}
		out = append(out, t)
	}
	if bad != nil {
		return out, bad
	}
	return out, nil
}

// UnreadableError: Count transactions of a listed page did not parse;
// ListTransactions returns the page's others with it, so one transaction
// SenGo lists oddly does not hide the rest.
type UnreadableError struct {
	Count int
	First error // the first one's parse error
}

func (e *UnreadableError) Error() string {
	return fmt.Sprintf("%d listed transaction(s) could not be read, the first: %v", e.Count, e.First)
}

// Balance returns the project's balance.
func (c *Client) Balance(ctx context.Context) (Balance, error) {
	var b Balance
	return b, c.call(ctx, http.MethodGet, "/balance", nil, &b)
}

// CreateProject creates a project (status "Review" until SenGo approves it).
func (c *Client) CreateProject(ctx context.Context, r ProjectRequest) (Project, error) {
	var p Project
	return p, c.call(ctx, http.MethodPost, "/projects", r, &p)
}

func (c *Client) create(ctx context.Context, path string, body any) (Transaction, error) {
	var raw json.RawMessage
	if err := c.call(ctx, http.MethodPost, path, body, &raw); err != nil {
		return Transaction{}, err
	}
	return parseObject(raw)
}

// parseObject validates a transaction object from an API answer.
func parseObject(raw json.RawMessage) (Transaction, error) {
	t, err := ParseCallback(raw)
	if err != nil {
		return Transaction{}, fmt.Errorf("sengo: unexpected transaction object: %w", err)
	}
	return t, nil
}

// call signs and sends one request and decodes responseData into out.
// Only GETs are retried, with backoff, on 429, 5xx and transport errors: a
// POST that timed out may have created something.
func (c *Client) call(ctx context.Context, method, path string, body any, out any) error {
	return c.callTries(ctx, method, path, body, out, c.attempts)
}

// callTries is call with at most tries tries of a GET.
func (c *Client) callTries(ctx context.Context, method, path string, body any, out any, tries int) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = verify.PHPJSON(body); err != nil {
			return fmt.Errorf("sengo: encode request: %w", err)
		}
	}
	attempts := 1
	if method == http.MethodGet {
		attempts = max(tries, 1)
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = c.initial
	b.MaxElapsedTime = 0
	op := func() error {
		err := c.once(ctx, method, path, payload, out)
		var apiErr *APIError
		if errors.As(err, &apiErr) && !apiErr.retryable() {
			return backoff.Permanent(err)
		}
		return err
	}
	return backoff.Retry(op, backoff.WithContext(backoff.WithMaxRetries(b, uint64(attempts-1)), ctx))
}

func (c *Client) once(ctx context.Context, method, path string, payload []byte, out any) error {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, rd)
	if err != nil {
		return fmt.Errorf("sengo: %w", err)
	}
	req.Header.Set("X-Client-Key", c.apiKey)
	req.Header.Set("X-Client-Token", c.token)
	req.Header.Set("X-Signature", verify.SenGoSignature(c.apiKey, c.token, payload))
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// net/http errors repeat the URL only; credentials travel in headers.
		// Bounded as SenGo's own error text is: Go quotes what the other
		// end sent (a first line that is not HTTP, whole; a certificate's
		// names), and that end is whatever answers at base_url.
		return fmt.Errorf("sengo: %s %s: %w", method, pathOnly(path), c.bounded(unwrapURL(err)))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("sengo: read answer: %w", c.bounded(err))
	}
	if len(raw) > maxAnswer {
		return fmt.Errorf("sengo: %s %s: answer over %d MiB (HTTP %d), not read", method, pathOnly(path), maxAnswer>>20, resp.StatusCode)
	}
	var env envelope
	decodeErr := json.Unmarshal(raw, &env)
	if resp.StatusCode >= 300 || decodeErr == nil && env.ResponseCode >= 300 {
		e := apiError(resp.StatusCode, env)
		e.Message = c.plain(e.Message)
		return e
	}
	if decodeErr != nil {
		return fmt.Errorf("sengo: %s %s: answer is not SenGo's envelope: %w", method, pathOnly(path), c.bounded(decodeErr))
	}
	if err := json.Unmarshal(env.ResponseData, out); err != nil {
		return fmt.Errorf("sengo: %s %s: decode responseData: %w", method, pathOnly(path), c.bounded(err))
	}
	return nil
}

// maxAnswer bounds an answer of SenGo's API as read: a base_url host (a
// proxy, a misconfigured address) sending gigabytes held them in memory.
const maxAnswer = 8 << 20

var upperCode = regexp.MustCompile(`^[A-Z][A-Z_]{1,63}$`)

// bounded is err with its text as plain makes it: a decoding error
// quotes what it could not decode (a number of megabytes of digits).
// errors.Is and As still see err.
func (c *Client) bounded(err error) error { return boundedError{text: c.plain(err.Error()), err: err} }

type boundedError struct {
	text string
	err  error
}

func (e boundedError) Error() string { return e.text }
func (e boundedError) Unwrap() error { return e.err }

// maxErrorText bounds SenGo's error text as errors carry it.
const maxErrorText = 256

// plain is SenGo's error text as the relay's errors carry it (in logs, a
// quarantine's reason, a reconciliation's record): the client's own
// credentials replaced (a proxy may echo the request's headers), control
// characters as spaces, cut to maxErrorText bytes.
func (c *Client) plain(s string) string {
	for _, secret := range []string{c.token, c.apiKey} {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxErrorText {
		s = strings.ToValidUTF8(s[:maxErrorText], "") + "…"
	}
	return s
}

// apiError reads SenGo's error envelope: the code is responseMessage when
// it looks like one, else derived from the HTTP status.
func apiError(status int, env envelope) *APIError {
	if env.ResponseCode >= 300 {
		status = env.ResponseCode
	}
	e := &APIError{HTTPStatus: status, Message: env.ResponseMessage}
	if upperCode.MatchString(env.ResponseMessage) {
		e.Code = env.ResponseMessage
		var d struct{ Message string }
		if json.Unmarshal(env.ResponseData, &d) == nil {
			e.Message = d.Message
		}
	} else if status >= 300 && status < 400 {
		e.Code = CodeRedirect
	} else {
		e.Code, e.guessed = codeForStatus(status), true
	}
	return e
}

func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
