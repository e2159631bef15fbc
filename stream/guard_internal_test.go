package stream

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// A direct get the guard cannot take (every place waiting taken) is
// refused as busy. Answered with an empty body and status 503, nats.go
// read it as "no responders" and the subscriber never learnt to retry: it
// is 429, with why.
func TestABusyDirectGetIsRefusedWithWhy(t *testing.T) {
	e, err := StartEmbedded(EmbeddedConfig{StoreDir: t.TempDir(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := nats.Connect("", e.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	g := &guard{conn: nc, stream: "SENGO_EVENTS", admitted: make(chan struct{}), running: make(chan struct{}, 1), creating: make(chan struct{}, 1)}
	if _, err := nc.Subscribe(guardPrefix+".DIRECT.GET.SENGO_EVENTS", g.handle); err != nil {
		t.Fatal(err)
	}
	m, err := nc.Request(guardPrefix+".DIRECT.GET.SENGO_EVENTS", []byte(`{"seq":1}`), 5*time.Second)
	if err != nil {
		t.Fatalf("a busy direct get: %v, want its refusal", err)
	}
	if m.Header.Get("Status") != "429" || len(m.Data) != 0 || m.Header.Get("Description") == "" {
		t.Fatalf("a busy direct get answered %v %q, want status 429 and why", m.Header, m.Data)
	}
}
