package natstest

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stored is one message a FakeDirectGet answer carries: its sequence,
// subject, data, and how many match after it (Nats-Num-Pending).
type Stored struct {
	Seq     uint64
	Subject string
	Data    []byte
	Pending uint64
}

// FakeDirectGet answers the batched direct gets of stream on a server of
// its own as nats-server does (each message with its headers, then the
// end-of-batch status), with what answer gives for each request's body;
// no stream is behind it. For tests of a reader of such answers that must
// notice messages lost on the way. The JetStream it returns sends there.
func FakeDirectGet(t testing.TB, stream string, answer func(req []byte) []Stored) jetstream.JetStream {
	t.Helper()
	srv := Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe("$JS.API.DIRECT.GET."+stream, func(m *nats.Msg) {
		for _, s := range answer(m.Data) {
			h := nats.Header{}
			h.Set("Nats-Stream", stream)
			h.Set("Nats-Sequence", strconv.FormatUint(s.Seq, 10))
			h.Set("Nats-Subject", s.Subject)
			h.Set("Nats-Time-Stamp", time.Now().UTC().Format(time.RFC3339Nano))
			h.Set("Nats-Num-Pending", strconv.FormatUint(s.Pending, 10))
			_ = m.RespondMsg(&nats.Msg{Header: h, Data: s.Data})
		}
		eob := nats.Header{}
		eob.Set("Status", "204")
		eob.Set("Description", "EOB")
		_ = m.RespondMsg(&nats.Msg{Header: eob})
	}); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	return js
}
