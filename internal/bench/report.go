package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Table writes the report as Markdown.
func (r Report) Table(w io.Writer) {
	fmt.Fprintf(w, "Machine: %s, %s. ", r.Machine, r.GoVersion)
	var keys []string
	for k := range r.Config {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var cfg []string
	for _, k := range keys {
		cfg = append(cfg, k+"="+r.Config[k])
	}
	fmt.Fprintf(w, "Run: %s.\n\n", strings.Join(cfg, ", "))
	fmt.Fprintln(w, "| scenario | per second | p50 | p99 | p99.9 | errors | peak RSS | note |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---|")
	for _, res := range r.Results {
		lat := func(v float64) string {
			if v == 0 {
				return ""
			}
			return fmt.Sprintf("%.2f ms", v)
		}
		rss := ""
		if res.PeakRSSBytes > 0 {
			rss = fmt.Sprintf("%d MiB", res.PeakRSSBytes>>20)
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %d | %s | %s |\n", res.Name, res.PerSecond, lat(res.P50Millis), lat(res.P99Millis), lat(res.P999Millis), res.Errors, rss, res.Note)
	}
	fmt.Fprintln(w)
	var ratios []string
	for k := range r.Ratios {
		ratios = append(ratios, k)
	}
	slices.Sort(ratios)
	for _, k := range ratios {
		fmt.Fprintf(w, "- %s: **%.2f×**\n", k, r.Ratios[k])
	}
	fmt.Fprintf(w, "- peak RSS of the whole run (all scenarios, load generators included): **%d MiB**; per scenario in the table\n", r.PeakRSSBytes>>20)
	if len(r.Soak) > 0 {
		fmt.Fprintln(w, "\n| soak at | RSS | live heap | goroutines | delivered | p99 in window |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
		for _, s := range r.Soak {
			fmt.Fprintf(w, "| %s | %d MiB | %d MiB | %d | %d | %.2f ms |\n", s.At, s.RSSBytes>>20, s.HeapLiveBytes>>20, s.Goroutines, s.Delivered, s.P99Millis)
		}
	}
}
