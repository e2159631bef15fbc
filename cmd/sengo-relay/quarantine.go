package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sengo-relay/sengo-relay/receiver"
)

// newQuarantineCmd is `sengo-relay quarantine list|show|redrive`.
func newQuarantineCmd() *cobra.Command {
	parent := &cobra.Command{
		Use:   "quarantine",
		Short: "List, show or redrive notifications set aside by intake (with the reason)",
		Long: `Intake quarantines a notification it can never process as it stands: SenGo's API does
not know the transaction, or reports other amounts; it stayed unconfirmed; it cannot be decoded.
Nothing of it was published. Redrive sends it through intake again, which confirms it with
SenGo again.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return errors.New("quarantine needs a command: list, show or redrive (sengo-relay quarantine --help)")
		},
	}
	type qflags struct {
		project, tx string
		seq         uint64
		all, json   bool
	}
	// durable is the store's fsync, for a redrive (storeSync).
	var durable receiver.Durability
	verb := func(use, short string, f *qflags, act func(ctx context.Context, c *cobra.Command, js jetstream.JetStream, sel receiver.QuarantineFilter) error) *cobra.Command {
		c := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
		c.RunE = func(c *cobra.Command, _ []string) error {
			if err := emptyFlag(c); err != nil {
				return err
			}
			sel := receiver.QuarantineFilter{Project: f.project, TransactionID: f.tx, Seq: f.seq}
			switch {
			case use == "show" && f.seq == 0:
				return errors.New("quarantine show needs --seq (the SEQ column of quarantine list)")
			case (use == "redrive" || use == "purge") && sel == (receiver.QuarantineFilter{}) && !f.all:
				return fmt.Errorf("quarantine %s needs --project, --transaction or --seq, or --all", use)
			}
			_, cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			if f.project != "" && cfg.Projects[f.project] == nil {
				return fmt.Errorf("--project %q: no such project (configured: %s)", f.project, strings.Join(cfg.ProjectNames(), ", "))
			}
			if use == "redrive" {
				gs := storeSync(cfg, c.ErrOrStderr())
				defer gs.Close()
				durable = gs
			}
			return withRelay(c, cfg, func(ctx context.Context, js jetstream.JetStream) error { return act(ctx, c, js, sel) })
		}
		addConfigFlag(c)
		return c
	}
	lf, sf, rf, pf := &qflags{}, &qflags{}, &qflags{}, &qflags{}
	list := verb("list", "List quarantined notifications with the reason", lf, func(ctx context.Context, c *cobra.Command, js jetstream.JetStream, sel receiver.QuarantineFilter) error {
		entries, left, err := receiver.ListQuarantineCounted(ctx, js, sel)
		if err != nil {
			return err
		}
		out := c.OutOrStdout()
		more := ""
		if left > 0 {
			more = fmt.Sprintf(" (%d older not listed, to keep the listing within its memory bound: narrow it with --project or --transaction)", left)
		}
		if lf.json {
			if entries == nil {
				entries = []receiver.QuarantineEntry{}
			}
			if more != "" {
				fmt.Fprintf(c.ErrOrStderr(), "%d quarantined notifications listed%s\n", len(entries), more)
			}
			return json.NewEncoder(out).Encode(entries)
		}
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tQUARANTINED AT\tPROJECT\tTRANSACTION\tSTATUS\tRECHECKS\tREASON")
		for _, e := range entries {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Stored.Format(time.RFC3339), cell(e.Project), cell(e.TransactionID), cell(string(e.Status)), cell(e.Rechecks), cell(e.Reason))
		}
		tw.Flush()
		fmt.Fprintf(out, "%d quarantined notifications%s\n", len(entries), more)
		return nil
	})
	list.Flags().StringVar(&lf.project, "project", "", "only this project")
	list.Flags().StringVar(&lf.tx, "transaction", "", "only this SenGo transaction id")
	list.Flags().BoolVar(&lf.json, "json", false, "print JSON")

	show := verb("show", "Show one quarantined notification, with SenGo's answer, as JSON", sf, func(ctx context.Context, c *cobra.Command, js jetstream.JetStream, sel receiver.QuarantineFilter) error {
		entries, err := receiver.ListQuarantine(ctx, js, sel) // none when it is gone
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return fmt.Errorf("no quarantined notification %d", sf.seq)
		}
		enc := json.NewEncoder(c.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(entries[0])
	})
	show.Flags().Uint64Var(&sf.seq, "seq", 0, "its SENGO_QUARANTINE sequence (the SEQ column of quarantine list)")

	// A redrive or purge acts on every notification selected, a batch at a
	// time (not a listing's newest 10,000), and says how many.
	redrive := verb("redrive", "Send the selected notifications through intake again (confirmed with SenGo again)", rf, func(ctx context.Context, c *cobra.Command, js jetstream.JetStream, sel receiver.QuarantineFilter) error {
		n, of, err := receiver.EachQuarantinedBatch(ctx, js, sel, func(batch []receiver.QuarantineEntry) (int, error) {
			return receiver.RedriveQuarantine(ctx, js, batch, durable)
		})
		fmt.Fprintf(c.OutOrStdout(), "redriven %d of %d (each is confirmed with SenGo again)\n", n, of)
		return err
	})
	redrive.Flags().StringVar(&rf.project, "project", "", "only this project")
	redrive.Flags().StringVar(&rf.tx, "transaction", "", "only this SenGo transaction id")
	redrive.Flags().Uint64Var(&rf.seq, "seq", 0, "one notification by its SENGO_QUARANTINE sequence")
	redrive.Flags().BoolVar(&rf.all, "all", false, "every quarantined notification")

	purge := verb("purge", "Delete the selected notifications from quarantine for good (each stays in SENGO_INBOX for its retention)", pf, func(ctx context.Context, c *cobra.Command, js jetstream.JetStream, sel receiver.QuarantineFilter) error {
		n, of, err := receiver.EachQuarantinedBatch(ctx, js, sel, func(batch []receiver.QuarantineEntry) (int, error) {
			return receiver.PurgeQuarantine(ctx, js, batch)
		})
		fmt.Fprintf(c.OutOrStdout(), "purged %d of %d\n", n, of)
		return err
	})
	purge.Flags().StringVar(&pf.project, "project", "", "only this project")
	purge.Flags().StringVar(&pf.tx, "transaction", "", "only this SenGo transaction id")
	purge.Flags().Uint64Var(&pf.seq, "seq", 0, "one notification by its SENGO_QUARANTINE sequence")
	purge.Flags().BoolVar(&pf.all, "all", false, "every quarantined notification")

	parent.AddCommand(list, show, redrive, purge)
	return parent
}
