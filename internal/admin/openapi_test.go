package admin

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"gopkg.in/yaml.v3"
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
	// Every operation has a default (Error) response, which the validator
	// accepts for any status: a status the tests see must be listed by
	// itself.
	if codes, ok := listedStatuses(t, req.Method, req.URL.Path); !ok {
		t.Errorf("%s %s: no operation in openapi.yaml", req.Method, req.URL.Path)
	} else if !slices.Contains(codes, strconv.Itoa(resp.StatusCode)) {
		t.Errorf("%s %s answered %d, which openapi.yaml does not list (only its default response covers it): %v", req.Method, req.URL.Path, resp.StatusCode, codes)
	}
}

var (
	pathsOnce sync.Once
	paths     map[string]map[string]yaml.Node
	pathsErr  error
)

// listedStatuses are the response statuses openapi.yaml lists by
// themselves (not default) for the operation serving method and path: the
// one whose template matches with the fewest parameters.
func listedStatuses(t *testing.T, method, path string) ([]string, bool) {
	t.Helper()
	pathsOnce.Do(func() {
		var doc struct {
			Paths map[string]map[string]yaml.Node `yaml:"paths"`
		}
		pathsErr = yaml.Unmarshal(OpenAPI, &doc)
		paths = doc.Paths
	})
	if pathsErr != nil {
		t.Fatalf("openapi.yaml: %v", pathsErr)
	}
	var op *yaml.Node
	best := -1
	got := strings.Split(path, "/")
	for tmpl, item := range paths {
		n, ok := item[strings.ToLower(method)]
		want := strings.Split(tmpl, "/")
		if !ok || len(want) != len(got) {
			continue
		}
		params := 0
		for i := range want {
			if strings.HasPrefix(want[i], "{") {
				params++
			} else if want[i] != got[i] {
				params = -1
				break
			}
		}
		if params >= 0 && (best < 0 || params < best) {
			op, best = &n, params
		}
	}
	if op == nil {
		return nil, false
	}
	var o struct {
		Responses map[string]yaml.Node `yaml:"responses"`
	}
	if err := op.Decode(&o); err != nil {
		t.Fatalf("openapi.yaml: %s %s: %v", method, path, err)
	}
	var codes []string
	for c := range o.Responses {
		if c != "default" {
			codes = append(codes, c)
		}
	}
	slices.Sort(codes)
	return codes, true
}
