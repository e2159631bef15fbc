package stream

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Scan reads stream messages on subject from since (or the start) to the
// end as it is when the scan begins, with an ordered consumer (no server
// state left behind). visit returns false to stop. total, when not nil,
// receives the number of messages the scan will read.
func Scan(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, visit func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error), total func(uint64)) error {
	return ScanFrom(ctx, js, stream, []string{subject}, From{Time: since}, visit, total)
}

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
	c, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("scan %s: %w", stream, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return fmt.Errorf("scan %s: %w", stream, err)
	}
	remaining := info.NumPending
	if total != nil {
		total(remaining)
	}
	for remaining > 0 {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return fmt.Errorf("scan %s: %w", stream, err)
		}
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
	return nil
}
