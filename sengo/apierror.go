package sengo

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinels for SenGo's error codes; an *APIError matches them with errors.Is.
var (
	ErrUnauthorized        = errors.New("sengo: bad credentials or signature")     // 401 UNAUTHORIZED
	ErrProductAccess       = errors.New("sengo: product not enabled")              // 401 PRODUCT_ACCESS_ERROR
	ErrInsufficientBalance = errors.New("sengo: insufficient balance")             // 402 INSUFFICIENT_BALANCE
	ErrIPNotAllowed        = errors.New("sengo: caller IP not allowed")            // 403 UNAUTHORIZED
	ErrPaymentInactive     = errors.New("sengo: payment method inactive")          // 403 PAYMENT_INACTIVE_ERROR
	ErrTransactionNotFound = errors.New("sengo: transaction not found")            // 404 TRANSACTION_NOT_FOUND
	ErrDuplicateReference  = errors.New("sengo: reference already used")           // 409 DUPLICATE_REFERENCE
	ErrInvalidRequest      = errors.New("sengo: invalid request")                  // 422 REQUEST_INVALID
	ErrThrottled           = errors.New("sengo: throttled or internal error")      // 429 PAYMENT_INTERNAL_ERROR
	ErrCreateFailed        = errors.New("sengo: upstream switching failed, retry") // 400 CREATE_FAILED
)

// SenGo's error codes.
const (
	CodeCreateFailed        = "CREATE_FAILED"
	CodeUnauthorized        = "UNAUTHORIZED"
	CodeProductAccess       = "PRODUCT_ACCESS_ERROR"
	CodeInsufficientBalance = "INSUFFICIENT_BALANCE"
	CodePaymentInactive     = "PAYMENT_INACTIVE_ERROR"
	CodeTransactionNotFound = "TRANSACTION_NOT_FOUND"
	CodeDuplicateReference  = "DUPLICATE_REFERENCE"
	CodeRequestInvalid      = "REQUEST_INVALID"
	CodeInternal            = "PAYMENT_INTERNAL_ERROR"
	// CodeNotSenGo404 marks a 404 that carried no SenGo error code.
	CodeNotSenGo404 = "HTTP_404_WITHOUT_SENGO_CODE"
	// CodeRedirect marks a redirect, which the client never follows: it
	// would carry the project's credentials to the Location's host.
	CodeRedirect = "HTTP_REDIRECT_NOT_FOLLOWED"
)

// APIError is an error answer from SenGo: the HTTP status, SenGo's code
// and its message.
type APIError struct {
	HTTPStatus int
	Code       string
	Message    string
	// guessed: the answer carried no code; Code is codeForStatus's.
	guessed bool
}

func (e *APIError) Error() string {
	if e.Message != "" && e.Message != e.Code {
		return fmt.Sprintf("sengo: HTTP %d %s: %s", e.HTTPStatus, e.Code, e.Message)
	}
	return fmt.Sprintf("sengo: HTTP %d %s", e.HTTPStatus, e.Code)
}

// Is matches the sentinel for the error's code (and status, where one code
// has two meanings).
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Code == CodeUnauthorized && e.HTTPStatus != http.StatusForbidden
	case ErrIPNotAllowed:
		return e.Code == CodeUnauthorized && e.HTTPStatus == http.StatusForbidden
	case ErrProductAccess:
		return e.Code == CodeProductAccess
	case ErrInsufficientBalance:
		return e.Code == CodeInsufficientBalance
	case ErrPaymentInactive:
		return e.Code == CodePaymentInactive
	case ErrTransactionNotFound:
		return e.Code == CodeTransactionNotFound
	case ErrDuplicateReference:
		return e.Code == CodeDuplicateReference
	case ErrInvalidRequest:
		return e.Code == CodeRequestInvalid
	case ErrThrottled:
		return e.Code == CodeInternal
	case ErrCreateFailed:
		return e.Code == CodeCreateFailed
	}
	return false
}

// codeForStatus guesses SenGo's code from an HTTP status when the answer
// carries none.
func codeForStatus(status int) string {
	switch status {
	case 400:
		return CodeCreateFailed
	case 401, 403:
		return CodeUnauthorized
	case 402:
		return CodeInsufficientBalance
	case 404:
		// Never TRANSACTION_NOT_FOUND: a 404 without SenGo's code is a
		// wrong base_url or a proxy, and reading it as "no such
		// transaction" would quarantine genuine payments.
		return CodeNotSenGo404
	case 409:
		return CodeDuplicateReference
	case 422:
		return CodeRequestInvalid
	default:
		return CodeInternal
	}
}

// retryable reports whether a failed call may be repeated: throttling and
// server errors, never a client error.
func (e *APIError) retryable() bool { return e.HTTPStatus == 429 || e.HTTPStatus >= 500 }

// refusesCheck reports whether SenGo refused a check for the request
// itself (400, 409, 422 or another 4xx), not for what every call shares:
// credentials or IP (401, 403), a base_url that is not SenGo's (a 404
// without its code; with it, the transaction is unknown, handled apart),
// throttling (429), or an answer that asks for another try (tryAgain).
func (e *APIError) refusesCheck() bool {
	switch e.HTTPStatus {
	case 401, 403, 404, 429:
		return false
	}
	return !e.tryAgain() && e.HTTPStatus >= 400 && e.HTTPStatus < 500
}

// tryAgain reports whether the answer asks for another try and says
// nothing of the transaction: SenGo's own CREATE_FAILED ("upstream
// switching failed, try again"; a bare 400 is not it), a proxy's 408
// (timeout), 421 (misdirected) or 425 (too early), and 429 (the key
// throttled: every check shares it, and the one probe may get through).
func (e *APIError) tryAgain() bool {
	switch e.HTTPStatus {
	case 408, 421, 425, 429:
		return true
	}
	return e.Code == CodeCreateFailed && !e.guessed
}
