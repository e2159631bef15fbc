package sengo

import (
	"errors"
	"strings"
)

// ErrMalformed: the body is not a JSON object.
var ErrMalformed = errors.New("malformed JSON")

// ErrInvalid: the body is JSON but not a valid transaction notification.
// Errors matching it are *InvalidError values listing every bad field.
var ErrInvalid = errors.New("invalid notification")

// FieldError is one problem with one field.
type FieldError struct {
	Field   string `json:"field"`   // JSON path, e.g. "responseData.amount"
	Problem string `json:"problem"` // what is wrong, e.g. "must be a non-negative integer"
}

// InvalidError lists every problem found in a notification.
type InvalidError struct {
	Fields []FieldError
}

func (e *InvalidError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + " " + f.Problem
	}
	return "invalid notification: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }
