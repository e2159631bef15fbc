package stream

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// SubscriberAccount is the NATS account the subscriber identity lives in.
// The relay's streams and buckets stay in the server's global account,
// which holds every store written before this account existed.
//
// The subscriber has an account of its own because, in one account, any
// identity that may send a JetStream request chooses where the answer goes:
// nats-server publishes a direct get's answer, a pull's messages and a
// push consumer's deliveries to the reply (or deliver) subject as written,
// and a stream of that account whose subjects match stores them. The
// read-only subscriber could so write into the inbox, the transactions'
// bucket (an empty entry quarantined the transaction's genuine success)
// and the hold of an endpoint, and store copies of events under other
// subjects. From its own account its requests reach the relay's account
// only through the imports below, and their answers come back through a
// reply subject the server makes (_R_.…), which no stream of the relay's
// holds.
const SubscriberAccount = "SENGO_SUBSCRIBERS"

// guardPrefix is where, in the relay's account, the subscriber's consumer
// creations arrive: the relay checks each before JetStream sees it.
const guardPrefix = "_SENGO_RELAY_GUARD"

// ReservedConsumerPrefix names the relay's own consumers on the events
// stream (dispatcher.ConsumerName); the subscriber may create none by such
// a name, whichever endpoints are configured now.
const ReservedConsumerPrefix = "webhook-"

// The subscriber's pulls (pullPrefix) and acks (ackPrefix: an ack's body
// "+NXT {…}" is a pull too) reach the relay's account through the relay:
// they come to the guard under pullsIn and acksIn (stream imports, which
// keep the client's reply subject), and the guard sends those it lets
// through from the subscriber's account under passOut (PULLS and ACKS),
// which the subscriber's account imports as the pull and the ack. Their
// answers, every message and heartbeat, go from the consumer to the client
// as before. A client connection cannot pass a request on with the reply
// the server gives one crossing accounts (_R_.…: reserved), so the guard's
// is a connection in the subscriber's account.
//
// passOut is a secret of the process (newPassOut): nats-server checks the
// subjects a client sends to, never the replies it names (but _R_.,
// $JS.ACK. and _GR_.), and what answers a reply named there (a refusal, a
// pull's 404, a direct get's) became an ack of the relay's own consumer,
// its message then delivered nowhere. The subscriber may send nothing
// there, and cannot name it.
const (
	pullsIn = "_SENGO_RELAY_PULLS_IN"
	acksIn  = "_SENGO_RELAY_ACKS_IN"
)

// newPassOut is a new passOut: random, so that no client can name it.
func newPassOut() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "_SENGO_RELAY_PASS_" + hex.EncodeToString(b)
}

// pullPrefix starts the subject of a pull request, ackPrefix that of an
// ack.
const (
	pullPrefix = "$JS.API.CONSUMER.MSG.NEXT."
	ackPrefix  = "$JS.ACK."
)

// passedOn maps a subject the subscriber sends its pulls or acks to (the
// server's own) to the one the guard passes them on under (below
// passOut), for the import from the relay's account.
func passedOn(passOut, subj string) string {
	if rest, ok := strings.CutPrefix(subj, pullPrefix); ok {
		return passOut + ".PULLS." + rest
	}
	if rest, ok := strings.CutPrefix(subj, ackPrefix); ok {
		return passOut + ".ACKS." + rest
	}
	return subj
}

// SubscriberDeliverPrefix is the only place a subscriber's push consumer
// may deliver to. Anywhere else in the relay's account a stream could
// store what it delivers.
const SubscriberDeliverPrefix = "_INBOX."

// authenticator checks both identities' passwords and puts each in its
// account.
type authenticator struct {
	relayUser, subUser string
	relayHash, subHash []byte
	relay, sub         atomic.Pointer[server.User] // nil until the server and its accounts are ready
	// pullsUser and pullsPassword are the guard's identity in the
	// subscriber's account (Embedded.connectPulls): made anew by each
	// process, never written anywhere.
	pullsUser, pullsPassword string
	pullsHash                []byte
	pulls                    atomic.Pointer[server.User]
	// costly holds the turn of a check at more than bcrypt's lowest cost
	// (a password a person chose): one at a time.
	costly chan struct{}
	// admit makes counting the subscriber's connections and registering
	// a new one one step.
	admit sync.Mutex
	// log says why a connection over SubscriberMaxConnections is refused
	// (the client hears only "authorization violation"), at most once
	// every refusedLogEvery (refusedAt).
	log       zerolog.Logger
	refusedAt time.Time
}

// refusedLogEvery spaces the log lines of refused subscriber connections.
const refusedLogEvery = 10 * time.Second

// costlyWait is how long a connect waits for its turn to have a costly
// password checked; past it, it is refused unchecked.
const costlyWait = time.Second

// relayConsumers are the names of the relay's consumers (ReservedConsumerPrefix)
// on stream st now: those of endpoints no longer configured included,
// which stay until their retirement and which Protected (the configured
// ones) does not name. Only the relay creates such consumers (the guard
// refuses them to the subscriber), so those made later are configured
// ones.
func relayConsumers(conn *nats.Conn, st string) ([]string, error) {
	js, err := jetstream.New(conn)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
	defer cancel()
	s, err := js.Stream(ctx, st)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil // a new store: no consumer yet
	}
	if err != nil {
		return nil, err
	}
	var out []string
	names := s.ConsumerNames(ctx)
	for n := range names.Name() {
		if strings.HasPrefix(n, ReservedConsumerPrefix) {
			out = append(out, n)
		}
	}
	return out, names.Err()
}

func newAuthenticator(a *EmbeddedAuth, log zerolog.Logger) *authenticator {
	user := make([]byte, 8)
	_, _ = rand.Read(user)
	pullsPassword := newPassword()
	return &authenticator{
		relayUser: a.RelayUser, relayHash: []byte(bcryptHash(a.RelayPassword)),
		subUser: a.SubscriberUser, subHash: []byte(bcryptHash(a.SubscriberPassword)),
		pullsUser: "sengo-relay-pulls-" + hex.EncodeToString(user), pullsPassword: pullsPassword,
		pullsHash: []byte(bcryptHash(pullsPassword)),
		costly:    make(chan struct{}, 1), log: log,
	}
}

// compareHash is bcrypt's check (a variable for tests).
var compareHash = bcrypt.CompareHashAndPassword

// Check implements server.Authentication.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	var u *server.User
	var hash []byte
	switch o.Username {
	case a.relayUser:
		u, hash = a.relay.Load(), a.relayHash
	case a.subUser:
		u, hash = a.sub.Load(), a.subHash
	case a.pullsUser:
		u, hash = a.pulls.Load(), a.pullsHash
	}
	if u == nil {
		return false
	}
	// A password a person chose is checked at bcrypt's default cost, about
	// 90 ms of CPU: one such check at a time, so that wrong passwords sent
	// from many connections at once cannot keep both cores busy (the
	// relay's own, at the lowest cost, never wait).
	if cost, err := bcrypt.Cost(hash); err != nil || cost > bcrypt.MinCost {
		t := time.NewTimer(costlyWait)
		defer t.Stop()
		select {
		case a.costly <- struct{}{}:
			defer func() { <-a.costly }()
		case <-t.C:
			return false
		}
	}
	if compareHash(hash, bcryptInput(o.Password)) != nil {
		return false
	}
	if o.Username == a.subUser {
		a.admit.Lock()
		defer a.admit.Unlock()
		if u.Account != nil {
			// One of the account's is the relay's own (pulls).
			if n := u.Account.NumLocalConnections() - 1; n >= SubscriberMaxConnections {
				if time.Since(a.refusedAt) >= refusedLogEvery {
					a.refusedAt = time.Now()
					a.log.Warn().Int("open", n).Str("from", fmt.Sprint(c.RemoteAddress())).
						Msgf("subscriber connection refused: it has %d open, the most it may (a client reconnecting while its old connections linger, or one opening connections without end)", n)
				}
				return false
			}
		}
	}
	c.RegisterUser(u)
	return true
}

// subscriberAPI are the JetStream subjects (of stream st) the subscriber
// sends to the server without the guard's queue (pulls and acks through
// passOn), each with how many answers a request gets. None goes into the
// server's queue of API requests: a consumer answers its pulls, acks and
// flow control itself.
func subscriberAPI(st string) map[string]server.ServiceRespType {
	return map[string]server.ServiceRespType{
		pullPrefix + st + ".>": server.Streamed,  // imported under passOut
		ackPrefix + st + ".>":  server.Singleton, // imported under passOut
		"$JS.FC." + st + ".>":  server.Singleton,
	}
}

// guardedAPI are the subscriber's JetStream API requests that the relay
// passes on itself (guard), a few at a time: nats-server has one queue of
// API requests for every account, drops it whole past 10,000 waiting and
// answers info requests only when it is empty, so a subscriber sending
// them as fast as it could kept the relay's own from being answered.
// Consumer creations and deletions are checked first, and so are direct
// gets: with a body (directGet), those pass on one message each; of the
// last message of a subject (in the request's subject), one subject, no
// wildcard (lastOf); stream info, without the stream's subjects
// (streamInfo).
func guardedAPI(st string) []string {
	return []string{
		"$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.INFO." + st, "$JS.API.STREAM.MSG.GET." + st,
		"$JS.API.DIRECT.GET." + st, "$JS.API.DIRECT.GET." + st + ".>",
		"$JS.API.CONSUMER.INFO." + st + ".>",
		"$JS.API.CONSUMER.CREATE." + st + ".>", "$JS.API.CONSUMER.DURABLE.CREATE." + st + ".>", "$JS.API.CONSUMER.DELETE." + st + ".>",
	}
}

// subscriberAccount is the subscriber's account, made if need be.
func subscriberAccount(srv *server.Server) (*server.Account, error) {
	subs, err := srv.LookupAccount(SubscriberAccount)
	if err != nil {
		return srv.RegisterAccount(SubscriberAccount)
	}
	return subs, nil
}

// subscriberAccess makes the subscriber's account: what it imports from
// the relay's (global) account, and the guard that checks its consumer
// creations and pulls, on conn (the relay's own connection) and pulls (the
// relay's connection in the subscriber's account).
func subscriberAccess(srv *server.Server, a *EmbeddedAuth, conn, pulls *nats.Conn, passOut string) error {
	g := srv.GlobalAccount()
	subs, err := subscriberAccount(srv)
	if err != nil {
		return err
	}
	only := []*server.Account{subs}
	for subj, resp := range subscriberAPI(a.Stream) {
		if err := g.AddServiceExportWithResponse(subj, resp, only); err != nil {
			return fmt.Errorf("export %s: %w", subj, err)
		}
		wait := answerWait
		if resp == server.Streamed {
			wait = pullWait
		}
		if err := g.SetServiceExportResponseThreshold(subj, wait); err != nil {
			return fmt.Errorf("export %s: %w", subj, err)
		}
		if err := subs.AddServiceImport(g, passedOn(passOut, subj), subj); err != nil {
			return fmt.Errorf("import %s: %w", subj, err)
		}
	}
	for _, subj := range guardedAPI(a.Stream) {
		to := guardPrefix + strings.TrimPrefix(subj, "$JS.API")
		if err := g.AddServiceExportWithResponse(to, server.Singleton, only); err != nil {
			return fmt.Errorf("export %s: %w", to, err)
		}
		if err := g.SetServiceExportResponseThreshold(to, guardAnswerWait); err != nil {
			return fmt.Errorf("export %s: %w", to, err)
		}
		if err := subs.AddServiceImport(g, subj, to); err != nil {
			return fmt.Errorf("import %s: %w", subj, err)
		}
	}
	// Live events (core NATS), and what push consumers deliver.
	for _, subj := range []string{a.Subjects, SubscriberDeliverPrefix + ">"} {
		if err := g.AddStreamExport(subj, only); err != nil {
			return fmt.Errorf("export %s: %w", subj, err)
		}
		if err := subs.AddStreamImport(g, subj, ""); err != nil {
			return fmt.Errorf("import %s: %w", subj, err)
		}
	}
	gd := &guard{conn: conn, pulls: pulls, passOut: passOut, stream: a.Stream, protected: a.Protected,
		admitted: make(chan struct{}, guardQueued), running: make(chan struct{}, guardInFlight), creating: make(chan struct{}, 1)}
	// The pulls and acks, to the guard.
	for subj, in := range map[string]string{pullPrefix + a.Stream + ".>": pullsIn, ackPrefix + a.Stream + ".>": acksIn} {
		if err := subs.AddStreamExport(subj, []*server.Account{g}); err != nil {
			return fmt.Errorf("export %s: %w", subj, err)
		}
		if err := g.AddStreamImport(subs, subj, in); err != nil {
			return fmt.Errorf("import %s: %w", subj, err)
		}
		if _, err := conn.Subscribe(in+".>", gd.passOn); err != nil {
			return err
		}
	}
	_, err = conn.Subscribe(guardPrefix+".>", gd.handle)
	return err
}

// guard passes the subscriber's JetStream API requests on as the relay,
// at most guardInFlight at a time, and checks its consumer creations
// first.
type guard struct {
	conn      *nats.Conn
	pulls     *nats.Conn // in the subscriber's account: pulls and acks let through, and their refusals
	passOut   string     // where pulls pass on (newPassOut)
	stream    string
	protected []string
	// admitted holds a place for each request waiting or in flight;
	// running, for each in flight.
	admitted, running chan struct{}
	// creating makes a creation's count of the subscriber's consumers and
	// the creation one step (a place in it: one creation at a time). It is
	// taken before a place in running: creations waiting for their turn
	// hold none, and reads go on.
	creating chan struct{}
}

const (
	// guardInFlight is how many of the subscriber's API requests are in
	// the server's queue at once, and guardQueued how many wait for
	// their turn at most; more are refused at once (busy).
	guardInFlight = 8
	guardQueued   = 256
	// guardMaxRequest bounds a request's body: a JetStream API request
	// is a few hundred bytes (a consumer's with its filters a few KiB).
	guardMaxRequest = 64 << 10
	// guardWait is how long a request waits for its turn.
	guardWait = 2 * time.Second
	// guardTimeout bounds the relay's own request to JetStream for a
	// subscriber's.
	guardTimeout = 10 * time.Second
)

// SubscriberMaxConsumers is how many consumers the subscriber may keep on
// the events stream, durable and ephemeral together. nats-server allows a
// stream 1,000: a subscriber that made them all left the relay none, and
// a relay then could neither scan (replays, the console's stories) nor
// start with a new endpoint.
const SubscriberMaxConsumers = 100

// SubscriberMaxWaiting bounds a subscriber's consumer's max_waiting (pull
// requests it keeps waiting): nats-server's default, which it does not
// bound itself.
const SubscriberMaxWaiting = 512

// SubscriberMaxReplies is how many of the subscriber's requests to the
// relay's account may wait for their answer at once (pull requests not
// yet expired, direct gets): nats-server keeps each one's reply subject,
// up to 4 KiB, and does not bound them. Past it, the subscriber's
// connections are closed (watchReplies). A finished pull's entry stays
// one to two pullWaits after its last answer (nats.go's legacy Fetch and
// a Consume's pulls never end their reply's interest): a client pulling
// one message at a time passes the bound at some 650 pulls a second.
const SubscriberMaxReplies = 40_000

// pullWait is how long after its last answer (a message, a heartbeat, a
// status) nats-server keeps the entry of a subscriber's pull, one to two
// times it; answerWait that of its other requests, answered at once, and
// guardAnswerWait that of those the guard passes on (guardWait, room's
// count and the request: 22 s at most). nats-server's two minutes let a
// client's finished pulls pile up. A pull waiting longer than pullWait
// without a message or a heartbeat loses its entry: what the consumer
// hands it then is dropped, counted delivered (redelivered after
// ack_wait). nats.go's Consume and Messages send heartbeats every 15 s,
// its Fetch every 5 s from a 10 s wait. (Variables for tests.)
var (
	pullWait        = 30 * time.Second
	answerWait      = 15 * time.Second
	guardAnswerWait = 30 * time.Second
)

// SubscriberMaxAckPending bounds a subscriber's consumer's max_ack_pending
// (messages read and not yet acknowledged): nats-server keeps each in the
// consumer's state, which it rewrites whole up to ten times a second, and
// takes -1 for no bound.
const SubscriberMaxAckPending = 10_000

// SubscriberMinAckWait bounds a subscriber's consumer's ack_wait and each
// step of its backoff from below: the server looks through the
// consumer's unacknowledged messages that often.
const SubscriberMinAckWait = time.Second

// SubscriberMaxConnections is how many connections the subscriber may
// have open at once. Each may hold up to 64 MiB of messages the server has
// yet to send it (nats-server's max_pending) in the relay's process.
const SubscriberMaxConnections = 32

// MaxSubscriptions is how many subscriptions one connection to the
// embedded server may have, the relay's included (a relay connection has
// about one an endpoint and a few more, and nats-server allows a stream
// 1,000 consumers).
const MaxSubscriptions = 10_000

func (g *guard) handle(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	if n := m.Size(); n > guardMaxRequest {
		// Held while it waits, each could be the server's 8 MiB (headers
		// and body together).
		g.refuse(m, fmt.Errorf("%w: a request of %d bytes; the JetStream API's are at most %d", errTooLarge, n, guardMaxRequest))
		return
	}
	select {
	case g.admitted <- struct{}{}:
	default:
		g.refuse(m, fmt.Errorf("%w: too many of the subscriber's requests are waiting; retry", errBusy))
		return
	}
	go func() {
		defer func() { <-g.admitted }()
		t := time.NewTimer(guardWait)
		defer t.Stop()
		// take waits for a place in slots, until the request's time is up.
		take := func(slots chan struct{}) bool {
			select {
			case slots <- struct{}{}:
				return true
			case <-t.C:
				g.refuse(m, fmt.Errorf("%w: the subscriber's requests waited too long for their turn; retry", errBusy))
				return false
			}
		}
		subj := "$JS.API" + strings.TrimPrefix(m.Subject, guardPrefix)
		if creates(subj) {
			if !take(g.creating) {
				return
			}
			defer func() { <-g.creating }()
		}
		if !take(g.running) {
			return
		}
		defer func() { <-g.running }()
		g.pass(m, subj)
	}()
}

// pass checks and forwards one request (to subj), and answers it.
func (g *guard) pass(m *nats.Msg, subj string) {
	if err := g.check(subj, m.Data); err != nil {
		g.refuse(m, err)
		return
	}
	resp, err := g.conn.RequestMsg(&nats.Msg{Subject: subj, Header: m.Header, Data: m.Data}, guardTimeout)
	if err != nil {
		g.refuse(m, fmt.Errorf("%w: the store did not answer", errUnavailable))
		return
	}
	if err := m.RespondMsg(&nats.Msg{Header: resp.Header, Data: resp.Data}); err != nil {
		// Too large to pass on (a message get's answer carries the event
		// in base64): refused, not left to time out.
		g.refuse(m, fmt.Errorf("%w: the answer could not be passed on (%v); read large events with a direct get", errUnavailable, err))
	}
}

// SubscriberMinHeartbeat bounds a subscriber's pull's idle_heartbeat from
// below: nats-server sends each waiting pull a heartbeat that often (1 ms
// at the least), walking all the consumer's waiting pulls each time.
// nats.go's Fetch asks for 5 s, its Consume for half the pull's expiry.
const SubscriberMinHeartbeat = time.Second

// passOn passes a pull or an ack (which came under pullsIn or acksIn) on
// as it is, with the client's reply subject, unless it asks for a pull
// whose idle_heartbeat is under SubscriberMinHeartbeat: a pull's body, or
// an ack's after "+NXT" (nats-server takes that as a pull whether or not
// the ack acknowledges anything). In the subscription's goroutine: it
// waits for nothing, and a client's pulls and acks keep their order. A
// body the server cannot read is passed on for its own answer.
func (g *guard) passOn(m *nats.Msg) {
	subj, pull := strings.CutPrefix(m.Subject, pullsIn+".")
	if !pull {
		subj = strings.TrimPrefix(m.Subject, acksIn+".")
	}
	if pull && m.Reply == "" {
		return // the server ignores a pull without one
	}
	if n := m.Size(); n > guardMaxRequest {
		g.refuse(m, fmt.Errorf("%w: a request of %d bytes; the JetStream API's are at most %d", errTooLarge, n, guardMaxRequest))
		return
	}
	next := m.Data
	if !pull {
		next, pull = bytes.CutPrefix(m.Data, []byte("+NXT")) // as the server reads it
	}
	if pull && fastHeartbeat(next) {
		g.refuse(m, fmt.Errorf("%w: a pull's idle_heartbeat is at least %s", errForbidden, SubscriberMinHeartbeat))
		return
	}
	// The subscriber's own publishes to the relay's consumers are denied by
	// its permissions; what the server sends to a reply it named is not
	// checked by them.
	if g.relays(consumerOf(subj)) {
		g.refuse(m, errRelaysConsumer)
		return
	}
	// Without headers: pulls and acks have none, and one asking the server
	// to trace the message (Nats-Trace-Dest) would have its events tell
	// where it passes on (the subscriber may publish to no destination
	// for them today: its permissions refuse the message first).
	if err := g.pulls.PublishMsg(&nats.Msg{Subject: passedOn(g.passOut, subj), Reply: m.Reply, Data: m.Data}); err != nil {
		g.refuse(m, fmt.Errorf("%w: the store did not take it", errUnavailable))
	}
}

// consumerOf is the consumer a pull or an ack subject names:
// $JS.API.CONSUMER.MSG.NEXT.<stream>.<name>, $JS.ACK.<stream>.<name>.….
func consumerOf(subj string) string {
	toks := strings.Split(subj, ".")
	switch {
	case strings.HasPrefix(subj, pullPrefix) && len(toks) > 6:
		return toks[6]
	case strings.HasPrefix(subj, ackPrefix) && len(toks) > 3:
		return toks[3]
	}
	return ""
}

// relays reports whether consumer name is the relay's.
func (g *guard) relays(name string) bool {
	return strings.HasPrefix(name, ReservedConsumerPrefix) || strings.HasPrefix(name, ScanConsumerPrefix) || slices.Contains(g.protected, name)
}

// fastHeartbeat reports whether a pull request's body asks for an
// idle_heartbeat under SubscriberMinHeartbeat, as nats-server reads it
// (encoding/json, nanoseconds; only a JSON object has one).
func fastHeartbeat(body []byte) bool {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return false
	}
	var req struct {
		Heartbeat int64 `json:"idle_heartbeat"`
	}
	return json.Unmarshal(body, &req) == nil && req.Heartbeat > 0 && req.Heartbeat < int64(SubscriberMinHeartbeat)
}

// creates reports whether subj creates (or updates) a consumer.
func creates(subj string) bool {
	return strings.HasPrefix(subj, "$JS.API.CONSUMER.CREATE.") || strings.HasPrefix(subj, "$JS.API.CONSUMER.DURABLE.CREATE.")
}

var (
	errForbidden   = errors.New("forbidden")
	errTooLarge    = errors.New("too large")
	errUnavailable = errors.New("unavailable")
	errBusy        = errors.New("busy")
	errTooMany     = errors.New("too many consumers")
	// errRelaysConsumer refuses a subscriber's request about a consumer of
	// the relay's.
	errRelaysConsumer = fmt.Errorf("%w: consumer names starting with %q or %q are the relay's", errForbidden, ReservedConsumerPrefix, ScanConsumerPrefix)
)

// check refuses to create or delete a consumer of the relay's (by the
// subject's name, or the request's), and to create a push consumer
// delivering outside SubscriberDeliverPrefix.
func (g *guard) check(subj string, data []byte) error {
	if subj == "$JS.API.DIRECT.GET."+g.stream || subj == "$JS.API.STREAM.MSG.GET."+g.stream {
		return directGet(data)
	}
	if key, ok := strings.CutPrefix(subj, "$JS.API.DIRECT.GET."+g.stream+"."); ok {
		return lastOf(key)
	}
	if subj == "$JS.API.STREAM.INFO."+g.stream {
		return streamInfo(data)
	}
	if !strings.HasPrefix(subj, "$JS.API.CONSUMER.") || strings.HasPrefix(subj, "$JS.API.CONSUMER.INFO.") {
		return nil // a read
	}
	// $JS.API.CONSUMER.CREATE.<stream>.<name>[.<filter>],
	// $JS.API.CONSUMER.DURABLE.CREATE.<stream>.<name>,
	// $JS.API.CONSUMER.DELETE.<stream>.<name>
	toks := strings.Split(subj, ".")
	at := 4 // the stream's token
	if toks[3] == "DURABLE" {
		at = 5
	}
	var names []string
	if len(toks) > at+1 {
		names = append(names, toks[at+1])
	}
	var req struct {
		Config struct {
			Name           string `json:"name"`
			Durable        string `json:"durable_name"`
			DeliverSubject string `json:"deliver_subject"`
			// Direct and sourcing consumers are left out of the stream's
			// consumer list and its limit by nats-server: created without
			// end, each unseen by room.
			Direct        bool `json:"direct"`
			Sourcing      bool `json:"sourcing"`
			MaxWaiting    int  `json:"max_waiting"`
			MaxAckPending int  `json:"max_ack_pending"`
			// last_per_subject starts a consumer at every subject's last
			// message, which nats-server finds reading the whole stream
			// from disk in one pass under its lock (a multi_last's).
			DeliverPolicy string `json:"deliver_policy"`
			// Nanoseconds, as the API has them.
			AckWait int64   `json:"ack_wait"`
			BackOff []int64 `json:"backoff"`
		} `json:"config"`
	}
	if toks[3] != "DELETE" {
		if err := json.Unmarshal(data, &req); err != nil {
			return fmt.Errorf("%w: the request is not JSON", errForbidden)
		}
		names = append(names, req.Config.Name, req.Config.Durable)
	}
	for _, n := range names {
		if g.relays(n) {
			return errRelaysConsumer
		}
	}
	if req.Config.Direct || req.Config.Sourcing {
		return fmt.Errorf("%w: direct and sourcing consumers are the server's own", errForbidden)
	}
	if req.Config.DeliverPolicy == "last_per_subject" {
		return fmt.Errorf("%w: deliver_policy last_per_subject reads every subject's last message in one pass that holds the stream's writes; start at a sequence or a time", errForbidden)
	}
	if req.Config.MaxWaiting > SubscriberMaxWaiting {
		return fmt.Errorf("%w: max_waiting is at most %d", errForbidden, SubscriberMaxWaiting)
	}
	if n := req.Config.MaxAckPending; n < 0 || n > SubscriberMaxAckPending {
		return fmt.Errorf("%w: max_ack_pending is 1 to %d (0: the server's 1,000)", errForbidden, SubscriberMaxAckPending)
	}
	// nats-server walks a consumer's unacknowledged messages each ack_wait
	// (or backoff step) plus 1 ms, under the consumer's lock, and refuses
	// only a negative one: consumers of 1 ns, holding messages read and
	// never acked, kept the relay's cores busy for good.
	if w := req.Config.AckWait; w > 0 && w < int64(SubscriberMinAckWait) || slices.ContainsFunc(req.Config.BackOff, func(b int64) bool { return b < int64(SubscriberMinAckWait) }) {
		return fmt.Errorf("%w: ack_wait and each backoff step are at least %s", errForbidden, SubscriberMinAckWait)
	}
	if ds := req.Config.DeliverSubject; ds != "" && !strings.HasPrefix(ds, SubscriberDeliverPrefix) {
		return fmt.Errorf("%w: a push consumer delivers under %s only", errForbidden, SubscriberDeliverPrefix+">")
	}
	if toks[3] != "DELETE" && len(toks) > at+1 {
		return g.room(toks[at+1])
	}
	return nil
}

// directGet refuses a direct get (or a message get) of more than one
// message: nats-server bounds neither a batch nor, when the request names
// one, its bytes, and answers it in one pass that holds every write to the
// stream, queueing each message in the process (the relay's, with the
// embedded server). It refuses one of the last or the next message of a
// wildcard too (lastOf: measured through the guard, the next of
// sengo.events.> after sequence 1 took 76 to 116 ms a request with
// 300,000 transactions, the relay's event publishes 19 ms at p99).
func directGet(data []byte) error {
	var req struct {
		Batch     int               `json:"batch"`
		MultiLast []json.RawMessage `json:"multi_last"`
		Last      string            `json:"last_by_subj"`
		Next      string            `json:"next_by_subj"`
	}
	if err := decodeAll(data, &req); err != nil {
		return err
	}
	for _, subj := range []string{req.Last, req.Next} {
		if err := lastOf(subj); err != nil {
			return err
		}
	}
	if req.Batch != 0 || len(req.MultiLast) > 0 {
		// Even a batch of one: it ends with a second answer (end of
		// batch), which the import passes no more than the rest.
		return fmt.Errorf("%w: a direct get passes on one message, and no batch; read more with a consumer", errForbidden)
	}
	return nil
}

// lastOf refuses a direct get of the last (or next) message of a subject
// that is a wildcard: nats-server finds it by walking every subject of the stream
// that matches (one per transaction and status), holding the stream's
// lock. 8 connections asking for the last of sengo.events.> without end
// (300,000 transactions: 40 to 60 ms a request) took the relay's event
// publishes from 38 µs to 34 ms (p50), some 30 a second
// (TestTheSubscriberCannotMakeTheStreamWalkEverySubject).
func lastOf(key string) error {
	for tok := range strings.SplitSeq(key, ".") {
		if tok == "*" || tok == ">" {
			return fmt.Errorf("%w: a direct get of a subject's last or next message names one subject, no wildcard; read more with a consumer", errForbidden)
		}
	}
	return nil
}

// streamInfo refuses a stream info request for the stream's subjects or
// its deleted sequences: nats-server lists them in one pass holding the
// stream's lock, and answers in one message (300,000 transactions'
// subjects took 0.9 to 2.6 s and 4.4 MB an answer). The stream's state and
// configuration are answered as before.
func streamInfo(data []byte) error {
	var req struct {
		Subjects string `json:"subjects_filter"`
		Deleted  bool   `json:"deleted_details"`
	}
	if err := decodeAll(data, &req); err != nil {
		return err
	}
	if req.Subjects != "" || req.Deleted {
		return fmt.Errorf("%w: stream info lists neither subjects nor deleted sequences; read events with a consumer", errForbidden)
	}
	return nil
}

// decodeAll reads a request's body into req as nats-server reads its API
// requests: every JSON value in turn, each later one over the fields of
// those before (a message get's and a stream info's; a direct get's body
// is one value, and two it refuses). A check that read the first value
// only, or passed on what json.Unmarshal refuses, passed
// {}{"last_by_subj":"sengo.events.>"} on. A body that is not JSON is
// refused: nats-server would refuse it too.
func decodeAll(data []byte, req any) error {
	dec := json.NewDecoder(bytes.NewReader(data)) // an empty body: io.EOF at once
	for {
		if err := dec.Decode(req); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("%w: the request is not JSON", errForbidden)
		}
	}
}

// room refuses to create consumer name (the subject's: the server creates
// that one, whatever the request's configuration names) once the
// subscriber has SubscriberMaxConsumers on the stream; an update of one it
// has is let through. The relay's own (ReservedConsumerPrefix,
// ScanConsumerPrefix and the protected names) are not the subscriber's.
func (g *guard) room(name string) error {
	js, err := jetstream.New(g.conn)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
	defer cancel()
	s, err := js.Stream(ctx, g.stream)
	if err != nil {
		return fmt.Errorf("%w: the store did not answer", errUnavailable)
	}
	theirs := 0
	list := s.ConsumerNames(ctx)
	for n := range list.Name() {
		if n == name {
			return nil // an update of one it has
		}
		if !strings.HasPrefix(n, ReservedConsumerPrefix) && !strings.HasPrefix(n, ScanConsumerPrefix) && !slices.Contains(g.protected, n) {
			theirs++
		}
	}
	if list.Err() != nil {
		return fmt.Errorf("%w: the store did not answer", errUnavailable)
	}
	if theirs >= SubscriberMaxConsumers {
		return fmt.Errorf("%w: the subscriber has %d consumers on %s, the most it may keep; delete one first", errTooMany, theirs, g.stream)
	}
	return nil
}

// refuse answers as JetStream's API does, so clients report it as an API
// error; a direct get as the stream does, and a pull as the consumer
// does, with a status and a description and no body (in headers: a client connection cannot write a status line,
// and nats.go reads either).
func (g *guard) refuse(m *nats.Msg, err error) {
	code := refusalCode(err)
	pull := strings.HasPrefix(m.Subject, pullsIn+".") || strings.HasPrefix(m.Subject, acksIn+".")
	if subj := "$JS.API" + strings.TrimPrefix(m.Subject, guardPrefix); pull || subj == "$JS.API.DIRECT.GET."+g.stream || strings.HasPrefix(subj, "$JS.API.DIRECT.GET."+g.stream+".") {
		if code == 503 {
			// An empty answer of status 503 is "no responders" to nats.go,
			// not this: busy, or the store unavailable, retry.
			code = 429
		}
		h := nats.Header{}
		h.Set("Status", strconv.Itoa(code))
		h.Set("Description", err.Error())
		if pull {
			// The reply is the client's, in the subscriber's account (none:
			// an ack sent without one hears nothing).
			if m.Reply != "" {
				_ = g.pulls.PublishMsg(&nats.Msg{Subject: m.Reply, Header: h})
			}
			return
		}
		_ = m.RespondMsg(&nats.Msg{Header: h})
		return
	}
	b, _ := json.Marshal(map[string]any{
		"error": map[string]any{"code": code, "description": err.Error()},
	})
	_ = m.Respond(b)
}

// refusalCode is the HTTP-like code of a refusal, as JetStream's API
// answers them.
func refusalCode(err error) int {
	code := 403
	switch {
	case errors.Is(err, errUnavailable), errors.Is(err, errBusy):
		code = 503
	case errors.Is(err, errTooMany):
		code = 400
	case errors.Is(err, errTooLarge):
		code = 413
	}
	return code
}
