package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/verify"
)

// Config configures a sandbox.
type Config struct {
	// Projects seeded at start (by key); more can be created with POST /api/projects.
	Projects []Project
	// StateDir keeps the state across restarts; empty: memory only.
	StateDir string
	// Callbacks is the initial callback behaviour (changeable at run time
	// with POST /sandbox/faults).
	Callbacks CallbackPolicy
	// Now is the clock; time.Now when nil. Tests move time with it.
	Now func() time.Time
	// HTTPClient sends callbacks; a 10s-timeout client when nil.
	HTTPClient *http.Client
	// Hosts are the names requests may carry in their Host header (any
	// port); another is refused (421). Nil: any. On loopback, the
	// loopback names: a web page whose name an attacker rebinds to
	// 127.0.0.1 (DNS rebinding) would otherwise read and drive it.
	Hosts []string
}

// CallbackPolicy is how the sandbox sends callbacks.
type CallbackPolicy struct {
	// Retries after a failed callback (non-2xx or no answer); 0: never retries.
	Retries int `json:"retries"`
	// RetryDelay between tries.
	RetryDelay Duration `json:"retryDelay"`
	// Duplicates sends every callback this many extra times.
	Duplicates int `json:"duplicates"`
	// Drop sends no callbacks at all (they are still logged, as dropped).
	Drop bool `json:"drop"`
}

// Faults makes the API misbehave.
type Faults struct {
	// Latency delays every API answer.
	Latency Duration `json:"latency"`
	// Fail500 answers this many next API calls with 500.
	Fail500 int `json:"fail500"`
	// FailChecks answers every check of these transaction ids with 500,
	// while the rest of the API works: a fault of one transaction, not
	// an outage.
	FailChecks []string `json:"failChecks,omitempty"`
}

// Duration is a time.Duration written as "250ms" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Sent is one callback attempt the sandbox made.
type Sent struct {
	TransactionID string    `json:"transactionId"`
	Status        string    `json:"status"`
	URL           string    `json:"url"`
	Attempt       int       `json:"attempt"`
	HTTPStatus    int       `json:"httpStatus"`
	Error         string    `json:"error,omitempty"`
	Dropped       bool      `json:"dropped,omitempty"`
	At            time.Time `json:"at"`
}

// state is everything the sandbox persists.
type state struct {
	Projects map[string]*Project `json:"projects"` // by key
	Txs      map[string]*tx      `json:"txs"`      // by id
}

// Server is a running sandbox. Safe for concurrent use.
type Server struct {
	cfg  Config
	now  func() time.Time
	http *http.Client
	mux  *http.ServeMux

	mu        sync.Mutex
	st        state
	policy    CallbackPolicy
	faults    Faults
	sent      []Sent
	callbacks sync.WaitGroup
	ctx       context.Context
	cancel    context.CancelFunc
}

// New starts a sandbox, loading StateDir when it holds a state.
func New(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, now: cfg.Now, http: cfg.HTTPClient, policy: cfg.Callbacks, mux: http.NewServeMux()}
	if s.now == nil {
		s.now = time.Now
	}
	if s.http == nil {
		s.http = &http.Client{Timeout: 10 * time.Second}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.st = state{Projects: map[string]*Project{}, Txs: map[string]*tx{}}
	if cfg.StateDir != "" {
		b, err := os.ReadFile(filepath.Join(cfg.StateDir, "state.json"))
		switch {
		case err == nil:
			if err := json.Unmarshal(b, &s.st); err != nil {
				return nil, fmt.Errorf("sandbox state: %w", err)
			}
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("sandbox state: %w", err)
		}
	}
	for _, p := range cfg.Projects {
		if _, ok := s.st.Projects[p.Key]; !ok {
			p := p
			s.st.Projects[p.Key] = &p
		}
	}
	s.routes()
	s.callbacks.Add(1)
	go func() { // expiry after expiryMinutes, with its callbacks
		defer s.callbacks.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-tick.C:
				s.ExpireDue()
			}
		}
	}()
	return s, nil
}

// Handler serves the API under /api and the controls under /sandbox. It
// answers to the configured Hosts only, and refuses a browser's request
// to change anything from another site (an Origin other than its own, a
// Sec-Fetch-Site of cross-site or same-site): its controls take no
// credentials, and any page the developer has open could send a form or
// a no-cors fetch. Clients that are no browser send neither header.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.cfg.Hosts) > 0 && !verify.HostIn(r.Host, s.cfg.Hosts) {
			writeEnvelope(w, http.StatusMisdirectedRequest, sengo.CodeRequestInvalid, map[string]string{"message": "this sandbox answers to " + strings.Join(s.cfg.Hosts, ", ") + " only"})
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && verify.FromAnotherSite(r) {
			writeEnvelope(w, http.StatusForbidden, sengo.CodeUnauthorized, map[string]string{"message": "refused: a browser's request from another site"})
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// Close stops sending callbacks and waits for those in flight.
func (s *Server) Close() {
	s.cancel()
	s.callbacks.Wait()
}

func (s *Server) routes() {
	api := func(pattern string, h func(*http.Request, *Project) (int, any, error)) {
		s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { s.serveAPI(w, r, h) })
	}
	api("POST /api/retail", s.createRetail)
	api("POST /api/virtual-account", s.createVA)
	api("POST /api/e-wallet", s.createEWallet)
	api("POST /api/qris", s.createQRIS)
	api("POST /api/disburse", s.disburse)
	api("GET /api/check/{id}", s.check)
	api("GET /api/transactions", s.list)
	api("GET /api/balance", s.balance)
	api("POST /api/projects", s.createProject)
	s.controls()
}

// apiErr is an error answer with SenGo's code.
type apiErr struct {
	status int
	code   string
	msg    string
}

func (e *apiErr) Error() string { return e.code + ": " + e.msg }

func fail(status int, code, format string, args ...any) *apiErr {
	return &apiErr{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// serveAPI authenticates like SenGo (key, token, signature over apiKey and
// the raw body, caller IP), applies faults, and writes the envelope.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, h func(*http.Request, *Project) (int, any, error)) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	s.mu.Lock()
	latency := time.Duration(s.faults.Latency)
	fail500 := s.faults.Fail500 > 0
	if fail500 {
		s.faults.Fail500--
	}
	s.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	if fail500 {
		writeEnvelope(w, 500, sengo.CodeInternal, map[string]string{"message": "injected fault"})
		return
	}
	p, err := s.authenticate(r, body)
	if err == nil {
		var status int
		var data any
		status, data, err = h(r, p)
		if err == nil {
			writeEnvelope(w, status, "success", data)
			return
		}
	}
	var ae *apiErr
	if !errors.As(err, &ae) {
		ae = fail(500, sengo.CodeInternal, "%v", err)
	}
	writeEnvelope(w, ae.status, ae.code, map[string]string{"message": ae.msg})
}

// envelope is SenGo's response envelope, keys in SenGo's order.
type envelope struct {
	ResponseCode    int    `json:"responseCode"`
	ResponseMessage string `json:"responseMessage"`
	ResponseData    any    `json:"responseData"`
}

func writeEnvelope(w http.ResponseWriter, status int, message string, data any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := verify.PHPJSON(envelope{ResponseCode: status, ResponseMessage: message, ResponseData: data})
	_, _ = w.Write(b)
}

func (s *Server) authenticate(r *http.Request, body []byte) (*Project, error) {
	key, token, sig := r.Header.Get("X-Client-Key"), r.Header.Get("X-Client-Token"), r.Header.Get("X-Signature")
	s.mu.Lock()
	p, ok := s.st.Projects[key]
	s.mu.Unlock()
	if !ok || !verify.Token(p.Token, token) {
		return nil, fail(401, sengo.CodeUnauthorized, "invalid credentials")
	}
	var signed []byte
	if len(body) > 0 {
		signed = body
	}
	if err := verify.CheckSenGoSignature(p.Key, p.Token, signed, sig); err != nil {
		return nil, fail(401, sengo.CodeUnauthorized, "invalid signature")
	}
	if len(p.AllowedIPs) > 0 {
		allow, err := verify.ParseIPAllowlist(p.AllowedIPs)
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if err != nil || !allow.Allows(host) {
			return nil, fail(403, sengo.CodeUnauthorized, "IP %s is not allowed for this project", host)
		}
	}
	return p, nil
}

// decode reads a JSON body strictly into v.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		return fail(422, sengo.CodeRequestInvalid, "body: %v", err)
	}
	return nil
}

// validation collects REQUEST_INVALID problems.
type validation []string

func (v *validation) check(ok bool, format string, args ...any) {
	if !ok {
		*v = append(*v, fmt.Sprintf(format, args...))
	}
}

func (v validation) err() error {
	if len(v) == 0 {
		return nil
	}
	return fail(422, sengo.CodeRequestInvalid, "%s", strings.Join(v, "; "))
}

// newTx stores a pending cash-in (or disbursement) after the common checks.
func (s *Server) newTx(p *Project, kind, ref string, amount int64, expiryMinutes int, callback string, fill func(*object, int64)) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.st.Txs {
		if t.Project == p.Key && t.Object.MerchantRef == ref {
			return 0, nil, fail(409, sengo.CodeDuplicateReference, "reference %q already used", ref)
		}
	}
	now := s.now()
	o := object{ID: uuid.NewString(), MerchantRef: ref, Status: string(event.StatusPending), FeePayer: "customer",
		Amount: amount, AdditionalInfo: sengo.AdditionalInfo{Callback: callback}, SettleDate: stamp(now)}
	if kind != "disbursement" {
		if expiryMinutes <= 0 {
			expiryMinutes = 60
		}
		o.ExpiredDate = stamp(now.Add(time.Duration(expiryMinutes) * time.Minute))
	}
	fill(&o, amount)
	if kind == "disbursement" {
		if p.Active < amount {
			return 0, nil, fail(402, sengo.CodeInsufficientBalance, "balance %d is less than %d", p.Active, amount)
		}
		p.Active -= amount // held; refunded if the disbursement fails
	}
	t := &tx{Project: p.Key, Created: now, Kind: kind, Object: o, CallbackURL: callback}
	s.st.Txs[o.ID] = t
	s.saveLocked()
	return 200, t.Object, nil
}

func (s *Server) createRetail(r *http.Request, p *Project) (int, any, error) {
	var q sengo.RetailRequest
	if err := decode(r, &q); err != nil {
		return 0, nil, err
	}
	var v validation
	v.check(q.Reference != "", "reference is required")
	v.check(q.Amount >= 10000 && q.Amount <= 5000000, "amount must be between 10000 and 5000000")
	v.check(slices.Contains(sengo.RetailChannels, q.Channel), "channel must be alfamart or indomaret")
	v.check(q.PhoneNumber != "", "phoneNumber is required")
	if err := v.err(); err != nil {
		return 0, nil, err
	}
	return s.newTx(p, "retail", q.Reference, q.Amount, q.ExpiryMinutes, q.AdditionalInfo.Callback, func(o *object, amount int64) {
		o.Fee = fee("retail", q.Channel, amount)
		o.TotalAmount = amount + o.Fee
		o.Retail = &retailInfo{ViewName: q.ViewName, Channel: q.Channel, PaymentCode: paymentCode(q.Channel)}
	})
}

func (s *Server) createVA(r *http.Request, p *Project) (int, any, error) {
	var q sengo.VirtualAccountRequest
	if err := decode(r, &q); err != nil {
		return 0, nil, err
	}
	var v validation
	v.check(q.Reference != "", "reference is required")
	v.check(q.Amount >= 10000, "amount must be at least 10000")
	_, bank := sengo.BankCodes[q.BankCode]
	v.check(bank, "bankCode %q is not supported", q.BankCode)
	v.check(q.Type == "" || q.Type == "ClosedAmount", "type must be ClosedAmount")
	if err := v.err(); err != nil {
		return 0, nil, err
	}
	return s.newTx(p, "virtualAccount", q.Reference, q.Amount, q.ExpiryMinutes, q.AdditionalInfo.Callback, func(o *object, amount int64) {
		o.Fee = fee("virtualAccount", "", amount)
		o.TotalAmount = amount + o.Fee
		o.VirtualAccount = &vaInfo{BankCode: q.BankCode, VANumber: vaNumber(q.BankCode), ViewName: q.ViewName}
	})
}

func (s *Server) createEWallet(r *http.Request, p *Project) (int, any, error) {
	var q sengo.EWalletRequest
	if err := decode(r, &q); err != nil {
		return 0, nil, err
	}
	var v validation
	v.check(q.Reference != "", "reference is required")
	v.check(q.Amount >= 1000, "amount must be at least 1000")
	v.check(slices.Contains(sengo.EWalletChannels, q.Channel), "channel %q is not supported", q.Channel)
	if err := v.err(); err != nil {
		return 0, nil, err
	}
	return s.newTx(p, "eWallet", q.Reference, q.Amount, q.ExpiryMinutes, q.AdditionalInfo.Callback, func(o *object, amount int64) {
		o.Fee = fee("eWallet", q.Channel, amount)
		o.TotalAmount = amount + o.Fee
		o.EWallet = &eWalletInfo{ViewName: q.ViewName, Channel: q.Channel, URL: "https://sandbox.sengo.local/pay/" + o.ID}
	})
}

func (s *Server) createQRIS(r *http.Request, p *Project) (int, any, error) {
	var q sengo.QRISRequest
	if err := decode(r, &q); err != nil {
		return 0, nil, err
	}
	var v validation
	v.check(q.Reference != "", "reference is required")
	v.check(q.Amount >= 1000, "amount must be at least 1000")
	if err := v.err(); err != nil {
		return 0, nil, err
	}
	return s.newTx(p, "qris", q.Reference, q.Amount, q.ExpiryMinutes, q.AdditionalInfo.Callback, func(o *object, amount int64) {
		o.Fee = fee("qris", "", amount)
		o.FeePayer = "merchant"
		o.TotalAmount = amount
		o.QRIS = &qrisInfo{Content: qrisContent(q.Reference, amount), URL: "https://sandbox.sengo.local/qr/" + o.ID}
	})
}

func (s *Server) disburse(r *http.Request, p *Project) (int, any, error) {
	var q sengo.DisbursementRequest
	if err := decode(r, &q); err != nil {
		return 0, nil, err
	}
	var v validation
	v.check(q.Reference != "", "reference is required")
	v.check(q.Amount >= 10000, "amount must be at least 10000")
	_, bank := sengo.BankCodes[q.BankCode]
	v.check(bank, "bankCode %q is not supported", q.BankCode)
	v.check(q.RecipientAccount != "", "recipientAccount is required")
	if err := v.err(); err != nil {
		return 0, nil, err
	}
	return s.newTx(p, "disbursement", q.Reference, q.Amount, 0, q.AdditionalInfo.Callback, func(o *object, amount int64) {
		o.Fee = fee("disbursement", "", amount)
		o.TotalAmount = amount - o.Fee // as SenGo's samples: the recipient gets amount - fee
		o.Disbursement = &disbursementInfo{BankCode: q.BankCode, RecipientAccount: q.RecipientAccount, RecipientName: q.RecipientName}
	})
}

func (s *Server) check(r *http.Request, p *Project) (int, any, error) {
	if !plainID(r.PathValue("id")) {
		// As an API that validates its path parameter would; what SenGo
		// answers for such an id is not known.
		return 0, nil, fail(422, sengo.CodeRequestInvalid, "id must be letters, digits, '-', '_' or '.'")
	}
	s.mu.Lock()
	if slices.Contains(s.faults.FailChecks, r.PathValue("id")) {
		s.mu.Unlock()
		return 0, nil, fail(500, sengo.CodeInternal, "injected fault for this transaction")
	}
	s.expireDueLocked()
	t, ok := s.st.Txs[r.PathValue("id")]
	var obj object
	if ok && t.Project == p.Key {
		obj = t.Object
	}
	s.mu.Unlock()
	if !ok || t.Project != p.Key {
		return 0, nil, fail(404, sengo.CodeTransactionNotFound, "no transaction %s", r.PathValue("id"))
	}
	if r.URL.Query().Get("resendCallback") == "true" {
		s.sendCallback(t.CallbackURL, obj)
	}
	return 200, obj, nil
}

// plainID reports whether id is 1 to 128 letters, digits, '-', '_' or
// '.': every id the sandbox makes (a UUID), and the ids tests forge.
func plainID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// pageSize of GET /transactions.
const pageSize = 50

func (s *Server) list(r *http.Request, p *Project) (int, any, error) {
	q := r.URL.Query()
	page, err := strconv.Atoi(q.Get("page"))
	if q.Get("page") == "" {
		page, err = 1, nil
	}
	var v validation
	v.check(err == nil && page >= 1, "page must be a positive integer")
	status := q.Get("status")
	if status != "" {
		_, serr := event.ParseStatus(status)
		v.check(serr == nil, "status %q is not supported", status)
	}
	var day time.Time
	if d := q.Get("date"); d != "" {
		var derr error
		day, derr = time.ParseInLocation("2006-01-02", d, wib)
		v.check(derr == nil, "date must be YYYY-MM-DD")
	}
	typ := q.Get("type")
	v.check(typ == "" || typ == "cashIn" || typ == "receive" || typ == "cashOut" || typ == "send", "type must be cashIn or cashOut")
	if err := v.err(); err != nil {
		return 0, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireDueLocked()
	now := s.now()
	var all []*tx
	for _, t := range s.st.Txs {
		switch {
		case t.Project != p.Key, now.Sub(t.Created) > 7*24*time.Hour: // records are kept 7 days
		case status != "" && t.Object.Status != status:
		case !day.IsZero() && !sameDay(t.Created, day):
		case (typ == "cashOut" || typ == "send") && t.Kind != "disbursement":
		case (typ == "cashIn" || typ == "receive") && t.Kind == "disbursement":
		default:
			all = append(all, t)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Created.Before(all[j].Created) })
	out := []object{}
	for i := (page - 1) * pageSize; i < len(all) && i < page*pageSize; i++ {
		out = append(out, all[i].Object)
	}
	return 200, out, nil
}

func sameDay(t, day time.Time) bool {
	y1, m1, d1 := t.In(wib).Date()
	y2, m2, d2 := day.Date()
	return y1 == y2 && m1 == m2 && d1 == d2
}

func (s *Server) balance(_ *http.Request, p *Project) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return 200, sengo.Balance{Active: p.Active, Pending: p.Pending, Total: p.Active + p.Pending}, nil
}

func (s *Server) createProject(r *http.Request, _ *Project) (int, any, error) {
	var q sengo.ProjectRequest
	if err := decode(r, &q); err != nil {
		return 0, nil, err
	}
	var v validation
	v.check(q.Name != "", "name is required")
	_, err := verify.ParseIPAllowlist(q.IP)
	v.check(err == nil, "ip: %v", err)
	if err := v.err(); err != nil {
		return 0, nil, err
	}
	return 200, sengo.Project{ID: uuid.NewString(), Name: q.Name, Domain: q.Domain, IP: q.IP, Status: "Review"}, nil
}

// saveLocked writes the state when a state dir is configured.
func (s *Server) saveLocked() {
	if s.cfg.StateDir == "" {
		return
	}
	b, _ := json.MarshalIndent(s.st, "", " ")
	tmp := filepath.Join(s.cfg.StateDir, "state.json.tmp")
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, filepath.Join(s.cfg.StateDir, "state.json"))
	}
}
