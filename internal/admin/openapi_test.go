package admin

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sengo-relay/sengo-relay/internal/apicheck"
)

var (
	apiOnce sync.Once
	apiDoc  *apicheck.Document
	apiErr  error
)

// api is openapi.yaml, parsed once.
func api(t *testing.T) *apicheck.Document {
	t.Helper()
	apiOnce.Do(func() { apiDoc, apiErr = apicheck.New(OpenAPI) })
	if apiErr != nil {
		t.Fatalf("openapi.yaml: %v", apiErr)
	}
	return apiDoc
}

// The document is valid OpenAPI 3.1, and the server serves it.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	for _, p := range api(t).Problems() {
		t.Errorf("openapi.yaml: %s", p)
	}
	hs, _ := newServer(t)
	code, body := call(t, hs, http.MethodGet, "/admin/openapi.yaml", "", token)
	if code != 200 || !strings.HasPrefix(body, "openapi: 3.1") {
		t.Fatalf("GET /admin/openapi.yaml: %d %.40q", code, body)
	}
}

// checkResponse validates a response (its body given) against
// openapi.yaml: every call the admin tests make goes through it.
func checkResponse(t *testing.T, req *http.Request, resp *http.Response, body []byte) {
	t.Helper()
	for _, p := range api(t).Check(req, resp, body) {
		t.Errorf("openapi.yaml: %s", p)
	}
}
