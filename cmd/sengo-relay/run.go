package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sengo-relay/sengo-relay/internal/config"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

const usage = `usage: sengo-relay [command] [flags]

commands:
  serve          run the relay (the default)
  check-config   load and validate the configuration, print a summary
  reconcile      feed status changes SenGo lists but the relay never received
  sandbox        run a local SenGo (or: sandbox pay|expire|fail ID, callbacks, transactions)
  dlq            list, show, redrive or purge dead letters
  replay         deliver stored events again (by endpoint, time window, filters)
  quarantine     list, show or redrive notifications set aside by intake (with the reason)
  bench          measure the relay against the raw limits (see BENCHMARKS.md)
  healthcheck    exit 0 if the relay answers /healthz (for container healthchecks)
  version        print the version

flags of serve and check-config:
  --config PATH  configuration file (default ./config.yaml)
`

// run is the whole program: main calls it with the process's arguments and
// streams; tests call it with their own.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve", "check-config":
		path, err := configFlag(cmd, args, stderr)
		if err != nil {
			return err
		}
		cfg, err := config.Load(path, config.Environ(os.Environ()))
		if err != nil {
			return err
		}
		if cmd == "check-config" {
			return printSummary(stdout, path, cfg)
		}
		return serve(ctx, cfg, stdout)
	case "reconcile":
		return runReconcile(ctx, args, stdout, stderr)
	case "sandbox":
		return runSandbox(ctx, args, stdout, stderr)
	case "dlq":
		return runDLQ(ctx, args, stdout, stderr)
	case "replay":
		return runReplay(ctx, args, stdout, stderr)
	case "quarantine":
		return runQuarantine(ctx, args, stdout, stderr)
	case "bench":
		return runBench(ctx, args, stdout, stderr)
	case "healthcheck":
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		fs.SetOutput(stderr)
		url := fs.String("url", "http://127.0.0.1:8080/healthz", "health endpoint to probe")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return healthcheck(ctx, *url)
	case "version":
		fmt.Fprintln(stdout, "sengo-relay", versionString())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func configFlag(cmd string, args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", errors.New("help requested")
		}
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("%s: unexpected arguments %q", cmd, fs.Args())
	}
	return *path, nil
}

func printSummary(w io.Writer, path string, cfg config.Config) error {
	nats := "embedded, store " + cfg.StoreDirOrDefault()
	if cfg.NATS.URL != "" {
		urls := strings.Split(cfg.NATS.URL, ",")
		for i, u := range urls {
			urls[i] = redactURL(strings.TrimSpace(u))
		}
		nats = "external " + strings.Join(urls, ",")
	}
	fmt.Fprintf(w, "%s: ok\n  http   %s\n  nats   %s, replicas %d\n", path, cfg.HTTP.Listen, nats, cfg.NATS.Replicas)
	for _, name := range cfg.ProjectNames() {
		p := cfg.Projects[name]
		route := "/callbacks/sengo/" + name
		if p.CallbackToken.Set() {
			route += "/<callback_token>"
		}
		ips := "any"
		if len(p.AllowedIPs) > 0 {
			ips = strings.Join(p.AllowedIPs, ",")
		}
		confirm := "confirm off (events carry confirmed: false)"
		if p.Confirms() {
			confirm = "confirm on against " + redactURL(p.APIBaseURL())
		}
		if p.RequireConfirmation {
			confirm += ", required"
		}
		fmt.Fprintf(w, "  project %s: POST %s, %s, signature %s, api token %s, allowed ips %s\n", name, route, confirm, p.SignatureMode(), onOff(p.HasCredentials()), ips)
	}
	for _, name := range sortedNames(cfg.Endpoints) {
		e := cfg.Endpoints[name]
		order := "parallel"
		if e.Ordered {
			order = "ordered"
		}
		fmt.Fprintf(w, "  endpoint %s: %s, %d secret(s), %s, %d attempts over %s, %s\n", name, hostOf(e.URL), len(e.Secrets),
			strings.Join(e.Filter.Subjects(), " "), len(e.Retry.Schedule)+1, scheduleSpan(e.Retry.Schedule), order)
	}
	if cfg.Admin.Token.Set() {
		fmt.Fprintf(w, "  admin  %s (bearer token set)\n", cfg.Admin.Listen)
	} else {
		fmt.Fprintln(w, "  admin  off (no admin.token)")
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// redactURL hides a password in raw, if it has one.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

func scheduleSpan(s []config.Duration) time.Duration {
	var t time.Duration
	for _, d := range s {
		t += d.D()
	}
	return t
}

// healthcheck probes url and fails unless it answers 200 within 3 seconds.
func healthcheck(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d", url, resp.StatusCode)
	}
	return nil
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "devel-" + s.Value[:12]
			}
		}
	}
	return "devel"
}
