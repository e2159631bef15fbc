package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Every command answers --help and -h on stdout with exit 0, and only
// with its own flags.
func TestHelpOnEveryCommand(t *testing.T) {
	var walk func(c *cobra.Command, path []string)
	n := 0
	walk = func(c *cobra.Command, path []string) {
		for _, flag := range []string{"--help", "-h"} {
			var out, errOut bytes.Buffer
			if err := run(context.Background(), append(append([]string{}, path...), flag), &out, &errOut); err != nil {
				t.Errorf("%v %s: %v", path, flag, err)
			}
			if !strings.Contains(out.String(), "Usage:") || errOut.Len() > 0 {
				t.Errorf("%v %s: stdout %q stderr %q", path, flag, out.String(), errOut.String())
			}
		}
		n++
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	walk(newRootCmd(), nil)
	if n < 20 {
		t.Fatalf("walked %d commands", n)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"serve", "check-config", "reconcile", "sandbox", "dlq", "replay", "quarantine", "bench", "healthcheck", "version", "completion"} {
		if !strings.Contains(out.String(), "\n  "+cmd+" ") {
			t.Errorf("top-level help does not list %s:\n%s", cmd, out.String())
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"dlq", "show", "--help"}, &out, &out); err != nil || strings.Contains(out.String(), "--all") || !strings.Contains(out.String(), "--seq") {
		t.Errorf("dlq show offers another verb's flags: %v\n%s", err, out.String())
	}
}

func TestVersionAndCompletion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, &out); err != nil || !strings.HasPrefix(out.String(), "sengo-relay ") {
			t.Errorf("%v: %v %q", args, err, out.String())
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"completion", "bash"}, &out, &out); err != nil || !strings.Contains(out.String(), "sengo-relay") {
		t.Errorf("completion bash: %v", err)
	}
	dir := t.TempDir()
	if err := run(context.Background(), []string{"man", "--dir", dir}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sengo-relay-dlq-redrive.1")); err != nil {
		t.Errorf("man pages: %v", err)
	}
}

// Mistakes are caught before anything is started or reached: an unknown
// command or flag, a missing verb, an endpoint or project the
// configuration lacks (no relay runs here, so reaching for it would fail
// differently).
func TestMistakesFailEarly(t *testing.T) {
	cfg := writeConfig(t, endpointYAML("orders", "http://127.0.0.1:1/hook", "1s"))
	shortTTL := filepath.Join(t.TempDir(), "ttl.yaml")
	if err := os.WriteFile(shortTTL, []byte("projects:\n  main: {}\nstreams:\n  transactions: {ttl: 168h}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"dql", "list"}, "Did you mean this?\n\tdlq"},
		{[]string{"dlq"}, "dlq needs a command"},
		{[]string{"dlq", "list", "--bogus"}, "unknown flag: --bogus\nrun 'sengo-relay dlq list --help' for usage"},
		{[]string{"replay", "--config", cfg, "--endpoint", "nope", "--since", "1h"}, `no endpoint "nope" (configured: orders)`},
		{[]string{"dlq", "list", "--config", cfg, "--endpoint", "nope"}, `--endpoint "nope": no such endpoint`},
		{[]string{"quarantine", "list", "--config", cfg, "--project", "nope"}, `--project "nope": no such project`},
		{[]string{"reconcile", "--config", cfg, "--project", "nope"}, `--project "nope": no such project`},
		{[]string{"reconcile", "--config", cfg, "--since", "yesterday"}, `--since "yesterday": want how far back`},
		// Beyond the transactions' ttl (here 7 days): those expired would be published again.
		{[]string{"reconcile", "--config", shortTTL, "--since", "7d"}, `--since 7d: it looks back to the start of that day, beyond streams.transactions.ttl`},
		{[]string{"replay", "--config", cfg, "--endpoint", "orders", "--since", "yesterday"}, "since: want RFC 3339"},
		{[]string{"dlq", "redrive", "--config", cfg}, "dlq redrive needs a filter"},
		{[]string{"dlq", "list", "--config", cfg, "--endpoint", ""}, "--endpoint is empty"},
		// 0 is no sequence at all: beside another filter, a purge of
		// "--seq 0" took every dead letter of the endpoint, and of the
		// project in the quarantine (the admin API refuses it: bad_seq).
		{[]string{"dlq", "purge", "--config", cfg, "--endpoint", "orders", "--seq", "0"}, "--seq must be a positive integer"},
		{[]string{"dlq", "redrive", "--config", cfg, "--endpoint", "orders", "--seq", "0"}, "--seq must be a positive integer"},
		{[]string{"quarantine", "purge", "--config", cfg, "--project", "main", "--seq", "0"}, "--seq must be a positive integer"},
		// An unset variable ("--project $P") is not every project.
		{[]string{"reconcile", "--config", cfg, "--project", ""}, "--project is empty"},
		{[]string{"sandbox", "pay"}, "accepts 1 arg(s), received 0"},
	} {
		err := run(context.Background(), tc.args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "is the relay running") {
			t.Errorf("%v: reached for the relay before checking its input: %v", tc.args, err)
		}
	}
}

// A user's own file is named by SENGO_RELAY_CONFIG when --config is not
// given; --config wins over it.
func TestConfigFromTheEnvironment(t *testing.T) {
	cfg := writeConfig(t, endpointYAML("from-env", "http://127.0.0.1:1/hook", "1s"))
	t.Setenv("SENGO_RELAY_CONFIG", cfg)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check-config"}, &out, &out); err != nil || !strings.Contains(out.String(), "endpoint from-env") {
		t.Fatalf("%v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"check-config", "--config", committedConfig}, &out, &out); err != nil || strings.Contains(out.String(), "from-env") {
		t.Fatalf("--config did not win: %v\n%s", err, out.String())
	}
}

func TestHealthURLFollowsListen(t *testing.T) {
	for listen, want := range map[string]string{
		":8080": "http://127.0.0.1:8080/healthz", "0.0.0.0:9000": "http://127.0.0.1:9000/healthz",
		"[::]:9000": "http://127.0.0.1:9000/healthz", "10.1.2.3:8080": "http://10.1.2.3:8080/healthz",
		"[::1]:8080": "http://[::1]:8080/healthz",
	} {
		if got, err := healthURL(listen); err != nil || got != want {
			t.Errorf("healthURL(%q) = %q, %v; want %q", listen, got, err, want)
		}
	}
}
