package stream

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Scan reads stream messages on subject from since (or the start) to the
// end as it is when the scan begins, with an ordered consumer that is
// deleted when the scan returns (no server state left behind; a
// consumer kept for the client library's default five minutes per page
// view piles up into thousands, each matched against every publish to
// the stream). visit returns false to stop. total, when not nil,
// receives the number of messages the scan will read.
func Scan(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, visit func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error), total func(uint64)) error {
	return ScanFrom(ctx, js, stream, []string{subject}, From{Time: since}, visit, total)
}

// scanBatch is how many messages one pull of a scan asks for.
const scanBatch = 256

// From is where a scan starts: a stream sequence, else a time, else the
// first message.
type From struct {
	Seq  uint64
	Time time.Time
}

// ScanFrom is Scan over several subjects from a sequence or a time.
func ScanFrom(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, from From, visit func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error), total func(uint64)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case from.Seq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from.Seq
	case !from.Time.IsZero():
		t := from.Time
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	c, err := open(ctx, js, stream, cfg)
	if err != nil {
		return fmt.Errorf("scan %s: %w", stream, err)
	}
	defer closeConsumer(js, stream, c)
	info, err := c.Info(ctx)
	if err != nil {
		return fmt.Errorf("scan %s: %w", stream, err)
	}
	remaining := info.NumPending
	if total != nil {
		total(remaining)
	}
	// Fetched in batches: one pull per scanBatch messages, not one per
	// message (a one-by-one Next costs a round trip each: 0.3 ms, so
	// minutes for a million events).
	for remaining > 0 {
		if err := ctx.Err(); err != nil { // Fetch takes no context
			return fmt.Errorf("scan %s: %w", stream, err)
		}
		batch, err := c.Fetch(int(min(remaining, scanBatch)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("scan %s: %w", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			remaining = meta.NumPending
			more, err := visit(m, meta)
			if err != nil || !more {
				return err
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("scan %s: %w", stream, err)
		}
		if got == 0 {
			// Nothing within FetchMaxWait: the rest may have been deleted
			// (a purge, a redrive settling) or the server is slow. Ask.
			info, err := c.Info(ctx)
			if err != nil {
				return fmt.Errorf("scan %s: %w", stream, err)
			}
			remaining = info.NumPending
		}
	}
	return nil
}

// Count is how many messages of stream on subject were stored since
// (all of them for the zero time), as the server counts them for a new
// consumer: one request, whatever the number.
func Count(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time) (uint64, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	c, err := open(ctx, js, stream, cfg)
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", stream, err)
	}
	defer closeConsumer(js, stream, c)
	info, err := c.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", stream, err)
	}
	return info.NumPending, nil
}

// lingerLimit is how long the server keeps a scan's consumer when its
// deletion did not reach it (the relay stopped, the connection dropped).
const lingerLimit = 30 * time.Second

func open(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	cfg.InactiveThreshold = lingerLimit
	// The ordered consumer recreates its server consumer on every fetch
	// and, by default, retries that forever whatever the caller's
	// deadline: a stream deleted mid-scan, or a store refusing consumers,
	// would hold the scan (a console page) for good.
	cfg.MaxResetAttempts = 2
	return js.OrderedConsumer(ctx, stream, cfg)
}

// closeConsumer deletes a scan's consumer, with a context of its own: the
// caller's may be what ended the scan.
func closeConsumer(js jetstream.JetStream, stream string, c jetstream.Consumer) {
	info := c.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = js.DeleteConsumer(ctx, stream, info.Name) // else it goes after lingerLimit
}
