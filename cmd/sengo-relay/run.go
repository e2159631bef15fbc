package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/internal/tracing"
	"github.com/sengo-relay/sengo-relay/verify"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

// run is the whole program: main calls it with the process's arguments and
// streams; tests call it with their own. Help goes to stdout and succeeds;
// errors are returned for main to print on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

// newRootCmd builds the command tree: `sengo-relay` alone runs serve.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sengo-relay",
		Short: "Receive SenGo payment callbacks, record each status change once in JetStream, deliver signed webhooks",
		Long: `sengo-relay receives SenGo's payment callbacks, proves each is genuine, records every
status change exactly once in NATS JetStream and delivers it to your services as signed
webhooks (or through JetStream subscriptions).

With no command it runs serve: the relay, on the embedded JetStream, with ./config.yaml
(or --config, or $` + config.ConfigEnv + `).`,
		Version:       versionString(),
		SilenceErrors: true, // main prints the error once
		SilenceUsage:  true, // a failed command is not a usage mistake
		RunE:          serveRun,
	}
	root.SetVersionTemplate("sengo-relay {{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w\nrun '%s --help' for usage", err, c.CommandPath())
	})
	addConfigFlag(root)
	serveCmd := &cobra.Command{Use: "serve", Short: "Run the relay (the default command)", Args: cobra.NoArgs, RunE: serveRun}
	addConfigFlag(serveCmd)
	check := &cobra.Command{
		Use:   "check-config",
		Short: "Load and validate the configuration; print the routes, modes and endpoints",
		Long: `check-config loads the configuration as serve would (the file, then SENGO_RELAY_* variables,
then *_file secrets), lists every problem at once, and prints a summary without secrets.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			return printSummary(c.OutOrStdout(), path, cfg)
		},
	}
	addConfigFlag(check)
	versionCmd := &cobra.Command{
		Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(c *cobra.Command, _ []string) { fmt.Fprintln(c.OutOrStdout(), "sengo-relay", versionString()) },
	}
	root.AddCommand(serveCmd, check, newReconcileCmd(), newSandboxCmd(), newDLQCmd(), newReplayCmd(), newQuarantineCmd(),
		newBenchCmd(), newHealthcheckCmd(), versionCmd, newManCmd())
	return root
}

func serveRun(c *cobra.Command, _ []string) error {
	_, cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	return serve(c.Context(), cfg, c.OutOrStdout())
}

// addConfigFlag gives c the --config flag. Its default is
// $SENGO_RELAY_CONFIG when set, else ./config.yaml.
func addConfigFlag(c *cobra.Command) {
	def := "config.yaml"
	if v := os.Getenv(config.ConfigEnv); v != "" {
		def = v
	}
	c.Flags().String("config", def, "configuration file; without the flag, $"+config.ConfigEnv+" when set")
	_ = c.MarkFlagFilename("config", "yaml", "yml")
}

// loadConfig reads the file --config names, with the environment.
func loadConfig(c *cobra.Command) (string, config.Config, error) {
	path, err := c.Flags().GetString("config")
	if err != nil {
		return "", config.Config{}, err
	}
	cfg, err := config.Load(path, config.Environ(os.Environ()))
	return path, cfg, err
}

// newHealthcheckCmd probes the relay's /healthz: --url, or http.listen of
// the configuration (so a container's healthcheck follows
// SENGO_RELAY_HTTP_LISTEN).
func newHealthcheckCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if the relay answers /healthz (for container healthchecks)",
		Long: `healthcheck probes the relay's /healthz and exits 0 only on a 200 within 3 seconds.
Without --url it probes http.listen of the configuration (a wildcard host is probed on
127.0.0.1), so it follows the same file and SENGO_RELAY_HTTP_LISTEN as serve.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			url, _ := c.Flags().GetString("url")
			if url == "" {
				_, cfg, err := loadConfig(c)
				if err != nil {
					return err
				}
				if url, err = healthURL(cfg.HTTP.Listen); err != nil {
					return err
				}
			}
			return healthcheck(c.Context(), url)
		},
	}
	c.Flags().String("url", "", "health endpoint to probe (default: /healthz on http.listen)")
	addConfigFlag(c)
	return c
}

// healthURL is /healthz on listen, with a wildcard host replaced by
// loopback.
func healthURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("http.listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz", nil
}

// newManCmd writes man pages for every command (hidden: for packagers).
func newManCmd() *cobra.Command {
	c := &cobra.Command{
		Use: "man", Short: "Write man pages for every command into --dir", Hidden: true, Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, _ := c.Flags().GetString("dir")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			return doc.GenManTree(c.Root(), &doc.GenManHeader{Title: "SENGO-RELAY", Section: "1"}, dir)
		},
	}
	c.Flags().String("dir", "man", "directory to write the pages into")
	return c
}

func printSummary(w io.Writer, path string, cfg config.Config) error {
	nats := "embedded, store " + cfg.StoreDirOrDefault() + ", fsync " + cfg.NATS.Embedded.SyncInterval
	if _, always, _ := cfg.NATS.Embedded.Sync(); always && cfg.NATS.Embedded.GroupCommit {
		nats += " (group commit)"
	} else if always {
		nats += " (nats-server, every write)"
	}
	if cfg.NATS.URL != "" {
		nats = "external " + verify.RedactServerURLs(cfg.NATS.URL)
	}
	if cfg.NATS.Storage == "memory" {
		nats += "; " + memoryWarning
	}
	fmt.Fprintf(w, "%s: ok\n  http   %s\n  nats   %s, replicas %d\n  traces %s\n", path, cfg.HTTP.Listen, nats, cfg.NATS.Replicas, tracing.Describe())
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
			confirm = "confirm on against " + verify.RedactServerURL(p.APIBaseURL())
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
		fmt.Fprintf(w, "  endpoint %s: %s, %d secret(s), %s, %d attempts over %s, %s\n", name, verify.RedactURL(e.URL), len(e.Secrets),
			strings.Join(e.Filter.Subjects(), " "), len(e.Retry.Schedule)+1, scheduleSpan(e.Retry.Schedule), order)
	}
	if cfg.Admin.Token.Set() {
		fmt.Fprintf(w, "  admin  %s (bearer token set)\n", cfg.Admin.Listen)
	} else {
		fmt.Fprintln(w, "  admin  off (no admin.token)")
	}
	return nil
}

// memoryWarning is what check-config and serve say of nats.storage: memory.
const memoryWarning = "memory storage: everything stored is lost on restart, and a 200 to SenGo is not durable (tests only)"

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
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
