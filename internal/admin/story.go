package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/sengo-relay/sengo-relay/dispatcher"
	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/history"
	"github.com/sengo-relay/sengo-relay/receiver"
	"github.com/sengo-relay/sengo-relay/sengo"
	"github.com/sengo-relay/sengo-relay/stream"
)

// Page sizes of the list routes.
const (
	defaultLimit = 50
	maxLimit     = 200
	// maxTimeline bounds each part of one transaction's timeline.
	maxTimeline = 200
)

// eventView is one event of SENGO_EVENTS as the API lists it.
type eventView struct {
	Seq            uint64        `json:"seq"`
	Stored         time.Time     `json:"stored"`
	ID             string        `json:"id"`
	Project        string        `json:"project"`
	TransactionID  string        `json:"transactionId"`
	MerchantRef    string        `json:"merchantRef"`
	Status         event.Status  `json:"status"`
	PreviousStatus *event.Status `json:"previousStatus"`
	Product        event.Product `json:"product"`
	Channel        string        `json:"channel"`
	Amount         int64         `json:"amount"`
	TotalAmount    int64         `json:"totalAmount"`
	Currency       string        `json:"currency"`
	Confirmed      bool          `json:"confirmed"`
	Time           time.Time     `json:"time"`
}

func viewOf(seq uint64, stored time.Time, data []byte) (eventView, error) {
	ev, err := event.Unmarshal(data)
	if err != nil {
		return eventView{}, err
	}
	return eventView{
		Seq: seq, Stored: stored.UTC(), ID: ev.ID, Project: event.ProjectOf(ev.Source), TransactionID: ev.Data.TransactionID,
		MerchantRef: ev.Data.MerchantRef, Status: ev.Data.Status, PreviousStatus: ev.Data.PreviousStatus, Product: ev.Data.Product,
		Channel: ev.Data.Channel, Amount: ev.Data.Amount, TotalAmount: ev.Data.TotalAmount, Currency: ev.Data.Currency,
		Confirmed: ev.Data.Confirmed, Time: ev.Time.UTC(),
	}, nil
}

// page is the body of every list route: items, and the cursor of the
// next page (null on the last).
type page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"nextCursor"`
}

// listQuery is what the list routes take from the query string, checked.
type listQuery struct {
	project, merchantRef, id string
	status                   event.Status
	product                  event.Product
	since, until             time.Time
	cursor                   uint64
	limit                    int
}

// listParams are what GET /admin/transactions takes; the other list
// routes take some of them.
var listParams = []string{"project", "merchant_ref", "id", "status", "product", "since", "until", "cursor", "limit"}

// listQuery reads the query of a list route, which takes has checked
// against the route's parameters.
func (s *Server) listQuery(c echo.Context) (listQuery, error) {
	q := listQuery{limit: defaultLimit}
	q.project, q.merchantRef, q.id = c.QueryParam("project"), c.QueryParam("merchant_ref"), c.QueryParam("id")
	if q.project != "" && !slices.Contains(s.cfg.Projects, q.project) {
		return q, apiError(http.StatusBadRequest, "unknown_project", "project is not one of the configured projects")
	}
	if err := checkIDs("id", q.id, q.merchantRef); err != nil {
		return q, err
	}
	if v := c.QueryParam("status"); v != "" {
		st, err := event.ParseStatus(v)
		if err != nil {
			return q, apiError(http.StatusBadRequest, "bad_status", "status must be pending, success, expired or failed")
		}
		q.status = st
	}
	if v := c.QueryParam("product"); v != "" {
		if !slices.Contains(event.Products, event.Product(v)) {
			return q, apiError(http.StatusBadRequest, "bad_product", "product is not a SenGo product")
		}
		q.product = event.Product(v)
	}
	var err error
	if q.since, err = ParseTime(c.QueryParam("since"), time.Now()); err != nil {
		return q, apiError(http.StatusBadRequest, "bad_time", "since: "+err.Error())
	}
	if q.until, err = ParseTime(c.QueryParam("until"), time.Now()); err != nil {
		return q, apiError(http.StatusBadRequest, "bad_time", "until: "+err.Error())
	}
	if v := c.QueryParam("cursor"); v != "" {
		if q.cursor, err = strconv.ParseUint(v, 10, 64); err != nil || q.cursor == 0 {
			return q, apiError(http.StatusBadRequest, "bad_cursor", "cursor is not one this API returned")
		}
	}
	if v := c.QueryParam("limit"); v != "" {
		if q.limit, err = strconv.Atoi(v); err != nil || q.limit < 1 || q.limit > maxLimit {
			return q, apiError(http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit must be 1 to %d", maxLimit))
		}
	}
	return q, nil
}

// subjects is the SENGO_EVENTS filter of q.
func (q listQuery) subjects() []string {
	p, pr, st := "*", "*", "*"
	if q.project != "" {
		p = q.project
	}
	if q.product != "" {
		pr = string(q.product)
	}
	if q.status != "" {
		st = string(q.status)
	}
	return []string{"sengo.events." + p + "." + pr + "." + st}
}

// scanEvents visits the events of q from its cursor (or since) in stream
// order until visit returns false, the window ends or the stream does.
// It returns the cursor of the next page.
func (s *Server) scanEvents(ctx context.Context, q listQuery, visit func(eventView) bool) (*string, error) {
	var next *string
	err := stream.ScanFrom(ctx, s.cfg.JetStream, event.StreamEvents, q.subjects(), stream.From{Seq: q.cursor, Time: q.since},
		func(m jetstream.Msg, meta *jetstream.MsgMetadata) (bool, error) {
			if !q.until.IsZero() && meta.Timestamp.After(q.until) {
				return false, nil
			}
			v, err := viewOf(meta.Sequence.Stream, meta.Timestamp, m.Data())
			if err != nil {
				return true, nil // not an event a consumer could read either; it is dead-lettered there
			}
			if !visit(v) {
				c := strconv.FormatUint(meta.Sequence.Stream, 10)
				next = &c
				return false, nil
			}
			return true, nil
		}, nil)
	return next, err
}

// events lists SENGO_EVENTS: GET /admin/events.
func (s *Server) events(c echo.Context) error {
	q, err := s.listQuery(c)
	if err != nil {
		return err
	}
	ctx, cancel := s.readCtx(c)
	defer cancel()
	out := page[eventView]{Items: []eventView{}}
	out.NextCursor, err = s.scanEvents(ctx, q, func(v eventView) bool {
		if len(out.Items) == q.limit {
			return false
		}
		out.Items = append(out.Items, v)
		return true
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// txSummary is one transaction in a search result.
type txSummary struct {
	Project       string        `json:"project"`
	TransactionID string        `json:"transactionId"`
	MerchantRef   string        `json:"merchantRef"`
	Product       event.Product `json:"product"`
	Channel       string        `json:"channel"`
	Status        event.Status  `json:"status"`
	Amount        int64         `json:"amount"`
	TotalAmount   int64         `json:"totalAmount"`
	Currency      string        `json:"currency"`
	Confirmed     bool          `json:"confirmed"`
	UpdatedAt     time.Time     `json:"updatedAt"`
}

// transactions searches transactions: GET /admin/transactions. By
// merchant_ref (the SENGO_REFS index) or id (SENGO_TX), in one project or
// every configured one; otherwise the transactions whose events match the
// filters, in the order of their first matching event, by cursor.
func (s *Server) transactions(c echo.Context) error {
	q, err := s.listQuery(c)
	if err != nil {
		return err
	}
	ctx, cancel := s.readCtx(c)
	defer cancel()
	out := page[txSummary]{Items: []txSummary{}}
	if q.merchantRef != "" || q.id != "" {
		if q.cursor != 0 {
			return apiError(http.StatusBadRequest, "bad_cursor", "a search by merchant_ref or id has one page")
		}
		found, err := s.lookup(ctx, q)
		if err != nil {
			return err
		}
		for _, t := range found {
			if len(out.Items) < q.limit && q.keeps(t) {
				out.Items = append(out.Items, t)
			}
		}
		return c.JSON(http.StatusOK, out)
	}
	seen := map[string]bool{}
	var keys []txSummary
	out.NextCursor, err = s.scanEvents(ctx, q, func(v eventView) bool {
		k := v.Project + "\x00" + v.TransactionID
		if seen[k] {
			return true
		}
		if len(keys) == q.limit {
			return false
		}
		seen[k] = true
		keys = append(keys, txSummary{Project: v.Project, TransactionID: v.TransactionID})
		return true
	})
	if err != nil {
		return err
	}
	// A transaction expired from SENGO_TX is left out; its events remain
	// listed by /admin/events.
	if out.Items, err = s.summaries(ctx, keys, q.listedBefore); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// listedBefore reports whether an earlier page of q listed tx: one of its
// changes q selects has an event before the cursor (a page lists a
// transaction at its first event the page reaches, and its later events
// come on later pages).
func (q listQuery) listedBefore(tx receiver.Transaction) bool {
	if q.cursor == 0 {
		return false
	}
	for _, ch := range tx.Changes {
		if ch.Seq > 0 && ch.Seq < q.cursor && (q.status == "" || ch.Status == q.status) &&
			(q.since.IsZero() || !ch.AcceptedAt.Before(q.since)) {
			return true
		}
	}
	return false
}

func (q listQuery) keeps(t txSummary) bool {
	return (q.id == "" || t.TransactionID == q.id) && (q.merchantRef == "" || t.MerchantRef == q.merchantRef) &&
		(q.status == "" || t.Status == q.status) && (q.product == "" || t.Product == q.product) &&
		(q.since.IsZero() || !t.UpdatedAt.Before(q.since)) && (q.until.IsZero() || !t.UpdatedAt.After(q.until))
}

// lookup finds the transactions of q.merchantRef or q.id.
func (s *Server) lookup(ctx context.Context, q listQuery) ([]txSummary, error) {
	keys, err := s.find(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.summaries(ctx, keys, nil)
}

// summaryReads is how many transactions summaries reads at once.
const summaryReads = 8

// summaries reads the transactions of keys, leaving out those not stored
// and those skip (if not nil) reports, several at once over the reader
// connections (each is two reads one after the other: its state, then its
// latest event).
func (s *Server) summaries(ctx context.Context, keys []txSummary, skip func(receiver.Transaction) bool) ([]txSummary, error) {
	return readEach(ctx, len(keys), summaryReads, func(ctx context.Context, i int) (*txSummary, error) {
		t, err := s.summary(ctx, s.reader(), keys[i].Project, keys[i].TransactionID, skip)
		if errors.Is(err, receiver.ErrNoTransaction) || errors.Is(err, errSkipped) {
			return nil, nil
		}
		return &t, err
	})
}

// readEach reads n things, at most limit at once: read(i) returns the
// i-th, or nil for one to leave out. It returns those read, in order, or
// the first error.
func readEach[T any](ctx context.Context, n, limit int, read func(ctx context.Context, i int) (*T, error)) ([]T, error) {
	found := make([]*T, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for i := range n {
		g.Go(func() (err error) {
			found[i], err = read(gctx, i)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := []T{}
	for _, v := range found {
		if v != nil {
			out = append(out, *v)
		}
	}
	return out, nil
}

// find is the transactions of q.merchantRef (from the SENGO_REFS index)
// or q.id, in q.project or every configured one, without reading them:
// a transaction q.id names may not exist.
func (s *Server) find(ctx context.Context, q listQuery) ([]txSummary, error) {
	projects := s.cfg.Projects
	if q.project != "" {
		projects = []string{q.project}
	}
	var out []txSummary
	for _, p := range projects {
		if q.id != "" {
			out = append(out, txSummary{Project: p, TransactionID: q.id})
			continue
		}
		refs, err := history.Lookup(ctx, s.cfg.JetStream, p, q.merchantRef, maxLimit)
		if err != nil {
			return nil, err
		}
		for _, r := range refs {
			out = append(out, txSummary{Project: p, TransactionID: r.TransactionID})
		}
	}
	return out, nil
}

// errSkipped is summary's answer for a transaction its skip reports.
var errSkipped = errors.New("skipped")

// summary reads a transaction's state and, unless skip (if not nil)
// reports the state (errSkipped), its latest event on js.
func (s *Server) summary(ctx context.Context, js jetstream.JetStream, project, id string, skip func(receiver.Transaction) bool) (txSummary, error) {
	tx, err := s.readTransaction(ctx, js, project, id)
	if err != nil {
		return txSummary{}, err
	}
	if skip != nil && skip(tx) {
		return txSummary{}, errSkipped
	}
	t := summaryOf(tx)
	if v, ok := s.latestEvent(ctx, js, tx); ok {
		t.Channel, t.Amount, t.TotalAmount = v.Channel, v.Amount, v.TotalAmount
		t.Confirmed = latestConfirmed(tx, v, t.Confirmed)
	}
	return t, nil
}

// summaryOf is the summary of tx without its latest event's amounts.
// Its confirmation is the latest change's as the state recorded it (its
// event, read after, says the same while it is kept).
func summaryOf(tx receiver.Transaction) txSummary {
	t := txSummary{Project: tx.Project, TransactionID: tx.TransactionID, MerchantRef: tx.MerchantRef, Product: tx.Product, Status: tx.Status, UpdatedAt: tx.UpdatedAt.UTC(), Currency: event.Currency}
	if n := len(tx.Changes); n > 0 && tx.Changes[n-1].Confirmed != nil {
		t.Confirmed = *tx.Changes[n-1].Confirmed
	}
	return t
}

func (s *Server) latestEvent(ctx context.Context, js jetstream.JetStream, tx receiver.Transaction) (eventView, bool) {
	for i := len(tx.Changes) - 1; i >= 0; i-- {
		if seq := tx.Changes[i].Seq; seq > 0 {
			if v, err := s.eventAt(ctx, js, seq); err == nil {
				return v, true
			}
		}
	}
	return eventView{}, false
}

// latestConfirmed is whether tx's latest change was confirmed, v the
// latest event read: v's word when it is that change's event; else
// recorded, the state's. (An older event, the latest change's own not
// read, said the older change's.)
func latestConfirmed(tx receiver.Transaction, v eventView, recorded bool) bool {
	if n := len(tx.Changes); n == 0 || tx.Changes[n-1].EventID == v.ID {
		return v.Confirmed
	}
	return recorded // false when not recorded: not known confirmed
}

// readTransaction is the state of one transaction, read on js.
func (s *Server) readTransaction(ctx context.Context, js jetstream.JetStream, project, id string) (receiver.Transaction, error) {
	kv, err := s.opened.txBucket(ctx, js)
	if err != nil {
		return receiver.Transaction{}, fmt.Errorf("open %s: %w", event.BucketTx, err)
	}
	return receiver.ReadTransactionFrom(ctx, kv, project, id)
}

// eventAt is the event stored at seq, read on js.
func (s *Server) eventAt(ctx context.Context, js jetstream.JetStream, seq uint64) (eventView, error) {
	st, err := s.opened.eventStream(ctx, js)
	if err != nil {
		return eventView{}, err
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return eventView{}, err
	}
	return viewOf(m.Sequence, m.Time, m.Data)
}

// step is one line of a transaction's story, in time order.
type step struct {
	At time.Time `json:"at"`
	// Kind is notification, published, rejected, quarantined, attempt or dead_letter.
	Kind    string `json:"kind"`
	Summary string `json:"summary"`
	// Ref points at the record the step comes from (an inbox, event or
	// dead-letter sequence, or endpoint/event id for an attempt).
	Ref string `json:"ref"`
}

// timeline is GET /admin/transactions/{project}/{id}.
type timeline struct {
	Transaction   txSummary             `json:"transaction"`
	State         receiver.Transaction  `json:"state"`
	Notifications []notificationView    `json:"notifications"`
	Events        []eventView           `json:"events"`
	Attempts      []history.Attempt     `json:"attempts"`
	DeadLetters   []dispatcher.DLQEntry `json:"deadLetters"`
	// Quarantined are its notifications set aside (a forged claim SenGo's
	// API contradicts, one that could not be confirmed), with why.
	Quarantined []quarantineView `json:"quarantined"`
	Steps       []step           `json:"steps"`
	// Truncated: a part held more than its bound (200) and was cut. (Each
	// body is an excerpt, marked on its own.)
	Truncated bool `json:"truncated"`
}

// txParam is the route's transaction id, unescaped: Echo routes on the
// request's raw path when it has one (an id with '/', '?' or '#' in it,
// escaped as the console's links write it) and then leaves its
// parameters escaped.
func txParam(c echo.Context) string {
	id := c.Param("id")
	if c.Request().URL.RawPath != "" {
		if u, err := url.PathUnescape(id); err == nil {
			return u
		}
	}
	return id
}

func (s *Server) transaction(c echo.Context) error {
	project, id := c.Param("project"), txParam(c)
	if !slices.Contains(s.cfg.Projects, project) {
		return apiError(http.StatusNotFound, "unknown_project", "project is not one of the configured projects")
	}
	if id == "" || len(id) > sengo.MaxIDBytes {
		return apiError(http.StatusBadRequest, "bad_id", fmt.Sprintf("the id must be 1 to %d bytes", sengo.MaxIDBytes))
	}
	ctx, cancel := s.readCtx(c)
	defer cancel()
	tl, err := s.timeline(ctx, project, id)
	if errors.Is(err, receiver.ErrNoTransaction) {
		return apiError(http.StatusNotFound, "not_found", "no such transaction in "+project+" (it may have expired: streams.transactions.ttl)")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tl)
}

func (s *Server) timeline(ctx context.Context, project, id string) (timeline, error) {
	var tl timeline
	// The parts are read at once, each from its own stream and on its own
	// connection (the server answers a connection's direct gets one after
	// another): a story of a transaction whose records the server has not
	// loaded yet waits for the slowest of them, not for their sum. The
	// parts that do not need the state start before it is read.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		g, gctx             = errgroup.WithContext(ctx)
		moreN, moreQ, moreD bool
		// What the first notification of each part claimed, read from
		// its whole body before it is cut to an excerpt.
		claimN, claimQ *sengo.Transaction
	)
	// Each body is cut as it is read: a part holds 200 excerpts, never
	// 200 whole notifications.
	g.Go(func() error {
		return receiver.EachNotification(gctx, s.reader(), project, id, func(n receiver.Notification) bool {
			if len(tl.Notifications) == maxTimeline {
				moreN = true
				return false
			}
			claimN = firstClaim(claimN, n.Body)
			tl.Notifications = append(tl.Notifications, viewNotification(n))
			return true
		})
	})
	g.Go(func() (err error) {
		// Each carries its event whole: read up to the story's bound on
		// bodies (and one more), not 200 of them.
		f := dispatcher.DLQFilter{Project: project, TransactionID: id, Limit: maxTimeline + 1, MaxBytes: maxStoryBodies}
		tl.DeadLetters, err = dispatcher.ListDLQ(gctx, s.reader(), f)
		if len(tl.DeadLetters) > maxTimeline {
			tl.DeadLetters, moreD = tl.DeadLetters[:maxTimeline], true
		} else if f.Full(tl.DeadLetters) {
			moreD = true // maybe: the read stopped at its bound
		}
		return err
	})
	g.Go(func() error {
		return receiver.EachQuarantinedOf(gctx, s.reader(), project, id, func(e receiver.QuarantineEntry) bool {
			if len(tl.Quarantined) == maxTimeline {
				moreQ = true
				return false
			}
			claimQ = firstClaim(claimQ, e.Notification)
			tl.Quarantined = append(tl.Quarantined, viewQuarantined(e))
			return true
		})
	})
	tx, err := s.readTransaction(gctx, s.reader(), project, id)
	// A transaction with nothing published (only a forged or unconfirmable
	// notification, set aside) has no state: its story is what arrived.
	unknown := errors.Is(err, receiver.ErrNoTransaction)
	if err != nil && !unknown {
		cancel()
		_ = g.Wait()
		return tl, err
	}
	if unknown {
		tl.State = receiver.Transaction{Project: project, TransactionID: id, Changes: []receiver.StatusChange{}, Rejected: []receiver.Rejected{}}
		tl.Transaction = txSummary{Project: project, TransactionID: id, Currency: event.Currency}
	} else {
		tl.State, tl.Transaction = tx, summaryOf(tx)
	}
	var (
		events   = make([]*eventView, len(tx.Changes))
		attempts = make([][]history.Attempt, len(tx.Changes))
		moreA    = make([]bool, len(tx.Changes))
	)
	for i, ch := range tx.Changes {
		if ch.Seq > 0 {
			g.Go(func() error {
				if v, err := s.eventAt(gctx, s.reader(), ch.Seq); err == nil {
					events[i] = &v
				}
				return nil // an event aged out of SENGO_EVENTS leaves its change without one
			})
		}
		g.Go(func() (err error) {
			attempts[i], moreA[i], err = history.Attempts(gctx, s.reader(), ch.EventID, maxTimeline)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return tl, err
	}
	tl.Truncated = moreN || moreQ || moreD || slices.Contains(moreA, true)
	tl.Events, tl.Attempts = []eventView{}, []history.Attempt{}
	for i := range tx.Changes {
		if events[i] != nil {
			tl.Events = append(tl.Events, *events[i])
		}
		tl.Attempts = append(tl.Attempts, attempts[i]...)
	}
	if n := len(tl.Events); n > 0 { // the latest event's amounts, as summary reads them
		v := tl.Events[n-1]
		tl.Transaction.Channel, tl.Transaction.Amount, tl.Transaction.TotalAmount = v.Channel, v.Amount, v.TotalAmount
		tl.Transaction.Confirmed = latestConfirmed(tx, v, tl.Transaction.Confirmed)
	}
	if tl.DeadLetters == nil {
		tl.DeadLetters = []dispatcher.DLQEntry{}
	}
	if tl.Quarantined == nil {
		tl.Quarantined = []quarantineView{}
	}
	if tl.Notifications == nil {
		tl.Notifications = []notificationView{}
	}
	// The bodies of one story are bounded in all, the oldest kept first.
	budget := bodyBudget{left: maxStoryBodies}
	for i := range tl.Notifications {
		n := &tl.Notifications[i]
		n.Body, n.BodyTruncated = budget.fit(n.Body, n.BodyTruncated)
	}
	for i := range tl.Quarantined {
		q := &tl.Quarantined[i]
		q.Notification, q.NotificationTruncated = budget.fit(q.Notification, q.NotificationTruncated)
		if q.SenGo != nil {
			q.SenGo, q.SenGoTruncated = budget.fit(q.SenGo, q.SenGoTruncated)
		}
	}
	for i := range tl.DeadLetters {
		// An excerpt as a body's (dlq show has it whole), with its size.
		d := &tl.DeadLetters[i]
		if d.EventTruncated { // kept as an excerpt already, with its size
			d.Event, _ = budget.fit(d.Event, true)
			continue
		}
		shown, cut := excerpt(d.Event, maxExcerpt)
		if shown, cut = budget.fit(shown, cut); cut {
			d.Event, d.EventTruncated, d.EventBytes = shown, true, len(d.Event)
		}
	}
	if unknown {
		if len(tl.Notifications) == 0 && len(tl.Quarantined) == 0 {
			return tl, receiver.ErrNoTransaction
		}
		// What the notifications claimed, for the header: never a status
		// (nothing was published), only what identifies the payment. The
		// inbox's copy first; the quarantine keeps its own longer.
		t := claimN
		if t == nil {
			t = claimQ
		}
		if t != nil {
			tl.Transaction.MerchantRef, tl.Transaction.Product, tl.Transaction.Channel = t.MerchantRef, t.Product, t.Channel
			tl.Transaction.Amount, tl.Transaction.TotalAmount = t.Amount, t.TotalAmount
			tl.State.MerchantRef, tl.State.Product = t.MerchantRef, t.Product
		}
	}
	tl.Steps = steps(tl)
	return tl, nil
}

// firstClaim is claim, or (while it is nil) what body claims when it
// parses as a notification.
func firstClaim(claim *sengo.Transaction, body []byte) *sengo.Transaction {
	if claim != nil {
		return claim
	}
	if t, err := sengo.ParseCallback(body); err == nil {
		t.Raw = nil // a part of the whole body, which is not kept
		return &t
	}
	return nil
}

// steps merges the parts of a timeline into one story, oldest first.
func steps(tl timeline) []step {
	var out []step
	for _, n := range tl.Notifications {
		sum := fmt.Sprintf("%s notification: %s", n.Source, n.Status)
		if n.SourceIP != "" {
			sum += " from " + n.SourceIP
		}
		if n.Signature != "" {
			sum += ", signature " + n.Signature
		}
		at := n.Stored
		if t, err := time.Parse(time.RFC3339Nano, n.ReceivedAt); err == nil {
			at = t.UTC() // the time a status change it caused is accepted at
		}
		out = append(out, step{At: at, Kind: "notification", Summary: sum, Ref: "inbox/" + strconv.FormatUint(n.Seq, 10)})
	}
	// Whether each change was confirmed: its event says, and the state
	// says too (an event aged out of SENGO_EVENTS, kept less long than the
	// state, read as "not confirmed" when SenGo's API had confirmed it).
	confirmed := map[string]bool{}
	for _, ch := range tl.State.Changes {
		if ch.Confirmed != nil {
			confirmed[ch.EventID] = *ch.Confirmed
		}
	}
	for _, e := range tl.Events {
		confirmed[e.ID] = e.Confirmed
	}
	for _, ch := range tl.State.Changes {
		sum := "published " + string(ch.Status)
		switch c, known := confirmed[ch.EventID]; {
		case !known:
			sum += ", confirmation unknown (not recorded, and its event not read)"
		case c:
			sum += ", confirmed by SenGo's API"
		default:
			sum += ", not confirmed"
		}
		if ch.Note != "" {
			sum += " (" + ch.Note + ")"
		}
		if ch.Seq == 0 {
			sum += "; not yet acknowledged by the store"
		}
		out = append(out, step{At: ch.AcceptedAt.UTC(), Kind: "published", Summary: sum, Ref: "events/" + strconv.FormatUint(ch.Seq, 10)})
	}
	for _, r := range tl.State.Rejected {
		out = append(out, step{At: r.At.UTC(), Kind: "rejected", Summary: fmt.Sprintf("%s notification not published (%s)", r.Status, r.Decision), Ref: "inbox/" + strconv.FormatUint(r.InboxSeq, 10)})
	}
	for _, a := range tl.Attempts {
		res := a.Error
		if a.Status > 0 {
			res = "HTTP " + strconv.Itoa(a.Status)
		}
		sum := fmt.Sprintf("%s attempt %d (%s): %s in %.0f ms, %s", a.Endpoint, a.Number, a.Copy, res, a.DurationMs, a.Outcome)
		out = append(out, step{At: a.At, Kind: "attempt", Summary: sum, Ref: "attempts/" + a.Endpoint + "/" + a.EventID})
	}
	for _, q := range tl.Quarantined {
		out = append(out, step{At: q.Stored, Kind: "quarantined", Summary: fmt.Sprintf("%s notification quarantined: %s", q.Status, q.Reason), Ref: "quarantine/" + strconv.FormatUint(q.Seq, 10)})
	}
	for _, d := range tl.DeadLetters {
		out = append(out, step{At: d.DeadAt.UTC(), Kind: "dead_letter", Summary: fmt.Sprintf("%s dead letter: %s after %d attempts", d.Endpoint, d.Reason, d.Attempts), Ref: "dlq/" + strconv.FormatUint(d.Seq, 10)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	if out == nil {
		out = []step{}
	}
	return out
}

// reconciliations lists the latest reconciliation runs, newest first:
// GET /admin/reconciliations?project=&limit=.
func (s *Server) reconciliations(c echo.Context) error {
	q, err := s.listQuery(c)
	if err != nil {
		return err
	}
	ctx, cancel := s.readCtx(c)
	defer cancel()
	runs, err := history.Reconciliations(ctx, s.cfg.JetStream, q.project, q.limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page[history.Reconciliation]{Items: runs})
}
