package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/receiver"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
	"github.com/sengo-relay/sengo-relay/verify"
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
		base := verify.RedactServerURL(cfg.Projects[name].APIBaseURL())
		if err == nil {
			log.Info().Str("project", name).Str("api", base).Msg("SenGo API reachable")
			continue
		}
		hint := "confirmations wait and retry until it answers"
		var ae *sengo.APIError
		switch {
		case errors.As(err, &ae) && ae.Code == sengo.CodeNotSenGo404:
			hint = "this is not SenGo's API: check projects." + name + ".base_url (it ends in /api)"
		case errors.As(err, &ae) && ae.Code == sengo.CodeRedirect:
			hint = "projects." + name + ".base_url answers with a redirect, which the relay never follows (it would carry the credentials to another host): set base_url to SenGo's API itself"
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

// reconcileCatchUp is how far back a periodic run may look to reach its
// project's last run (ReconcileConfig.CatchUp): SenGo's 7 days, and short
// of streams.transactions.ttl as reconcile.window is (a transaction whose
// entry expired would be published again).
func reconcileCatchUp(cfg config.Config) time.Duration {
	if !cfg.Reconcile.CatchUp {
		return 0
	}
	catchUp := receiver.ReconcileWindowMax
	if ttl := cfg.Streams.Transactions.TTL.D(); ttl > 0 {
		catchUp = min(catchUp, ttl-24*time.Hour-cfg.Reconcile.Interval.D()-time.Second)
	}
	return catchUp
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

// newReconcileCmd is `sengo-relay reconcile`.
func newReconcileCmd() *cobra.Command {
	var project, since string
	var resend bool
	c := &cobra.Command{
		Use:   "reconcile",
		Short: "Feed status changes SenGo lists but the relay never received",
		Long: `reconcile lists each project's transactions from SenGo's API, day by day over the window,
and feeds every status change the relay has no record of into the inbox (or, with --resend,
asks SenGo to send its callback again). The relay also runs it every reconcile.interval.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := emptyFlag(c); err != nil {
				return err
			}
			window, err := config.ParseDuration(since)
			if err != nil || window <= 0 {
				return fmt.Errorf("--since %q: want how far back, such as 48h or 7d (SenGo keeps 7 days)", since)
			}
			_, cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			if project != "" && cfg.Projects[project] == nil {
				return fmt.Errorf("--project %q: no such project (configured: %s)", project, strings.Join(cfg.ProjectNames(), ", "))
			}
			if ttl := cfg.Streams.Transactions.TTL.D(); ttl > 0 && min(window, receiver.ReconcileWindowMax)+24*time.Hour >= ttl {
				// A transaction whose state expired is one the relay never
				// saw, to reconciliation: fed and published again.
				return fmt.Errorf("--since %s: it looks back to the start of that day, beyond streams.transactions.ttl (%s), whose expired transactions would be published again; at most %s", since, config.Duration(ttl), config.Duration(max(0, ttl-24*time.Hour-time.Second)))
			}
			projects := listers(apiClients(cfg, false), project)
			if len(projects) == 0 {
				return errors.New("no project with api_key and token to reconcile")
			}
			nc, js, err := cliConnect(cfg)
			if err != nil {
				return err
			}
			defer nc.Close()
			stderr := c.ErrOrStderr()
			runs, err := history.NewWriter(nc, history.WriterConfig{Logger: zerolog.Nop()})
			if err != nil {
				return err
			}
			defer func() {
				fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = runs.Flush(fctx) // the run's record, for the console
			}()
			sum, err := receiver.Reconcile(c.Context(), receiver.ReconcileConfig{JetStream: js, Projects: projects, Configured: cfg.ProjectNames(), Window: window, Resend: resend, Trigger: "cli", Runs: runs,
				CallbackTokens: cfg.CallbackTokens(), Logger: zerolog.Nop()},
				func(p, day string, st event.Status, s receiver.ReconcileSummary) {
					fmt.Fprintf(stderr, "reconcile %s %s %-7s: %d checked, %d missing\n", p, day, st, s.Checked, s.Missing)
				})
			verb := "fed into the inbox"
			if resend {
				verb = "asked SenGo to resend"
			}
			fmt.Fprintf(c.OutOrStdout(), "reconcile: %d checked, %d missing, %d %s\n", sum.Checked, sum.Missing, sum.Fed, verb)
			if sum.Elsewhere > 0 {
				fmt.Fprintf(stderr, "reconcile: %d transaction(s) SenGo lists are held under a project no longer configured (a renamed project?), not fed: see README \"Renaming a project\"\n", sum.Elsewhere)
			}
			return err
		},
	}
	c.Flags().StringVar(&project, "project", "", "only this project")
	c.Flags().StringVar(&since, "since", "48h", "how far back (48h, 7d; SenGo keeps 7 days)")
	c.Flags().BoolVar(&resend, "resend", false, "ask SenGo to resend missing callbacks instead of feeding the inbox")
	addConfigFlag(c)
	return c
}

// newSandboxCmd is `sengo-relay sandbox`: run the local SenGo, or control
// one (pay, expire, fail, callbacks, transactions, faults).
func newSandboxCmd() *cobra.Command {
	var listen, stateDir, project string
	var allowRemote bool
	c := &cobra.Command{
		Use:   "sandbox",
		Short: "Run a local SenGo (or control one: pay, expire, fail, callbacks, transactions, faults)",
		Long: `sandbox runs a local SenGo: the same API, signatures, error codes and callbacks, on
loopback, with no authentication on its controls. Its subcommands control a running one.`,
		Example: `  sengo-relay sandbox
  sengo-relay sandbox pay 9f2b7256-0c7e-4b2e-9d53-3c1f5e0b8a11
  sengo-relay sandbox faults --fail500 3 --drop-callbacks`,
		Args: cobra.NoArgs,
	}
	policy := callbackPolicyFlags(c.Flags())
	c.RunE = func(c *cobra.Command, _ []string) error {
		if host, _, err := net.SplitHostPort(listen); err != nil {
			return fmt.Errorf("--listen %q: %w", listen, err)
		} else if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) && !allowRemote {
			return fmt.Errorf("--listen %s is not a loopback address: the sandbox has no authentication on its controls (anyone could mark payments paid); add --allow-remote if you mean it", listen)
		}
		parts := strings.Split(project, ":")
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
		if stateDir != "" {
			if err := os.MkdirAll(stateDir, 0o750); err != nil {
				return err
			}
		}
		var hosts []string // --allow-remote: reached by names this machine cannot know
		if !allowRemote {
			hosts = config.LoopbackHosts(listen)
		}
		sb, err := sandbox.New(sandbox.Config{Projects: []sandbox.Project{seed}, StateDir: stateDir, Callbacks: policy(), Hosts: hosts})
		if err != nil {
			return err
		}
		defer sb.Close()
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		fmt.Fprintf(c.OutOrStdout(), "sengo sandbox: API http://%s/api, controls http://%s/sandbox, project key %s\n", ln.Addr(), ln.Addr(), seed.Key)
		<-c.Context().Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shut)
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8090", "address of the sandbox API (/api) and controls (/sandbox)")
	c.Flags().StringVar(&stateDir, "state-dir", "./sandbox-data", "where the sandbox keeps its state (empty: memory)")
	c.Flags().StringVar(&project, "project", "SC-LOCALSANDBOX00001:local-sandbox-token-change-me:10000000", "seed project KEY:TOKEN[:BALANCE]")
	c.Flags().BoolVar(&allowRemote, "allow-remote", false, "listen on a non-loopback address: anyone who reaches it can pay transactions and read the sandbox's keys")

	control := func(use, short string, args cobra.PositionalArgs, method string, path func([]string) string) *cobra.Command {
		var url string
		cc := &cobra.Command{Use: use, Short: short, Args: args, RunE: func(c *cobra.Command, args []string) error {
			return sandboxRequest(c.Context(), method, strings.TrimRight(url, "/")+path(args), nil, c.OutOrStdout())
		}}
		cc.Flags().StringVar(&url, "url", "http://127.0.0.1:8090", "the sandbox")
		return cc
	}
	for verb, what := range map[string]string{"pay": "paid (success)", "expire": "expired", "fail": "failed"} {
		c.AddCommand(control(verb+" ID_OR_MERCHANT_REF", "Mark a pending transaction (by id, or by merchantRef) "+what+" and send its callback", cobra.ExactArgs(1), http.MethodPost,
			func(a []string) string { return "/sandbox/transactions/" + url.PathEscape(a[0]) + "/" + verb }))
	}
	c.AddCommand(control("callbacks", "List every callback the sandbox sent, with the answers", cobra.NoArgs, http.MethodGet, func([]string) string { return "/sandbox/callbacks" }))
	c.AddCommand(control("transactions", "List the sandbox's transactions", cobra.NoArgs, http.MethodGet, func([]string) string { return "/sandbox/transactions" }))
	c.AddCommand(newSandboxFaultsCmd())
	return c
}

// newSandboxFaultsCmd is `sengo-relay sandbox faults`: change a running
// sandbox's callback behaviour and inject API faults; with no flags, show
// them.
func newSandboxFaultsCmd() *cobra.Command {
	var url string
	var latency time.Duration
	var fail500 int
	var failChecks []string
	c := &cobra.Command{
		Use:   "faults",
		Short: "Show, or change, a running sandbox's callback behaviour and API faults",
		Args:  cobra.NoArgs,
	}
	policy := callbackPolicyFlags(c.Flags())
	var reset bool
	c.RunE = func(c *cobra.Command, _ []string) error {
		set := false // any flag but --url changes the faults; none shows them
		c.Flags().Visit(func(f *pflag.Flag) { set = set || f.Name != "url" })
		endpoint := strings.TrimRight(url, "/") + "/sandbox/faults"
		if !set {
			return sandboxRequest(c.Context(), http.MethodGet, endpoint, nil, c.OutOrStdout())
		}
		// The flags given change those settings alone: the others stay as
		// the sandbox has them (sent as their defaults, they were reset),
		// unless --reset.
		var now struct {
			Callbacks sandbox.CallbackPolicy `json:"callbacks"`
			Faults    sandbox.Faults         `json:"faults"`
		}
		now.Callbacks.RetryDelay = sandbox.Duration(5 * time.Second)
		if !reset {
			var got bytes.Buffer
			if err := sandboxRequest(c.Context(), http.MethodGet, endpoint, nil, &got); err != nil {
				return err
			}
			var env struct {
				ResponseData json.RawMessage `json:"responseData"`
			}
			if err := json.Unmarshal(got.Bytes(), &env); err != nil || json.Unmarshal(env.ResponseData, &now) != nil {
				return fmt.Errorf("the sandbox's faults could not be read: %.200s", got.String())
			}
		}
		p, fl := policy(), c.Flags()
		for name, apply := range map[string]func(){
			"callback-retries":     func() { now.Callbacks.Retries = p.Retries },
			"callback-retry-delay": func() { now.Callbacks.RetryDelay = p.RetryDelay },
			"callback-duplicates":  func() { now.Callbacks.Duplicates = p.Duplicates },
			"drop-callbacks":       func() { now.Callbacks.Drop = p.Drop },
			"latency":              func() { now.Faults.Latency = sandbox.Duration(latency) },
			"fail500":              func() { now.Faults.Fail500 = fail500 },
			"fail-check":           func() { now.Faults.FailChecks = failChecks },
		} {
			if fl.Changed(name) {
				apply()
			}
		}
		payload, _ := json.Marshal(now)
		return sandboxRequest(c.Context(), http.MethodPost, endpoint, payload, c.OutOrStdout())
	}
	c.Flags().BoolVar(&reset, "reset", false, "put every setting back to its default first (then apply the flags given)")
	c.Flags().StringVar(&url, "url", "http://127.0.0.1:8090", "the sandbox")
	c.Flags().DurationVar(&latency, "latency", 0, "delay every API answer")
	c.Flags().IntVar(&fail500, "fail500", 0, "answer the next N API calls with 500")
	c.Flags().StringArrayVar(&failChecks, "fail-check", nil, "answer every check of this transaction id with 500 (repeatable)")
	return c
}

// sandboxClient calls the sandbox's control endpoints: a --url that does
// not answer, or redirects elsewhere, fails the command instead of
// hanging it.
var sandboxClient = &http.Client{
	Timeout:       15 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// sandboxAnswerMax bounds what of a control endpoint's answer is read.
const sandboxAnswerMax = 1 << 20

// sandboxRequest calls a sandbox control endpoint and prints its answer.
func sandboxRequest(ctx context.Context, method, url string, body []byte, stdout io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := sandboxClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, sandboxAnswerMax+1))
	if len(b) > sandboxAnswerMax {
		return fmt.Errorf("the sandbox's answer is over %d bytes; not printed", sandboxAnswerMax)
	}
	fmt.Fprintln(stdout, string(b))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sandbox answered %d", resp.StatusCode)
	}
	return nil
}

// callbackPolicyFlags registers the callback-behaviour flags shared by
// `sandbox` and `sandbox faults`; the returned function reads them.
func callbackPolicyFlags(fs *pflag.FlagSet) func() sandbox.CallbackPolicy {
	retries := fs.Int("callback-retries", 0, "retries of a failed callback (0: never retries)")
	retryDelay := fs.Duration("callback-retry-delay", 5*time.Second, "delay between callback retries")
	dups := fs.Int("callback-duplicates", 0, "send every callback this many extra times")
	drop := fs.Bool("drop-callbacks", false, "send no callbacks")
	return func() sandbox.CallbackPolicy {
		return sandbox.CallbackPolicy{Retries: *retries, RetryDelay: sandbox.Duration(*retryDelay), Duplicates: *dups, Drop: *drop}
	}
}
