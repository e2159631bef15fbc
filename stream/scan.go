package stream

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Scan reads stream messages on subject from since (or the start) to the
// end as it is when the scan begins, with an ordered consumer that is
// deleted as the scan returns (no server state left behind; a
// consumer kept for the client library's default five minutes per page
// view piles up into thousands, each matched against every publish to
// the stream). visit returns false to stop. total, when not nil,
// receives the number of messages the scan will read.
func Scan(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, visit func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error), total func(uint64)) error {
	return ScanFrom(ctx, js, stream, []string{subject}, From{Time: since}, visit, total)
}

// scanBatch is how many messages one pull of a scan asks for.
const scanBatch = 256

// ScanConsumerPrefix starts the name of every consumer a scan makes.
const ScanConsumerPrefix = "sengo-relay-"

// From is where a scan starts: a stream sequence, else a time, else the
// first message.
type From struct {
	Seq  uint64
	Time time.Time
	// HeadersOnly delivers each message's headers without its body (a
	// scan that needs only them reads no bodies).
	HeadersOnly bool
}

// ScanFrom is Scan over several subjects from a sequence or a time.
func ScanFrom(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, from From, visit func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error), total func(uint64)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy, HeadersOnly: from.HeadersOnly}
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
	remaining, err := pending(ctx, c)
	if err != nil {
		return fmt.Errorf("scan %s: %w", stream, err)
	}
	if total != nil {
		total(remaining)
	}
	if remaining == 0 {
		return nil
	}
	// One streaming pull on the consumer the scan created, scanBatch
	// messages asked for at a time and asked again as they are read. Not
	// Fetch: the ordered consumer replaces its server consumer on every
	// Fetch (a delete and a create per batch, the first of them for the
	// consumer just created), and its Messages keeps the one it has.
	it, err := c.Messages(jetstream.PullMaxMessages(int(min(remaining, scanBatch))))
	if err != nil {
		return fmt.Errorf("scan %s: %w", stream, err)
	}
	defer it.Stop()
	for remaining > 0 {
		m, err := next(ctx, it)
		if errors.Is(err, errWaited) {
			// Nothing within scanWait: the rest may have been deleted (a
			// purge, a redrive settling) or the server is slow. Ask.
			info, err := c.Info(ctx)
			if err != nil {
				return fmt.Errorf("scan %s: %w", stream, err)
			}
			remaining = info.NumPending
			continue
		}
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

// scanWait is how long a scan waits for its next message before asking
// the server how many are left.
const scanWait = 5 * time.Second

// errWaited: no message came within scanWait.
var errWaited = errors.New("no message within the wait")

// next is the scan's next message, waiting at most scanWait; the
// caller's context ends the wait with its own error.
func next(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	wctx, cancel := context.WithTimeout(ctx, scanWait)
	defer cancel()
	m, err := it.Next(jetstream.NextContext(wctx))
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return nil, errWaited
	}
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return m, err
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
	n, err := pending(ctx, c)
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", stream, err)
	}
	return n, nil
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
	// The server creates the consumer even when the caller stops waiting
	// for its answer (a console page whose browser went away): created
	// with a context of its own, it is deleted once made if the caller is
	// gone by then, instead of lingering, matched against every publish.
	type made struct {
		c   jetstream.Consumer
		err error
	}
	// The relay's scans carry a reserved name: the embedded server's
	// subscriber may create, update or delete no consumer by such a name
	// (it could narrow a replay's filter, or end a story's read).
	cfg.NamePrefix = ScanConsumerPrefix + rand.Text()
	done := make(chan made, 1)
	go func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
		defer cancel()
		c, err := js.OrderedConsumer(cctx, stream, cfg)
		done <- made{c, err}
	}()
	select {
	case m := <-done:
		return m.c, m.err
	case <-ctx.Done():
		go func() {
			if m := <-done; m.err == nil {
				closeConsumer(js, stream, m.c)
			}
		}()
		return nil, ctx.Err()
	}
}

// createTimeout bounds the creation of a scan's consumer, whatever the
// caller's deadline.
const createTimeout = 10 * time.Second

// pending is how many messages a new consumer will deliver, as the
// server answered its creation (no second request); asked for only when
// that answer is not at hand.
func pending(ctx context.Context, c jetstream.Consumer) (uint64, error) {
	if info := c.CachedInfo(); info != nil {
		return info.NumPending, nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending, nil
}

// closeConsumer deletes a scan's consumer in the background, with a
// context of its own (the caller's may be what ended the scan): the
// caller does not wait for the server's answer, a request through its
// JetStream API queue. Not deleted, it would go after lingerLimit.
func closeConsumer(js jetstream.JetStream, stream string, c jetstream.Consumer) {
	info := c.CachedInfo()
	if info == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(ctx, stream, info.Name)
	}()
}
