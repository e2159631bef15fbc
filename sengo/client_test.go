package sengo_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/internal/fixtures"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/sengo/sandbox"
)

// The client signs exactly the published test vector's message and sends
// the bytes it signed.
func TestClientSignatureMatchesVector(t *testing.T) {
	v := fixtures.SignatureVector()
	var gotSig, gotKey, gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotSig, gotKey, gotBody = r.Header.Get("X-Signature"), r.Header.Get("X-Client-Key"), string(b)
		w.WriteHeader(500) // not retried: a POST
	}))
	defer srv.Close()
	c := sengo.NewClient(srv.URL, v.APIKey, v.Token)
	_, err := c.CreateVirtualAccount(context.Background(), sengo.VirtualAccountRequest{
		Reference: "12345678", BankCode: "014", ViewName: "Guntur Brahmaputra", Type: "ClosedAmount", Amount: 10000,
		AdditionalInfo: sengo.AdditionalInfo{Callback: "https://google.com"},
	})
	if err == nil {
		t.Fatal("500 not reported")
	}
	if gotKey+gotBody != v.Message {
		t.Fatalf("signed message\n%s\nwant\n%s", gotKey+gotBody, v.Message)
	}
	if gotSig != v.Signature {
		t.Fatalf("X-Signature %s, want %s", gotSig, v.Signature)
	}
}

const (
	key   = "SC-SANDBOXKEY0000001"
	token = "sandbox-token-0000000000000001"
)

func startSandbox(t *testing.T, cfg sandbox.Config) (*sandbox.Server, string) {
	t.Helper()
	if cfg.Projects == nil {
		cfg.Projects = []sandbox.Project{{Key: key, Token: token, Name: "shop", Active: 1_000_000}}
	}
	sb, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { hs.Close(); sb.Close() })
	return sb, hs.URL + "/api"
}

// The five product request shapes round-trip through the sandbox, and
// check, list and balance read them back.
func TestProductsRoundTrip(t *testing.T) {
	_, base := startSandbox(t, sandbox.Config{})
	c := sengo.NewClient(base, key, token)
	ctx := context.Background()
	cb := sengo.AdditionalInfo{Callback: "http://127.0.0.1:1/cb"}
	type created struct {
		tx      sengo.Transaction
		product event.Product
		channel string
	}
	var all []created
	add := func(tx sengo.Transaction, err error, p event.Product, ch string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		all = append(all, created{tx, p, ch})
	}
	tx, err := c.CreateRetail(ctx, sengo.RetailRequest{Reference: "R-1", PhoneNumber: "0812", Channel: "alfamart", Amount: 10000, ViewName: "Toko", AdditionalInfo: cb})
	add(tx, err, event.ProductRetail, "alfamart")
	if tx.PaymentCode == "" || tx.Fee != 85 || tx.TotalAmount != 10085 || tx.Status != event.StatusPending {
		t.Errorf("retail %+v", tx)
	}
	tx, err = c.CreateVirtualAccount(ctx, sengo.VirtualAccountRequest{Reference: "V-1", BankCode: "014", ViewName: "Toko", Type: "ClosedAmount", Amount: 15000, AdditionalInfo: cb})
	add(tx, err, event.ProductVirtualAccount, "014")
	if !strings.HasPrefix(tx.VANumber, "0367") {
		t.Errorf("BCA VA number %q", tx.VANumber)
	}
	tx, err = c.CreateEWallet(ctx, sengo.EWalletRequest{Reference: "E-1", PhoneNumber: "0812", Channel: "ovo", Amount: 15000, ViewName: "Toko", AdditionalInfo: cb})
	add(tx, err, event.ProductEWallet, "ovo")
	tx, err = c.CreateQRIS(ctx, sengo.QRISRequest{Reference: "Q-1", Amount: 32000, ViewName: "Toko", AdditionalInfo: cb})
	add(tx, err, event.ProductQRIS, "qris")
	if tx.Fee != 224 || tx.TotalAmount != 32000 || tx.FeePayer != "merchant" {
		t.Errorf("qris %+v", tx)
	}
	tx, err = c.Disburse(ctx, sengo.DisbursementRequest{Reference: "D-1", BankCode: "011", RecipientAccount: "7700173383", RecipientName: "Budi", Amount: 10500, AdditionalInfo: cb})
	add(tx, err, event.ProductDisbursement, "011")
	if tx.TotalAmount != 7500 {
		t.Errorf("disbursement total %d, want amount - fee", tx.TotalAmount)
	}
	for _, cr := range all {
		if cr.tx.Product != cr.product || cr.tx.Channel != cr.channel {
			t.Errorf("%s: product %s channel %s", cr.product, cr.tx.Product, cr.tx.Channel)
		}
		got, err := c.Check(ctx, cr.tx.ID, false)
		if err != nil || got.MerchantRef != cr.tx.MerchantRef || got.Amount != cr.tx.Amount {
			t.Errorf("check %s: %+v %v", cr.tx.ID, got, err)
		}
	}
	list, err := c.ListTransactions(ctx, sengo.ListQuery{Page: 1, Status: event.StatusPending, Type: sengo.CashIn})
	if err != nil || len(list) != 4 {
		t.Fatalf("cash-in list: %d %v", len(list), err)
	}
	b, err := c.Balance(ctx)
	if err != nil || b.Active != 1_000_000-10500 {
		t.Fatalf("balance after holding a disbursement: %+v %v", b, err)
	}
}

// The sandbox answers bad calls with SenGo's codes, which the client maps
// to its sentinels.
func TestSandboxRejections(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Config{})
	sb.AddProject(sandbox.Project{Key: "SC-FENCED", Token: "fenced-token-000000000000", AllowedIPs: []string{"10.0.0.0/8"}})
	ctx := context.Background()
	req := sengo.RetailRequest{Reference: "DUP-1", PhoneNumber: "0812", Channel: "indomaret", Amount: 20000, ViewName: "Toko"}
	if _, err := sengo.NewClient(base, key, token).CreateRetail(ctx, req); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		call   func() error
		want   error
		status int
	}{
		{"duplicate reference", func() error { _, err := sengo.NewClient(base, key, token).CreateRetail(ctx, req); return err }, sengo.ErrDuplicateReference, 409},
		{"unknown key", func() error { _, err := sengo.NewClient(base, "SC-NOPE", token).Balance(ctx); return err }, sengo.ErrUnauthorized, 401},
		{"wrong token", func() error { _, err := sengo.NewClient(base, key, "wrong").Balance(ctx); return err }, sengo.ErrUnauthorized, 401},
		{"wrong signature", func() error {
			r, _ := http.NewRequest(http.MethodGet, base+"/balance", nil)
			r.Header.Set("X-Client-Key", key)
			r.Header.Set("X-Client-Token", token)
			r.Header.Set("X-Signature", strings.Repeat("ab", 64))
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || !strings.Contains(string(b), `"responseMessage":"UNAUTHORIZED"`) {
				return errors.New("got " + string(b))
			}
			return sengo.ErrUnauthorized
		}, sengo.ErrUnauthorized, 0},
		{"ip not allowed", func() error {
			_, err := sengo.NewClient(base, "SC-FENCED", "fenced-token-000000000000").Balance(ctx)
			return err
		}, sengo.ErrIPNotAllowed, 403},
		{"insufficient balance", func() error {
			_, err := sengo.NewClient(base, key, token).Disburse(ctx, sengo.DisbursementRequest{Reference: "BIG", BankCode: "014", RecipientAccount: "1", Amount: 5_000_000})
			return err
		}, sengo.ErrInsufficientBalance, 402},
		{"invalid request", func() error {
			_, err := sengo.NewClient(base, key, token).CreateRetail(ctx, sengo.RetailRequest{Reference: "X", Channel: "circlek", Amount: 5})
			return err
		}, sengo.ErrInvalidRequest, 422},
		{"not found", func() error { _, err := sengo.NewClient(base, key, token).Check(ctx, "nope", false); return err }, sengo.ErrTransactionNotFound, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var ae *sengo.APIError
			if tt.status != 0 && (!errors.As(err, &ae) || ae.HTTPStatus != tt.status) {
				t.Fatalf("err = %#v, want HTTP %d", err, tt.status)
			}
			if strings.Contains(err.Error(), token) {
				t.Fatal("error leaks the token")
			}
		})
	}
}

// GETs are retried on 5xx; POSTs are not (they may have created something).
func TestClientRetriesOnlyIdempotentCalls(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Config{})
	c := sengo.NewClient(base, key, token, sengo.WithRetry(3, time.Millisecond))
	ctx := context.Background()
	sb.SetFaults(sandbox.Faults{Fail500: 2})
	if _, err := c.Balance(ctx); err != nil {
		t.Fatalf("GET after two 500s: %v", err)
	}
	sb.SetFaults(sandbox.Faults{Fail500: 1})
	_, err := c.CreateQRIS(ctx, sengo.QRISRequest{Reference: "Q", Amount: 5000})
	if !errors.Is(err, sengo.ErrThrottled) {
		t.Fatalf("POST after a 500: %v", err)
	}
	if _, err := c.CreateQRIS(ctx, sengo.QRISRequest{Reference: "Q", Amount: 5000}); err != nil {
		t.Fatalf("the POST was not retried, so the reference is free: %v", err)
	}
}

// A redirect from base_url (a typo landing on a website, a proxy during a
// deploy, http → https on another name) is never followed: following it
// sent X-Client-Key, X-Client-Token and X-Signature to whatever host the
// Location named, and with them anyone can call SenGo's API as the
// merchant, disbursements included. It is an error naming the redirect,
// with or without a caller's own HTTP client.
func TestClientNeverFollowsRedirects(t *testing.T) {
	var leaked atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Client-Token") != "" || r.Header.Get("X-Client-Key") != "" {
			leaked.Add(1)
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	defer other.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusFound)
	}))
	defer api.Close()
	for name, c := range map[string]*sengo.Client{
		"default client":  sengo.NewClient(api.URL+"/api", "SC-KEY", "secret-token-0000000000"),
		"caller's client": sengo.NewClient(api.URL+"/api", "SC-KEY", "secret-token-0000000000", sengo.WithHTTPClient(&http.Client{Timeout: time.Second})),
	} {
		_, err := c.Check(context.Background(), "abc", false)
		var ae *sengo.APIError
		if !errors.As(err, &ae) || ae.Code != sengo.CodeRedirect || ae.HTTPStatus != http.StatusFound {
			t.Errorf("%s: a redirect gave %v, want an APIError %s", name, err, sengo.CodeRedirect)
		}
	}
	if n := leaked.Load(); n != 0 {
		t.Fatalf("the redirect's target (another host) received the credentials %d times", n)
	}
}

// An answer's headers are bounded (64 KiB) like its body: a megabyte of
// them is an error, not read whole.
func TestClientBoundsResponseHeaders(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		pad := strings.Repeat("p", 40)
		for i := range 25000 {
			w.Header().Set("X-Pad-"+strconv.Itoa(i), pad)
		}
		w.WriteHeader(200)
	}))
	defer api.Close()
	_, err := sengo.NewClient(api.URL+"/api", "SC-KEY", "secret-token-0000000000").Check(context.Background(), "abc", false)
	if err == nil || !strings.Contains(err.Error(), "headers exceeded") {
		t.Fatalf("an answer with 1 MB of headers: %v, want the header bound", err)
	}
}

// SenGo's error text is kept whole in errors, logs, the quarantine's
// reason and the reconciliation record: an answer of megabytes made a
// quarantine too large to store (the notification was then lost with the
// inbox's retention) and a proxy echoing the request's X-Client-Token put
// the token there. It is now cut to 256 bytes, control characters
// replaced, the client's own credentials never repeated.
func TestClientBoundsSenGosErrorText(t *testing.T) {
	const token = "secret-token-0000000000"
	for name, msg := range map[string]string{
		"huge":   strings.Repeat("x", 2<<20),
		"echoed": "invalid client, got token " + token + " and key SC-KEY",
		"lines":  "bad\nrequest\x1b[31m",
	} {
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = io.WriteString(w, `{"responseCode":422,"responseMessage":"REQUEST_INVALID","responseData":{"message":"`+strings.ReplaceAll(strings.ReplaceAll(msg, "\n", `\n`), "\x1b", `\u001b`)+`"}}`)
		}))
		_, err := sengo.NewClient(api.URL+"/api", "SC-KEY", token).Check(context.Background(), "abc", false)
		api.Close()
		var ae *sengo.APIError
		if !errors.As(err, &ae) || ae.Code != "REQUEST_INVALID" {
			t.Fatalf("%s: %v, want SenGo's error", name, err)
		}
		if text := err.Error(); len(text) > 400 || strings.Contains(text, token) || strings.Contains(text, "SC-KEY") || strings.ContainsAny(text, "\n\x1b") {
			t.Errorf("%s: error of %d bytes: %.200q", name, len(text), text)
		}
	}
}

// SenGo's error code is kept as it is only when it looks like one (63
// capitals at most): a responseMessage of 2 MiB of capitals went whole into
// the error, its log line and a quarantine's reason.
func TestClientBoundsSenGosErrorCode(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = io.WriteString(w, `{"responseCode":422,"responseMessage":"`+strings.Repeat("A", 2<<20)+`"}`)
	}))
	defer api.Close()
	_, err := sengo.NewClient(api.URL+"/api", "SC-KEY", "secret-token-0000000000").Check(context.Background(), "abc", false)
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("an error code of 2 MiB: an error of %d bytes", len(fmt.Sprint(err)))
	}
}

// An answer SenGo's envelope or object cannot be decoded from made an
// error that quoted it: a responseCode or an amount of megabytes of
// digits put megabytes into a log line, a trace and a quarantine's reason
// (over the store's max_payload: the notification never quarantined). It
// is bounded as SenGo's own error text is.
// What answers at base_url chooses the text of Go's own errors too: a
// first line of 64 KiB that is not HTTP came back quoted whole (each byte
// over 0x7f as \xNN, 256 KiB), in a log line per try, a quarantine's
// reason and a reconciliation's record, which then was too large to
// store. It is bounded as SenGo's error text is.
func TestClientBoundsTheTransportsErrorText(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = http.ReadRequest(bufio.NewReader(conn))
				_, _ = conn.Write(append(bytes.Repeat([]byte{0xfe}, 60<<10), '\n'))
			}()
		}
	}()
	const token = "secret-token-0000000000"
	_, err = sengo.NewClient("http://"+ln.Addr().String()+"/api", "SC-KEY", token, sengo.WithRetry(1, time.Millisecond)).Check(context.Background(), "abc", false)
	if err == nil || !strings.Contains(err.Error(), "malformed HTTP response") {
		t.Fatalf("a first line that is not HTTP: %.200v, want Go's error", err)
	}
	if text := err.Error(); len(text) > 400 {
		t.Errorf("error of %d bytes: %.200q", len(text), text)
	}
}

func TestClientBoundsAnUndecodableAnswer(t *testing.T) {
	digits := strings.Repeat("1", 2<<20)
	for name, body := range map[string]string{
		"envelope": `{"responseCode":` + digits + `}`,
		"object":   `{"responseCode":200,"responseMessage":"success","responseData":{"id":"abc","amount":` + digits + `}}`,
	} {
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, body)
		}))
		_, err := sengo.NewClient(api.URL+"/api", "SC-KEY", "secret-token-0000000000").Check(context.Background(), "abc", false)
		api.Close()
		if err == nil || len(err.Error()) > 600 {
			t.Errorf("%s: error of %d bytes: %.200q", name, len(fmt.Sprint(err)), fmt.Sprint(err))
		}
	}
}

// An answer of SenGo's API is read up to 8 MiB: a base_url host (a proxy,
// a misconfigured address) sending gigabytes held them in the relay's
// memory. One past the bound is an error, not a partial decode.
func TestClientBoundsAnAnswer(t *testing.T) {
	written := make(chan int, 8)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"responseCode":200,"responseMessage":"success","responseData":{"active":1,"pending":0,"total":1},"padding":"`)
		n, chunk := 0, bytes.Repeat([]byte("x"), 1<<20)
		for n < 256<<20 { // until the client stops reading
			if _, err := w.Write(chunk); err != nil {
				break
			}
			n += len(chunk)
		}
		_, _ = io.WriteString(w, `"}`)
		written <- n
	}))
	t.Cleanup(hs.Close)
	b, err := sengo.NewClient(hs.URL, key, token, sengo.WithRetry(1, time.Millisecond)).Balance(context.Background())
	if n := <-written; n >= 64<<20 {
		t.Errorf("the client read %d MiB of the answer", n>>20)
	}
	if err == nil {
		t.Fatalf("an answer of 9 MiB was read whole: %+v", b)
	}
	// Said as what it is: an operator reading "not SenGo's envelope"
	// looked for a wrong base_url (reconciliation of a day with many QR
	// images in its listing).
	if !strings.Contains(err.Error(), "answer over 8 MiB") {
		t.Errorf("the error: %v", err)
	}
}
