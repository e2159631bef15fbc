package receiver

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/verify"
)

// Errors of the callback endpoint. Each maps to one HTTP status and one
// stable code in errorTable; none carries a secret.
var (
	ErrUnsupportedMediaType = errors.New("content type must be application/json")
	ErrBodyTooLarge         = errors.New("body exceeds the size limit")
	ErrBodyUnreadable       = errors.New("body could not be read")
	ErrUnknownProject       = errors.New("unknown project")
	ErrUnauthorized         = errors.New("unauthorized")
	ErrForbidden            = errors.New("forbidden")
	ErrStoreUnavailable     = errors.New("store unavailable, retry later")
	ErrNotReady             = errors.New("not ready")
	ErrNotLive              = errors.New("not live: restart the process")
	ErrOverloaded           = errors.New("too many callbacks in flight, retry later")
)

// errorTable maps error kinds to HTTP answers, first match wins. It is the
// only place that decides a status code.
var errorTable = []struct {
	err    error
	status int
	code   string
}{
	{ErrUnsupportedMediaType, http.StatusUnsupportedMediaType, "unsupported_media_type"},
	{ErrBodyTooLarge, http.StatusRequestEntityTooLarge, "body_too_large"},
	{ErrBodyUnreadable, http.StatusBadRequest, "body_unreadable"},
	{ErrUnknownProject, http.StatusNotFound, "unknown_project"},
	{ErrUnauthorized, http.StatusUnauthorized, "unauthorized"},
	{ErrForbidden, http.StatusForbidden, "forbidden"},
	{verify.ErrBadSignature, http.StatusUnauthorized, "invalid_signature"},
	{verify.ErrMissingSignature, http.StatusUnauthorized, "invalid_signature"},
	{sengo.ErrMalformed, http.StatusBadRequest, "malformed_json"},
	{sengo.ErrInvalid, http.StatusUnprocessableEntity, "invalid_notification"},
	{ErrStoreUnavailable, http.StatusServiceUnavailable, "store_unavailable"},
	{ErrNotReady, http.StatusServiceUnavailable, "not_ready"},
	{ErrNotLive, http.StatusServiceUnavailable, "not_live"},
	{ErrOverloaded, http.StatusServiceUnavailable, "overloaded"},
}

// errorBody is the JSON answer to every rejected request.
type errorBody struct {
	Error struct {
		Code    string             `json:"code"`
		Message string             `json:"message"`
		Fields  []sengo.FieldError `json:"fields,omitempty"`
	} `json:"error"`
}

// classify returns the HTTP status and stable code for err.
func classify(err error) (int, string) {
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e.status, e.code
		}
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return he.Code, "not_found"
		case http.StatusMethodNotAllowed:
			return he.Code, "method_not_allowed"
		case http.StatusRequestEntityTooLarge:
			return he.Code, "body_too_large"
		}
		return he.Code, "http_" + strconv.Itoa(he.Code)
	}
	return http.StatusInternalServerError, "internal_error"
}

// errorHandler is installed as Echo's HTTPErrorHandler: a short JSON
// message for the caller; details reach the log through the request logger.
func errorHandler(retryAfter time.Duration) echo.HTTPErrorHandler {
	retry := strconv.Itoa(int((retryAfter + time.Second - 1) / time.Second))
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status, code := classify(err)
		var body errorBody
		body.Error.Code = code
		body.Error.Message = publicMessage(err, status)
		var inv *sengo.InvalidError
		if errors.As(err, &inv) {
			body.Error.Fields = inv.Fields
		}
		if status == http.StatusServiceUnavailable {
			c.Response().Header().Set("Retry-After", retry)
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(status)
			return
		}
		_ = c.JSON(status, body)
	}
}

// publicMessage is what a caller may read. Malformed and invalid bodies
// get the parser's message (field names and positions, never values that
// could be secrets); everything else gets the sentinel's fixed text.
func publicMessage(err error, status int) string {
	if errors.Is(err, sengo.ErrMalformed) || errors.Is(err, sengo.ErrInvalid) {
		return err.Error()
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e.err.Error()
		}
	}
	return http.StatusText(status)
}
