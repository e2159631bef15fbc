package receiver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/tracing"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/verify"
)

// SourceCallback marks notifications that arrived as SenGo callbacks.
const SourceCallback = "callback"

type callbackHandler struct {
	cfg      Config
	projects map[string]*Project
	// tokens take each project's callback_token out of its bodies.
	tokens map[string]verify.Redactor
	now    func() time.Time
	// slots caps callbacks in flight (nil: no cap). A full cap rejects at
	// once, so a flood never queues up memory or NATS requests.
	slots chan struct{}
}

func newCallbackHandler(cfg Config) *callbackHandler {
	h := &callbackHandler{cfg: cfg, projects: make(map[string]*Project), tokens: make(map[string]verify.Redactor), now: cfg.Now}
	for i := range cfg.Projects {
		h.projects[cfg.Projects[i].Name] = &cfg.Projects[i]
		h.tokens[cfg.Projects[i].Name] = verify.NewRedactor(cfg.Projects[i].CallbackToken)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if cfg.MaxInFlight > 0 {
		h.slots = make(chan struct{}, cfg.MaxInFlight)
	}
	return h
}

// accepted is the answer to a stored callback.
type accepted struct {
	Status    string `json:"status"` // "accepted" or "duplicate"
	ID        string `json:"id"`     // the notification id (project, transaction, status)
	Duplicate bool   `json:"duplicate"`
}

// serve handles POST /callbacks/sengo/:project[/:token]. It answers 200
// only after JetStream acknowledged the store, and counts every outcome.
func (h *callbackHandler) serve(c echo.Context) error {
	project := c.Param("project")
	p := h.projects[project] // nil: unknown, refused by gate
	label := project
	if p == nil {
		label = "unknown" // bounded label values, whatever callers send
	}
	var res accepted
	ip := c.RealIP()
	// The checks of the request's headers come first, outside the slots:
	// with every slot taken, a wrong content type or a declared size over
	// the limit still gets its own answer, not overloaded (which tells
	// SenGo to send the same request again).
	err := headerChecks(c, h.cfg.MaxBodyBytes)
	refusal := h.gate(c, p, ip)
	switch {
	case err != nil:
	case refusal != nil:
		// Refused by a check that needs no body, it is answered outside
		// the slots, which a few slow requests from anyone could otherwise
		// hold for read_timeout each; its body is read into nothing.
		h.cfg.Metrics.RefusedInFlight.Inc()
		res, err = h.handle(c, project, p, ip, refusal)
		h.cfg.Metrics.RefusedInFlight.Dec()
	case h.acquire():
		defer h.release()
		res, err = h.handle(c, project, p, ip, nil)
	default:
		err = ErrOverloaded
	}
	outcome := res.Status
	if err != nil {
		_, outcome = classify(err)
	}
	h.cfg.Metrics.Callbacks.WithLabelValues(label, outcome).Inc()
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}

func (h *callbackHandler) acquire() bool {
	if h.slots != nil {
		select {
		case h.slots <- struct{}{}:
		default:
			return false
		}
	}
	h.cfg.Metrics.InFlight.Inc()
	return true
}

func (h *callbackHandler) release() {
	h.cfg.Metrics.InFlight.Dec()
	if h.slots != nil {
		<-h.slots
	}
}

// headerChecks are the documented checks that read only the request's
// headers: its content type and its declared size. (The route comes
// first, in the router: a segment after the token is not_found.)
func headerChecks(c echo.Context, maxBody int64) error {
	if !isJSON(c.Request().Header.Get(echo.HeaderContentType)) {
		return ErrUnsupportedMediaType
	}
	if c.Request().ContentLength > maxBody {
		return ErrBodyTooLarge
	}
	return nil
}

// gate runs the checks that need no body, in their documented order: a
// configured project, its callback token, an allowed source IP. It
// returns the first one's error, or nil.
func (h *callbackHandler) gate(c echo.Context, p *Project, ip string) error {
	if p == nil {
		return ErrUnknownProject
	}
	token := c.Param("token")
	if p.CallbackToken != "" && !verify.Token(p.CallbackToken, token) || p.CallbackToken == "" && token != "" {
		return ErrUnauthorized
	}
	if !p.AllowedIPs.Allows(ip) {
		return ErrForbidden
	}
	return nil
}

// handle runs the checks in the documented order after headerChecks':
// the body's size, then gate's (refusal, already known), signature, body;
// then stores. A refused callback's body is read only for its size and
// completeness.
func (h *callbackHandler) handle(c echo.Context, project string, p *Project, ip string, refusal error) (accepted, error) {
	req := c.Request()
	body, err := h.readBody(c, refusal != nil)
	if err != nil {
		return accepted{}, err
	}
	if refusal != nil {
		return accepted{}, refusal
	}
	signature := SignatureNotChecked
	if sig := req.Header.Get("X-Signature"); p.Signature == SignatureRequired || p.Signature == SignatureOptional && sig != "" {
		if err := verify.CheckSenGoSignature(p.APIKey, p.Token, body, sig); err != nil {
			return accepted{}, err
		}
		signature = SignatureVerified
	} else if p.Signature == SignatureOptional {
		signature = SignatureAbsent
	}
	// SenGo echoes the callback URL it was given (additionalInfo.callback),
	// the path token in it: the body is kept in the inbox, the event and
	// its copies to every endpoint and subscriber, which must not learn
	// the token. Taken out after the signature, which covers the bytes
	// SenGo sent.
	body = h.tokens[project].Redact(body)
	tx, err := sengo.ParseCallback(body)
	if err != nil {
		return accepted{}, err
	}
	return h.store(req.Context(), receipt{requestID: c.Response().Header().Get(echo.HeaderXRequestID), sourceIP: boundedIP(ip), signature: signature}, project, tx, body)
}

// receipt is what the inbox message records of how a callback arrived.
type receipt struct{ requestID, sourceIP, signature string }

// boundedIP is ip in canonical form, or "unparsed" (the extractor may
// return what a header said).
func boundedIP(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "unparsed"
	}
	return a.String()
}

// readBody reads at most MaxBodyBytes (headerChecks refused a larger
// declared one).
func (h *callbackHandler) readBody(c echo.Context, discard bool) ([]byte, error) {
	req := c.Request() // a declared size over the limit was refused by headerChecks
	var body []byte
	var err error
	if discard { // a refused caller's: its size and completeness are checked, its bytes kept nowhere
		_, err = io.Copy(io.Discard, http.MaxBytesReader(c.Response(), req.Body, h.cfg.MaxBodyBytes))
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, h.cfg.MaxBodyBytes))
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, ErrBodyTooLarge
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrBodyUnreadable, err)
	}
	return body, nil
}

// store publishes the raw notification to SENGO_INBOX and waits for the
// PubAck and, with group commit, the fsync after it, at most
// PublishTimeout in all. The Nats-Msg-Id makes a byte-identical
// repeat a duplicate that JetStream drops (see inboxMsgID).
func (h *callbackHandler) store(ctx context.Context, rc receipt, project string, tx sengo.Transaction, body []byte) (accepted, error) {
	id := event.ID(project, tx.ID, tx.Status)
	msg := &nats.Msg{
		Subject: event.InboxTxSubject(project, tx.ID),
		Data:    body,
		Header: nats.Header{
			event.HeaderProject:    []string{project},
			event.HeaderReceivedAt: []string{h.now().UTC().Format(time.RFC3339Nano)},
			event.HeaderSource:     []string{SourceCallback},
			event.HeaderRequestID:  []string{rc.requestID},
			event.HeaderSourceIP:   []string{rc.sourceIP},
			event.HeaderSignature:  []string{rc.signature},
		},
	}
	if h.cfg.Accepting != nil {
		if err := h.cfg.Accepting(); err != nil {
			return accepted{}, fmt.Errorf("%w: %v", ErrStoreUnavailable, err)
		}
	}
	if nc := h.cfg.JetStream.Conn(); nc != nil && nc.Status() != nats.CONNECTED {
		// Known down: answer at once instead of holding the request (and a
		// max_in_flight slot) for the whole publish timeout.
		return accepted{}, fmt.Errorf("%w: nats %s", ErrStoreUnavailable, nc.Status())
	}
	tracing.Inject(ctx, msg.Header) // the callback's trace goes on in intake
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	// A verified callback is never a duplicate of an unsigned copy of its
	// bytes: posted first by someone without the key (a final body is
	// predictable), that copy made SenGo's own one a dropped duplicate.
	source := SourceCallback
	if rc.signature == SignatureVerified {
		source += "-" + SignatureVerified
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(inboxMsgID(id, source, body)), jetstream.WithExpectStream(event.StreamInbox)}
	var ack *jetstream.PubAck
	var err error
	if tx.Status.Final() {
		// Stored on condition that the inbox holds no earlier notification
		// of the transaction (the usual final status: the first SenGo sends
		// of it), which the stored message then says: intake skips its
		// receipt-order read. One earlier (a pending, a retry): stored
		// again without the condition, and intake reads.
		ack, err = h.cfg.JetStream.PublishMsg(ctx, msg, append(opts, jetstream.WithExpectLastSequencePerSubject(0))...)
		if wrongLastSequence(err) {
			msg.Header.Del(jetstream.ExpectedLastSubjSeqHeader)
			ack, err = h.cfg.JetStream.PublishMsg(ctx, msg, opts...)
		}
	} else {
		ack, err = h.cfg.JetStream.PublishMsg(ctx, msg, opts...)
	}
	if err != nil {
		return accepted{}, fmt.Errorf("%w: publish %s: %v", ErrStoreUnavailable, id, err)
	}
	// Stored in the page cache; the 200 waits for the fsync that covers it
	// (shared with every callback stored meanwhile). A duplicate waits too:
	// the copy it repeats may still be waiting for its own.
	if h.cfg.Durable != nil {
		if err := h.cfg.Durable.Sync(ctx); err != nil {
			return accepted{}, fmt.Errorf("%w: %s: %v", ErrStoreUnavailable, id, err)
		}
	}
	h.cfg.Metrics.PublishSeconds.Observe(time.Since(start).Seconds())
	if ack.Duplicate {
		return accepted{Status: "duplicate", ID: id, Duplicate: true}, nil
	}
	return accepted{Status: "accepted", ID: id}, nil
}

// firstOfTransaction reports whether an inbox message was stored on
// condition that the inbox held no earlier notification of its
// transaction (the server checked it; see store).
func firstOfTransaction(h nats.Header) bool {
	return h.Get(jetstream.ExpectedLastSubjSeqHeader) == "0"
}

// wrongLastSequence reports whether err is the server's refusal of a
// conditional write (10071; 10164 from a replicated stream).
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// inboxMsgID is the inbox Nats-Msg-Id of a notification: its event id,
// its source and a hash of its body. A byte-identical repeat (SenGo
// retrying a callback, reconciliation run twice) is dropped by JetStream;
// a different body for the same status change is stored, so a forged
// notification that arrived first can never make the genuine one a
// duplicate. The transaction state deduplicates the status change itself.
func inboxMsgID(eventID, source string, body []byte) string {
	sum := sha256.Sum256(body)
	return eventID + "." + source + "." + hex.EncodeToString(sum[:12])
}

// isJSON accepts application/json, text/json and any +json type, with
// parameters such as charset.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}
