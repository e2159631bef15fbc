package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
		opts = append(opts, nats.UserInfo(config.EmbeddedRelayUser, pw))
	}
	if cfg.NATS.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATS.CredsFile))
	}
	if cfg.NATS.Token.Set() {
		opts = append(opts, nats.Token(cfg.NATS.Token.Value()))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s (is the relay running?): %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// emptyFlag refuses a filter flag given an empty value (an unset shell
// variable): it would select everything, not nothing.
func emptyFlag(fs *flag.FlagSet) error {
	var empty error
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name != "config" && fl.Value.String() == "" && empty == nil {
			empty = fmt.Errorf("--%s is empty: give a value, or leave the flag out", fl.Name)
		}
	})
	return empty
}

// runDLQ is `sengo-relay dlq list|show|redrive|purge`.
func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New("usage: sengo-relay dlq list|show|redrive|purge [--endpoint N] [--since T] [--until T] [--transaction ID] [--merchant-ref R] [--seq N] [--all] [--json]")
	}
	verb := args[0]
	fs := flag.NewFlagSet("dlq "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration file")
	endpoint := fs.String("endpoint", "", "only this endpoint")
	since := fs.String("since", "", "dead-lettered at or after (RFC 3339 or a duration back, e.g. 24h)")
	until := fs.String("until", "", "dead-lettered at or before")
	tx := fs.String("transaction", "", "only this SenGo transaction id")
	ref := fs.String("merchant-ref", "", "only this merchantRef")
	seq := fs.Uint64("seq", 0, "one dead letter by its sequence")
	all := fs.Bool("all", false, "purge: allow purging without a filter")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := emptyFlag(fs); err != nil {
		return err
	}
	cfg, err := config.Load(*path, config.Environ(os.Environ()))
	if err != nil {
		return err
	}
	f := dispatcher.DLQFilter{Endpoint: *endpoint, TransactionID: *tx, MerchantRef: *ref, Seq: *seq}
	now := time.Now()
	if f.Since, err = admin.ParseTime(*since, now); err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	if f.Until, err = admin.ParseTime(*until, now); err != nil {
		return fmt.Errorf("--until: %w", err)
	}
	nc, js, err := cliConnect(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	entries, err := dispatcher.ListDLQ(ctx, js, f)
	if err != nil {
		return err
	}
	switch verb {
	case "list":
		if *asJSON {
			return json.NewEncoder(stdout).Encode(entries)
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tDEAD AT\tENDPOINT\tEVENT\tTRANSACTION\tMERCHANT REF\tREASON\tATTEMPTS\tLAST")
		for _, e := range entries {
			last := fmt.Sprint(e.LastStatus)
			if e.LastError != "" {
				last = e.LastError
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Seq, e.Stored.Format(time.RFC3339), e.Endpoint, e.EventID, e.TransactionID, e.MerchantRef, e.Reason, e.Attempts, last)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d dead letters\n", len(entries))
	case "show":
		if *seq == 0 {
			return errors.New("dlq show needs --seq")
		}
		if len(entries) == 0 {
			return fmt.Errorf("no dead letter %d", *seq)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries[0])
	case "redrive":
		n, err := dispatcher.Redrive(ctx, js, entries)
		fmt.Fprintf(stdout, "redriven %d of %d\n", n, len(entries))
		return err
	case "purge":
		if *endpoint == "" && *tx == "" && *ref == "" && *seq == 0 && *since == "" && *until == "" && !*all {
			return errors.New("dlq purge needs a filter, or --all")
		}
		n, err := dispatcher.Purge(ctx, js, entries)
		fmt.Fprintf(stdout, "purged %d\n", n)
		return err
	default:
		return fmt.Errorf("unknown dlq command %q (list, show, redrive, purge)", verb)
	}
	return nil
}

// runReplay is `sengo-relay replay`.
func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration file")
	endpoint := fs.String("endpoint", "", "endpoint to replay to")
	all := fs.Bool("all", false, "replay to every endpoint (each gets what its filter selects)")
	since := fs.String("since", "", "events stored at or after (RFC 3339 or a duration back, e.g. 24h)")
	until := fs.String("until", "", "events stored at or before (default now)")
	status := fs.String("status", "", "only these statuses, comma-separated")
	tx := fs.String("transaction", "", "only this SenGo transaction id")
	ref := fs.String("merchant-ref", "", "only this merchantRef")
	dry := fs.Bool("dry-run", false, "count what would be replayed, queue nothing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path, config.Environ(os.Environ()))
	if err != nil {
		return err
	}
	eps, err := dispatcherEndpoints(cfg)
	if err != nil {
		return err
	}
	var statuses []string
	if *status != "" {
		statuses = strings.Split(*status, ",")
	}
	req, err := admin.ReplayRequest(eps, *endpoint, *all, *since, *until, statuses, *tx, *ref, *dry, time.Now())
	if err != nil {
		return err
	}
	nc, js, err := cliConnect(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	last := time.Time{}
	p, err := dispatcher.Replay(ctx, js, eps, req, func(p dispatcher.ReplayProgress) {
		if time.Since(last) > 500*time.Millisecond || p.Done || p.Scanned == p.Total {
			last = time.Now()
			fmt.Fprintf(stderr, "replay %s: %d/%d scanned, %d matched, %d queued\n", p.Job, p.Scanned, p.Total, p.Matched, p.Queued)
		}
	})
	verb := "queued for delivery"
	if req.DryRun {
		verb = "would be queued (dry run)"
	}
	fmt.Fprintf(stdout, "replay %s: scanned %d events, %d matched, %d %s\n", p.Job, p.Scanned, p.Matched, p.Queued, verb)
	if err != nil {
		return fmt.Errorf("replay stopped (run the same command again to resume): %w", err)
	}
	return nil
}
