package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/receiver"
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
	// A synchronous subscription: after a flush, every request the server
	// routed before it is in the subscription's queue (counting in a
	// callback raced the callback goroutine, and a late count from the
	// first listing was charged to the second).
	infos, err := watch.SubscribeSync("$JS.API.STREAM.INFO.>")
	if err != nil {
		t.Fatal(err)
	}
	asked := func() int {
		t.Helper()
		if err := watch.Flush(); err != nil {
			t.Fatal(err)
		}
		n, _, err := infos.Pending()
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			if _, err := infos.NextMsg(time.Second); err != nil {
				t.Fatal(err)
			}
		}
		return n
	}
	asked()
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
	asked()
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("listed again %v, want %v", got, want)
	}
	if asked := asked(); asked > 1 {
		t.Errorf("listing %d transactions again asked for a stream's info %d times; want at most once (the scan's)", n, asked)
	}
}

// A transaction's story shows the dead letters of its own project only:
// one id may be used in two projects, and the story of main/X showed
// (and its steps narrated) project other's dead letters of X, with
// other's event.
func TestStoryKeepsToItsProjectsDeadLetters(t *testing.T) {
	js := provision(t)
	a := New(Config{Token: token, JetStream: js, Projects: []string{"main", "other"}, Relay: "r", Logger: zerolog.Nop()})
	hs := serveAdmin(t, a)
	ctx := context.Background()
	// main: a notification for X, set aside (anyone can POST one).
	body := fmt.Appendf(nil, `{"responseCode":200,"responseMessage":"success","responseData":{"id":"X","merchantRef":"REF-MAIN","status":"success","feePayer":"customer","amount":10000,"fee":85,"totalAmount":10085,"expiredDate":"2025-03-23T10:24:58+07:00","paidDate":"2025-03-23T10:05:12+07:00","retail":{"viewName":"M","channel":"alfamart","paymentCode":"123"}}}`)
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: event.QuarantineTxSubject("main", "X"), Data: body, Header: nats.Header{
		event.HeaderProject: []string{"main"}, event.HeaderReason: []string{"SenGo's API disagrees"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: event.InboxTxSubject("main", "X"), Data: body, Header: nats.Header{
		event.HeaderProject: []string{"main"}}}); err != nil {
		t.Fatal(err)
	}
	// other: its own transaction X, dead-lettered.
	ev := fmt.Appendf(nil, `{"specversion":"1.0","id":"evt_other","source":"sengo/other","data":{"transactionId":"X","merchantRef":"REF-OTHER"}}`)
	storeDLQFor(t, js, "orders", "X", ev)
	code, got := call(t, hs, http.MethodGet, "/admin/transactions/main/X", "", token)
	if code != 200 {
		t.Fatalf("story: %d %s", code, got)
	}
	var tl struct {
		DeadLetters []dispatcher.DLQEntry `json:"deadLetters"`
	}
	_ = json.Unmarshal([]byte(got), &tl)
	if len(tl.DeadLetters) != 0 {
		t.Fatalf("the story of main/X holds %d dead letter(s) of project other: %s", len(tl.DeadLetters), tl.DeadLetters[0].Event)
	}
}

// The story of a transaction known only by a quarantined notification
// (its inbox copy aged out: inbox 7 days, quarantine 30 by default) takes
// its header from the quarantined notification, as openapi.yaml
// describes it (it had product "", from the inbox notifications only).
func TestStoryOfQuarantinedOnlyMatchesOpenAPI(t *testing.T) {
	hs, js := newServer(t)
	body := fmt.Appendf(nil, `{"responseCode":200,"responseMessage":"success","responseData":{"id":"Q1","merchantRef":"REF-Q1","status":"success","feePayer":"customer","amount":10000,"fee":85,"totalAmount":10085,"expiredDate":"2025-03-23T10:24:58+07:00","paidDate":"2025-03-23T10:05:12+07:00","retail":{"viewName":"M","channel":"alfamart","paymentCode":"123"}}}`)
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: event.QuarantineTxSubject("main", "Q1"), Data: body, Header: nats.Header{
		event.HeaderProject: []string{"main"}, event.HeaderReason: []string{"SenGo's API disagrees"}}}); err != nil {
		t.Fatal(err)
	}
	code, got := call(t, hs, http.MethodGet, "/admin/transactions/main/Q1", "", token) // checkResponse validates it
	if code != 200 || !strings.Contains(got, `"merchantRef":"REF-Q1"`) {
		t.Errorf("story: %d %.300s (want the quarantined notification's merchantRef and product in the header)", code, got)
	}
}

// pubEv stores an event of tx with status st and its state in SENGO_TX.
func pubEv(t *testing.T, js jetstream.JetStream, hist map[string][]map[string]any, tx string, st event.Status) {
	t.Helper()
	ev := event.Event{SpecVersion: "1.0", ID: event.ID("main", tx, st), Source: "sengo/main", Type: event.Type(st), Subject: "REF-" + tx,
		Time: time.Now().UTC(), DataContentType: "application/json",
		Data: event.Data{TransactionID: tx, MerchantRef: "REF-" + tx, Status: st, Product: event.ProductQRIS, Channel: "qris", Amount: 1000, TotalAmount: 1000, Currency: "IDR", Raw: json.RawMessage(`{}`)}}
	b, _ := event.Marshal(ev)
	ack, err := js.Publish(context.Background(), event.EventSubject("main", ev.Data.Product, st), b)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), event.BucketTx)
	if err != nil {
		t.Fatal(err)
	}
	hist[tx] = append(hist[tx], map[string]any{"status": st, "eventId": ev.ID, "acceptedAt": ev.Time, "seq": ack.Sequence, "source": "callback"})
	state, _ := json.Marshal(map[string]any{"project": "main", "transactionId": tx, "merchantRef": "REF-" + tx, "product": "qris", "status": st,
		"updatedAt": ev.Time, "history": hist[tx]})
	if _, err := kv.Put(context.Background(), "main."+tx, state); err != nil {
		t.Fatal(err)
	}
}

// Paging GET /admin/transactions by cursor lists each transaction once:
// the cursor is an event sequence, and a transaction with a later event
// was listed again on a later page.
func TestTransactionPagesDoNotRepeat(t *testing.T) {
	hs, js := newServer(t)
	hist := map[string][]map[string]any{}
	pubEv(t, js, hist, "A", event.StatusPending)
	pubEv(t, js, hist, "B", event.StatusPending)
	pubEv(t, js, hist, "A", event.StatusSuccess)
	seen := map[string]int{}
	path := "/admin/transactions?limit=1"
	for range 10 {
		var p struct {
			Items      []txSummary `json:"items"`
			NextCursor *string     `json:"nextCursor"`
		}
		mustCall(t, hs, http.MethodGet, path, "", http.StatusOK, &p)
		for _, it := range p.Items {
			seen[it.TransactionID]++
		}
		if p.NextCursor == nil {
			break
		}
		path = "/admin/transactions?limit=1&cursor=" + *p.NextCursor
	}
	if seen["A"] != 1 || seen["B"] != 1 {
		t.Fatalf("paging listed %v; want each transaction once", seen)
	}
}

// A change's confirmation was read from its event alone, and SENGO_EVENTS
// keeps events less long than SENGO_TX keeps the state (30 days from the
// event, against 30 from the transaction's last change, or for good): a
// status SenGo's API had confirmed was told "not confirmed" once its
// event aged out, in the story and its header, to an operator judging a
// dispute. The state records it too; where neither says, the story says
// it does not know.
func TestAnAgedOutEventKeepsItsConfirmation(t *testing.T) {
	hs, js := newServer(t)
	hist := map[string][]map[string]any{}
	pubEv(t, js, hist, "OLD", event.StatusPending)
	pubEv(t, js, hist, "OLD", event.StatusSuccess)
	yes := true
	hist["OLD"][1]["confirmed"] = yes // as intake records it; the pending by a relay that did not
	state, _ := json.Marshal(map[string]any{"project": "main", "transactionId": "OLD", "merchantRef": "REF-OLD", "product": "qris", "status": "success",
		"updatedAt": time.Now().UTC(), "history": hist["OLD"]})
	kv, err := js.KeyValue(t.Context(), event.BucketTx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "main.OLD", state); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), event.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(t.Context()); err != nil { // both events aged out
		t.Fatal(err)
	}
	var tl struct {
		Transaction txSummary `json:"transaction"`
		Steps       []step    `json:"steps"`
	}
	mustCall(t, hs, http.MethodGet, "/admin/transactions/main/OLD", "", http.StatusOK, &tl)
	var published []string
	for _, st := range tl.Steps {
		if st.Kind == "published" {
			published = append(published, st.Summary)
		}
	}
	want := []string{"published pending, confirmation unknown (not recorded, and its event not read)", "published success, confirmed by SenGo's API"}
	if !slices.Equal(published, want) || !tl.Transaction.Confirmed {
		t.Fatalf("steps %q, header confirmed %v; want %q and confirmed", published, tl.Transaction.Confirmed, want)
	}

	// The header is the latest change's: an older change's event, confirmed,
	// the latest unconfirmed and its own event not read (still in the
	// outbox), said "confirmed".
	ev := event.Event{SpecVersion: "1.0", ID: event.ID("main", "NEW", event.StatusPending), Source: "sengo/main", Type: event.Type(event.StatusPending), Subject: "REF-NEW",
		Time: time.Now().UTC(), DataContentType: "application/json",
		Data: event.Data{TransactionID: "NEW", MerchantRef: "REF-NEW", Status: event.StatusPending, Product: event.ProductQRIS, Channel: "qris", Amount: 1000, TotalAmount: 1000, Currency: "IDR", Confirmed: true, Raw: json.RawMessage(`{}`)}}
	b, _ := event.Marshal(ev)
	ack, err := js.Publish(t.Context(), event.EventSubject("main", event.ProductQRIS, event.StatusPending), b)
	if err != nil {
		t.Fatal(err)
	}
	no := false
	state, _ = json.Marshal(map[string]any{"project": "main", "transactionId": "NEW", "merchantRef": "REF-NEW", "product": "qris", "status": "success", "updatedAt": time.Now().UTC(),
		"history": []map[string]any{
			{"status": "pending", "eventId": ev.ID, "acceptedAt": ev.Time, "seq": ack.Sequence, "confirmed": yes},
			{"status": "success", "eventId": event.ID("main", "NEW", event.StatusSuccess), "acceptedAt": time.Now().UTC(), "confirmed": no},
		}})
	if _, err := kv.Put(t.Context(), "main.NEW", state); err != nil {
		t.Fatal(err)
	}
	mustCall(t, hs, http.MethodGet, "/admin/transactions/main/NEW", "", http.StatusOK, &tl)
	if tl.Transaction.Confirmed {
		t.Fatal("the header says confirmed: the latest change, not confirmed, took its older change's word")
	}
}

func serveAdmin(t *testing.T, a *Server) *httptest.Server {
	t.Helper()
	hs := httptest.NewServer(a.Handler())
	t.Cleanup(func() { hs.Close(); a.Close() })
	return hs
}

// A story answered its notifications' bodies whole (200 from the inbox,
// 200 quarantined with SenGo's versions), escaped for HTML into one
// buffer: anyone can post notifications of a transaction id, so one
// story could be made to allocate hundreds of megabytes. Each body is now
// an excerpt of at most 4 KiB marked truncated, with its whole size, and the bodies
// of one story hold at most 2 MiB in all; the header still comes from
// the whole notification.
func TestStoryBodiesAreBounded(t *testing.T) {
	hs, js := newServer(t)
	const n = 150
	whole := bigNotification("BIG", 16<<10)
	for i := range n {
		if _, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: event.InboxTxSubject("main", "BIG"), Data: whole, Header: nats.Header{event.HeaderProject: {"main"}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: event.QuarantineTxSubject("main", "BIG"), Data: whole, Header: nats.Header{
			event.HeaderProject: {"main"}, event.HeaderReason: {fmt.Sprintf("SenGo's API disagrees (%d)", i)}, receiver.HeaderAPIObject: {string(whole)}}}); err != nil {
			t.Fatal(err)
		}
	}
	code, got := call(t, hs, http.MethodGet, "/admin/transactions/main/BIG", "", token)
	if code != 200 || len(got) > 3<<20 {
		t.Fatalf("story: %d, %.1f MiB (want 200 within 3 MiB: 2 for the bodies, the rest for the records)", code, float64(len(got))/(1<<20))
	}
	var tl struct {
		Transaction   struct{ MerchantRef string }
		Notifications []struct {
			Body          json.RawMessage `json:"body"`
			BodyBytes     int             `json:"bodyBytes"`
			BodyTruncated bool            `json:"bodyTruncated"`
		}
		Quarantined []quarantinedBodies
	}
	if err := json.Unmarshal([]byte(got), &tl); err != nil {
		t.Fatal(err)
	}
	if len(tl.Notifications) != n || len(tl.Quarantined) != n || tl.Transaction.MerchantRef != "REF-BIG" {
		t.Fatalf("%d notifications and %d quarantined (want %d of each), merchantRef %q", len(tl.Notifications), len(tl.Quarantined), n, tl.Transaction.MerchantRef)
	}
	// Past the story's 2 MiB a body is left out: an empty excerpt.
	check := func(what string, shown json.RawMessage, size int, truncated bool) {
		t.Helper()
		if string(shown) == `""` {
			if !truncated || size != len(whole) {
				t.Errorf("%s left out: truncated %v, size %d (want true, %d)", what, truncated, size, len(whole))
			}
			return
		}
		excerptOf(t, what, shown, size, truncated, whole)
	}
	for i, nt := range tl.Notifications {
		check(fmt.Sprintf("notification %d", i), nt.Body, nt.BodyBytes, nt.BodyTruncated)
	}
	for i, q := range tl.Quarantined {
		check(fmt.Sprintf("quarantined %d", i), q.Notification, q.NotificationBytes, q.NotificationTruncated)
		check(fmt.Sprintf("quarantined %d: SenGo's version", i), q.SenGo, q.SenGoBytes, q.SenGoTruncated)
	}
}

// A story's dead letters are bounded like its other parts (openapi.yaml:
// at most 200, truncated says so): they were read whole, so a transaction
// whose event an endpoint dead-letters again at each redrive grew its
// story, and the relay's memory, without a bound.
func TestStoryDeadLettersAreBounded(t *testing.T) {
	hs, js := newServer(t)
	body := fmt.Appendf(nil, `{"responseCode":200,"responseMessage":"success","responseData":{"id":"D1","merchantRef":"REF-D1","status":"success","feePayer":"customer","amount":10000,"fee":85,"totalAmount":10085,"expiredDate":"2025-03-23T10:24:58+07:00","paidDate":"2025-03-23T10:05:12+07:00","retail":{"viewName":"M","channel":"alfamart","paymentCode":"123"}}}`)
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: event.InboxTxSubject("main", "D1"), Data: body, Header: nats.Header{
		event.HeaderProject: []string{"main"}}}); err != nil {
		t.Fatal(err)
	}
	ev := []byte(`{"specversion":"1.0","id":"evt_d1","source":"sengo/main","data":{"transactionId":"D1","merchantRef":"REF-D1"}}`)
	for range maxTimeline + 3 {
		storeDLQFor(t, js, "orders", "D1", ev)
	}
	code, got := call(t, hs, http.MethodGet, "/admin/transactions/main/D1", "", token)
	if code != 200 {
		t.Fatalf("story: %d %.300s", code, got)
	}
	var tl struct {
		DeadLetters []dispatcher.DLQEntry `json:"deadLetters"`
		Truncated   bool                  `json:"truncated"`
	}
	if err := json.Unmarshal([]byte(got), &tl); err != nil {
		t.Fatal(err)
	}
	if len(tl.DeadLetters) != maxTimeline || !tl.Truncated {
		t.Errorf("a story of %d dead letters holds %d, truncated %v; want %d and truncated", maxTimeline+3, len(tl.DeadLetters), tl.Truncated, maxTimeline)
	}
}

// The dead letters of a story were bounded in number (200) but not in
// size: each carries its event whole, SenGo's object included (up to
// http.max_body_bytes), so a transaction dead-lettered again and again
// (replays to an endpoint that answers 410) made one story request hold
// and send 200 events: 12 MiB at 60 KiB each, gigabytes at the largest
// settings. Their events share the story's bound on bodies; one left out
// says so (eventTruncated, eventBytes), and `dlq show` has it whole.
func TestStoryDeadLettersAreBoundedInBytes(t *testing.T) {
	hs, js := newServer(t)
	body := fmt.Appendf(nil, `{"responseCode":200,"responseMessage":"success","responseData":{"id":"D2","merchantRef":"REF-D2","status":"success","feePayer":"customer","amount":10000,"fee":85,"totalAmount":10085,"expiredDate":"2025-03-23T10:24:58+07:00","paidDate":"2025-03-23T10:05:12+07:00","retail":{"viewName":"M","channel":"alfamart","paymentCode":"123"}}}`)
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: event.InboxTxSubject("main", "D2"), Data: body, Header: nats.Header{
		event.HeaderProject: []string{"main"}}}); err != nil {
		t.Fatal(err)
	}
	ev := []byte(`{"specversion":"1.0","id":"evt_d2","source":"sengo/main","data":{"transactionId":"D2","merchantRef":"REF-D2","raw":{"pad":"` + strings.Repeat("x", 60<<10) + `"}}}`)
	for range maxTimeline {
		storeDLQFor(t, js, "orders", "D2", ev)
	}
	code, got := call(t, hs, http.MethodGet, "/admin/transactions/main/D2", "", token)
	if code != 200 {
		t.Fatalf("story: %d %.300s", code, got)
	}
	if len(got) > maxStoryBodies+1<<20 {
		t.Fatalf("a story of %d dead letters of 60 KiB is %d KiB", maxTimeline, len(got)>>10)
	}
	var tl struct {
		DeadLetters []dispatcher.DLQEntry `json:"deadLetters"`
		Truncated   bool                  `json:"truncated"`
	}
	if err := json.Unmarshal([]byte(got), &tl); err != nil {
		t.Fatal(err)
	}
	if len(tl.DeadLetters) == 0 || !tl.Truncated {
		t.Fatalf("%d dead letters shown, truncated %v", len(tl.DeadLetters), tl.Truncated)
	}
	last := tl.DeadLetters[len(tl.DeadLetters)-1]
	if !last.EventTruncated || last.EventBytes != len(ev) {
		t.Errorf("the last dead letter shown: eventTruncated %v, eventBytes %d (want %d)", last.EventTruncated, last.EventBytes, len(ev))
	}
}
