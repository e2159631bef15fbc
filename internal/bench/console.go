package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/internal/admin"
)

const consoleToken = "bench-console-token-0123456789"

// fillHistory stores n paid transactions of project "bench" as the relay
// would have: each with its event (SENGO_EVENTS), its state (SENGO_TX),
// its merchantRef index entry (SENGO_REFS) and one delivery attempt
// (SENGO_ATTEMPTS): 4n messages, published asynchronously.
func fillHistory(ctx context.Context, st store, n int, progress io.Writer) error {
	js := st.js
	s, err := js.Stream(ctx, event.StreamEvents)
	if err != nil {
		return err
	}
	next := s.CachedInfo().State.LastSeq + 1
	start := time.Now()
	for i := range n {
		id, ref := fmt.Sprintf("tx-%07d", i), fmt.Sprintf("INV-%07d", i)
		at := start.Add(time.Duration(i) * time.Microsecond).UTC()
		ev := tx(id, ref, at)
		b, _ := event.Marshal(ev)
		state, _ := json.Marshal(map[string]any{
			"project": "bench", "transactionId": id, "merchantRef": ref, "product": "retail", "status": "success", "updatedAt": at,
			"history": []map[string]any{{"status": "success", "eventId": ev.ID, "acceptedAt": at, "seq": next + uint64(i), "source": "callback"}},
		})
		attempt, _ := json.Marshal(history.Attempt{Endpoint: "bench", EventID: ev.ID, Project: "bench", TransactionID: id, MerchantRef: ref, Number: 1, At: at,
			DurationMs: 1.2, Status: 200, Outcome: "delivered", Copy: "live", RequestHeaders: map[string]string{"Content-Type": "application/json", "Webhook-Id": ev.ID}})
		refb, _ := json.Marshal(history.Ref{Project: "bench", MerchantRef: ref, TransactionID: id, At: at})
		for _, m := range []*nats.Msg{
			{Subject: event.EventSubject("bench", event.ProductRetail, event.StatusSuccess), Data: b},
			{Subject: "$KV." + event.BucketTx + ".bench." + id, Data: state},
			{Subject: history.RefSubject("bench", ref, id), Data: refb},
			{Subject: history.AttemptSubject("bench", ev.ID), Data: attempt},
		} {
			_, err := js.PublishMsgAsync(m)
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) { // a slow store: let it catch up
				select {
				case <-js.PublishAsyncComplete():
				case <-ctx.Done():
					return ctx.Err()
				}
				_, err = js.PublishMsgAsync(m)
			}
			if err != nil {
				return err
			}
		}
		if progress != nil && i > 0 && i%200000 == 0 {
			fmt.Fprintf(progress, "bench: console: %d of %d transactions stored\n", i, n)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if got := info.State.LastSeq - next + 1; got != uint64(n) {
		return fmt.Errorf("stored %d events of %d", got, n)
	}
	return nil
}

func tx(id, ref string, at time.Time) event.Event {
	prev := event.StatusPending
	return event.Event{
		SpecVersion: "1.0", ID: event.ID("bench", id, event.StatusSuccess), Source: event.Source("bench"), Type: event.Type(event.StatusSuccess),
		Subject: ref, Time: at, DataContentType: "application/json",
		Data: event.Data{TransactionID: id, MerchantRef: ref, Status: event.StatusSuccess, PreviousStatus: &prev, Product: event.ProductRetail,
			Channel: "alfamart", Amount: 10000, Fee: 85, TotalAmount: 10085, Currency: event.Currency, Confirmed: true, Raw: json.RawMessage(`{}`)},
	}
}

// consoleClient is a signed-in browser on an admin server of st.
type consoleClient struct {
	base string
	c    *http.Client
	srv  *httptest.Server
	a    *admin.Server
}

func newConsole(st store) (*consoleClient, error) {
	a := admin.New(admin.Config{Token: consoleToken, JetStream: st.admin, Readers: st.readers, Projects: []string{"bench"}, Logger: zerolog.Nop()})
	srv := httptest.NewServer(a.Handler())
	jar, _ := cookiejar.New(nil)
	cc := &consoleClient{base: srv.URL, c: &http.Client{Jar: jar, Timeout: 30 * time.Second}, srv: srv, a: a}
	resp, err := cc.c.PostForm(srv.URL+"/console/login", url.Values{"token": {consoleToken}})
	if err != nil {
		cc.close()
		return nil, err
	}
	resp.Body.Close()
	return cc, nil
}

func (cc *consoleClient) close() { cc.srv.Close(); cc.a.Close() }

// get fetches path (following a search's redirect) and checks it answered
// 200 with want in it.
func (cc *consoleClient) get(path, want string) (time.Duration, error) {
	req, _ := http.NewRequest(http.MethodGet, cc.base+path, nil)
	if strings.HasPrefix(path, "/admin/") {
		req.Header.Set("Authorization", "Bearer "+consoleToken)
	}
	t0 := time.Now()
	resp, err := cc.c.Do(req)
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
		return 0, fmt.Errorf("GET %s: %d, %d bytes without %q", path, resp.StatusCode, len(b), want)
	}
	return d, nil
}

// consolePage is one page the console bench times.
type consolePage struct {
	name string
	path func(i int) (path, want string)
}

// ConsolePages counts the rows of the console-pages scenario.
var ConsolePages = []consolePage{
	{"console: search a merchantRef → its story", func(i int) (string, string) { return fmt.Sprintf("/console/search?q=INV-%07d", i), "published success" }},
	{"console: a transaction's story", func(i int) (string, string) { return fmt.Sprintf("/console/tx/bench/tx-%07d", i), "delivered" }},
	{"console: overview (last hour)", func(int) (string, string) { return "/console/", "Find a payment" }},
	{"console: live events (newest 50)", func(int) (string, string) { return "/console/events", "INV-" }},
	{"console: dead letters", func(int) (string, string) { return "/console/dlq", "dead letter" }},
	{"API: transactions by status, 50", func(int) (string, string) { return "/admin/transactions?status=success&limit=50", "INV-" }},
	{"API: events from a cursor, 50", func(i int) (string, string) { return fmt.Sprintf("/admin/events?cursor=%d&limit=50", i+1), "INV-" }},
}

// consolePagesRun stores cfg.ConsoleEvents transactions, then times each
// console page and API query over random transactions: one row each.
func consolePagesRun(ctx context.Context, cfg Config, st store) ([]Result, error) {
	n := cfg.ConsoleEvents
	t0 := time.Now()
	if err := fillHistory(ctx, st, n, cfg.Progress); err != nil {
		return nil, err
	}
	fill := time.Since(t0)
	cc, err := newConsole(st)
	if err != nil {
		return nil, err
	}
	defer cc.close()
	// 300 samples: the p99 of 100 would be the slowest one alone.
	const samples = 300
	var out []Result
	for _, p := range ConsolePages {
		var lat []time.Duration
		gc := readGC()
		for range samples {
			path, want := p.path(rand.IntN(n))
			d, err := cc.get(path, want)
			if err != nil {
				return nil, err
			}
			lat = append(lat, d)
		}
		slices.Sort(lat)
		var total time.Duration
		for _, d := range lat {
			total += d
		}
		r := result(sample{ops: samples, elapsed: total, lat: lat}, fmt.Sprintf("%d requests one after another, with %d transactions stored (%d messages, stored in %s); slowest %.1f ms; %s", samples, n, 4*n, fill.Round(time.Second), float64(lat[len(lat)-1].Microseconds())/1000, gc.since(samples)))
		r.Name = p.name
		out = append(out, r)
	}
	return out, nil
}

// consoleUnderLoad is endpoint-rate with an operator reading stories and
// searching back to back all along: compare its p99 with endpoint-rate's.
func consoleUnderLoad(ctx context.Context, cfg Config, st store) (Result, error) {
	rl, err := startRelay(ctx, st)
	if err != nil {
		return Result{}, err
	}
	defer rl.close()
	if err := fillHistory(ctx, st, 10000, nil); err != nil {
		return Result{}, err
	}
	cc, err := newConsole(st)
	if err != nil {
		return Result{}, err
	}
	defer cc.close()
	stop := make(chan struct{})
	var pages atomic.Int64
	var pageErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := ConsolePages[i%2] // search → story, then a story
			path, want := p.path(rand.IntN(10000))
			if _, err := cc.get(path, want); err != nil {
				pageErr.Store(err)
				return
			}
			pages.Add(1)
		}
	}()
	lat, failed := rl.offer(ctx, cfg)
	close(stop)
	wg.Wait()
	if err, _ := pageErr.Load().(error); err != nil {
		return Result{}, err
	}
	res := result(sample{ops: int64(len(lat)), errors: failed, elapsed: cfg.Duration, lat: lat},
		fmt.Sprintf("callbacks offered at %d/s while one operator loaded %d console pages (%.0f/s: searches and stories, back to back), %d consumers on the server at the end; compare with the endpoint-rate row", cfg.EndpointRate, pages.Load(), float64(pages.Load())/cfg.Duration.Seconds(), consumers(ctx, st.js)))
	res.PerSecond = float64(len(lat)) / cfg.Duration.Seconds()
	return res, nil
}

// consumers is how many consumers the server holds on all streams.
func consumers(ctx context.Context, js jetstream.JetStream) int {
	n := 0
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		n += info.State.Consumers
	}
	return n
}
