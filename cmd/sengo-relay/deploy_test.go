package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"

	"github.com/sengo-relay/sengo-relay/internal/config"
)

// The production layout in deploy/ stays loadable: nats-server accepts
// its config, the relay accepts its own, and every manifest is valid YAML.
func TestDeployFiles(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy")
	t.Setenv("SERVER_NAME", "nats-1")
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats", "nats-server.conf"))
	if err != nil {
		t.Fatalf("nats-server.conf: %v", err)
	}
	if opts.ServerName != "nats-1" || !opts.JetStream || opts.Cluster.Name != "sengo" || len(opts.Routes) != 3 {
		t.Fatalf("nats-server.conf: name %q jetstream %v cluster %q routes %d", opts.ServerName, opts.JetStream, opts.Cluster.Name, len(opts.Routes))
	}
	if !opts.SyncAlways {
		t.Fatal("nats-server.conf: JetStream must fsync before every acknowledgement (sync_interval: always)")
	}

	secrets := t.TempDir()
	env := map[string]string{}
	for key, file := range map[string]string{
		"SENGO_RELAY_PROJECTS_MAIN_API_KEY_FILE":        "k",
		"SENGO_RELAY_PROJECTS_MAIN_TOKEN_FILE":          "t",
		"SENGO_RELAY_PROJECTS_MAIN_CALLBACK_TOKEN_FILE": "c",
		"SENGO_RELAY_ENDPOINTS_ORDERS_SECRETS_FILE":     "w",
		"SENGO_RELAY_ADMIN_TOKEN_FILE":                  "a",
		"SENGO_RELAY_METRICS_TOKEN_FILE":                "m",
	} {
		p := filepath.Join(secrets, file)
		value := "secret-value-0123456789"
		if file == "w" {
			value = testSecret
		}
		os.WriteFile(p, []byte(value+"\n"), 0o600)
		env[key] = p
	}
	cfg, err := config.Load(filepath.Join(dir, "relay.yaml"), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("relay.yaml: %v", err)
	}
	if cfg.NATS.Replicas != 3 || !strings.Contains(cfg.NATS.URL, "nats-3") || !cfg.Projects["main"].Confirms() {
		t.Fatalf("relay.yaml: %+v", cfg.NATS)
	}

	for _, f := range []string{"compose.yaml", "k8s/nats.yaml", "k8s/relay.yaml"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		docs := 0
		for {
			var v map[string]any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if strings.HasPrefix(f, "k8s/") && (v["apiVersion"] == nil || v["kind"] == nil) {
				t.Fatalf("%s: document %d lacks apiVersion or kind", f, docs+1)
			}
			docs++
		}
		if docs == 0 {
			t.Fatalf("%s: empty", f)
		}
	}
}
