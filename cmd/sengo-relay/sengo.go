package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/receiver"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
)

// apiClients returns a SenGo client per project with credentials; with
// confirmOnly, only for projects that confirm.
func apiClients(cfg config.Config, confirmOnly bool) map[string]*sengo.Client {
	out := map[string]*sengo.Client{}
	for _, name := range cfg.ProjectNames() {
		p := cfg.Projects[name]
		if !p.HasCredentials() || confirmOnly && !p.Confirms() {
			continue
		}
		out[name] = sengo.NewClient(p.APIBaseURL(), p.APIKey.Value(), p.Token.Value())
	}
	return out
}

// probeAPIs checks each project's SenGo API once at start (GET /balance)
// and says clearly, per project, when its base_url or credentials are
// wrong. It never stops the relay: SenGo may be down for a while.
func probeAPIs(ctx context.Context, cfg config.Config, clients map[string]*sengo.Client, log zerolog.Logger) {
	for _, name := range sortedNames(clients) {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_, err := clients[name].Balance(ctx)
		cancel()
		base := redactURL(cfg.Projects[name].APIBaseURL())
		if err == nil {
			log.Info().Str("project", name).Str("api", base).Msg("SenGo API reachable")
			continue
		}
		hint := "confirmations wait and retry until it answers"
		var ae *sengo.APIError
		switch {
		case errors.As(err, &ae) && ae.Code == sengo.CodeNotSenGo404:
			hint = "this is not SenGo's API: check projects." + name + ".base_url (it ends in /api)"
		case errors.Is(err, sengo.ErrUnauthorized), errors.Is(err, sengo.ErrIPNotAllowed):
			hint = "SenGo refuses the credentials or this server's IP: check projects." + name + ".api_key, token and SenGo's IP allowlist"
		}
		log.Error().Err(err).Str("project", name).Str("api", base).Str("hint", hint).Msg("SenGo API probe failed")
	}
}

func listers(clients map[string]*sengo.Client, only string) map[string]receiver.Lister {
	out := map[string]receiver.Lister{}
	for name, c := range clients {
		if only == "" || only == name {
			out[name] = c
		}
	}
	return out
}

// reconcileLoop runs reconciliation at start and every interval until ctx
// ends. Failures are logged and retried at the next tick.
func reconcileLoop(ctx context.Context, cfg config.Config, rc receiver.ReconcileConfig, log zerolog.Logger) {
	tick := time.NewTicker(cfg.Reconcile.Interval.D())
	defer tick.Stop()
	for {
		if _, err := receiver.Reconcile(ctx, rc, nil); err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("reconciliation failed; next run at the next interval")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// runReconcile is `sengo-relay reconcile`.
func runReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration file")
	project := fs.String("project", "", "only this project")
	since := fs.Duration("since", 48*time.Hour, "how far back (SenGo keeps 7 days)")
	resend := fs.Bool("resend", false, "ask SenGo to resend missing callbacks instead of feeding the inbox")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path, config.Environ(os.Environ()))
	if err != nil {
		return err
	}
	projects := listers(apiClients(cfg, false), *project)
	if len(projects) == 0 {
		return errors.New("no project with api_key and token to reconcile")
	}
	nc, js, err := cliConnect(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	sum, err := receiver.Reconcile(ctx, receiver.ReconcileConfig{JetStream: js, Projects: projects, Window: *since, Resend: *resend, Logger: zerolog.Nop()},
		func(p, day string, st event.Status, s receiver.ReconcileSummary) {
			fmt.Fprintf(stderr, "reconcile %s %s %-7s: %d checked, %d missing\n", p, day, st, s.Checked, s.Missing)
		})
	verb := "fed into the inbox"
	if *resend {
		verb = "asked SenGo to resend"
	}
	fmt.Fprintf(stdout, "reconcile: %d checked, %d missing, %d %s\n", sum.Checked, sum.Missing, sum.Fed, verb)
	return err
}

// runSandbox is `sengo-relay sandbox`: run the local SenGo, or control one.
func runSandbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return sandboxControl(ctx, args, stdout, stderr)
	}
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8090", "address of the sandbox API (/api) and controls (/sandbox)")
	stateDir := fs.String("state-dir", "./sandbox-data", "where the sandbox keeps its state (empty: memory)")
	project := fs.String("project", "SC-LOCALSANDBOX00001:local-sandbox-token-change-me:10000000", "seed project KEY:TOKEN[:BALANCE]")
	allowRemote := fs.Bool("allow-remote", false, "listen on a non-loopback address: anyone who reaches it can pay transactions and read the sandbox's keys")
	policy := callbackPolicyFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(*listen); err != nil {
		return fmt.Errorf("--listen %q: %w", *listen, err)
	} else if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) && !*allowRemote {
		return fmt.Errorf("--listen %s is not a loopback address: the sandbox has no authentication on its controls (anyone could mark payments paid); add --allow-remote if you mean it", *listen)
	}
	parts := strings.Split(*project, ":")
	if len(parts) < 2 {
		return errors.New("--project must be KEY:TOKEN[:BALANCE]")
	}
	seed := sandbox.Project{Key: parts[0], Token: parts[1], Name: "local"}
	if len(parts) > 2 {
		n, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil {
			return fmt.Errorf("--project balance: %w", err)
		}
		seed.Active = n
	}
	if *stateDir != "" {
		if err := os.MkdirAll(*stateDir, 0o750); err != nil {
			return err
		}
	}
	sb, err := sandbox.New(sandbox.Config{
		Projects: []sandbox.Project{seed}, StateDir: *stateDir,
		Callbacks: policy(),
	})
	if err != nil {
		return err
	}
	defer sb.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Fprintf(stdout, "sengo sandbox: API http://%s/api, controls http://%s/sandbox, project key %s\n", ln.Addr(), ln.Addr(), seed.Key)
	<-ctx.Done()
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shut)
}

// sandboxControl is `sengo-relay sandbox pay|expire|fail ID`, `callbacks`,
// `transactions` and `faults`.
func sandboxControl(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	verb := args[0]
	if verb == "faults" {
		return sandboxFaults(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("sandbox "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8090", "the sandbox")
	rest, id := args[1:], ""
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		id, rest = rest[0], rest[1:] // the transaction id may come before the flags
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	var method, path string
	switch verb {
	case "pay", "expire", "fail":
		if id == "" {
			return fmt.Errorf("usage: sengo-relay sandbox %s TRANSACTION_ID [--url URL]", verb)
		}
		method, path = http.MethodPost, "/sandbox/transactions/"+id+"/"+verb
	case "callbacks", "transactions":
		method, path = http.MethodGet, "/sandbox/"+verb
	default:
		return fmt.Errorf("unknown sandbox command %q (pay, expire, fail, callbacks, transactions, faults)", verb)
	}
	return sandboxRequest(ctx, method, strings.TrimRight(*url, "/")+path, nil, stdout)
}

// sandboxFaults is `sengo-relay sandbox faults`: change a running sandbox's
// callback behaviour and inject API faults; with no flags, show them.
func sandboxFaults(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sandbox faults", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8090", "the sandbox")
	latency := fs.Duration("latency", 0, "delay every API answer")
	fail500 := fs.Int("fail500", 0, "answer the next N API calls with 500")
	policy := callbackPolicyFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := false // any flag but --url changes the faults; none shows them
	fs.Visit(func(f *flag.Flag) { set = set || f.Name != "url" })
	method, payload := http.MethodGet, []byte(nil)
	if set {
		method = http.MethodPost
		payload, _ = json.Marshal(map[string]any{
			"callbacks": policy(),
			"faults":    sandbox.Faults{Latency: sandbox.Duration(*latency), Fail500: *fail500},
		})
	}
	return sandboxRequest(ctx, method, strings.TrimRight(*url, "/")+"/sandbox/faults", payload, stdout)
}

// sandboxRequest calls a sandbox control endpoint and prints its answer.
func sandboxRequest(ctx context.Context, method, url string, body []byte, stdout io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Fprintln(stdout, string(b))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sandbox answered %d", resp.StatusCode)
	}
	return nil
}

// callbackPolicyFlags registers the callback-behaviour flags shared by
// `sandbox` and `sandbox faults`; the returned function reads them.
func callbackPolicyFlags(fs *flag.FlagSet) func() sandbox.CallbackPolicy {
	retries := fs.Int("callback-retries", 0, "retries of a failed callback (0: never retries)")
	retryDelay := fs.Duration("callback-retry-delay", 5*time.Second, "delay between callback retries")
	dups := fs.Int("callback-duplicates", 0, "send every callback this many extra times")
	drop := fs.Bool("drop-callbacks", false, "send no callbacks")
	return func() sandbox.CallbackPolicy {
		return sandbox.CallbackPolicy{Retries: *retries, RetryDelay: sandbox.Duration(*retryDelay), Duplicates: *dups, Drop: *drop}
	}
}
