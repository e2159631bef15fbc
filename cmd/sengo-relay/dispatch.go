package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/internal/admin"
	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/stream"
	"github.com/sengo-relay/sengo-relay/verify"
)

// dispatcherEndpoints converts the configured endpoints (validated).
func dispatcherEndpoints(cfg config.Config) ([]dispatcher.Endpoint, error) {
	var out []dispatcher.Endpoint
	for _, name := range sortedNames(cfg.Endpoints) {
		e := cfg.Endpoints[name]
		ep := dispatcher.Endpoint{
			Name: name, URL: e.URL, FilterSubjects: e.Filter.Subjects(), Timeout: e.Timeout.D(),
			Concurrency: e.Concurrency, Jitter: e.Retry.Jitter, RetryAfterMax: e.Retry.RetryAfterMax.D(),
			RateLimit: e.RateLimit, Ordered: e.Ordered, Headers: e.Headers, DeliverFrom: e.DeliverFrom,
			Breaker: dispatcher.BreakerPolicy{Failures: e.Breaker.Failures, ProbeInitial: e.Breaker.ProbeInitial.D(), ProbeMax: e.Breaker.ProbeMax.D()},
		}
		for _, d := range e.Retry.Schedule {
			ep.Schedule = append(ep.Schedule, d.D())
		}
		for _, s := range e.Secrets {
			k, err := verify.ParseWebhookSecret(s.Value())
			if err != nil {
				return nil, fmt.Errorf("endpoint %s: %w", name, err)
			}
			ep.Keys = append(ep.Keys, k)
		}
		out = append(out, ep)
	}
	return out, nil
}

func sortedNames[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// cliConnect reaches the running relay's JetStream: nats.url, or the
// embedded server's loopback listener.
func cliConnect(cfg config.Config) (*nats.Conn, jetstream.JetStream, error) {
	url := cfg.NATS.URL
	if url == "" {
		if cfg.NATS.Embedded.Listen == "" {
			return nil, nil, errors.New("nats.embedded.listen is off: the CLI cannot reach the relay's embedded JetStream")
		}
		url = "nats://" + cfg.NATS.Embedded.Listen
	}
	opts := []nats.Option{nats.Name("sengo-relay-cli"), nats.Timeout(5 * time.Second)}
	if cfg.NATS.URL == "" { // the embedded server: the relay's own identity
		pw, err := stream.ReadPassword(filepath.Join(cfg.StoreDirOrDefault(), stream.RelayPasswordFile))
		if err != nil {
			return nil, nil, err
		}
		// Replies where the subscriber identity cannot subscribe.
		opts = append(opts, nats.UserInfo(config.EmbeddedRelayUser, pw), nats.CustomInboxPrefix(stream.RelayInboxPrefix))
	}
	if cfg.NATS.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATS.CredsFile))
	}
	if cfg.NATS.Token.Set() {
		opts = append(opts, nats.Token(cfg.NATS.Token.Value()))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s (is the relay running?): %w", verify.RedactServerURLs(url), stream.WithoutURL(err))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// withRelay runs f with the relay's JetStream for one CLI command, with
// c's context: no bound of its own (a redrive or purge of a long outage's
// dead letters acts on every one it selects, however long that takes);
// each store call has its own timeout, and an interrupt stops it.
func withRelay(c *cobra.Command, cfg config.Config, f func(context.Context, jetstream.JetStream) error) error {
	nc, js, err := cliConnect(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	return f(c.Context(), js)
}

// emptyFlag refuses a filter flag given an empty value (an unset shell
// variable): it would select everything, not nothing.
func emptyFlag(c *cobra.Command) error {
	var empty error
	c.Flags().Visit(func(fl *pflag.Flag) {
		blank := fl.Value.String() == ""
		if list, ok := fl.Value.(pflag.SliceValue); ok { // "[]" as a string: each value counts
			blank = len(list.GetSlice()) == 0 || slices.Contains(list.GetSlice(), "")
		}
		if fl.Name != "config" && blank && empty == nil {
			empty = fmt.Errorf("--%s is empty: give a value, or leave the flag out", fl.Name)
		}
		// 0 is no sequence at all: beside another filter, "--seq 0" would
		// widen a purge to every dead letter that filter selects.
		if fl.Name == "seq" && fl.Value.String() == "0" && empty == nil {
			empty = errors.New("--seq must be a positive integer (the SEQ column of list)")
		}
	})
	return empty
}

// dlqFlags are the selection flags of the dlq commands.
type dlqFlags struct {
	endpoint, since, until, tx, ref string
	seq                             uint64
	all, json                       bool
}

func (f *dlqFlags) filters(c *cobra.Command) {
	c.Flags().StringVar(&f.endpoint, "endpoint", "", "only this endpoint")
	c.Flags().StringVar(&f.since, "since", "", "dead-lettered at or after (RFC 3339, or back from now: 24h, 30d)")
	c.Flags().StringVar(&f.until, "until", "", "dead-lettered at or before (RFC 3339, or back from now)")
	c.Flags().StringVar(&f.tx, "transaction", "", "only this SenGo transaction id")
	c.Flags().StringVar(&f.ref, "merchant-ref", "", "only this merchantRef")
	c.Flags().Uint64Var(&f.seq, "seq", 0, "one dead letter by its SENGO_DLQ sequence")
}

func (f *dlqFlags) any() bool {
	return f.endpoint != "" || f.since != "" || f.until != "" || f.tx != "" || f.ref != "" || f.seq != 0
}

// newDLQCmd is `sengo-relay dlq list|show|redrive|purge`.
func newDLQCmd() *cobra.Command {
	parent := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, redrive or purge dead letters",
		Long: `Dead letters are events an endpoint did not accept within its retry budget (or refused
for good: 410 or an abort message; a redirect is retried, never followed). Each keeps the
event, the endpoint, the attempts and the last answer. Redrive queues them again for their
endpoint with a fresh budget and the same webhook-id; purge deletes them.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return errors.New("dlq needs a command: list, show, redrive or purge (sengo-relay dlq --help)")
		},
	}
	// Each verb reads the dead letters a page at a time, and only those
	// stored when it started (dispatcher.EachDLQPage): page is called with
	// each page, then done with how many there were.
	type verbFns struct {
		page func(c *cobra.Command, js jetstream.JetStream, page []dispatcher.DLQEntry) error
		done func(c *cobra.Command, seen int) error
	}
	verb := func(use, short string, f *dlqFlags, needs func(*dlqFlags) error, act func(*dlqFlags) verbFns) *cobra.Command {
		c := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
		c.RunE = func(c *cobra.Command, _ []string) error {
			if err := emptyFlag(c); err != nil {
				return err
			}
			if err := needs(f); err != nil {
				return err
			}
			_, cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			sel := dispatcher.DLQFilter{Endpoint: f.endpoint, TransactionID: f.tx, MerchantRef: f.ref, Seq: f.seq}
			now := time.Now()
			if sel.Since, err = admin.ParseTime(f.since, now); err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if sel.Until, err = admin.ParseTime(f.until, now); err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			if f.endpoint != "" && cfg.Endpoints[f.endpoint] == nil {
				return fmt.Errorf("--endpoint %q: no such endpoint in %s (configured: %s)", f.endpoint, c.Flag("config").Value, strings.Join(sortedNames(cfg.Endpoints), ", "))
			}
			return withRelay(c, cfg, func(ctx context.Context, js jetstream.JetStream) error {
				fns, seen := act(f), 0
				err := dispatcher.EachDLQPage(ctx, js, sel, 0, func(page []dispatcher.DLQEntry) error {
					seen += len(page)
					return fns.page(c, js, page)
				})
				if err != nil {
					return err
				}
				return fns.done(c, seen)
			})
		}
		addConfigFlag(c)
		return c
	}
	none := func(*dlqFlags) error { return nil }
	needsFilter := func(name string) func(*dlqFlags) error {
		return func(f *dlqFlags) error {
			if !f.any() && !f.all {
				return fmt.Errorf("dlq %s needs a filter (--endpoint, --since, --until, --transaction, --merchant-ref, --seq), or --all", name)
			}
			return nil
		}
	}
	// acting applies act to each page and prints how many it touched, as
	// summary says, or how many before an error.
	acting := func(past string, act func(context.Context, jetstream.JetStream, []dispatcher.DLQEntry) (int, error), summary func(n, seen int) string) func(*dlqFlags) verbFns {
		return func(*dlqFlags) verbFns {
			n := 0
			return verbFns{
				page: func(c *cobra.Command, js jetstream.JetStream, page []dispatcher.DLQEntry) error {
					k, err := act(c.Context(), js, page)
					n += k
					if err != nil {
						fmt.Fprintf(c.OutOrStdout(), "%s %d before the error\n", past, n)
					}
					return err
				},
				done: func(c *cobra.Command, seen int) error {
					_, err := fmt.Fprintln(c.OutOrStdout(), summary(n, seen))
					return err
				},
			}
		}
	}

	lf, sf, rf, pf := &dlqFlags{}, &dlqFlags{}, &dlqFlags{}, &dlqFlags{}
	list := verb("list", "List dead letters (all, or those the filters select)", lf, none, func(f *dlqFlags) verbFns {
		var tw *tabwriter.Writer // the table, its header written
		table := func(c *cobra.Command) *tabwriter.Writer {
			if tw == nil {
				tw = tabwriter.NewWriter(c.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tDEAD AT\tENDPOINT\tEVENT\tTRANSACTION\tMERCHANT REF\tREASON\tATTEMPTS\tLAST")
			}
			return tw
		}
		sep := "[" // JSON: one array, written a page at a time
		return verbFns{
			page: func(c *cobra.Command, _ jetstream.JetStream, page []dispatcher.DLQEntry) error {
				if f.json {
					for _, e := range page {
						b, err := json.Marshal(e)
						if err != nil {
							return err
						}
						if _, err := fmt.Fprintf(c.OutOrStdout(), "%s%s\n", sep, b); err != nil {
							return err
						}
						sep = ","
					}
					return nil
				}
				tw := table(c)
				for _, e := range page {
					last := fmt.Sprint(e.LastStatus)
					if e.LastError != "" {
						last = e.LastError
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Seq, e.Stored.Format(time.RFC3339), cell(e.Endpoint), cell(e.EventID), cell(e.TransactionID), cell(e.MerchantRef), cell(e.Reason), e.Attempts, cell(last))
				}
				return tw.Flush()
			},
			done: func(c *cobra.Command, seen int) error {
				out := c.OutOrStdout()
				if f.json {
					end := "]"
					if seen == 0 {
						end = "[]"
					}
					_, err := fmt.Fprintln(out, end)
					return err
				}
				if err := table(c).Flush(); err != nil {
					return err
				}
				_, err := fmt.Fprintf(out, "%d dead letters\n", seen)
				return err
			},
		}
	})
	lf.filters(list)
	list.Flags().BoolVar(&lf.json, "json", false, "print JSON")

	show := verb("show", "Show one dead letter, with its event, as JSON", sf, func(f *dlqFlags) error {
		if f.seq == 0 {
			return errors.New("dlq show needs --seq (the SEQ column of dlq list)")
		}
		return nil
	}, func(f *dlqFlags) verbFns {
		return verbFns{
			page: func(c *cobra.Command, _ jetstream.JetStream, page []dispatcher.DLQEntry) error {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(page[0])
			},
			done: func(_ *cobra.Command, seen int) error {
				if seen == 0 {
					return fmt.Errorf("no dead letter %d", f.seq)
				}
				return nil
			},
		}
	})
	show.Flags().Uint64Var(&sf.seq, "seq", 0, "the dead letter's SENGO_DLQ sequence (the SEQ column of dlq list)")

	redrive := verb("redrive", "Queue the selected dead letters for delivery again (fresh budget, same webhook-id)", rf, needsFilter("redrive"),
		acting("redriven", dispatcher.Redrive, func(n, seen int) string { return fmt.Sprintf("redriven %d of %d", n, seen) }))
	rf.filters(redrive)
	redrive.Flags().BoolVar(&rf.all, "all", false, "redrive every dead letter (without a filter)")

	purge := verb("purge", "Delete the selected dead letters", pf, needsFilter("purge"),
		acting("purged", dispatcher.Purge, func(n, _ int) string { return fmt.Sprintf("purged %d", n) }))
	pf.filters(purge)
	purge.Flags().BoolVar(&pf.all, "all", false, "purge every dead letter (without a filter)")

	parent.AddCommand(list, show, redrive, purge)
	return parent
}

// newReplayCmd is `sengo-relay replay`.
func newReplayCmd() *cobra.Command {
	var since, until, status, tx, ref, project string
	var endpoints []string
	var all, dry bool
	c := &cobra.Command{
		Use:   "replay",
		Short: "Deliver stored events again (by endpoint, time window, filters)",
		Long: `replay scans SENGO_EVENTS for events stored in a window and queues a copy of each
for the endpoint (or every endpoint with --all, each getting what its filter selects). Copies
go through the normal signing, retries and dead letters, with the same webhook-id and
webhook-replay: true.

A relative --since or --until (24h, 30d) is turned into an absolute window when the command
starts, and printed. A replay is identified by its window and filters: running the printed
command again resumes it (copies already queued are skipped, within streams.replay.duplicate_window).

The replay is recorded as a replay job: the console and GET /admin/replays show its progress.
The same job already running (from the console or another command) is not started twice.`,
		Example: `  sengo-relay replay --endpoint orders --since 24h --dry-run
  sengo-relay replay --endpoint orders --since 2025-03-23T00:00:00+07:00 --until 2025-03-24T00:00:00+07:00
  sengo-relay replay --all --since 6h --status success
  sengo-relay replay --endpoint orders,crm --project main --since 24h --merchant-ref INV-1001`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := emptyFlag(c); err != nil {
				return err
			}
			_, cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			eps, err := dispatcherEndpoints(cfg)
			if err != nil {
				return err
			}
			var statuses []string
			if status != "" {
				statuses = strings.Split(status, ",")
			}
			req, err := admin.ReplayRequest(eps, cfg.ProjectNames(), admin.ReplayInput{Endpoints: endpoints, All: all, Since: since, Until: until,
				Statuses: statuses, Project: project, Transaction: tx, MerchantRef: ref, DryRun: dry}, time.Now())
			if err != nil {
				return err
			}
			stdout, stderr := c.OutOrStdout(), c.ErrOrStderr()
			resume := resumeCommand(c, req)
			// To the nanosecond, as the job's id takes it: the window typed
			// again from this line is the same job, not one that queues
			// everything again.
			fmt.Fprintf(stdout, "replay %s: events stored %s to %s, for %s\n", req.JobID(), req.Since.UTC().Format(time.RFC3339Nano), req.Until.UTC().Format(time.RFC3339Nano), strings.Join(req.Endpoints, ", "))
			nc, js, err := cliConnect(cfg)
			if err != nil {
				return err
			}
			defer nc.Close()
			last := time.Time{}
			// Recorded as a replay job, so the console shows it beside the
			// ones started there (and a second start of the same job, from
			// either, does not run it twice at once).
			host, _ := os.Hostname()
			p, err := admin.RecordedReplay(c.Context(), js, fmt.Sprintf("sengo-relay replay %s:%d", host, os.Getpid()), req, zerolog.New(zerolog.ConsoleWriter{Out: stderr, NoColor: true}).Level(zerolog.WarnLevel), func(err error) {
				fmt.Fprintf(stderr, "replay %s: %v\n", req.JobID(), err)
			}, func(ctx context.Context, record func(dispatcher.ReplayProgress)) (dispatcher.ReplayProgress, error) {
				return dispatcher.Replay(ctx, js, eps, req, func(p dispatcher.ReplayProgress) {
					record(p)
					if time.Since(last) > 500*time.Millisecond || p.Done || p.Scanned == p.Total {
						last = time.Now()
						fmt.Fprintf(stderr, "replay %s: %d/%d events scanned, %d deliveries matched\n", p.Job, p.Scanned, p.Total, p.Matched)
					}
				})
			})
			if errors.Is(err, admin.ErrReplayRunning) {
				return fmt.Errorf("replay %s: %w", req.JobID(), err)
			}
			counts := perEndpoint(req.Endpoints, p.PerEndpoint)
			if req.DryRun {
				fmt.Fprintf(stdout, "replay %s (dry run): scanned %d events; would queue %d deliveries (per endpoint: %s); nothing queued\n", p.Job, p.Scanned, p.Matched, counts)
			} else {
				fmt.Fprintf(stdout, "replay %s: scanned %d events; queued %d deliveries, %d already queued by an earlier run (matched per endpoint: %s)\n", p.Job, p.Scanned, p.Queued, p.AlreadyQueued, counts)
			}
			if p.Skipped > 0 {
				fmt.Fprintf(stdout, "replay %s: %d deliveries skipped: their event cannot be queued as a copy (too large for the server, or an id too long for its headers or that cannot be one); see the dead-letter stream\n", p.Job, p.Skipped)
			}
			if err != nil {
				return fmt.Errorf("replay stopped: %w\nto resume this replay (copies already queued are skipped), run:\n  %s", err, resume)
			}
			if !req.DryRun {
				fmt.Fprintf(stdout, "to run this replay again without sending twice what it queued, run:\n  %s\n", resume)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringSliceVar(&endpoints, "endpoint", nil, "endpoint(s) to replay to (repeated, or comma-separated)")
	f.BoolVar(&all, "all", false, "replay to every endpoint (each gets what its filter selects)")
	f.StringVar(&since, "since", "", "events stored at or after (RFC 3339, or back from now: 24h, 30d); required")
	f.StringVar(&until, "until", "", "events stored at or before (RFC 3339, or back from now; default: now)")
	f.StringVar(&status, "status", "", "only these statuses, comma-separated (pending, success, expired, failed)")
	f.StringVar(&project, "project", "", "only this project's events (a transaction id or merchantRef may be another project's too)")
	f.StringVar(&tx, "transaction", "", "only this SenGo transaction id")
	f.StringVar(&ref, "merchant-ref", "", "only this merchantRef")
	f.BoolVar(&dry, "dry-run", false, "count what would be queued, per endpoint; queue nothing")
	addConfigFlag(c)
	return c
}

// perEndpoint formats counts in the order of names ("orders 3, crm 0").
func perEndpoint(names []string, counts map[string]uint64) string {
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %d", n, counts[n])
	}
	return strings.Join(parts, ", ")
}

// resumeCommand is the replay command with the window made absolute: the
// same job, whenever it is run (a dry run's included).
func resumeCommand(c *cobra.Command, r dispatcher.ReplayRequest) string {
	args := []string{"sengo-relay", "replay"}
	if fl := c.Flag("config"); fl.Changed || fl.Value.String() != "config.yaml" {
		args = append(args, "--config", shellQuote(fl.Value.String()))
	}
	// The endpoints by name, --all's too: with endpoints added to the
	// configuration since, --all would be another job, and send everything
	// again to those it had.
	args = append(args, "--endpoint", shellQuote(strings.Join(r.Endpoints, ",")))
	if r.Project != "" {
		args = append(args, "--project", shellQuote(r.Project))
	}
	args = append(args, "--since", r.Since.UTC().Format(time.RFC3339Nano), "--until", r.Until.UTC().Format(time.RFC3339Nano))
	if len(r.Statuses) > 0 {
		s := make([]string, len(r.Statuses))
		for i, st := range r.Statuses {
			s[i] = string(st)
		}
		args = append(args, "--status", strings.Join(s, ","))
	}
	if r.TransactionID != "" {
		args = append(args, "--transaction", shellQuote(r.TransactionID))
	}
	if r.MerchantRef != "" {
		args = append(args, "--merchant-ref", shellQuote(r.MerchantRef))
	}
	if r.DryRun { // a dry run's job is another job, and queues nothing
		args = append(args, "--dry-run")
	}
	return strings.Join(args, " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:+=,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
