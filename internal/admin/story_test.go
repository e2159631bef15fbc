package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
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
