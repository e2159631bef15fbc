package dispatcher

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Every dead-letter reason's series exists from the start (README: the
// first dead letter raises an alert): Prime listed five of the reasons,
// and expiring_before_retry, endpoint_removed and expiring_in_backlog
// appeared only with their first dead letter, which increase() misses.
// The reasons are read from the package's source, every Reason constant,
// so a new one cannot be forgotten again.
func TestPrimeCreatesEveryDeadLetterReason(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Reason") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						reasons = append(reasons, v)
					}
				}
			}
		}
	}
	if len(reasons) < 8 {
		t.Fatalf("found %d reasons in the source (%v): the test reads it wrong", len(reasons), reasons)
	}
	reg := prometheus.NewRegistry()
	NewMetrics(reg).Prime([]string{"orders"})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	primed := map[string]bool{}
	for _, f := range families {
		if f.GetName() != "sengo_relay_dead_letters_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					primed[l.GetValue()] = true
				}
			}
		}
	}
	for _, r := range reasons {
		if !primed[r] {
			t.Errorf("reason %q has no series after Prime: its first dead letter raises no alert", r)
		}
	}
}
