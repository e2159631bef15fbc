package stream

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/sengo-relay/sengo-relay/verify"
)

// ConnectConfig configures a client connection.
type ConnectConfig struct {
	// URL is one server or a comma-separated list of cluster members.
	URL string
	// CredsFile is a NATS credentials file (JWT + nkey); optional.
	CredsFile string
	// Token is a NATS auth token; optional. Never logged.
	Token string
	// Name identifies the connection in server monitoring.
	Name string
	// Closed, when set, is called if the connection closes for good
	// without Close or Drain having been called by this process: nats.go
	// gives up on a connection the server dropped for a protocol error
	// (for example a subject over its 4 KiB control line), and nothing
	// works on it afterwards.
	Closed func(*nats.Conn)
	Logger zerolog.Logger
}

// ReadQueue is the option for connections that only read (the console's
// and the admin API's): the queue of a synchronous subscription, which
// every batched direct get creates for its answers, holds readQueueLen
// messages instead of the client library's 65,536. The library allocates
// that queue whole for each get: 512 KiB of pointers per get, four a story,
// all garbage a moment later, where the largest batch (history.MaxRead
// and readBatch, each well under readQueueLen) needs a few KiB.
func ReadQueue() nats.Option { return nats.SyncQueueLen(readQueueLen) }

// readQueueLen bounds a read connection's synchronous subscriptions.
const readQueueLen = 2048

// Connect opens a connection that never gives up reconnecting: a NATS
// outage turns publishes into errors (the receiver answers 503) until the
// server is back, and the relay keeps running. extra options are applied
// last (the embedded server passes its in-process option here).
func Connect(cfg ConnectConfig, extra ...nats.Option) (*nats.Conn, error) {
	log := cfg.Logger
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil on a deliberate close
				log.Warn().Err(err).Msg("nats disconnected")
			}
		}),
		// A connection that fails (the first, or after a disconnect) says
		// why: a server down, a wrong token and an untrusted certificate
		// looked alike, as provisioning's "context deadline exceeded".
		// Once while the reason stays the same, and again each minute,
		// for all of the process's connections.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if connectFailures.first(err) {
				log.Warn().Err(WithoutURL(err)).Str("connection", cfg.Name).Msg("nats connect failed; retrying")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", verify.RedactServerURL(nc.ConnectedUrl())).Msg("nats reconnected") // a user alone is a token
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}
	if cfg.Closed != nil {
		opts = append(opts, nats.ClosedHandler(func(nc *nats.Conn) {
			log.Error().Err(nc.LastError()).Str("connection", cfg.Name).Msg("nats connection closed for good")
			cfg.Closed(nc)
		}))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", WithoutURL(err))
	}
	return nc, nil
}

// connectFailures is what the process's connections last said of a
// failed connect.
var connectFailures failureLog

// failureLog tells which connect errors to log: nats.go calls back at
// every try of every connection, two a second each.
type failureLog struct {
	mu   sync.Mutex
	last string
	at   time.Time
}

// first reports whether err differs from the last one logged, or came a
// minute after it. nats.go's "no servers available", with which a first
// connect fails before its first real try, says nothing and is not logged.
func (f *failureLog) first(err error) bool {
	if err == nil || errors.Is(err, nats.ErrNoServers) {
		return false
	}
	why := reasonOf(err)
	f.mu.Lock()
	defer f.mu.Unlock()
	if why == f.last && time.Since(f.at) < time.Minute {
		return false
	}
	f.last, f.at = why, time.Now()
	return true
}

// reasonOf is err without the address it names: a cluster's URL list is
// tried server after server, and "connection refused" from each, told
// apart by its address, was logged every time.
func reasonOf(err error) string {
	if dns, ok := errors.AsType[*net.DNSError](err); ok { // inside a dial's OpError, naming the host
		return "lookup: " + dns.Err
	}
	if cert, ok := errors.AsType[x509.CertificateInvalidError](err); ok { // its text has the time
		return fmt.Sprintf("x509: certificate invalid (%d)", cert.Reason)
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Err != nil {
		return op.Op + ": " + op.Err.Error()
	}
	return err.Error()
}

// ErrUnparsableURL replaces nats.go's error for a server URL that does not
// parse, which repeats the URL, password included.
var ErrUnparsableURL = errors.New("a server URL does not parse as a URL (a password with '%', '/', '#' or '?' in it must be percent-encoded)")

// WithoutURL is err from nats.Connect, with ErrUnparsableURL in place of
// an error that repeats an unparsable server URL.
func WithoutURL(err error) error {
	if _, ok := errors.AsType[*url.Error](err); ok {
		return ErrUnparsableURL
	}
	return err
}
