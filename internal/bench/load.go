package bench

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// sample is the outcome of a load run.
type sample struct {
	ops     int64
	errors  int64
	elapsed time.Duration
	lat     []time.Duration // sorted
}

func (s sample) rate() float64 { return float64(s.ops) / s.elapsed.Seconds() }

func (s sample) pct(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	return s.lat[min(len(s.lat)-1, int(float64(len(s.lat))*p))]
}

// closedLoop runs op from conc goroutines back to back for d.
func closedLoop(ctx context.Context, conc int, d time.Duration, op func(context.Context) error) sample {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	lat := make([][]time.Duration, conc)
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				if err := op(ctx); err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	return sample{ops: int64(len(all)), errors: errs.Load(), elapsed: time.Since(start), lat: all}
}

// openLoop starts op at a fixed rate for d, each in its own goroutine,
// and waits for them. Starts follow a schedule (the i-th at start + i/rate)
// rather than a ticker, so a late start is caught up at once instead of
// dropped, and the offered rate is the nominal one.
func openLoop(ctx context.Context, rate int, d time.Duration, op func(i int)) {
	interval := time.Second / time.Duration(rate)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	start := time.Now()
	for i := range int(d / interval) {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		wg.Add(1)
		go func() { defer wg.Done(); op(i) }()
	}
}
