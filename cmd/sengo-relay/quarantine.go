package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/receiver"
)

// runQuarantine is `sengo-relay quarantine list|show|redrive`.
func runQuarantine(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: sengo-relay quarantine list|show|redrive [--project P] [--transaction ID] [--seq N] [--all] [--json]"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New(usage)
	}
	verb := args[0]
	fs := flag.NewFlagSet("quarantine "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration file")
	project := fs.String("project", "", "only this project")
	tx := fs.String("transaction", "", "only this SenGo transaction id")
	seq := fs.Uint64("seq", 0, "one notification by its SENGO_QUARANTINE sequence")
	all := fs.Bool("all", false, "redrive: every quarantined notification")
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
	f := receiver.QuarantineFilter{Project: *project, TransactionID: *tx, Seq: *seq}
	switch verb {
	case "list", "redrive":
	case "show":
		if *seq == 0 {
			return errors.New("quarantine show needs --seq")
		}
	default:
		return fmt.Errorf("unknown quarantine command %q (list, show, redrive)", verb)
	}
	if verb == "redrive" && f == (receiver.QuarantineFilter{}) && !*all {
		return errors.New("quarantine redrive needs --project, --transaction or --seq, or --all")
	}
	nc, js, err := cliConnect(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	entries, err := receiver.ListQuarantine(ctx, js, f)
	if err != nil && !(verb == "show" && strings.Contains(err.Error(), "not found")) {
		return err
	}
	switch verb {
	case "list":
		if *asJSON {
			if entries == nil {
				entries = []receiver.QuarantineEntry{}
			}
			return json.NewEncoder(stdout).Encode(entries)
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tQUARANTINED AT\tPROJECT\tTRANSACTION\tSTATUS\tRECHECKS\tREASON")
		for _, e := range entries {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Stored.Format(time.RFC3339), e.Project, e.TransactionID, e.Status, e.Rechecks, e.Reason)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d quarantined notifications\n", len(entries))
	case "show":
		if len(entries) == 0 {
			return fmt.Errorf("no quarantined notification %d", *seq)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries[0])
	case "redrive":
		n, err := receiver.RedriveQuarantine(ctx, js, entries)
		fmt.Fprintf(stdout, "redriven %d of %d (each is confirmed with SenGo again)\n", n, len(entries))
		return err
	}
	return nil
}
