package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// afterBurst is end to end at a low fixed rate on a fresh relay, then a
// burst of cfg.Burst callbacks as fast as 64 connections post them, drained
// to the last webhook, then the same low rate again in windows: the tail a
// merchant sees once a backlog is gone, beside the fresh one.
func afterBurst(ctx context.Context, cfg Config, st store) ([]Result, error) {
	rl, err := startRelay(ctx, st)
	if err != nil {
		return nil, err
	}
	defer rl.close()
	const rate = 200
	var total int64 // callbacks accepted so far
	steady := func(d time.Duration, name string) (Result, error) {
		var in0 uint64
		if st.stats != nil {
			in0, _ = st.stats()
		}
		var sent, failed atomic.Int64
		openLoop(ctx, rate, d, func(int) {
			_, body := callback(cfg.Payload)
			if rl.poster.accept(body) != nil {
				failed.Add(1)
			} else {
				sent.Add(1)
			}
		})
		total += sent.Load()
		drainUntil(rl, total, 30*time.Second)
		s := rl.latencies.take()
		s.elapsed, s.errors = d, failed.Load()+sent.Load()-s.ops
		res := result(s, fmt.Sprintf("end to end at a fixed %d/s for %s", rate, d))
		res.Name, res.PerSecond = name, rate
		if len(s.lat) > 0 {
			res.Note += fmt.Sprintf("; max %.1f ms", float64(s.lat[len(s.lat)-1].Microseconds())/1000)
		}
		if st.stats != nil && s.ops > 0 {
			in1, _ := st.stats()
			res.ClientMsgsPerOp = float64(in1-in0) / float64(s.ops)
			res.Note += fmt.Sprintf("; %.1f messages from the relay per notification (server's count)", res.ClientMsgsPerOp)
		}
		return res, nil
	}
	var out []Result
	before, err := steady(cfg.Duration, "end to end at 200/s, fresh relay")
	if err != nil {
		return nil, err
	}
	out = append(out, before)

	// The burst.
	size := cfg.Burst
	if size <= 0 {
		size = 66000
	}
	start := time.Now()
	var sent, failed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(size) && ctx.Err() == nil {
				_, body := callback(cfg.Payload)
				if rl.poster.accept(body) != nil {
					failed.Add(1)
				} else {
					sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	accepted := time.Since(start)
	total += sent.Load()
	got := drainUntil(rl, total, 10*time.Minute)
	drained := time.Since(start)
	b := rl.latencies.take()
	b.elapsed, b.errors = drained, failed.Load()+sent.Load()-b.ops
	note := fmt.Sprintf("%d callbacks from 64 connections: accepted in %s, the last webhook %s after the first callback", size, accepted.Round(time.Millisecond), drained.Round(time.Millisecond))
	if got < total {
		note = fmt.Sprintf("%d callbacks from 64 connections: accepted in %s, only %d of %d webhooks after %s (the rest count in the next window)", size, accepted.Round(time.Millisecond), got, total, drained.Round(time.Millisecond))
	}
	burst := result(b, note)
	burst.Name, burst.PerSecond = "the burst, callback → webhook", float64(b.ops)/drained.Seconds()
	out = append(out, burst)

	for i := range 3 {
		res, err := steady(cfg.Duration, fmt.Sprintf("end to end at 200/s after the burst, window %d", i+1))
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

// drainUntil waits up to d for the consumer to have received n webhooks
// in all and returns how many it has.
func drainUntil(rl *runningRelay, n int64, d time.Duration) int64 {
	deadline := time.Now().Add(d)
	for rl.latencies.n.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling the consumer's count
	}
	return rl.latencies.n.Load()
}
