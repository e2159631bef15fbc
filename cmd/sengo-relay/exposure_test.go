package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sengo-relay/sengo-relay/internal/config"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
	"github.com/sengo-relay/sengo-relay/internal/poll"
	"github.com/sengo-relay/sengo-relay/receiver"
)

// The subscriber identity reads SENGO_EVENTS and nothing else. The relay's
// own connections receive their JetStream answers and pulled messages on
// reply subjects: were those the default _INBOX.>, which the subscriber
// may subscribe to (its own replies come there), it would read every
// notification intake pulls from SENGO_INBOX, the buckets and the dead
// letters over the relay's shoulder.
func TestSubscriberCannotReadTheRelaysReplies(t *testing.T) {
	base, logs, _ := startRun(t, relayEnv(t.TempDir()))
	natsURL := logs.field(t, "embedded nats started", "client_url")
	waitReady(t, base)
	nc, err := nats.Connect(natsURL, subscriberAuth(t, logs), nats.Timeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var snooped []string
	if _, err := nc.Subscribe("_INBOX.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		snooped = append(snooped, m.Reply+" "+string(m.Data))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, natsURL, subscriberAuth(t, logs))
	if code := post(t, base+"/callbacks/sengo/main", fixtures.Body("callback-retail-success")); code != 200 {
		t.Fatalf("callback: %d", code)
	}
	// Once the event is out, intake has pulled the notification and
	// written the transaction; the subscriber's own echo of that flush
	// comes after anything the relay's traffic delivered to it.
	eventually(t, "the event", func() bool { return sub.n() >= 1 })
	// The CLI reaches the same server through its listener, as the relay.
	t.Setenv("SENGO_RELAY_NATS_EMBEDDED_LISTEN", strings.TrimPrefix(natsURL, "nats://"))
	if err := run(context.Background(), []string{"quarantine", "list", "--config", checkedInConfig}, io.Discard, io.Discard); err != nil {
		t.Fatalf("quarantine list: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var relays []string
	for _, s := range snooped {
		if strings.Contains(s, "SENGO_INBOX") || strings.Contains(s, "SENGO_QUARANTINE") || strings.Contains(s, "KV_") {
			relays = append(relays, s)
		}
	}
	for _, s := range relays {
		if strings.HasPrefix(s, "$JS.ACK.SENGO_INBOX.") { // the notification itself, as intake pulled it
			t.Fatalf("the subscriber read the relay's traffic (%d of its messages), the inbox's notification among them: %.200s", len(relays), s)
		}
	}
	if len(relays) > 0 {
		t.Fatalf("the subscriber read the relay's traffic (%d of its messages), e.g. %.200s", len(relays), relays[0])
	}
}

// The admin and metrics listeners answer some requests without a token
// (the console's sign-in page and form, a 401), so whoever reaches them
// must not hold a connection for ever: a request whose body never ends,
// and an idle keep-alive connection, are closed after http.read_timeout
// and http.idle_timeout as on the callback listener. Else a few thousand
// such connections use up the process's file descriptors, and the
// callback listener can accept no more.
func TestAdminAndMetricsListenersDropSlowClients(t *testing.T) {
	_, logs, _ := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0", "SENGO_RELAY_ADMIN_TOKEN=admin-token-0123456789",
		"SENGO_RELAY_HTTP_READ_TIMEOUT=1s", "SENGO_RELAY_HTTP_IDLE_TIMEOUT=1s"))
	// The four connections wait together (each at most 10 s, ten times
	// the timeouts): one after another, a mutant that never drops them
	// took 80 s to go red.
	var wg sync.WaitGroup
	for _, l := range []struct{ msg, req string }{
		{"admin listening", "POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken="},
		{"admin listening", "GET /console/login HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"metrics listening", "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx"},
		{"metrics listening", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		conn, err := net.Dial("tcp", logs.field(t, l.msg, "addr"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, l.req); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			start := time.Now()
			conn.SetReadDeadline(start.Add(10 * time.Second))
			_, err := io.Copy(io.Discard, conn) // returns once the server closes
			conn.Close()
			if err != nil {
				t.Errorf("%s, %q: still open after %s: %v", l.msg, strings.SplitN(l.req, "\r\n", 2)[0], time.Since(start).Round(time.Second), err)
			}
		})
	}
	wg.Wait()
}

// admin.secure_cookie and admin.trusted_proxies reach the admin
// listener: behind a TLS-terminating proxy, the session cookie a sign-in
// sets is Secure, and wrong tokens are paced by the client the proxy
// names, not by the proxy's own address.
func TestAdminProxySettingsReachTheListener(t *testing.T) {
	const tok = "admin-token-0123456789"
	_, logs, _ := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0", "SENGO_RELAY_ADMIN_TOKEN="+tok,
		"SENGO_RELAY_ADMIN_SECURE_COOKIE=true", "SENGO_RELAY_ADMIN_TRUSTED_PROXIES=127.0.0.1"))
	base := "http://" + logs.field(t, "admin listening", "addr")
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(base+"/console/login", url.Values{"token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ck := resp.Cookies(); resp.StatusCode != http.StatusSeeOther || len(ck) != 1 || !ck[0].Secure {
		t.Fatalf("sign in with admin.secure_cookie: %d, cookies %v; want 303 and a Secure session cookie", resp.StatusCode, ck)
	}
	bearer := func(client, tok string) int {
		req, _ := http.NewRequest(http.MethodGet, base+"/admin/endpoints", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Forwarded-For", client)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	paced := false
	for i := 0; i < 20 && !paced; i++ {
		paced = bearer("203.0.113.5", fmt.Sprintf("guess-%02d-0123456789abcdef", i)) == http.StatusTooManyRequests
	}
	if !paced {
		t.Fatal("20 wrong tokens from one client through the proxy: none answered 429")
	}
	if code := bearer("198.51.100.7", tok); code != http.StatusOK {
		t.Fatalf("the right token from another client through the same proxy: %d, want 200", code)
	}
}

// The admin and metrics listeners on loopback answer to the loopback names only: a
// page whose name an attacker rebinds to 127.0.0.1 reaches it as a
// same-origin page would, and its wrong tokens spent the operator's own
// address's sign-in attempts.
func TestLoopbackListenersAnswerToTheirOwnNames(t *testing.T) {
	// Metrics on 127.0.0.2: loopback, and none of the loopback names.
	_, logs := startRunWith(t, writeConfig(t, endpointYAML("orders", "http://127.0.0.1:1/hook", "1s")), relayEnv(t.TempDir(), "SENGO_RELAY_METRICS_LISTEN=127.0.0.2:0"))
	addr := logs.field(t, "admin listening", "addr")
	for host, want := range map[string]int{"rebind.attacker.example:8081": http.StatusMisdirectedRequest, addr: http.StatusOK, "localhost": http.StatusOK} {
		if got := statusForHost(t, "http://"+addr+"/admin/endpoints", host, adminToken); got != want {
			t.Errorf("admin, Host %s: %d, want %d", host, got, want)
		}
	}
	// The metrics listener without a token (loopback): a rebound page
	// could read the payment volumes per project.
	maddr := logs.field(t, "metrics listening", "addr")
	for host, want := range map[string]int{"rebind.attacker.example:9464": http.StatusMisdirectedRequest, maddr: http.StatusOK, "[::1]:9464": http.StatusOK, "localhost": http.StatusOK} {
		if got := statusForHost(t, "http://"+maddr+"/metrics", host, ""); got != want {
			t.Errorf("metrics, Host %s: %d, want %d", host, got, want)
		}
	}
}

// statusForHost is the status of a GET of url naming host in its Host
// header (as a page whose name was rebound to the address does), with a
// bearer token unless it is empty.
func statusForHost(t *testing.T, url, host, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// serve bounds the callback listener's connections per address
// (http.max_conns_per_address).
func TestTheCallbackListenerBoundsConnectionsPerAddress(t *testing.T) {
	base, logs, _ := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_HTTP_MAX_CONNS_PER_ADDRESS=2", "SENGO_RELAY_PROJECTS_MAIN_ALLOWED_IPS=127.0.0.9"))
	addr := strings.TrimPrefix(base, "http://")
	connsAnswered(t, addr, "127.0.0.1", 2, 1)
	// SenGo's addresses (allowed_ips) are never refused.
	connsAnswered(t, addr, "127.0.0.9", 3, 0)
	refusalsCounted(t, logs.field(t, "metrics listening", "addr"), `{listener="callback",reason="per_address"} 1`)
}

// The admin and metrics listeners are bounded too: each connection comes
// before its token is read (and the admin listener reads up to 64 KiB of
// a request first), so that one caller could hold thousands, taking the
// memory the relay answers SenGo with. The admin listener's trusted
// proxies are not counted.
func TestTheAdminAndMetricsListenersBoundConnections(t *testing.T) {
	defer func(a, m receiver.ConnLimits) { adminConnLimits, metricsConnLimits = a, m }(adminConnLimits, metricsConnLimits)
	adminConnLimits.PerAddress, metricsConnLimits.PerAddress = 2, 3
	adminConnLimits.Shared, metricsConnLimits.Shared = nil, nil // loopback held to one address's share, as another address is
	_, logs, _ := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0", "SENGO_RELAY_ADMIN_TOKEN=admin-token-0123456789",
		"SENGO_RELAY_ADMIN_TRUSTED_PROXIES=127.0.0.9"))
	admin, metrics := logs.field(t, "admin listening", "addr"), logs.field(t, "metrics listening", "addr")
	connsAnswered(t, admin, "127.0.0.1", 2, 1)
	connsAnswered(t, admin, "127.0.0.9", 3, 0) // a trusted proxy
	connsAnswered(t, metrics, "127.0.0.1", 3, 1)
	refusalsCounted(t, metrics, `{listener="admin",reason="per_address"} 1`, `{listener="metrics",reason="per_address"} 1`)
}

// One address's share of the admin and metrics listeners is a small part
// of their total (it was a quarter: four addresses took everything, and
// the operators and the scraper were shut out). This machine, an ssh
// tunnel included, is not held to one address's share, but counts
// towards the total (a proxy on it not named trusted passes every client
// on from loopback).
func TestTheAdminAndMetricsListenersLetThisMachineIn(t *testing.T) {
	if a, m := adminConnLimits, metricsConnLimits; a.PerAddress*64 > a.Total || m.PerAddress*64 > m.Total {
		t.Fatalf("one address's share: admin %d of %d, metrics %d of %d; want at most a 64th", a.PerAddress, a.Total, m.PerAddress, m.Total)
	}
	defer func(a, m receiver.ConnLimits) { adminConnLimits, metricsConnLimits = a, m }(adminConnLimits, metricsConnLimits)
	adminConnLimits.PerAddress, adminConnLimits.Total, metricsConnLimits.PerAddress, metricsConnLimits.Total = 2, 3, 2, 3
	_, logs, _ := startRun(t, relayEnv(t.TempDir(), "SENGO_RELAY_ADMIN_LISTEN=127.0.0.1:0", "SENGO_RELAY_ADMIN_TOKEN=admin-token-0123456789"))
	connsAnswered(t, logs.field(t, "admin listening", "addr"), "127.0.0.1", 3, 1)
	connsAnswered(t, logs.field(t, "metrics listening", "addr"), "127.0.0.2", 3, 1)
}

// connsAnswered opens answered+refused connections to addr from the
// address from, each kept open until the test ends, and fails t unless the
// first answered are answered (a GET /healthz) and the rest closed
// unanswered.
func connsAnswered(t *testing.T, addr, from string, answered, refused int) {
	t.Helper()
	for i := range answered + refused {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		ok := func() bool {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
				return false
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return true
		}()
		if ok != (i < answered) {
			t.Fatalf("connection %d from %s to %s answered: %v", i+1, from, addr, ok)
		}
	}
}

// refusalsCounted fails t unless the metrics listener at addr shows each
// of want (labels and value) for sengo_relay_connections_refused_total.
// It scrapes from an address of its own, which no limit has reached.
func refusalsCounted(t *testing.T, addr string, want ...string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, w := range want {
		if !strings.Contains(string(b), "sengo_relay_connections_refused_total"+w) {
			t.Errorf("no %s:\n%s", w, b)
		}
	}
}

// The pending gauges ask the store at most once a second, however often
// /metrics is scraped: each asks with a consumer info request, which
// waits in nats-server's one queue of them with the relay's own.
func TestThePendingGaugesAskTheStoreAtMostOnceASecond(t *testing.T) {
	var asked atomic.Int64
	g := atMostEvery(time.Hour, func() float64 { return float64(asked.Add(1)) })
	for range 100 {
		if v := g(); v != 1 {
			t.Fatalf("gauge %v, want the first answer", v)
		}
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("asked %d times in 100 scrapes", n)
	}
	g = atMostEvery(10*time.Millisecond, func() float64 { return float64(asked.Add(1)) })
	first := g()
	eventually(t, "asked again once the time passed", func() bool { return g() > first })
}

// A client that sent scrapes and never read the answers held the metrics
// listener's two scrape slots for good: promhttp frees a slot only once
// its answer is written, the listener had no write timeout, and the
// client's kernel keeps a connection that reads nothing alive. Every
// scrape after two such connections was answered 503, and the relay's
// alerts went blind; on the admin listener each such answer (up to 8 MiB)
// stayed in memory. An answer of either listener (sideServer) now has
// http.write_timeout to be written, from its first byte: a handler's own
// work (a test send, a redrive of every dead letter) is not bounded by it.
func TestAnAnswerNobodyReadsRunsOutOfTime(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.WriteTimeout = config.Duration(time.Second)
	wrote := make(chan error, 1)
	srv := sideServer(cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			// Work longer than the write timeout before the first byte.
			time.Sleep(2 * time.Second)
			_, _ = io.WriteString(w, "done")
			return
		case "/listing":
			// A large answer in one write (as a listing is encoded).
			_, _ = w.Write(bytes.Repeat([]byte("x"), 32<<20))
			return
		}
		chunk := make([]byte, 64<<10)
		var err error
		for range 1024 { // 64 MiB: more than any socket buffers hold
			if _, err = w.Write(chunk); err != nil {
				break
			}
		}
		wrote <- err
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	resp, err := http.Get("http://" + ln.Addr().String() + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "done" {
		t.Fatalf("an answer whose handler worked 2 s before writing, with a 1 s write timeout: %d %q %v", resp.StatusCode, body, err)
	}

	// A client that reads slowly but reads (a large listing over a slow
	// link) gets its whole answer, though it takes longer than the write
	// timeout: the time counts again for each part it takes.
	resp, err = http.Get("http://" + ln.Addr().String() + "/listing")
	if err != nil {
		t.Fatal(err)
	}
	start, got, buf := time.Now(), 0, make([]byte, 1<<20)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		got += n
		if err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // a slow link's pace, not a wait for an outcome
	}
	resp.Body.Close()
	if got != 32<<20 {
		t.Fatalf("a slow reader got %d bytes of a 32 MiB answer in %s (write timeout 1 s)", got, time.Since(start).Round(time.Millisecond))
	}

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /large HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select { // the client never reads
	case err := <-wrote:
		if err == nil {
			t.Fatal("64 MiB written to a client that reads nothing")
		}
	case <-time.After(poll.Deadline):
		t.Fatalf("the handler still writes to a client that reads nothing, %s later", poll.Deadline)
	}
}

// deadlineSpy counts the write deadlines set on it.
type deadlineSpy struct {
	http.ResponseWriter
	set int
}

func (s *deadlineSpy) SetWriteDeadline(time.Time) error { s.set++; return nil }

// The write timeout counts again after each 64 KiB of an answer, not
// after each write: promhttp writes a few KiB at a time, and renewed at
// every write, a client taking 4 KiB a timeout held a scrape slot for
// hours.
func TestAnAnswersWriteTimeoutCountsBytes(t *testing.T) {
	spy := &deadlineSpy{ResponseWriter: httptest.NewRecorder()}
	h := writeBounded(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chunk := bytes.Repeat([]byte("m"), 4<<10)
		for range 256 { // 1 MiB in writes of 4 KiB
			_, _ = w.Write(chunk)
		}
	}), time.Second)
	h.ServeHTTP(spy, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if want := (1 << 20) / writeChunk; spy.set != want {
		t.Fatalf("the deadline was set %d times for 1 MiB in writes of 4 KiB, want %d (once per %d KiB)", spy.set, want, writeChunk>>10)
	}
}
