package apicheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

const doc = `openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /items/{id}:
    get:
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
      responses:
        "200":
          description: the item
          content:
            application/json:
              schema:
                type: object
                required: [id]
                properties: {id: {type: string}}
                additionalProperties: false
        default:
          description: an error
          content:
            application/json:
              schema: {type: object}
`

func check(t *testing.T, status int, body string) []string {
	t.Helper()
	d, err := New([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if p := d.Problems(); len(p) > 0 {
		t.Fatalf("the test's document: %v", p)
	}
	req := httptest.NewRequest(http.MethodGet, "/items/a", nil)
	resp := &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}}, Request: req}
	return d.Check(req, resp, []byte(body))
}

// A response as documented passes; one with a field the schema does not
// have, or a status listed only by the default response, does not.
func TestCheck(t *testing.T) {
	if p := check(t, 200, `{"id":"a"}`); len(p) > 0 {
		t.Errorf("a documented answer: %v", p)
	}
	if p := check(t, 200, `{"id":"a","secret":"x"}`); len(p) == 0 {
		t.Error("a field the schema does not have passed")
	}
	if p := check(t, 503, `{}`); len(p) == 0 || !strings.Contains(strings.Join(p, " "), "does not list") {
		t.Errorf("a status only the default response covers: %v", p)
	}
}

// An operation the document does not have is named as such.
func TestStatusesOfAnUnknownOperation(t *testing.T) {
	d, err := New([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := d.Statuses(http.MethodPost, "/items/a"); ok || err != nil {
		t.Errorf("POST /items/a: ok %v, err %v", ok, err)
	}
	if codes, ok, _ := d.Statuses(http.MethodGet, "/items/a"); !ok || strings.Join(codes, ",") != "200" {
		t.Errorf("GET /items/a: %v %v", codes, ok)
	}
}

// TestDocumentNamesNoValidatorType reads this package's source: Document's
// fields and methods (its method set, unexported methods included, is in
// every importer's type information) must name none of the validator's
// types, directly or through document. One method returning *document made
// compiling internal/admin's tests take 8 s of CPU instead of 2, in every
// admin mutant's build.
func TestDocumentNamesNoValidatorType(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "apicheck.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	named := func(what string, n ast.Node) {
		ast.Inspect(n, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if pkg, ok := n.X.(*ast.Ident); ok && pkg.Name != "http" {
					t.Errorf("%s names %s.%s", what, pkg.Name, n.Sel.Name)
				}
				return false
			case *ast.Ident:
				if n.Name == "document" {
					t.Errorf("%s names document", what)
				}
			}
			return true
		})
	}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				continue
			}
			named("method "+d.Name.Name+"'s signature", d.Type)
		case *ast.GenDecl:
			for _, s := range d.Specs {
				if ts, ok := s.(*ast.TypeSpec); ok && ts.Name.Name == "Document" {
					named("type Document", ts.Type)
				}
			}
		}
	}
}

// TestOnlyThisPackageImportsTheValidator: a test file elsewhere that
// imports the validator compiles its generic types into its package's
// test build (cmd/sengo-relay's took 10 s of CPU instead of 2, in each of
// the command's mutants); it goes through Document instead.
func TestOnlyThisPackageImportsTheValidator(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (path == filepath.Join(root, "internal", "apicheck") || strings.HasPrefix(d.Name(), ".") && path != root) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if strings.Contains(imp.Path.Value, "github.com/pb33f/") {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s imports %s: use internal/apicheck's Document", rel, imp.Path.Value)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
