package apicheck

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"gopkg.in/yaml.v3"
)

// Document is an OpenAPI 3.1 document, parsed once for many checks.
//
// Its one field keeps the validator's types out of its type: a package
// using a Document then compiles none of the validator's generic types
// (their instances were 9,000 of the 11,000 functions of internal/admin's
// test build).
type Document struct {
	d any // *document
}

type document struct {
	v     validator.Validator
	paths map[string]map[string]yaml.Node
}

// docOf is the document behind d. It is a function, not a method: a
// method of Document, even an unexported one, is in Document's method set,
// which every importer's type information holds, and a method naming
// *document there made every importer compile the validator's generic
// types again (internal/admin's tests took 8 s to compile, not 1.5 s).
func docOf(d *Document) *document { return d.d.(*document) }

// New parses doc and builds its validator.
func New(doc []byte) (*Document, error) {
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, err
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%v", errs)
	}
	var raw struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(doc, &raw); err != nil {
		return nil, err
	}
	return &Document{&document{v: v, paths: raw.Paths}}, nil
}

// Problems are what makes the document itself invalid OpenAPI.
func (d *Document) Problems() []string {
	var out []string
	if ok, errs := docOf(d).v.ValidateDocument(); !ok {
		for _, e := range errs {
			out = append(out, e.Message+": "+e.Reason)
		}
	}
	return out
}

// Check says how resp (its body given, as resp.Body is read already)
// differs from what the document says req's operation answers; nil when it
// does not. Every operation has a default (Error) response, which the
// validator accepts for any status, so a status must also be listed by
// itself.
func (d *Document) Check(req *http.Request, resp *http.Response, body []byte) []string {
	var out []string
	r := *resp
	r.Body = io.NopCloser(bytes.NewReader(body))
	if ok, errs := docOf(d).v.ValidateHttpResponse(req, &r); !ok {
		for _, e := range errs {
			reasons := []string{e.Reason}
			for _, se := range e.SchemaValidationErrors {
				reasons = append(reasons, se.FieldPath+": "+se.Reason)
			}
			out = append(out, fmt.Sprintf("%s %s answered %d, not as the document says: %s: %s\n%.600s", req.Method, req.URL.Path, resp.StatusCode, e.Message, strings.Join(reasons, "; "), body))
		}
	}
	codes, ok, err := d.Statuses(req.Method, req.URL.Path)
	switch {
	case err != nil:
		out = append(out, err.Error())
	case !ok:
		out = append(out, fmt.Sprintf("%s %s: no operation in the document", req.Method, req.URL.Path))
	case !slices.Contains(codes, strconv.Itoa(resp.StatusCode)):
		out = append(out, fmt.Sprintf("%s %s answered %d, which the document does not list (only its default response covers it): %v", req.Method, req.URL.Path, resp.StatusCode, codes))
	}
	return out
}

// Statuses are the response statuses the document lists by themselves (not
// default) for the operation serving method and path: the one whose
// template matches with the fewest parameters. ok is false when no
// operation serves them.
func (d *Document) Statuses(method, path string) (codes []string, ok bool, err error) {
	var op *yaml.Node
	best := -1
	got := strings.Split(path, "/")
	for tmpl, item := range docOf(d).paths {
		n, found := item[strings.ToLower(method)]
		want := strings.Split(tmpl, "/")
		if !found || len(want) != len(got) {
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
		return nil, false, nil
	}
	var o struct {
		Responses map[string]yaml.Node `yaml:"responses"`
	}
	if err := op.Decode(&o); err != nil {
		return nil, false, fmt.Errorf("%s %s: %v", method, path, err)
	}
	for c := range o.Responses {
		if c != "default" {
			codes = append(codes, c)
		}
	}
	slices.Sort(codes)
	return codes, true, nil
}
