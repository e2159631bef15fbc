package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Arrivals is how many messages stream stored in each of n windows of
// length step from from: the differences of the stream sequences at the
// windows' edges, each found by the server from its index by time (one
// request per edge, however many messages). Messages since removed
// inside a window still count: it is the rate at which they arrived. The
// server cannot say when a removed message was stored, so removed
// messages right at a window's start count in the window before, and
// removed ones after the last kept message not at all: for streams whose
// messages are removed one by one (dead letters redriven), count what is
// kept with Count instead.
func Arrivals(ctx context.Context, js jetstream.JetStream, stream string, from time.Time, step time.Duration, n int) ([]uint64, error) {
	edges := make([]uint64, n+1)
	for i := range edges {
		seq, err := SeqAt(ctx, js, stream, from.Add(time.Duration(i)*step))
		if err != nil {
			return nil, err
		}
		edges[i] = seq
	}
	out := make([]uint64, n)
	for i := range out {
		if edges[i+1] > edges[i] {
			out[i] = edges[i+1] - edges[i]
		}
	}
	return out, nil
}

// SeqAt is the sequence of the first message stream stored at or after
// t, or the next sequence it will use when there is none.
func SeqAt(ctx context.Context, js jetstream.JetStream, stream string, t time.Time) (uint64, error) {
	// next_by_subj ">" skips removed messages to the next one kept.
	req, _ := json.Marshal(struct {
		StartTime time.Time `json:"start_time"`
		NextFor   string    `json:"next_by_subj"`
		NoHeaders bool      `json:"no_hdr"`
	}{t.UTC(), ">", true})
	msg, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return 0, fmt.Errorf("sequence of %s at %s: %w", stream, t.Format(time.RFC3339), err)
	}
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			Code    int    `json:"code"`
			ErrCode uint16 `json:"err_code"`
			Desc    string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("sequence of %s: %w", stream, err)
	}
	switch {
	case resp.Message != nil:
		return resp.Message.Seq, nil
	case resp.Error != nil && resp.Error.ErrCode == uint16(jetstream.JSErrCodeMessageNotFound):
		// Nothing stored at or after t: the next sequence.
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return 0, fmt.Errorf("sequence of %s: %w", stream, err)
		}
		return s.CachedInfo().State.LastSeq + 1, nil
	case resp.Error != nil && resp.Error.ErrCode == uint16(jetstream.JSErrCodeStreamNotFound):
		return 0, fmt.Errorf("sequence of %s: %w", stream, jetstream.ErrStreamNotFound)
	case resp.Error != nil:
		return 0, fmt.Errorf("sequence of %s: %s (%d)", stream, resp.Error.Desc, resp.Error.ErrCode)
	}
	return 0, errors.New("sequence of " + stream + ": empty answer")
}
