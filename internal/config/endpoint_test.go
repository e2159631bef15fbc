package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestEndpointDefaultsAndSubjects(t *testing.T) {
	body := minimal + `endpoints:
  orders:
    url: https://orders.example/hooks/sengo
    secrets: [` + whsec + `]
    filter: {statuses: [success], products: [retail, qris]}
    headers: {X-Tenant: shop-1}
`
	cfg, err := Load(write(t, body), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Endpoints["orders"]
	if e.Timeout.D() != 10*time.Second || e.Concurrency != 4 || len(e.Retry.Schedule) != 9 || e.DeliverFrom != "new" || e.Breaker.Failures != 10 {
		t.Fatalf("defaults not applied: %+v", e)
	}
	want := []string{"sengo.events.*.retail.success", "sengo.events.*.qris.success"}
	if got := e.Filter.Subjects(); !slices.Equal(got, want) {
		t.Fatalf("subjects %v, want %v", got, want)
	}
	if got := (Filter{All: true}).Subjects(); !slices.Equal(got, []string{"sengo.events.*.*.*"}) {
		t.Fatalf("all: %v", got)
	}
	if s := fmt.Sprintf("%+v", cfg); strings.Contains(s, "MfKQ9r8G") {
		t.Fatal("endpoint secret printed")
	}
}

func TestEndpointValidation(t *testing.T) {
	body := minimal + `endpoints:
  Bad Name:
    url: x
  orders:
    url: ftp://orders.example/
    secrets: [not-a-secret]
    filter: {}
    concurrency: 1000
    retry: {jitter: 2, retry_after_max: 0s}
    headers: {webhook-id: x}
    deliver_from: yesterday
  fulfil:
    url: https://f.example/
    secrets: [` + whsec + `]
    filter: {projects: [ghost], products: [pulsa], statuses: [paid]}
admin: {token: short}
`
	_, err := Load(write(t, body), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"endpoints.Bad Name", "endpoints.orders.url", "endpoints.orders.secrets[0]", "endpoints.orders.filter: empty",
		"endpoints.orders.concurrency", "endpoints.orders.retry.jitter", "endpoints.orders.retry.retry_after_max", "endpoints.orders.headers", "endpoints.orders.deliver_from",
		"endpoints.fulfil.filter.projects", "endpoints.fulfil.filter.products", "endpoints.fulfil.filter.statuses", "admin.token",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s", want)
		}
	}
	if t.Failed() {
		t.Log(err)
	}
}

// admin.secure_cookie is off by default (the listener is plain HTTP),
// turned on in the file or by its variable, and anything but a boolean
// is an error that names it.
func TestAdminSecureCookie(t *testing.T) {
	cfg, err := Load(write(t, minimal), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.SecureCookie {
		t.Error("secure_cookie is on by default")
	}
	cfg, err = Load(write(t, minimal+"admin: {secure_cookie: true}\n"), noEnv)
	if err != nil || !cfg.Admin.SecureCookie {
		t.Errorf("secure_cookie: true in the file: %v, %v", cfg.Admin.SecureCookie, err)
	}
	cfg, err = Load(write(t, minimal), env(map[string]string{"SENGO_RELAY_ADMIN_SECURE_COOKIE": "true"}))
	if err != nil || !cfg.Admin.SecureCookie {
		t.Errorf("SENGO_RELAY_ADMIN_SECURE_COOKIE=true: %v, %v", cfg.Admin.SecureCookie, err)
	}
	if _, err := Load(write(t, minimal+"admin: {secure_cookie: sometimes}\n"), noEnv); err == nil || !strings.Contains(err.Error(), "secure_cookie") {
		t.Errorf("secure_cookie: sometimes: %v, want an error naming it", err)
	}
	if _, err := Load(write(t, minimal), env(map[string]string{"SENGO_RELAY_ADMIN_SECURE_COOKIE": "auto"})); err == nil || !strings.Contains(err.Error(), "SECURE_COOKIE") {
		t.Errorf("SENGO_RELAY_ADMIN_SECURE_COOKIE=auto: %v, want an error naming it", err)
	}
}

func TestEndpointScheduleMustFitRetention(t *testing.T) {
	body := minimal + `streams: {events: {max_age: 24h, duplicate_window: 1h}}
endpoints:
  orders: {url: "https://o.example/", secrets: [` + whsec + `], filter: {all: true}}
`
	if _, err := Load(write(t, body), noEnv); err == nil || !strings.Contains(err.Error(), "would expire") {
		t.Fatalf("3-day schedule on a 1-day stream: %v", err)
	}
}

// Replayed and redriven copies are retried on SENGO_REPLAY with the
// endpoint's schedule: one that spans longer than that stream keeps them
// would let a copy age out between two retries, with no dead letter.
func TestEndpointScheduleMustFitReplayRetention(t *testing.T) {
	body := minimal + `streams: {replay: {max_age: 48h, duplicate_window: 24h}}
endpoints:
  orders: {url: "https://o.example/", secrets: [` + whsec + `], filter: {all: true}}
`
	if _, err := Load(write(t, body), noEnv); err == nil || !strings.Contains(err.Error(), "streams.replay.max_age") {
		t.Fatalf("3-day schedule on a 2-day replay stream: %v", err)
	}
}

// An endpoint without a signing secret (none listed, or a secrets_file of
// blank lines) is refused: its webhooks would go out with an empty
// signature that anyone can make.
func TestAnEndpointNeedsASecret(t *testing.T) {
	f := filepath.Join(t.TempDir(), "secrets")
	os.WriteFile(f, []byte("\n\n  \n"), 0o600)
	for name, e := range map[string]string{
		"none":          `{url: "https://o.example/", filter: {all: true}}`,
		"an empty list": `{url: "https://o.example/", secrets: [], filter: {all: true}}`,
		"a blank file":  `{url: "https://o.example/", secrets_file: ` + f + `, filter: {all: true}}`,
	} {
		_, err := Load(write(t, minimal+"endpoints:\n  orders: "+e+"\n"), noEnv)
		if err == nil || !strings.Contains(err.Error(), "endpoints.orders.secrets: at least one whsec_ secret is required") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestEndpointSecretsFromFileAndEnv(t *testing.T) {
	f := filepath.Join(t.TempDir(), "secrets")
	os.WriteFile(f, []byte(whsec+"\nwhsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n"), 0o600)
	body := minimal + "endpoints:\n  orders: {url: \"https://o.example/\", secrets_file: " + f + ", filter: {all: true}}\n"
	cfg, err := Load(write(t, body), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.Endpoints["orders"].Secrets); n != 2 {
		t.Fatalf("%d secrets from file", n)
	}
	body = minimal + "endpoints:\n  orders: {url: \"https://o.example/\", filter: {all: true}}\n"
	cfg, err = Load(write(t, body), env(map[string]string{
		"SENGO_RELAY_ENDPOINTS_ORDERS_SECRETS":        whsec,
		"SENGO_RELAY_ENDPOINTS_ORDERS_RETRY_SCHEDULE": "1s,2s",
		"SENGO_RELAY_ENDPOINTS_ORDERS_RATE_LIMIT":     "2.5",
	}))
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Endpoints["orders"]
	if len(e.Secrets) != 1 || len(e.Retry.Schedule) != 2 || e.Retry.Schedule[1].D() != 2*time.Second || e.RateLimit != 2.5 {
		t.Fatalf("env overrides: %+v", e)
	}
}

func TestDuplicateEndpointNames(t *testing.T) {
	body := minimal + `endpoints:
  orders: {url: "https://a.example/", secrets: [` + whsec + `], filter: {all: true}}
  orders: {url: "https://b.example/", secrets: [` + whsec + `], filter: {all: true}}
`
	if _, err := Load(write(t, body), noEnv); err == nil || !strings.Contains(err.Error(), `"orders" already defined`) {
		t.Fatalf("duplicate endpoint names: %v", err)
	}
}

// A documented zero means what the reference says, not the default:
// breaker.failures: 0 never pauses, retry.jitter: 0 is no jitter. Keys left
// out still get their defaults, and unknown keys are still errors.
func TestEndpointDocumentedZerosAreKept(t *testing.T) {
	cfg, err := Load(write(t, minimal+`endpoints:
  zero:
    url: https://orders.example/hook
    secrets: [`+whsec+`]
    filter: {all: true}
    retry: {jitter: 0}
    breaker: {failures: 0}
  omitted:
    url: https://orders.example/hook
    secrets: [`+whsec+`]
    filter: {all: true}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if z := cfg.Endpoints["zero"]; z.Breaker.Failures != 0 || z.Retry.Jitter != 0 {
		t.Errorf("explicit zeros replaced: failures %d, jitter %v", z.Breaker.Failures, z.Retry.Jitter)
	}
	if o := cfg.Endpoints["omitted"]; o.Breaker.Failures != 10 || o.Retry.Jitter != 0.2 || o.Timeout.D() != 10*time.Second || len(o.Retry.Schedule) != 9 {
		t.Errorf("defaults not applied: %+v", o)
	}
	_, err = Load(write(t, minimal+"endpoints:\n  x:\n    url: https://o.example/h\n    secrets: ["+whsec+"]\n    filter: {all: true}\n    breaker: {failurez: 3}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "failurez") {
		t.Errorf("unknown endpoint key accepted: %v", err)
	}
}

// A static header value with CR or LF would let the configuration split
// every webhook request; it is refused.
func TestEndpointHeaderValueWithCRLFIsAnError(t *testing.T) {
	_, err := Load(write(t, minimal+"endpoints:\n  x:\n    url: https://o.example/h\n    secrets: ["+whsec+"]\n    filter: {all: true}\n    headers: {X-Tenant: \"a\\r\\nX-Evil: 1\"}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "endpoints.x.headers.X-Tenant") {
		t.Fatalf("err = %v", err)
	}
}

// Values that pass a range check by not being numbers or addresses at
// all are refused, each by its key:
//   - NaN fails every comparison, so "jitter < 0 || jitter > 1" let it
//     through; the delays it made were negative, every retry came at once
//     and a minute's outage spent an endpoint's three-day schedule in
//     seconds. rate_limit: NaN meant no limit.
//   - a nats.url that does not parse passed, and failed at start with an
//     error that repeats it whole, password included;
//   - an admin.listen that is no host:port passed, and failed once the
//     relay had started everything else, as "intake failed to start".
func TestNotANumberAndOddAddressesAreRefused(t *testing.T) {
	body := minimal + `nats: {url: "nats://relay:ab%zz@nats-1:4222"}
admin: {token: 0123456789abcdef0123, listen: "8081"}
endpoints:
  orders:
    url: https://orders.example/
    secrets: [` + whsec + `]
    filter: {all: true}
    retry: {jitter: .nan}
    rate_limit: .nan
  fulfil:
    url: https://f.example/
    secrets: [` + whsec + `]
    filter: {all: true}
    rate_limit: .inf
`
	_, err := Load(write(t, body), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"endpoints.orders.retry.jitter", "endpoints.orders.rate_limit", "endpoints.fulfil.rate_limit", "nats.url", "admin.listen"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s", want)
		}
	}
	if strings.Contains(err.Error(), "ab%zz") {
		t.Errorf("the error repeats nats.url's password: %v", err)
	}
	if t.Failed() {
		t.Log(err)
	}
	// A token with '#' or '?' not percent-encoded parses, as a host and a
	// fragment or query; nats.go then dialed the token as the host, and
	// its error ("address s3cr3tT0k: missing port") went to the log.
	for _, u := range []string{"nats://s3cr3tT0k#rest@nats-1:4222", "nats://s3cr3tT0k?rest@nats-1:4222"} {
		_, err = Load(write(t, minimal+`nats: {url: "`+u+`"}`+"\n"), noEnv)
		if err == nil || !strings.Contains(err.Error(), "nats.url") || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("nats.url %s: %v", u, err)
		}
	}
	_, err = Load(write(t, minimal+`endpoints:
  orders:
    url: https://orders.example/
    secrets: [`+whsec+`]
    filter: {all: true}
`), env(map[string]string{"SENGO_RELAY_ENDPOINTS_ORDERS_RETRY_JITTER": "NaN"}))
	if err == nil || !strings.Contains(err.Error(), "retry.jitter") {
		t.Errorf("jitter NaN from the environment: %v", err)
	}
}

// A status, product or project listed twice in a filter passed the
// check, and nats-server then refused the endpoint's consumer (its
// filter subjects overlapped themselves): the relay stopped at start,
// callbacks and all. Each repeat is named.
func TestARepeatInAFilterIsAnError(t *testing.T) {
	body := minimal + `endpoints:
  orders:
    url: https://orders.example/hooks/sengo
    secrets: [` + whsec + `]
    filter: {projects: [main, main], products: [retail, qris, retail], statuses: [success, expired, success]}
`
	_, err := Load(write(t, body), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`endpoints.orders.filter.projects: "main" is listed twice`, `endpoints.orders.filter.products: "retail" is listed twice`, `endpoints.orders.filter.statuses: "success" is listed twice`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %s: %v", want, err)
		}
	}
}

// Each relay tells its endpoints' filter subjects in its heartbeat, one
// value of the bucket: past the store's max_payload (1 MiB by default on
// an external server) no heartbeat was written, and the workers, which
// wait for the first, delivered nothing. And each subject of a filter is
// weighed against each other every heartbeat. An endpoint's filter is at
// most 256 subjects (the product of its lists), and all of them 4,096.
func TestFiltersAreBoundedInSubjects(t *testing.T) {
	var projects []string
	for i := range 17 {
		projects = append(projects, fmt.Sprintf("p%02d", i))
	}
	body := "projects:\n"
	for _, p := range projects {
		body += "  " + p + ": {}\n"
	}
	endpoint := func(name string, projects []string, products, statuses string) string {
		return "  " + name + ":\n    url: https://orders.example/\n    secrets: [" + whsec + "]\n" +
			"    filter: {projects: [" + strings.Join(projects, ", ") + "], products: [" + products + "], statuses: [" + statuses + "]}\n"
	}
	all := "retail, qris, virtual_account, ewallet"
	statuses := "pending, success, expired, failed"
	// 17 × 4 × 4 = 272.
	_, err := Load(write(t, body+"endpoints:\n"+endpoint("big", projects, all, statuses)), noEnv)
	if err == nil || !strings.Contains(err.Error(), "endpoints.big.filter: 272 subjects") {
		t.Errorf("a filter of 272 subjects: %v", err)
	}
	// 16 endpoints of 16 × 4 × 4 = 256: 4,096 in all; one more subject
	// passes it.
	many := body + "endpoints:\n"
	for i := range 16 {
		many += endpoint(fmt.Sprintf("e%02d", i), projects[:16], all, statuses)
	}
	if _, err := Load(write(t, many), noEnv); err != nil {
		t.Fatalf("4,096 subjects in all: %v", err)
	}
	_, err = Load(write(t, many+endpoint("e16", projects[:1], "retail", "success")), noEnv)
	if err == nil || !strings.Contains(err.Error(), "endpoints: 4097 filter subjects in all") {
		t.Errorf("4,097 subjects in all: %v", err)
	}
	// An endpoint of all: true is one (each is told with its name).
	_, err = Load(write(t, many+"  e16:\n    url: https://orders.example/\n    secrets: ["+whsec+"]\n    filter: {all: true}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "endpoints: 4097 filter subjects in all") {
		t.Errorf("4,096 subjects and an endpoint of all: %v", err)
	}
}

// The admin listener answers to the names it is reached by: on loopback,
// the loopback names unless admin.hosts says otherwise; elsewhere, the
// names listed, or any.
func TestAdminServesItsOwnNames(t *testing.T) {
	for _, tc := range []struct {
		admin Admin
		want  []string
	}{
		{Admin{Listen: "127.0.0.1:8081"}, []string{"localhost", "127.0.0.1", "::1"}},
		{Admin{Listen: "[::1]:8081"}, []string{"localhost", "127.0.0.1", "::1"}},
		{Admin{Listen: "localhost:8081"}, []string{"localhost", "127.0.0.1", "::1"}},
		{Admin{Listen: "127.0.0.1:8081", Hosts: []string{"relay-admin.internal"}}, []string{"relay-admin.internal"}},
		{Admin{Listen: "0.0.0.0:8081"}, nil},
		// Its own address, loopback but none of the names.
		{Admin{Listen: "127.0.0.2:8081"}, []string{"localhost", "127.0.0.1", "::1", "127.0.0.2"}},
		// A proxy on this machine in front passes on the name browsers
		// used: only admin.hosts can say which (an upgrade kept working).
		{Admin{Listen: "127.0.0.1:8081", TrustedProxies: []string{"127.0.0.1"}}, nil},
	} {
		if got := tc.admin.ServedHosts(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.admin, got, tc.want)
		}
	}
	if _, err := Load(write(t, minimal+"admin: {hosts: [\"https://relay.example\", \"relay.example:8081\", \"ok.example\", \"10.0.0.7\"]}\n"), noEnv); err == nil ||
		!strings.Contains(err.Error(), `admin.hosts: "https://relay.example"`) || !strings.Contains(err.Error(), `admin.hosts: "relay.example:8081"`) || strings.Contains(err.Error(), "ok.example") || strings.Contains(err.Error(), "10.0.0.7") {
		t.Fatalf("bad admin.hosts: %v", err)
	}
}

// A secret file that is empty (or holds a line break only) is an error,
// and so is a secret written as a list or a mapping: either loaded as no
// secret, and a callback_token left out took the token off the callback
// route, an api_key the confirmation, without a word.
func TestASecretThatIsNoneIsAnError(t *testing.T) {
	for _, content := range []string{"", "\n", "\r\n"} {
		path := filepath.Join(t.TempDir(), "tok")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(write(t, "projects:\n  main: {callback_token_file: "+path+"}\n"), noEnv)
		if err == nil || !strings.Contains(err.Error(), "callback_token_file") || !strings.Contains(err.Error(), "is empty") {
			t.Errorf("a callback_token_file of %q: %v", content, err)
		}
	}
	for _, v := range []string{"[tok-0123456789abcdef]", "{a: tok-0123456789abcdef}"} {
		_, err := Load(write(t, "projects:\n  main: {callback_token: "+v+"}\n"), noEnv)
		if err == nil || !strings.Contains(err.Error(), "a secret must be a string") {
			t.Errorf("a callback_token of %s: %v", v, err)
		}
	}
}

// Catching up reads the last periodic reconciliation's record: with
// records kept less than SenGo's 7 days, a longer stop found none and
// looked back reconcile.window only, without a word. Refused, unless
// catch_up is off.
func TestCatchUpNeedsTwoWeeksOfReconciliationRecords(t *testing.T) {
	body := "projects:\n  main: {api_key: SC-KEY-0123, token: tok-0123456789abcdef}\nstreams:\n  reconciliations: {max_age: 72h}\n"
	_, err := Load(write(t, body), noEnv)
	if err == nil || !strings.Contains(err.Error(), "streams.reconciliations.max_age (72h0m0s) must be 0 or at least 336h") {
		t.Errorf("records kept 72h with catch_up on: %v", err)
	}
	if _, err := Load(write(t, body+"reconcile: {catch_up: false}\n"), noEnv); err != nil {
		t.Errorf("records kept 72h with catch_up off: %v", err)
	}
}
