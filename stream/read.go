package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// readBatch is how many messages one direct get of ReadSubject asks for.
const readBatch = 256

// ReadSubject reads the messages of stream on one literal subject, oldest
// first, until visit returns false or none is left, with batched direct
// gets: the server finds them from its subject index (which knows the
// subject's first and last message), one request per readBatch messages,
// and no consumer is created. For the few messages of one transaction,
// where a consumer's creation, its info and its deletion would be three
// requests more. Not for wildcards: a batch that asks for more than is
// left makes the server look for further matches to the end of the
// stream (measured: a story's p50 4 → 101 ms with a million events), where
// a consumer knows from the start how many match (use ScanFrom).
func ReadSubject(ctx context.Context, js jetstream.JetStream, stream, subject string, visit func(*jetstream.RawStreamMsg) bool) error {
	if strings.ContainsAny(subject, "*>") {
		return fmt.Errorf("read %s: %q is not a literal subject", stream, subject)
	}
	from := uint64(1)
	for {
		msgs, err := jetstreamext.GetBatch(ctx, js, stream, readBatch, jetstreamext.GetBatchSeq(from), jetstreamext.GetBatchSubject(subject))
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		got := 0
		for m, err := range msgs {
			if errors.Is(err, jetstreamext.ErrNoMessages) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", stream, err)
			}
			got++
			from = m.Sequence + 1
			if !visit(m) {
				return nil
			}
		}
		if got < readBatch {
			return nil
		}
	}
}

// Delete removes the message at seq from s. It reports false, and no
// error, when the message is already gone (removed meanwhile): nats.go
// does not answer jetstream.ErrMsgNotFound for a delete but
// ErrMsgDeleteUnsuccessful with the server's error 10057, "no message found".
func Delete(ctx context.Context, s jetstream.Stream, seq uint64) (bool, error) {
	err := s.DeleteMsg(ctx, seq)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound),
		// nats.go keeps only the text of the server's answer.
		errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) && strings.Contains(err.Error(), "err_code=10057") && strings.Contains(err.Error(), "no message found"):
		return false, nil
	}
	return false, err
}
