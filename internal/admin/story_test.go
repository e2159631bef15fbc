package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
)

// Every bad search input is refused with its documented code before it
// reaches a subject or a key.
func TestSearchRefusesBadInput(t *testing.T) {
	hs, _ := newServer(t)
	for _, c := range []struct{ path, code string }{
		{"/admin/transactions?limit=0", "bad_limit"},
		{"/admin/transactions?limit=201", "bad_limit"},
		{"/admin/events?limit=x", "bad_limit"},
		{"/admin/events?cursor=abc", "bad_cursor"},
		{"/admin/events?cursor=0", "bad_cursor"},
		{"/admin/transactions?merchant_ref=INV-1&cursor=5", "bad_cursor"},
		{"/admin/transactions?status=paid", "bad_status"},
		{"/admin/events?product=" + url.QueryEscape("retail.>"), "bad_product"},
		{"/admin/events?project=" + url.QueryEscape("main.*"), "unknown_project"},
		{"/admin/transactions?project=other", "unknown_project"},
		{"/admin/transactions?merchant_ref=" + strings.Repeat("R", 256), "bad_merchant_ref"},
		{"/admin/transactions?id=" + strings.Repeat("i", 129), "bad_id"},
		{"/admin/transactions?since=yesterday", "bad_time"},
		{"/admin/transactions?status=success&status=failed", "empty_filter"},
		{"/admin/transactions?merchant_ref=", "empty_filter"},
		{"/admin/events?merchant_ref=INV-1", "unknown_parameter"},
		{"/admin/transactions?" + strings.Repeat("x", 100) + "=1", "unknown_parameter"},
		{"/admin/transactions/main/" + strings.Repeat("i", 129), "bad_id"},
		{"/admin/transactions/other/tx-1", "unknown_project"},
		{"/admin/transactions/main/tx-unknown", "not_found"},
	} {
		code, body := call(t, hs, http.MethodGet, c.path, "", token)
		var e struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal([]byte(body), &e)
		if code < 400 || e.Error.Code != c.code {
			t.Errorf("GET %.80s: %d %s, want %s", c.path, code, body, c.code)
		}
		if strings.Contains(e.Error.Message, strings.Repeat("x", 50)) {
			t.Errorf("GET %.80s: the error repeats the whole input: %s", c.path, e.Error.Message)
		}
	}
	if code, body := call(t, hs, http.MethodGet, "/admin/transactions?merchant_ref=INV-none", "", token); code != 200 || body != `{"items":[],"nextCursor":null}`+"\n" {
		t.Errorf("a search that finds nothing: %d %q", code, body)
	}
}

// A story's parts are read on the reader connections, each in turn: the
// server answers one connection's direct gets one after another, so a
// story of a transaction whose blocks are cold waited for the sum of its
// parts' loads on the admin connection alone.
func TestStorySpreadsOverReaders(t *testing.T) {
	srv, js := provisionServer(t)
	var ncs []*nats.Conn
	var readers []jetstream.JetStream
	for range 3 {
		nc, r := srv.Connect(t)
		ncs, readers = append(ncs, nc), append(readers, r)
	}
	a := New(Config{Token: token, JetStream: js, Readers: readers, Projects: []string{"main"}, Logger: zerolog.Nop()})
	hs := httptest.NewServer(a.Handler())
	t.Cleanup(func() { hs.Close(); a.Close() })
	mustCall(t, hs, http.MethodGet, "/admin/transactions/main/tx-unknown", "", http.StatusNotFound, nil)
	for i, nc := range ncs {
		if n := nc.Stats().OutMsgs; n == 0 {
			t.Errorf("reader %d sent no request for the story", i+1)
		}
	}
}

// A list of transactions reads their states and latest events several at
// once, in the order listed, and opens the transactions' bucket and the
// events stream once per connection: each open is a stream-info request
// through the server's JetStream API queue, and the list used to make two
// per transaction, one transaction after another.
func TestTransactionListOpensOnce(t *testing.T) {
	srv, js := provisionServer(t)
	a := New(Config{Token: token, JetStream: js, Projects: []string{"main"}, Logger: zerolog.Nop()})
	hs := httptest.NewServer(a.Handler())
	t.Cleanup(func() { hs.Close(); a.Close() })
	kv, err := js.KeyValue(t.Context(), event.BucketTx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var want []string
	for i := range n {
		id := fmt.Sprintf("tx-%02d", i)
		ev := publishEvent(t, js, id)
		st, err := js.Stream(t.Context(), event.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		state, _ := json.Marshal(map[string]any{"project": "main", "transactionId": id, "merchantRef": "REF-" + id, "product": "qris", "status": "success",
			"updatedAt": ev.Time, "history": []map[string]any{{"status": "success", "eventId": ev.ID, "acceptedAt": ev.Time, "seq": info.State.LastSeq, "source": "callback"}}})
		if _, err := kv.Put(t.Context(), "main."+id, state); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	watch, _ := srv.Connect(t)
	var infos atomic.Int64
	if _, err := watch.Subscribe("$JS.API.STREAM.INFO.>", func(*nats.Msg) { infos.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	list := func() []string {
		var out struct {
			Items []txSummary `json:"items"`
		}
		mustCall(t, hs, http.MethodGet, fmt.Sprintf("/admin/transactions?status=success&limit=%d", n), "", http.StatusOK, &out)
		var got []string
		for _, it := range out.Items {
			if it.Amount != 1000 || it.MerchantRef != "REF-"+it.TransactionID {
				t.Errorf("a listed transaction without its state or event: %+v", it)
			}
			got = append(got, it.TransactionID)
		}
		return got
	}
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	before := infos.Load()
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("listed again %v, want %v", got, want)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	if asked := infos.Load() - before; asked > 1 {
		t.Errorf("listing %d transactions again asked for a stream's info %d times; want at most once (the scan's)", n, asked)
	}
}
