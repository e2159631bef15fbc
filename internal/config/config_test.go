package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/internal/fixtures"
)

var noEnv = Env{}

func env(m map[string]string) Env { return Env(m) }

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const minimal = "projects:\n  main: {}\n"

// committedConfig writes config.yaml as committed to a temp file: the
// tests check the reference the repository ships, not a user's edits.
func committedConfig(t *testing.T) string {
	t.Helper()
	b, err := fixtures.CommittedConfig()
	if err != nil {
		t.Fatal(err)
	}
	return write(t, string(b))
}

// The checked-in config.yaml is the working default: it loads as is and
// spells out exactly the defaults.
func TestCheckedInConfig(t *testing.T) {
	cfg, err := Load(committedConfig(t), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Projects = map[string]*Project{"main": {AllowedIPs: []string{}}}
	want.HTTP.TrustedProxies = []string{}
	want.Admin.TrustedProxies = []string{}
	want.Admin.Hosts = []string{}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config.yaml differs from Default():\n got %+v\nwant %+v", cfg, want)
	}
	if cfg.NATS.URL != "" || cfg.NATS.Embedded.Listen != "127.0.0.1:4222" {
		t.Errorf("default is not the embedded server on 127.0.0.1:4222: %+v", cfg.NATS)
	}
}

func TestUnknownKeysAreErrors(t *testing.T) {
	_, err := Load(write(t, "htp:\n  listen: \":1\"\nhttp:\n  lisen: x\n"+minimal), noEnv)
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	for _, k := range []string{"htp", "lisen"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error does not name %q: %v", k, err)
		}
	}
}

func TestDurationsMustBeStrings(t *testing.T) {
	_, err := Load(write(t, "http:\n  publish_timeout: 5\n"+minimal), noEnv)
	if err == nil || !strings.Contains(err.Error(), "duration must be a string") {
		t.Fatalf("integer duration: err = %v", err)
	}
	cfg, err := Load(write(t, "http:\n  publish_timeout: 2500ms\n"+minimal), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.PublishTimeout.D() != 2500*time.Millisecond {
		t.Errorf("publish_timeout = %s", cfg.HTTP.PublishTimeout)
	}
}

// Validation lists every problem in one error.
func TestValidateReportsEveryProblem(t *testing.T) {
	body := `
log: {level: loud}
http: {listen: "nope", max_body_bytes: 10, trusted_proxies: ["1.2.3.4/99"]}
nats: {replicas: 3, storage: tape, embedded: {sync_interval: sometimes}}
streams: {events: {max_age: 1h, duplicate_window: 2h}}
intake: {workers: 0}
admin: {trusted_proxies: ["proxy.internal"]}
projects:
  Bad.Name: {}
  shop:
    signature: required
    callback_token: short
    allowed_ips: ["10.0.0.0/33"]
`
	_, err := Load(write(t, body), noEnv)
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"log.level", "http.listen", "http.max_body_bytes", "http.trusted_proxies", "admin.trusted_proxies",
		"nats.replicas", "nats.storage", "sync_interval", "streams.events.duplicate_window",
		"intake.workers", "projects.Bad.Name", "projects.shop.signature",
		"projects.shop.callback_token", "projects.shop.allowed_ips",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s", want)
		}
	}
	if t.Failed() {
		t.Log(err)
	}
}

// A callback token with '/', '?', '#', '%' or a space is refused; one
// with characters JSON or a URL may escape is accepted, and said not to
// be redactable by its text (the relay warns of it at start).
func TestCallbackTokenCharacters(t *testing.T) {
	for tok, want := range map[string]string{
		"0123456789abcdefABCDEF-._~+=": "redactable",
		"0123456789abcdef!x":           "accepted",
		"0123456789abcdef\\x":          "accepted",
		"0123456789abcdef<x":           "accepted",
		"0123456789abcdef'x":           "accepted",
		"0123456789abcdefé":            "accepted",
		"0123456789abcdef/x":           "refused",
		"0123456789abcdef%41":          "refused",
		"0123456789abcdef?x":           "refused",
	} {
		cfg, err := Load(write(t, "projects:\n  main: {callback_token: '"+strings.ReplaceAll(tok, "'", "''")+"'}\n"), noEnv)
		got := "refused"
		if err == nil {
			got = "accepted"
			if RedactableToken(cfg.Projects["main"].CallbackToken.Value()) {
				got = "redactable"
			}
		} else if !strings.Contains(err.Error(), "projects.main.callback_token: must be URL-safe") {
			t.Errorf("callback_token %q: %v", tok, err)
		}
		if got != want {
			t.Errorf("callback_token %q: %s, want %s", tok, got, want)
		}
	}
}

func TestNoProjects(t *testing.T) {
	if _, err := Load(write(t, "data_dir: x\n"), noEnv); err == nil || !strings.Contains(err.Error(), "at least one project") {
		t.Fatalf("err = %v", err)
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	body := "projects:\n  main: {}\n  my-shop: {}\n"
	cfg, err := Load(write(t, body), env(map[string]string{
		"SENGO_RELAY_HTTP_LISTEN":                     "127.0.0.1:9999",
		"SENGO_RELAY_NATS_URL":                        "nats://a:4222,nats://b:4222",
		"SENGO_RELAY_NATS_REPLICAS":                   "3",
		"SENGO_RELAY_HTTP_PUBLISH_TIMEOUT":            "2s",
		"SENGO_RELAY_HTTP_TRUSTED_PROXIES":            "10.0.0.0/8, 192.0.2.1",
		"SENGO_RELAY_ADMIN_TRUSTED_PROXIES":           "192.0.2.7",
		"SENGO_RELAY_PROJECTS_MAIN_API_KEY":           "key",
		"SENGO_RELAY_PROJECTS_MAIN_TOKEN":             "tok",
		"SENGO_RELAY_PROJECTS_MY_SHOP_CALLBACK_TOKEN": "0123456789abcdef",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen != "127.0.0.1:9999" || cfg.NATS.URL != "nats://a:4222,nats://b:4222" || cfg.NATS.Replicas != 3 {
		t.Errorf("overrides not applied: %+v %+v", cfg.HTTP, cfg.NATS)
	}
	if cfg.HTTP.PublishTimeout.D() != 2*time.Second {
		t.Errorf("publish_timeout = %s", cfg.HTTP.PublishTimeout)
	}
	if got := strings.Join(cfg.HTTP.TrustedProxies, "|"); got != "10.0.0.0/8|192.0.2.1" {
		t.Errorf("trusted_proxies = %q", got)
	}
	if got := strings.Join(cfg.Admin.TrustedProxies, "|"); got != "192.0.2.7" {
		t.Errorf("admin.trusted_proxies = %q", got)
	}
	if cfg.Projects["main"].Token.Value() != "tok" || cfg.Projects["main"].SignatureMode() != SignatureOptional {
		t.Errorf("project override not applied")
	}
	if cfg.Projects["my-shop"].CallbackToken.Value() != "0123456789abcdef" {
		t.Errorf("hyphenated project override not applied")
	}
}

func TestEnvironmentOverrideErrorsAreReported(t *testing.T) {
	_, err := Load(write(t, minimal), env(map[string]string{
		"SENGO_RELAY_NATS_REPLICAS":        "three",
		"SENGO_RELAY_HTTP_PUBLISH_TIMEOUT": "5",
	}))
	if err == nil || !strings.Contains(err.Error(), "SENGO_RELAY_NATS_REPLICAS") || !strings.Contains(err.Error(), "SENGO_RELAY_HTTP_PUBLISH_TIMEOUT") {
		t.Fatalf("err = %v", err)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("projects:\n  main:\n    api_key: k\n    token_file: %s\n", tok)
	cfg, err := Load(write(t, body), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Projects["main"].Token.Value() != "from-file" {
		t.Errorf("token = %q", cfg.Projects["main"].Token.Value())
	}

	both := fmt.Sprintf("projects:\n  main:\n    token: x\n    token_file: %s\n", tok)
	if _, err := Load(write(t, both), noEnv); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("token and token_file together: err = %v", err)
	}
	missing := "projects:\n  main:\n    token_file: /nonexistent/token\n"
	if _, err := Load(write(t, missing), noEnv); err == nil || !strings.Contains(err.Error(), "token_file") {
		t.Errorf("missing token file: err = %v", err)
	}
	// A secret set as its own *_file (the value where its path belongs) is
	// not repeated by the error: os.ReadFile's error names the path.
	// nats.creds_file too, which nats.go read only as it connected: its
	// error, with the JWT and seed given as the path, went to the CLI's
	// stderr.
	for _, key := range []string{"SENGO_RELAY_PROJECTS_MAIN_TOKEN_FILE", "SENGO_RELAY_ADMIN_TOKEN_FILE", "SENGO_RELAY_ENDPOINTS_ORDERS_SECRETS_FILE", "SENGO_RELAY_NATS_CREDS_FILE"} {
		_, err := Load(write(t, "nats: {url: 'nats://nats.example:4222'}\nprojects:\n  main: {api_key: k}\nendpoints:\n  orders: {url: 'https://orders.example/hook'}\n"), env(map[string]string{key: "whsec_S3cretValue0123456789"}))
		if err == nil || !strings.Contains(err.Error(), "_file") || strings.Contains(err.Error(), "S3cretValue") {
			t.Errorf("%s set to a secret: err = %v", key, err)
		}
	}
}

// Secrets never print, whatever prints the configuration.
func TestSecretsNeverPrint(t *testing.T) {
	cfg, err := Load(write(t, "nats: {url: 'nats://x:4222', token: natssecret}\nprojects:\n  main: {api_key: apikeysecret, token: tokensecret, callback_token: callbacksecret-0123}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(cfg)
	for _, out := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), string(js)} {
		for _, s := range []string{"natssecret", "apikeysecret", "tokensecret", "callbacksecret"} {
			if strings.Contains(out, s) {
				t.Errorf("%q printed in %.80s…", s, out)
			}
		}
	}
}

func TestSignatureModeDefault(t *testing.T) {
	if m := (&Project{}).SignatureMode(); m != SignatureOff {
		t.Errorf("without credentials: %s", m)
	}
	if m := (&Project{APIKey: "k", Token: "t"}).SignatureMode(); m != SignatureOptional {
		t.Errorf("with credentials: %s", m)
	}
	if m := (&Project{APIKey: "k", Token: "t", Signature: "required"}).SignatureMode(); m != SignatureRequired {
		t.Errorf("explicit: %s", m)
	}
}

// The events duplicate window must cover an intake retry, so a re-flushed
// event is still recognized.
func TestEventsDuplicateWindowCoversRetries(t *testing.T) {
	_, err := Load(write(t, "streams: {events: {max_age: 720h, duplicate_window: 1m}}\nintake: {retry_max: 5m}\n"+minimal), noEnv)
	if err == nil || !strings.Contains(err.Error(), "streams.events.duplicate_window") {
		t.Fatalf("err = %v", err)
	}
}

// A check may take at most a third of ack_wait: it, the writes after it
// and the settling share the time before the message is handed out again.
// The inbox must keep a notification long enough that intake, retrying it
// at most every retry_max, reaches it in the last tenth of its retention,
// where it is quarantined rather than dropped.
func TestInboxRetentionLeavesRoomToQuarantine(t *testing.T) {
	_, err := Load(write(t, "streams: {inbox: {max_age: 30m}}\nintake: {retry_max: 5m}\n"+minimal), noEnv)
	if err == nil || !strings.Contains(err.Error(), "streams.inbox.max_age") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Load(write(t, "streams: {inbox: {max_age: 2h}}\nintake: {retry_max: 5m}\n"+minimal), noEnv); err != nil {
		t.Fatalf("a 2h inbox with 5m retries: %v", err)
	}
}

// A store capped below what the console's buckets reserve never starts:
// the relay retried provisioning for good, "insufficient storage".
func TestMaxStoreBytesLeavesRoomForTheStreams(t *testing.T) {
	for _, v := range []string{"-2", "1048576", "33554432"} {
		if _, err := Load(write(t, "nats: {embedded: {max_store_bytes: "+v+"}}\n"+minimal), noEnv); err == nil || !strings.Contains(err.Error(), "nats.embedded.max_store_bytes") {
			t.Errorf("max_store_bytes %s: %v", v, err)
		}
	}
	for _, v := range []string{"0", "-1", "35651584"} { // -1: NATS's own "no cap"
		if _, err := Load(write(t, "nats: {embedded: {max_store_bytes: "+v+"}}\n"+minimal), noEnv); err != nil {
			t.Errorf("max_store_bytes %s: %v", v, err)
		}
	}
}

// A cap on the events, the quarantine or the dead letters, full, stalls
// what writes there behind it while callbacks still get 200: forged
// claims filling a capped quarantine held every intake slot with
// notifications waiting to be set aside, until genuine ones aged out of
// the inbox. Only the inbox (a full one answers 503) and the stores off
// the delivery path take a cap; the store as a whole takes
// nats.embedded.max_store_bytes.
func TestOnlyStreamsWhoseFullnessIsSafeTakeACap(t *testing.T) {
	for _, name := range []string{"events", "quarantine", "dlq"} {
		if _, err := Load(write(t, "streams: {"+name+": {max_bytes: 1048576}}\n"+minimal), noEnv); err == nil || !strings.Contains(err.Error(), "streams."+name+".max_bytes") {
			t.Errorf("%s capped: %v", name, err)
		}
	}
	for _, name := range []string{"inbox", "replay", "attempts", "refs", "reconciliations"} {
		if _, err := Load(write(t, "streams: {"+name+": {max_bytes: 1048576}}\n"+minimal), noEnv); err != nil {
			t.Errorf("%s capped: %v", name, err)
		}
	}
	// -1, NATS's own "no cap", is none anywhere.
	for _, name := range []string{"events", "quarantine", "dlq", "inbox"} {
		if _, err := Load(write(t, "streams: {"+name+": {max_bytes: -1}}\n"+minimal), noEnv); err != nil {
			t.Errorf("%s at -1: %v", name, err)
		}
	}
}

// A quarantine kept less than its rechecks take (the last comes 6 h after
// the one before, and a relay down meanwhile rechecks up to 24 h late)
// dropped a genuine success SenGo's API was slow to report before its
// recheck published it.
func TestTheQuarantineOutlivesItsRechecks(t *testing.T) {
	if _, err := Load(write(t, "streams: {quarantine: {max_age: 4h, duplicate_window: 1h}}\n"+minimal), noEnv); err == nil || !strings.Contains(err.Error(), "streams.quarantine.max_age") {
		t.Fatalf("a 4h quarantine: %v", err)
	}
	if _, err := Load(write(t, "streams: {quarantine: {max_age: 24h, duplicate_window: 1h}}\n"+minimal), noEnv); err != nil {
		t.Fatalf("a 24h quarantine: %v", err)
	}
}

func TestConfirmTimeoutFitsAckWait(t *testing.T) {
	_, err := Load(write(t, "intake: {ack_wait: 9s, confirm_timeout: 4s}\n"+minimal), noEnv)
	if err == nil || !strings.Contains(err.Error(), "intake.confirm_timeout") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Load(write(t, "intake: {ack_wait: 9s, confirm_timeout: 3s}\n"+minimal), noEnv); err != nil {
		t.Fatal(err)
	}
	// The SenGo client gives up any call after 15s: a longer check timed
	// out there, reported as the configured one, and never did what the
	// operator set it for.
	if _, err := Load(write(t, "intake: {ack_wait: 90s, confirm_timeout: 16s}\n"+minimal), noEnv); err == nil || !strings.Contains(err.Error(), "intake.confirm_timeout") {
		t.Fatalf("a 16s confirm_timeout: %v", err)
	}
	if _, err := Load(write(t, "intake: {ack_wait: 90s, confirm_timeout: 15s}\n"+minimal), noEnv); err != nil {
		t.Fatal(err)
	}
	// Unset, it fits whatever ack_wait is.
	c, err := Load(write(t, "intake: {ack_wait: 5s}\n"+minimal), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Intake.CheckTimeout(); got <= 0 || got > 5*time.Second/3 {
		t.Fatalf("default check timeout with ack_wait 5s: %s", got)
	}
	if c, err = Load(write(t, minimal), noEnv); err != nil || c.Intake.CheckTimeout() != 5*time.Second {
		t.Fatalf("default check timeout: %v %v", c.Intake.CheckTimeout(), err)
	}
}

// Half the credentials once turned confirmation and signatures off without
// a word; now it is an error, whichever half is missing, and so are a
// required confirmation that cannot happen and a shared api_key.
func TestCredentialMistakesAreErrors(t *testing.T) {
	tests := map[string]struct{ body, want string }{
		"api_key without token":                    {"projects:\n  main: {api_key: k1}\n", "projects.main: api_key is set but token is not"},
		"token without api_key":                    {"projects:\n  main: {token: t1}\n", "projects.main: token is set but api_key is not"},
		"api_key, token from an empty env var":     {"projects:\n  main: {api_key: k1, token: \"\"}\n", "token is not"},
		"require_confirmation without credentials": {"projects:\n  main: {require_confirmation: true}\n", "projects.main.require_confirmation"},
		// Without credentials nothing is confirmed: check-config would say
		// "confirm on", and no warning would say that nothing is.
		"confirm true without credentials":        {"projects:\n  main: {confirm: \"true\"}\n", "projects.main.confirm: true needs api_key and token"},
		"require_confirmation with confirm false": {"projects:\n  main: {api_key: k1, token: t1, confirm: \"false\", require_confirmation: true}\n", "projects.main.require_confirmation"},
		"one api_key, two projects":               {"projects:\n  a: {api_key: k1, token: t1}\n  b: {api_key: k1, token: t2}\n", "projects.b.api_key: the same as projects.a.api_key"},
		// The key and token travel in headers on every check: in the clear
		// to the internet for a base_url typed with http.
		"credentials over plain http": {"projects:\n  main: {api_key: k1, token: t1, base_url: \"http://api.sengo.id/api\"}\n", "projects.main.base_url: http:// sends the api_key and token in the clear"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Load(write(t, tc.body), noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "k1") || strings.Contains(err.Error(), "t1") {
				t.Fatalf("the error shows a secret: %v", err)
			}
		})
	}
	cfg, err := Load(write(t, "projects:\n  main: {api_key: k1, token: t1, require_confirmation: true}\n"), noEnv)
	if err != nil || !cfg.Projects["main"].Confirms() {
		t.Fatalf("complete credentials with require_confirmation: %v", err)
	}
	// Plain http to this machine (the sandbox) is fine.
	for _, u := range []string{"http://127.0.0.1:8090/api", "http://localhost:8090/api", "http://[::1]:8090/api"} {
		if _, err := Load(write(t, "projects:\n  main: {api_key: k1, token: t1, base_url: \""+u+"\"}\n"), noEnv); err != nil {
			t.Errorf("base_url %s: %v", u, err)
		}
	}
}

// A 200 to SenGo must survive a power loss: the embedded store fsyncs
// before every acknowledgement unless the configuration says otherwise.
func TestDurableByDefault(t *testing.T) {
	for name, cfg := range map[string]Config{"Default()": Default(), "checked-in config.yaml": mustLoad(t, committedConfig(t))} {
		if _, always, err := cfg.NATS.Embedded.Sync(); err != nil || !always {
			t.Errorf("%s: sync_interval %q, want always", name, cfg.NATS.Embedded.SyncInterval)
		}
	}
}

func mustLoad(t *testing.T, path string) Config {
	t.Helper()
	cfg, err := Load(path, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The embedded server beyond loopback needs a subscriber password chosen
// by the operator; loopback works with the generated one.
func TestNonLoopbackEmbeddedListenNeedsAPassword(t *testing.T) {
	_, err := Load(write(t, minimal+"nats: {embedded: {listen: \"0.0.0.0:4222\"}}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "nats.embedded.listen") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Load(write(t, minimal+"nats: {embedded: {listen: \"0.0.0.0:4222\", subscriber: {password: s3cret-s3cret-s3cret}}}\n"), noEnv); err != nil {
		t.Fatal(err)
	}
	// A short one, beyond loopback: one check a time at bcrypt's cost
	// (about 11 guesses a second) finds a few characters in hours, and
	// the subscriber reads every event. The admin and metrics tokens need
	// 16 characters too.
	_, err = Load(write(t, minimal+"nats: {embedded: {listen: \"0.0.0.0:4222\", subscriber: {password: s3cret}}}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "nats.embedded.subscriber.password: at least 16 characters") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("a short subscriber password beyond loopback: %v", err)
	}
	_, err = Load(write(t, minimal+"metrics: {listen: \"0.0.0.0:9090\", token: m3trics}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "metrics.token: must be at least 16 characters") || strings.Contains(err.Error(), "m3trics") {
		t.Fatalf("a short metrics token: %v", err)
	}
	for _, l := range []string{"127.0.0.1:4222", "[::1]:4222", "localhost:4222"} {
		if _, err := Load(write(t, minimal+"nats: {embedded: {listen: \""+l+"\"}}\n"), noEnv); err != nil {
			t.Errorf("%s: %v", l, err)
		}
	}
}

// Durations accept a leading whole number of days, as the README's
// `--since 30d` shows; anything else keeps Go's syntax.
func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 720 * time.Hour, "1d12h": 36 * time.Hour, "48h": 48 * time.Hour, "90m": 90 * time.Minute, "0d": 0,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "30", "-1d", "1.5d", "30days", "1d-2h", "99999999d", "d12h"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
}

// Every problem at once, each by its dotted key path, with the nearest
// valid key: an unknown key, a type error, a bad duration and a failed
// rule in one file give four lines, not the first of them.
func TestProblemsAreListedAtOnceByPath(t *testing.T) {
	body := "http:\n  listn: \":1\"\n  max_in_flight: lots\n  publish_timeout: 5x\nlog:\n  level: loud\n" + minimal
	_, err := Load(write(t, body), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"4 problems",
		"http.listn (line 2): unknown key; did you mean http.listen?",
		"http.max_in_flight (line 3): cannot unmarshal",
		`http.publish_timeout (line 4): invalid duration "5x"`,
		`log.level: "loud" is not one of`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "config.HTTP") {
		t.Errorf("error names a Go type:\n%v", err)
	}
	// Inside maps too: an endpoint's key is named by its whole path.
	_, err = Load(write(t, minimal+"endpoints:\n  orders:\n    url: https://o.example/h\n    secrets: ["+whsec+"]\n    filter: {all: true}\n    retry: {shedule: [1s]}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "endpoints.orders.retry.shedule (line 8): unknown key; did you mean endpoints.orders.retry.schedule?") {
		t.Errorf("got %v", err)
	}
}

// A SENGO_RELAY_ variable that names no key is an error with the nearest
// valid name: a typo must not silently leave a setting (confirmation, a
// token) at its default.
func TestUnknownEnvironmentVariablesAreErrors(t *testing.T) {
	for name, want := range map[string]string{
		"SENGO_RELAY_HTTP_LISTN":              "SENGO_RELAY_HTTP_LISTN: no such setting; did you mean SENGO_RELAY_HTTP_LISTEN?",
		"SENGO_RELAY_PROJECT_MAIN_TOKEN":      "did you mean SENGO_RELAY_PROJECTS_MAIN_TOKEN?",
		"SENGO_RELAY_PROJECTS_MAIN_CONFRIM":   "did you mean SENGO_RELAY_PROJECTS_MAIN_CONFIRM?",
		"SENGO_RELAY_ADMIN_TOKEN_FILES":       "did you mean SENGO_RELAY_ADMIN_TOKEN_FILE?",
		"SENGO_RELAY_NATS_EMBEDDED_LISTEN_ON": "no such setting",
	} {
		_, err := Load(write(t, minimal), env(map[string]string{name: "x"}))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", name, err, want)
		}
	}
	// SENGO_RELAY_CONFIG names the file; it is not a key.
	if _, err := Load(write(t, minimal), env(map[string]string{ConfigEnv: "elsewhere.yaml"})); err != nil {
		t.Errorf("%s: %v", ConfigEnv, err)
	}
}

// A container user adds a project, or an endpoint, with variables alone.
func TestProjectsAndEndpointsFromTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k")
	os.WriteFile(keyFile, []byte("SC-FROMENV0000000001\n"), 0o600)
	cfg, err := Load(write(t, "data_dir: x\n"), env(map[string]string{
		"SENGO_RELAY_PROJECTS_SHOP_API_KEY_FILE":        keyFile,
		"SENGO_RELAY_PROJECTS_SHOP_TOKEN":               "token-from-env-0001",
		"SENGO_RELAY_PROJECTS_SHOP_BASE_URL":            "sandbox",
		"SENGO_RELAY_PROJECTS_MY_OUTLET_CALLBACK_TOKEN": "cb-token-from-env-000001",
		"SENGO_RELAY_PROJECTS_MY_OUTLET_CONFIRM":        "false",
		"SENGO_RELAY_ENDPOINTS_ORDERS_URL":              "https://o.example/h",
		"SENGO_RELAY_ENDPOINTS_ORDERS_SECRETS":          whsec,
		"SENGO_RELAY_ENDPOINTS_ORDERS_FILTER_STATUSES":  "success,expired",
		"SENGO_RELAY_ENDPOINTS_ORDERS_RETRY_SCHEDULE":   "1s,1m",
	}))
	if err != nil {
		t.Fatal(err)
	}
	shop, outlet := cfg.Projects["shop"], cfg.Projects["my_outlet"]
	if shop == nil || outlet == nil || len(cfg.Projects) != 2 {
		t.Fatalf("projects %v", cfg.ProjectNames())
	}
	if shop.APIKey.Value() != "SC-FROMENV0000000001" || !shop.Confirms() || shop.APIBaseURL() != "https://api.sandbox.sengo.id/api" || outlet.CallbackToken.Value() != "cb-token-from-env-000001" {
		t.Errorf("shop %+v outlet %+v", shop, outlet)
	}
	o := cfg.Endpoints["orders"]
	if o == nil || o.URL != "https://o.example/h" || len(o.Secrets) != 1 || len(o.Filter.Statuses) != 2 || len(o.Retry.Schedule) != 2 || o.Concurrency != defaultEndpoint().Concurrency {
		t.Fatalf("endpoint %+v", o)
	}
	// A project the file has is matched first: its variables set it, and
	// add no second project.
	cfg, err = Load(write(t, "projects:\n  main: {}\n  main_x: {}\n"), env(map[string]string{"SENGO_RELAY_PROJECTS_MAIN_X_TOKEN": "t", "SENGO_RELAY_PROJECTS_MAIN_X_API_KEY": "k"}))
	if err != nil || len(cfg.Projects) != 2 || cfg.Projects["main_x"].Token.Value() != "t" {
		t.Fatalf("%v %v", err, cfg.ProjectNames())
	}
	// A project added by the environment is validated like any other.
	if _, err := Load(write(t, minimal), env(map[string]string{"SENGO_RELAY_PROJECTS_SHOP_TOKEN": "t"})); err == nil || !strings.Contains(err.Error(), "shop") {
		t.Fatalf("token without api_key accepted: %v", err)
	}
}

// A value of the wrong type is named by its path, never shown: yaml.v3's
// message quotes the value's first characters, which for a secret written
// as a string where a list belongs ("secrets: whsec_…") or a key written
// as a map is the secret's beginning.
func TestTypeErrorsDoNotShowTheValue(t *testing.T) {
	_, err := Load(write(t, minimal+"endpoints:\n  orders:\n    url: https://orders.example.id/hooks\n    secrets: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    filter: {all: true}\n"), noEnv)
	if err == nil {
		t.Fatal("a string where the secrets list belongs was accepted")
	}
	if strings.Contains(err.Error(), "whsec_") || !strings.Contains(err.Error(), "endpoints.orders.secrets") {
		t.Errorf("the error shows the value, or does not name its path:\n%v", err)
	}
}

// An endpoint URL that is not http(s) is named by its scheme and host, and
// a host can be the token itself (a capability URL's): the host is shown
// as the relay shows endpoint URLs everywhere.
func TestBadEndpointURLHidesATokenHost(t *testing.T) {
	_, err := Load(write(t, minimal+"endpoints:\n  orders:\n    url: ftp://eo3h0p8w4v9h6b5.m.pipedream.net/h\n    secrets: ["+whsec+"]\n    filter: {all: true}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "….m.pipedream.net") || strings.Contains(err.Error(), "eo3h0p8w4v9h6b5") {
		t.Fatalf("err = %v, want the host shown as ….m.pipedream.net", err)
	}
}

// Two header names differing only in case are one header: which value was
// sent was chosen by map order, per request, so the consumer's
// authentication passed on some deliveries and failed on others. A retry
// schedule long enough to overflow its sum passed the check against the
// streams' retention (a negative span), and every event was then
// dead-lettered after its first failure.
func TestEndpointHeadersAndScheduleAreCheckedWhole(t *testing.T) {
	for what, ep := range map[string]string{
		"headers differing in case": "    headers: {X-Api-Key: a, x-api-key: b}\n",
		"a schedule past int64":     "    retry: {schedule: [2562047h, 2562047h, 2562047h]}\n",
	} {
		_, err := Load(write(t, minimal+"endpoints:\n  orders:\n    url: https://o.example/h\n    secrets: ["+whsec+"]\n    filter: {all: true}\n"+ep), noEnv)
		if err == nil || !strings.Contains(err.Error(), "endpoints.orders") {
			t.Errorf("%s: err = %v, want it refused", what, err)
		}
	}
}

// A variable naming a project the file does not have adds that project,
// so a typo in the project's name (MIAN for MAIN) added a project "mian"
// and left main's callback token unset, the relay starting without a
// word. A project from variables alone needs its credentials, or
// confirm: false said outright.
func TestAMistypedProjectInAVariableIsAnError(t *testing.T) {
	body := "projects:\n  main: {api_key: SC-FILE00000000000001, token: file-token-000000001}\n"
	_, err := Load(write(t, body), env(map[string]string{"SENGO_RELAY_PROJECTS_MIAN_CALLBACK_TOKEN": "0123456789abcdef01"}))
	if err == nil || !strings.Contains(err.Error(), "projects.mian") {
		t.Fatalf("a project added by a mistyped variable: %v", err)
	}
	if strings.Contains(err.Error(), "0123456789abcdef01") {
		t.Fatalf("the error shows the token: %v", err)
	}
	// Any name, not only one like the file's (SHOP for a project the file
	// calls main, in another deployment's variables).
	_, err = Load(write(t, body), env(map[string]string{"SENGO_RELAY_PROJECTS_SHOP_CALLBACK_TOKEN": "0123456789abcdef01"}))
	if err == nil || !strings.Contains(err.Error(), "projects.shop: added by variables") {
		t.Fatalf("a project without credentials added by a variable: %v", err)
	}
	cfg, err := Load(write(t, body), env(map[string]string{
		"SENGO_RELAY_PROJECTS_OUTLET_CALLBACK_TOKEN": "0123456789abcdef01",
		"SENGO_RELAY_PROJECTS_OUTLET_CONFIRM":        "false",
	}))
	if err != nil || cfg.Projects["outlet"] == nil {
		t.Fatalf("an unconfirmed project from variables, said outright: %v", err)
	}
	// Both credential variables copied with the typo made a whole
	// project "mian", and left "main" unconfirmed. A project from
	// variables alone whose name is the file's with two letters swapped,
	// or one added or dropped, is refused too; one merely alike is not.
	for _, typo := range []string{"MIAN", "MAN", "MAAIN"} {
		_, err = Load(write(t, body), env(map[string]string{
			"SENGO_RELAY_PROJECTS_" + typo + "_API_KEY": "SC-ENV000000000000001", "SENGO_RELAY_PROJECTS_" + typo + "_TOKEN": "env-token-0000000001",
		}))
		if err == nil || !strings.Contains(err.Error(), "did you mean main") {
			t.Errorf("a whole project %s from variables beside the file's main: %v", typo, err)
		}
	}
	// A name with '-' in the file: its variables spell it with '_'.
	body3 := "projects:\n  toko-a: {callback_token: 0123456789abcdef01}\n"
	for _, typo := range []string{"TOOK_A", "TOK_A"} {
		_, err = Load(write(t, body3), env(map[string]string{
			"SENGO_RELAY_PROJECTS_" + typo + "_API_KEY": "SC-ENV000000000000001", "SENGO_RELAY_PROJECTS_" + typo + "_TOKEN": "env-token-0000000001",
		}))
		if err == nil || !strings.Contains(err.Error(), "did you mean toko-a") {
			t.Errorf("a whole project %s from variables beside the file's toko-a: %v", typo, err)
		}
	}
	body2 := "projects:\n  outlet1: {api_key: SC-FILE00000000000001, token: file-token-000000001}\n"
	if _, err := Load(write(t, body2), env(map[string]string{
		"SENGO_RELAY_PROJECTS_OUTLET2_API_KEY": "SC-ENV000000000000001", "SENGO_RELAY_PROJECTS_OUTLET2_TOKEN": "env-token-0000000001",
	})); err != nil {
		t.Errorf("outlet2 from variables beside the file's outlet1: %v", err)
	}
}

// An empty variable (Compose fills in an unset ${VAR} so) removed the
// file's setting without a word: a callback token, the allowed
// addresses (then every address may post), or both credentials (then
// nothing is confirmed). An empty secret, *_FILE or allowed_ips variable
// is an error.
func TestAnEmptyVariableRemovesNoSecurity(t *testing.T) {
	body := "projects:\n  main: {api_key: SC-FILE00000000000001, token: file-token-000000001, callback_token: 0123456789abcdef01, allowed_ips: [192.0.2.1], signature: required}\nadmin: {listen: \"0.0.0.0:8081\", token: admin-token-0123456789, hosts: [relay.example]}\n"
	for _, name := range []string{
		"SENGO_RELAY_PROJECTS_MAIN_CALLBACK_TOKEN", "SENGO_RELAY_PROJECTS_MAIN_CALLBACK_TOKEN_FILE",
		"SENGO_RELAY_PROJECTS_MAIN_ALLOWED_IPS", "SENGO_RELAY_PROJECTS_MAIN_API_KEY", "SENGO_RELAY_PROJECTS_MAIN_TOKEN_FILE",
		// signature: required read as optional; admin.hosts as any name.
		"SENGO_RELAY_PROJECTS_MAIN_SIGNATURE", "SENGO_RELAY_ADMIN_HOSTS",
	} {
		if _, err := Load(write(t, body), env(map[string]string{name: ""})); err == nil || !strings.Contains(err.Error(), name+": empty") {
			t.Errorf("%s set empty: %v", name, err)
		}
	}
}

// A secret written unquoted with '*' first is a YAML alias, and yaml.v3's
// error names it ("unknown anchor 'S3cret…' referenced"): check-config and
// serve printed the secret. A value holding a backtick ended yaml.v3's
// quote of it early, and its next characters were shown.
func TestParseErrorsDoNotShowTheValue(t *testing.T) {
	for name, body := range map[string]string{
		"alias":    "admin: {token: *S3cretValue0123456}\nprojects: {main: {}}\n",
		"backtick": "projects: {main: {}}\nhttp: {max_in_flight: \"a`S3cretValue0123456\"}\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(write(t, body), noEnv)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), "S3cr") {
				t.Fatalf("the error shows the value: %v", err)
			}
		})
	}
}

// Reconciliation looks back its window and to the start of that day
// (window plus a day) at every run. A transaction whose SENGO_TX entry
// expired while SenGo still lists it is missing to it: fed, confirmed and
// published again, and every endpoint got it a second time at each run
// after its entry aged out. With reconciliation on, the entries outlive
// what it looks at.
func TestTransactionsOutliveWhatReconciliationLooksAt(t *testing.T) {
	body := "projects:\n  main: {api_key: apikeysecret, token: tokensecret}\nstreams:\n  inbox: {max_age: 24h}\n  transactions: {ttl: 24h}\n"
	_, err := Load(write(t, body), noEnv)
	if err == nil || !strings.Contains(err.Error(), "streams.transactions.ttl (24h0m0s) must be 0 or more than reconcile.window plus a day plus reconcile.interval (72h10m0s)") {
		t.Fatalf("a 24h ttl with a 48h reconciliation: %v", err)
	}
	for _, ok := range []string{
		"projects:\n  main: {api_key: apikeysecret, token: tokensecret}\nstreams:\n  inbox: {max_age: 24h}\n  transactions: {ttl: 24h}\nreconcile: {interval: 0s}\n", // reconciliation off
		"projects:\n  main: {}\nstreams:\n  inbox: {max_age: 24h}\n  transactions: {ttl: 24h}\n",                                                                     // no project reconciles
		"projects:\n  main: {api_key: apikeysecret, token: tokensecret}\nstreams:\n  transactions: {ttl: 0s}\n",                                                      // kept forever
	} {
		if _, err := Load(write(t, ok), noEnv); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}
