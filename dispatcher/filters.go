package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sengo-relay/sengo-relay/event"
	"github.com/sengo-relay/sengo-relay/stream"
)

// The relays share an endpoint's consumer, and nats-server keeps one
// filter for it: the last update's. A filter narrower than a running
// relay's made the server skip, for good, the events only that relay's
// filter takes: the consumer's position moves past them and no relay
// posts or dead-letters them. During a rolling deploy that widens a
// filter, a relay on the old configuration that started again (a crash,
// a drained node) did just that. So each relay tells its endpoints'
// filters in its heartbeat, written before its workers set any consumer,
// and the consumer's filter is the union of this relay's and those the
// recent heartbeats give the endpoint (readPeers), set as a worker starts
// and every heartbeat after (the retirer's syncFilters). A relay that
// stops leaves its filters told for as long as its heartbeat is recent
// (two minutes at least): a restart of the only relay on a wider filter
// narrows nothing. The filter narrows once the relays with a wider one
// have been gone that long.

// peers is what the recent heartbeats of the relays other than this one
// say of their endpoints' filters.
type peers struct {
	// known: this relay's own heartbeat was there to date the others by
	// the server's clock (none yet: nothing is known).
	known   bool
	filters map[string][]string // endpoint: the subjects recent heartbeats give it
	// unknown: endpoints that a recent heartbeat names without saying
	// their filter (a relay of a version before they were told).
	unknown map[string]bool
}

// of is what p says of endpoint: the subjects the other relays' filters
// take, and whether those are all of them.
func (p peers) of(endpoint string) (subjects []string, known bool) {
	return p.filters[endpoint], p.known && !p.unknown[endpoint]
}

// errNoHeartbeat: this relay's heartbeat is not written yet.
var errNoHeartbeat = errors.New("this relay's heartbeat is not written yet")

// readPeers reads the heartbeats of the relays other than instance, each
// from the bucket's leader: a replica not caught up would miss one a
// relay that just started wrote before it widened a consumer. A heartbeat
// is recent when it was stored less than three of its relay's intervals
// (heartbeatFresh at least) before this relay's own (instance's). Empty
// instance: nothing is known.
func readPeers(ctx context.Context, js jetstream.JetStream, instance string) (peers, error) {
	var p peers
	if instance == "" {
		return p, nil
	}
	mine, err := readHeartbeat(ctx, js, relayKey(instance))
	if err != nil || mine == nil {
		return p, err
	}
	keys, err := stream.Keys(ctx, js, event.BucketDelivery, relayKey("*"))
	if err != nil {
		return p, err
	}
	p.known, p.filters, p.unknown = true, map[string][]string{}, map[string]bool{}
	for _, k := range keys {
		if k == relayKey(instance) {
			continue
		}
		m, err := readHeartbeat(ctx, js, k)
		if err != nil {
			return peers{}, err
		} else if m == nil {
			continue // deleted (its relay stopped before heartbeats told filters)
		}
		var h heartbeat
		if json.Unmarshal(m.Data, &h) != nil || mine.Time.Sub(m.Time) > max(3*h.Every, heartbeatFresh) {
			continue
		}
		if h.Filters == nil {
			for _, e := range h.Endpoints {
				p.unknown[e] = true
			}
			continue
		}
		for e, f := range h.Filters {
			p.filters[e] = append(p.filters[e], f...)
		}
	}
	return p, nil
}

// readHeartbeat is the heartbeat at key, from the bucket's leader; nil
// when there is none (or it was deleted).
func readHeartbeat(ctx context.Context, js jetstream.JetStream, key string) (*jetstream.RawStreamMsg, error) {
	m, err := stream.LeaderGetLast(ctx, js, "KV_"+event.BucketDelivery, "$KV."+event.BucketDelivery+"."+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read heartbeat %s: %w", key, err)
	}
	if m.Header.Get("KV-Operation") != "" {
		return nil, nil
	}
	return m, nil
}

// filterCover is one set of filter subjects that takes every subject of
// sets and that nats-server accepts: none a subset of another (it refuses
// those, not subjects that only overlap, and delivers a message both take
// once). A subject another takes whole is left out.
func filterCover(sets ...[]string) []string {
	all := slices.Concat(sets...)
	var out []string
	for i, s := range all {
		if !slices.ContainsFunc(all[:i], func(o string) bool { return covers(o, s) }) &&
			!slices.ContainsFunc(all[i+1:], func(o string) bool { return covers(o, s) && !covers(s, o) }) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// covers reports whether filter subject a takes every subject b takes.
func covers(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i, t := range at {
		if t == ">" {
			return i < len(bt)
		}
		if i >= len(bt) || bt[i] == ">" || t != "*" && t != bt[i] {
			return false
		}
	}
	return len(at) == len(bt)
}

// liveFilters is the filter the endpoint's consumer on SENGO_EVENTS gets
// from this relay: its own, with those the other relays' recent
// heartbeats give it (p); when those are not all told (a relay that does
// not say its filter), with the consumer's present filter too, so that
// nothing is narrowed.
func liveFilters(p peers, ep Endpoint, present []string) []string {
	subjects, known := p.of(ep.Name)
	if !known {
		return filterCover(ep.FilterSubjects, subjects, present)
	}
	return filterCover(ep.FilterSubjects, subjects)
}

// consumerFilters is liveFilters for ep's consumer on SENGO_EVENTS as it
// is now (none: not there). With instance set, this relay's heartbeat
// must be written first (errNoHeartbeat): a consumer widened before the
// other relays can read why would be narrowed again by them, and what
// they get of it settled as filtered.
func consumerFilters(ctx context.Context, js jetstream.JetStream, instance string, ep Endpoint) ([]string, error) {
	if instance == "" {
		return ep.FilterSubjects, nil
	}
	// The consumer first, then the heartbeats: a relay widens it only
	// after its heartbeat is written, so a wide filter read first comes
	// with the heartbeat that tells why. The other way round, a relay
	// that started between the two reads was not seen, and its filter
	// narrowed.
	var present []string
	cons, err := js.Consumer(ctx, event.StreamEvents, ConsumerName(ep.Name))
	switch {
	case err == nil:
		present = stream.ConsumerFilters(cons.CachedInfo())
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("look up consumer %s on %s: %w", ConsumerName(ep.Name), event.StreamEvents, err)
	}
	p, err := readPeers(ctx, js, instance)
	if err != nil {
		return nil, fmt.Errorf("the relays' filters of endpoint %s: %w", ep.Name, err)
	}
	if !p.known {
		return nil, fmt.Errorf("the relays' filters of endpoint %s: %w", ep.Name, errNoHeartbeat)
	}
	return liveFilters(p, ep, present), nil
}
