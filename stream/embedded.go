package stream

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// EmbeddedConfig configures the in-process nats-server.
type EmbeddedConfig struct {
	// StoreDir is where JetStream keeps its files.
	StoreDir string
	// Listen is the loopback address other local processes (order
	// services, the nats CLI) connect to, e.g. "127.0.0.1:4222"; port 0
	// picks a free one. Empty: no listener; only this process connects.
	Listen string
	// SyncInterval is how often JetStream fsyncs its files; zero keeps the
	// server default (2 minutes). SyncAlways fsyncs after every write.
	SyncInterval time.Duration
	SyncAlways   bool
	// MaxStore caps JetStream's disk use in bytes; zero means no cap.
	MaxStore int64
	// Auth, when set, makes every connection authenticate, the relay's
	// own in-process one included. Nil: no authentication (tests only).
	Auth   *EmbeddedAuth
	Logger zerolog.Logger
	// Locked is the release of the store's lock the caller took
	// (LockStore) before it changed anything in StoreDir; the server
	// then owns it. Nil: StartEmbedded takes the lock itself.
	Locked func()
}

// EmbeddedAuth are the embedded server's two identities.
type EmbeddedAuth struct {
	// RelayUser and RelayPassword: full access, for the relay and its CLI.
	RelayUser, RelayPassword string
	// SubscriberUser and SubscriberPassword: read-only. It may subscribe
	// to Subjects, read Stream, and create, use, ack and delete consumers
	// of its own on Stream; never the Protected ones (the relay's).
	SubscriberUser, SubscriberPassword string
	Stream, Subjects                   string
	Protected                          []string
}

// bcryptHash is what the server keeps of a password: never the password
// itself in memory dumps, and nats-server then has no plaintext to warn
// about. The hash's cost protects a short password a person chose; one
// as long as those PasswordFromFile generates (32 random bytes, 43
// characters) cannot be guessed at any cost, and gets the lowest: the
// server checks it on every connect, and the relay opens six (measured: a
// check at the default cost took 91 ms on this machine, 1.4 s under
// -race, where the handshake's 2 s timeout then failed connects).
func bcryptHash(pw string) string {
	cost := bcrypt.DefaultCost
	if len(pw) >= generatedPasswordLen {
		cost = bcrypt.MinCost
	}
	h, err := bcrypt.GenerateFromPassword(bcryptInput(pw), cost)
	if err != nil { // never: bcryptInput is at most 72 bytes
		panic(err)
	}
	return string(h)
}

// bcryptInput is what bcrypt hashes of a password: the password, or the
// hex of its SHA-256 when it is longer than bcrypt's 72 bytes (a chosen
// one such as openssl rand -base64 64), which bcrypt refuses.
func bcryptInput(pw string) []byte {
	if len(pw) <= 72 {
		return []byte(pw)
	}
	sum := sha256.Sum256([]byte(pw))
	return []byte(hex.EncodeToString(sum[:]))
}

// subscriberPermissions are what the subscriber may send and receive in
// its account (SubscriberAccount): the JetStream requests it imports for
// Stream, and the events' subjects. Consumers of the relay's (Protected)
// are denied here by name; any name starting ReservedConsumerPrefix is
// refused at creation by the guard.
func (a *EmbeddedAuth) subscriberPermissions() *server.Permissions {
	st := a.Stream
	pub := []string{
		"$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.INFO." + st,
		"$JS.API.STREAM.MSG.GET." + st, "$JS.API.DIRECT.GET." + st, "$JS.API.DIRECT.GET." + st + ".>",
		// Consumer creation names the consumer in the subject (the legacy
		// nameless form is not allowed), so the relay's can be denied.
		"$JS.API.CONSUMER.CREATE." + st + ".>", "$JS.API.CONSUMER.DURABLE.CREATE." + st + ".>",
		"$JS.API.CONSUMER.INFO." + st + ".>", "$JS.API.CONSUMER.DELETE." + st + ".>",
		// Not CONSUMER.LIST or NAMES: the relay's scans (a replay's, the
		// console's reads) are consumers with random names, which a pull
		// of the subscriber's could take every event the scan had not yet
		// read from, ending a replay early as if done. Unlisted, a name is
		// 130 random bits.
		"$JS.API.CONSUMER.MSG.NEXT." + st + ".>", "$JS.ACK." + st + ".>", "$JS.FC." + st + ".>",
	}
	var deny []string
	for _, c := range a.Protected {
		deny = append(deny,
			"$JS.API.CONSUMER.CREATE."+st+"."+c, "$JS.API.CONSUMER.CREATE."+st+"."+c+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+st+"."+c, "$JS.API.CONSUMER.DELETE."+st+"."+c,
			"$JS.API.CONSUMER.MSG.NEXT."+st+"."+c, "$JS.ACK."+st+"."+c+".>",
		)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub, Deny: deny},
		Subscribe: &server.SubjectPermission{Allow: []string{a.Subjects, "_INBOX.>"}},
	}
}

// Embedded is a running in-process nats-server with JetStream.
type Embedded struct {
	srv    *server.Server
	unlock func()
	auth   *EmbeddedAuth
	guard  *nats.Conn // the relay's connection checking the subscriber's consumer creations
	pulls  *nats.Conn // the relay's connection in the subscriber's account (the guard's pulls)
	log    *serverLogger
	// stopWatch ends watchReplies; watched is closed when it has.
	stopWatch, watched chan struct{}
}

// ErrStoreLocked: another process holds the store directory.
var ErrStoreLocked = errors.New("store locked")

// ErrListenBusy: the embedded server's listen address is taken.
var ErrListenBusy = errors.New("listen address in use")

// LockStore takes dir's lock, which one relay holds while it uses the
// store (ErrStoreLocked names the holder), creating dir if needed. For a
// caller that changes files in dir before StartEmbedded (EmbeddedConfig
// Locked): a second relay must stop before it changes anything.
func LockStore(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store dir: %w", err)
	}
	return lockDir(dir)
}

// StartEmbedded starts nats-server in this process and waits until it
// accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (_ *Embedded, err error) {
	unlock := cfg.Locked
	if unlock == nil {
		if unlock, err = LockStore(cfg.StoreDir); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			unlock()
		}
	}()
	// Read from the disk, not from pages an fsync failed to write that
	// the kernel still holds (the relay stops after a failed fsync and
	// restarts; the cache outlives the process).
	if err := dropCached(cfg.StoreDir); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	opts := &server.Options{
		ServerName:   "sengo-relay",
		JetStream:    true,
		StoreDir:     cfg.StoreDir,
		SyncInterval: cfg.SyncInterval,
		SyncAlways:   cfg.SyncAlways,
		NoSigs:       true, // the relay owns signal handling
		MaxPayload:   8 << 20,
		MaxSubs:      MaxSubscriptions,
		// The server's first PING to a client otherwise comes 2 s after
		// the client connected, handshake finished or not; nats.go fails a
		// handshake that sees it before its PONG ("expected 'PONG', got
		// 'PING'"). Checking a bcrypt password takes that long on a busy
		// machine (CI under -race saw it): the CLI and subscribers could
		// not connect. The first PING now comes at the ping interval.
		DisableShortFirstPing: true,
	}
	if cfg.MaxStore > 0 {
		opts.JetStreamMaxStore = cfg.MaxStore
	}
	var auth *authenticator
	if cfg.Auth != nil {
		auth = newAuthenticator(cfg.Auth, cfg.Logger.With().Str("component", "nats-auth").Logger())
		opts.CustomClientAuthentication = auth
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: bad port", cfg.Listen)
		}
		if port == 0 {
			port = server.RANDOM_PORT // nats-server reads 0 as "default port"
		} else if ln, err := net.Listen("tcp", cfg.Listen); err != nil {
			// Fail at once: nats-server would retry the bind and the
			// relay would wait for readiness in vain.
			return nil, fmt.Errorf("%w: embedded nats cannot listen on %s (nats.embedded.listen, SENGO_RELAY_NATS_EMBEDDED_LISTEN): %v", ErrListenBusy, cfg.Listen, err)
		} else {
			ln.Close()
		}
		opts.Host, opts.Port = host, port
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srvLog := newServerLogger(cfg.Logger.With().Str("component", "nats-server").Logger())
	srv.SetLoggerV2(srvLog, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 30s")
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, errors.New("embedded nats: JetStream did not start (see the nats-server log lines)")
	}
	e := &Embedded{srv: srv, unlock: unlock, auth: cfg.Auth, log: srvLog}
	if auth != nil {
		// The relay logs in from now on; the subscriber once its account
		// is in place.
		auth.relay.Store(&server.User{Username: cfg.Auth.RelayUser, Account: srv.GlobalAccount()})
		if e.guard, err = nats.Connect("", e.ConnectOption(), nats.Name("sengo-relay subscriber guard"), nats.MaxReconnects(-1),
			// The relay's password is checked on connect: at bcrypt's default
			// cost for a short one, over nats.go's 2 s under -race on a busy
			// machine.
			nats.Timeout(30*time.Second)); err != nil {
			srv.Shutdown()
			return nil, fmt.Errorf("embedded nats: guard connection: %w", err)
		}
		// The relay's consumers now, those of endpoints removed included,
		// are denied to the subscriber as the configured ones are.
		sa := *cfg.Auth
		held, err := relayConsumers(e.guard, sa.Stream)
		if err == nil {
			sa.Protected = append(slices.Clone(sa.Protected), held...)
			passOut := newPassOut()
			if err = e.connectPulls(auth, passOut); err == nil {
				err = subscriberAccess(srv, &sa, e.guard, e.pulls, passOut)
			}
		}
		if err == nil {
			err = e.guard.Flush() // the guard answers before the subscriber logs in
		}
		if err != nil {
			e.guard.Close()
			if e.pulls != nil {
				e.pulls.Close()
			}
			srv.Shutdown()
			return nil, fmt.Errorf("embedded nats: the subscriber's account: %w", err)
		}
		subs, _ := srv.LookupAccount(SubscriberAccount)
		auth.sub.Store(&server.User{Username: sa.SubscriberUser, Account: subs, Permissions: sa.subscriberPermissions()})
		e.stopWatch, e.watched = make(chan struct{}), make(chan struct{})
		go e.watchReplies(srv.GlobalAccount(), cfg.Logger.With().Str("component", "nats-auth").Logger())
	}
	return e, nil
}

// repliesWatch is how often watchReplies counts the subscriber's replies.
const repliesWatch = 100 * time.Millisecond

// watchReplies closes the subscriber's connections whenever its requests
// waiting for an answer pass SubscriberMaxReplies. nats-server keeps an
// entry for each, with its own copy of the reply subject, without a
// bound, until it is answered for good or for its export's threshold (a
// pull's answers keep it, no_wait's 404 too): pulls sent as fast as a
// connection goes held gigabytes in the relay's process. They are counted
// in the relay's account, which answers them (its entries are the
// subscriber's only): counted by reply subject in the subscriber's,
// requests sharing one were one. A closed connection takes its requests'
// entries with it.
func (e *Embedded) watchReplies(relay *server.Account, log zerolog.Logger) {
	defer close(e.watched)
	t := time.NewTicker(repliesWatch)
	defer t.Stop()
	var loggedAt time.Time
	for {
		select {
		case <-e.stopWatch:
			return
		case <-t.C:
		}
		n := relay.NumPendingAllResponses()
		if n <= SubscriberMaxReplies {
			continue
		}
		conns, err := e.srv.Connz(&server.ConnzOptions{Account: SubscriberAccount, Limit: 4 * SubscriberMaxConnections})
		if err != nil {
			continue
		}
		for _, c := range conns.Conns {
			_ = e.srv.DisconnectClientByID(c.Cid)
		}
		if time.Since(loggedAt) >= refusedLogEvery {
			loggedAt = time.Now()
			log.Warn().Int("waiting", n).Int("connections", len(conns.Conns)).
				Msgf("subscriber connections closed: they had more than %d requests waiting for an answer (a client sending pulls or gets with a reply subject each, and never reading them), each held in the relay's memory", SubscriberMaxReplies)
		}
	}
}

// ClientURL is the URL other processes connect to, or "" without a listener.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// RelayInboxPrefix is where the relay's own connections to the embedded
// server receive their replies: JetStream's answers, the messages its pull
// consumers deliver (the inbox's notifications, dead letters, KV entries).
// The subscriber identity may subscribe to _INBOX.> (its own replies come
// there), so on the default prefix it would read all of those.
const RelayInboxPrefix = "_SENGO_RELAY_INBOX"

// connectPulls opens the guard's connection in the subscriber's account,
// as an identity of the relay's own making that may send the pulls it lets
// through (under passOut) and its refusals to the client's inbox, and nothing
// else.
func (e *Embedded) connectPulls(auth *authenticator, passOut string) error {
	subs, err := subscriberAccount(e.srv)
	if err != nil {
		return err
	}
	auth.pulls.Store(&server.User{Username: auth.pullsUser, Account: subs, Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{passOut + ".>", "_INBOX.>"}},
		Subscribe: &server.SubjectPermission{Deny: []string{">"}},
	}})
	e.pulls, err = nats.Connect("", nats.InProcessServer(e.srv), nats.UserInfo(auth.pullsUser, auth.pullsPassword),
		nats.Name("sengo-relay subscriber pulls"), nats.MaxReconnects(-1), nats.Timeout(30*time.Second))
	return err
}

// ConnectOption makes a nats.Connect use an in-process connection to e,
// as the relay's identity when the server authenticates, with its replies
// under RelayInboxPrefix.
func (e *Embedded) ConnectOption() nats.Option {
	return func(o *nats.Options) error {
		if err := nats.InProcessServer(e.srv)(o); err != nil {
			return err
		}
		if err := nats.CustomInboxPrefix(RelayInboxPrefix)(o); err != nil {
			return err
		}
		if e.auth != nil {
			return nats.UserInfo(e.auth.RelayUser, e.auth.RelayPassword)(o)
		}
		return nil
	}
}

// Stats are the server's own counters: messages received from clients
// (every publish, request, pull and ack) and JetStream API requests.
func (e *Embedded) Stats() (inMsgs, apiRequests uint64) {
	if v, err := e.srv.Varz(nil); err == nil {
		inMsgs = uint64(v.InMsgs)
	}
	if j, err := e.srv.Jsz(nil); err == nil {
		apiRequests = j.API.Total
	}
	return inMsgs, apiRequests
}

// WriteError reports a stream's file the store could not write (a full
// disk, an I/O error, a file size limit), or JetStream switched off (as
// nats-server does on a write it is not permitted). nats-server keeps
// either for good: nothing more is stored, and no publish is answered,
// until the server is started again. Every problem is looked at: the
// first alone (another stream that failed its recovery, say) hid the rest.
func (e *Embedded) WriteError() error {
	h := e.srv.Healthz(&server.HealthzOptions{Details: true})
	if h == nil {
		return nil
	}
	for _, p := range h.Errors {
		if p.Type == server.HealthzErrorJetStream || strings.Contains(p.Error, "write error") {
			return errors.New(p.Error)
		}
	}
	return nil
}

// Shutdown stops the server and waits until it has stopped. JetStream
// flushes its files on the way out.
func (e *Embedded) Shutdown() {
	if e.stopWatch != nil {
		close(e.stopWatch)
		<-e.watched
	}
	if e.guard != nil {
		e.guard.Close()
	}
	if e.pulls != nil {
		e.pulls.Close()
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.log.stop()
	e.unlock()
}
