package admin

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

var (
	apiOnce sync.Once
	apiV    validator.Validator
	apiErr  []error
)

// api is the validator of openapi.yaml, built once.
func api(t *testing.T) validator.Validator {
	t.Helper()
	apiOnce.Do(func() {
		doc, err := libopenapi.NewDocument(OpenAPI)
		if err != nil {
			apiErr = []error{err}
			return
		}
		apiV, apiErr = validator.NewValidator(doc)
	})
	if len(apiErr) > 0 {
		t.Fatalf("openapi.yaml: %v", apiErr)
	}
	return apiV
}

// The document is valid OpenAPI 3.1, and the server serves it.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	v := api(t)
	if ok, errs := v.ValidateDocument(); !ok {
		for _, e := range errs {
			t.Errorf("openapi.yaml: %s: %s", e.Message, e.Reason)
		}
	}
	hs, _ := newServer(t)
	code, body := call(t, hs, http.MethodGet, "/admin/openapi.yaml", "", token)
	if code != 200 || !strings.HasPrefix(body, "openapi: 3.1") {
		t.Fatalf("GET /admin/openapi.yaml: %d %.40q", code, body)
	}
}

// checkResponse validates a response (its body given) against the
// document: every call the admin tests make goes through it.
func checkResponse(t *testing.T, req *http.Request, resp *http.Response, body []byte) {
	t.Helper()
	r := *resp
	r.Body = io.NopCloser(bytes.NewReader(body))
	if ok, errs := api(t).ValidateHttpResponse(req, &r); !ok {
		for _, e := range errs {
			reasons := []string{e.Reason}
			for _, se := range e.SchemaValidationErrors {
				reasons = append(reasons, se.FieldPath+": "+se.Reason)
			}
			t.Errorf("%s %s answered %d, not as openapi.yaml says: %s: %s\n%.600s", req.Method, req.URL.Path, resp.StatusCode, e.Message, strings.Join(reasons, "; "), body)
		}
	}
}
