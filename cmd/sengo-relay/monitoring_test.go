package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var metricName = regexp.MustCompile(`\b(sengo_relay_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+)`)

// exposed is the set of metric families a running relay serves.
func exposed(t *testing.T) map[string]bool {
	t.Helper()
	hook := newHook(t)
	_, logs := startRunWith(t, writeConfig(t, endpointYAML("orders", hook.URL, "2s")), relayEnv(t.TempDir()))
	eventually(t, "metrics", func() bool { return strings.Contains(metricsText(t, logs), "sengo_relay_endpoint_pending") })
	names := map[string]bool{}
	for _, line := range strings.Split(metricsText(t, logs), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
		}
	}
	return names
}

// family is the metric family a name in an expression belongs to.
func family(name string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		name = strings.TrimSuffix(name, s)
	}
	return name
}

// The alert rules and the dashboard name only metrics the relay serves (a
// renamed metric would silence an alert without a word), promtool accepts
// the rules, and their unit tests pass: each alert fires on the series
// that should raise it and stays quiet otherwise.
func TestMonitoringFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the relay and promtool: not with -short (.ci/run runs it)")
	}
	root := filepath.Join("..", "..", "deploy")
	rules, err := os.ReadFile(filepath.Join(root, "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
				Annotations map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(rules, &rf); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			alerts[r.Alert] = true
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s has no summary or description", r.Alert)
			}
		}
	}
	for _, want := range []string{"SengoRelayEndpointPaused", "SengoRelayDeadLettersGrowing", "SengoRelayQuarantineGrowing", "SengoRelayInboxBacklog", "SengoRelayReconciliationFailing"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
	dash, err := os.ReadFile(filepath.Join(root, "grafana", "sengo-relay.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &d); err != nil || len(d.Panels) == 0 {
		t.Fatalf("dashboard: %v", err)
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	names := exposed(t)
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			if !names[family(m)] {
				t.Errorf("%q names %s, which the relay does not serve", e, m)
			}
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("no promtool: .ci/run installs Debian's prometheus package")
		}
		t.Skip("no promtool (apt-get install prometheus): the rules were parsed, not checked or unit-tested")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join(root, "prometheus")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
