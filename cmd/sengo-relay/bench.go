package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sengo-relay/sengo-relay/internal/bench"
	"github.com/sengo-relay/sengo-relay/internal/config"
)

// newBenchCmd is `sengo-relay bench`.
func newBenchCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure the relay against the raw limits of HTTP and JetStream (see BENCHMARKS.md)",
		Long: `bench runs, in one process, the raw limits (JetStream publish, Echo) beside the relay's own
paths (callback endpoint, intake, webhook delivery, end to end), and prints each with its
latency percentiles and peak RSS. It starts its own embedded JetStream in a temp dir.`,
		Args: cobra.NoArgs,
	}
	fs := c.Flags()
	conc := fs.Int("concurrency", 64, "connections/goroutines of the closed-loop scenarios")
	dur := fs.Duration("duration", 10*time.Second, "duration of each scenario")
	payload := fs.Int("payload", 700, "callback body size in bytes")
	rate := fs.Int("rate", 500, "callbacks per second of the end-to-end and soak runs")
	burst := fs.Int("burst", 66000, "callbacks the after-burst scenario posts at once, between its steady runs")
	endpointRate := fs.Int("endpoint-rate", 2000, "callbacks per second of the fixed-rate endpoint-latency run")
	n := fs.Int("deliveries", 20000, "events the dispatcher scenario delivers")
	sync := fs.String("sync-interval", "always", `embedded JetStream fsync: "always" (the relay's default: fsync before every acknowledgement, with group commit), "always-per-write" (group_commit: false: nats-server fsyncs each write itself) or a duration such as 2m; several, comma-separated, run the whole bench once per mode ("always,always-per-write,2m" shows the price of each)`)
	window := fs.Duration("sustain-window", 30*time.Second, "how long each probe of the sustained-rate search runs")
	natsURL := fs.String("nats-url", "", "measure against this NATS server or cluster instead of the embedded one (refused if it holds the relay's streams: every scenario purges them)")
	wipe := fs.Bool("wipe-store", false, "let --nats-url name a store that holds the relay's streams: every scenario purges them and resets their limits")
	replicas := fs.Int("replicas", 1, "stream replicas (3 needs --nats-url to a cluster)")
	soak := fs.Duration("soak", 0, "after the scenarios, run end to end at --rate this long and watch for drift (e.g. 10m)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	consoleEvents := fs.Int("console-events", 1_000_000, "transactions the console-pages scenario stores before timing the console's pages")
	withHistory := fs.Bool("history", true, "keep history records (every attempt, the merchantRef index) as serve does; --history=false shows their cost")
	dupWindow := fs.Duration("duplicate-window", 0, "override the inbox and events duplicate windows (default: the configuration's)")
	txTTL := fs.Duration("tx-ttl", 0, "override streams.transactions.ttl, how long transaction state is kept (default: the configuration's)")
	only := fs.String("scenarios", "", "comma-separated scenarios to run (default all; none: only the soak): "+strings.Join(bench.ScenarioKeys(), ", "))
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	allocProfile := fs.String("allocprofile", "", "write the run's allocations profile to this file (go tool pprof -sample_index=alloc_space)")
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx, stdout, stderr := c.Context(), c.OutOrStdout(), c.ErrOrStderr()
		if *cpuProfile != "" {
			f, err := os.Create(*cpuProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		if *allocProfile != "" {
			runtime.MemProfileRate = 64 << 10
			defer func() {
				if f, err := os.Create(*allocProfile); err == nil {
					_ = pprof.Lookup("allocs").WriteTo(f, 0)
					f.Close()
				}
			}()
		}
		var scenarios []string
		if *only != "" {
			scenarios = strings.Split(*only, ",")
			for _, sc := range scenarios {
				if sc != "none" && !slices.Contains(bench.ScenarioKeys(), sc) {
					return fmt.Errorf("--scenarios: unknown scenario %q (known: %s)", sc, strings.Join(bench.ScenarioKeys(), ", "))
				}
			}
		}
		cfg := config.Default()
		cfg.NATS.URL, cfg.NATS.Replicas = *natsURL, *replicas
		if *dupWindow > 0 {
			cfg.Streams.Inbox.DuplicateWindow = config.Duration(*dupWindow)
			cfg.Streams.Events.DuplicateWindow = config.Duration(*dupWindow)
		}
		if *txTTL > 0 {
			cfg.Streams.Transactions.TTL = config.Duration(*txTTL)
		}
		if *replicas > 1 && *natsURL == "" {
			return fmt.Errorf("--replicas %d needs --nats-url to a cluster", *replicas)
		}
		bc := bench.Config{Concurrency: *conc, Duration: *dur, Payload: *payload, Rate: *rate, EndpointRate: *endpointRate, Deliveries: *n, Soak: *soak, Scenarios: scenarios,
			NATSURL: *natsURL, Spec: provisionSpec(cfg), Progress: stderr, NoHistory: !*withHistory, ConsoleEvents: *consoleEvents, Burst: *burst}
		bc.SustainWindow, bc.WipeStore = *window, *wipe
		var reports []bench.Report
		for _, mode := range strings.Split(*sync, ",") {
			bc.SyncAlways, bc.SyncInterval, bc.GroupCommit = false, 0, false
			switch mode = strings.TrimSpace(mode); mode {
			case "always": // as the relay runs by default: group commit
				bc.SyncAlways, bc.GroupCommit = true, true
			case "always-per-write": // group_commit: false
				bc.SyncAlways = true
			default:
				d, err := time.ParseDuration(mode)
				if err != nil {
					return fmt.Errorf("--sync-interval %q: want always, always-per-write or a duration", mode)
				}
				bc.SyncInterval = d
			}
			r, err := bench.Run(ctx, bc)
			if err != nil {
				return err
			}
			reports = append(reports, r)
			// The store was checked before the first mode; the next
			// modes find the streams that one made.
			bc.WipeStore = true
		}
		if *asJSON { // an array: one report per fsync mode
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(reports)
		}
		for i, r := range reports {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintf(stdout, "### %s\n\n", r.Config["store"])
			r.Table(stdout)
		}
		return nil
	}
	return c
}
