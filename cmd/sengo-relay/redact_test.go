package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// check-config shows where each endpoint is, never a token its URL holds:
// a path past its first segment (hooks.slack.com/services/T…/B…/secret),
// nor a NATS token written as a URL's user (nats://TOKEN@host).
func TestCheckConfigHidesTokensInURLs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(`nats: {url: "nats://natstoken0123456789@10.0.0.1:4222"}
projects:
  main: {}
endpoints:
  orders: {url: "https://hooks.example.id/services/T0001/pathtoken0123456789?key=querytoken0123", secrets: [`+testSecret+`], filter: {all: true}}
`), 0o600)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check-config", "--config", path}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.Contains(s, "endpoint orders: https://hooks.example.id/services/") || !strings.Contains(s, "10.0.0.1:4222") {
		t.Errorf("check-config no longer says where:\n%s", s)
	}
	for _, secret := range []string{"natstoken0123456789", "pathtoken0123456789", "querytoken0123"} {
		if strings.Contains(s, secret) {
			t.Errorf("check-config prints %s:\n%s", secret, s)
		}
	}
}

// A command that cannot reach the relay says where it tried, without the
// credentials nats.url holds.
func TestCLIConnectErrorHidesCredentials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(`nats: {url: "nats://relay:s3cretpass0123@127.0.0.1:1,nats://natstoken0123456789@127.0.0.1:2"}
projects:
  main: {}
`), 0o600)
	err := run(context.Background(), []string{"dlq", "list", "--config", path}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("dlq list against nothing: %v", err)
	}
	for _, secret := range []string{"s3cretpass0123", "natstoken0123456789"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows %s: %v", secret, err)
		}
	}
}

// A malformed endpoint or API URL is named, not echoed: the mistake is
// often one character of a URL whose path or query is its secret.
func TestConfigErrorsDoNotEchoURLs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(`projects:
  main: {base_url: "https//user:apipass0123456789@api.example.id/api"}
endpoints:
  orders: {url: "https:/hooks.example.id/services/T0001/pathtoken0123456789", secrets: [`+testSecret+`], filter: {all: true}}
`), 0o600)
	err := run(context.Background(), []string{"check-config", "--config", path}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "endpoints.orders.url") || !strings.Contains(err.Error(), "projects.main.base_url") {
		t.Fatalf("bad URLs accepted or not named: %v", err)
	}
	for _, secret := range []string{"pathtoken0123456789", "apipass0123456789"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows %s: %v", secret, err)
		}
	}
}

// A NATS token written as nats.url's user (nats://TOKEN@host, which
// nats.go sends as the token) is never logged: the "nats connecting" line
// names the server without it.
func TestNATSTokenInURLIsNotLogged(t *testing.T) {
	const token = "natstoken0123456789abcdef"
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), Authorization: token, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	u := strings.Replace(srv.ClientURL(), "nats://", "nats://"+token+"@", 1)
	base, logs, stop := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_NATS_URL="+u))
	waitReady(t, base)
	if got := logs.field(t, "nats connecting", "url"); !strings.Contains(got, srv.Addr().String()) {
		t.Errorf("nats connecting names %q, not the server", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.text(), token) {
		t.Fatalf("the logs hold nats.url's token:\n%s", logs.text())
	}
}

// A token or password holding a '/' (half of those `openssl rand -base64`
// makes) puts its end and the host in the URL's path: it parsed, had no
// credentials to hide, and check-config printed it whole (and the relay
// dialled the token's first part as a host). Such a URL is refused, and
// never shown.
func TestAURLWhoseCredentialsHoldASlashIsRefusedUnshown(t *testing.T) {
	for _, c := range []struct{ yaml, secret string }{
		{`nats: {url: "nats://natstoken0123/456789@10.0.0.1:4222"}
projects:
  main: {}
`, "456789"},
		{`nats: {url: "nats://relay:/Pw0123456789@10.0.0.1:4222"}
projects:
  main: {}
`, "Pw0123456789"},
		{`projects:
  main: {api_key: SC-KEY-SLASH, token: tok-0123456789abcdef, base_url: "https://u:/apipw0123456@api.example.id/api"}
`, "apipw0123456"},
	} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(path, []byte(c.yaml), 0o600)
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"check-config", "--config", path}, &out, &errOut)
		if err == nil {
			t.Errorf("check-config accepted %q:\n%s", c.yaml, out.String())
		}
		if all := out.String() + errOut.String() + fmt.Sprint(err); strings.Contains(all, c.secret) {
			t.Errorf("check-config shows %s:\n%s", c.secret, all)
		}
	}
}

// In a YAML flow mapping ({…}) a key ends at ':' only when a blank follows:
// "token:SECRET" is one key, and the unknown-key, header-name and
// project-name errors printed it, secret and all. A key holding ':' is
// shown up to it.
func TestAKeyHoldingItsValueIsNotShown(t *testing.T) {
	for _, c := range []struct{ yaml, secret string }{
		{`projects:
  main: {api_key: SC-KEY-FLOW, token:jlaVHot4XGnCqYU8FI20GHwkv6RMOT2t}
`, "jlaVHot4"},
		{`projects:
  main: {}
endpoints:
  orders: {url: "https://hooks.example.id/x", secrets: [` + testSecret + `], filter: {all: true}, headers: {X-Consumer-Key:ck_live_0123456789}}
`, "ck_live_0123456789"},
		{`projects: {main:tokflow0123456789}
`, "tokflow0123456789"},
	} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(path, []byte(c.yaml), 0o600)
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"check-config", "--config", path}, &out, &errOut)
		if err == nil {
			t.Errorf("check-config accepted %q", c.yaml)
		}
		if all := out.String() + errOut.String() + fmt.Sprint(err); strings.Contains(all, c.secret) {
			t.Errorf("check-config shows %s:\n%s", c.secret, all)
		}
	}
}
