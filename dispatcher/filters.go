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
// a drained node) did just that. So the consumer's filter is the union of
// this relay's filter and those the recent heartbeats of the other relays
// give the endpoint (peerFilters), set as a worker starts and every
// heartbeat after (the retirer's syncFilters): it narrows only once the
// relays with a wider filter are gone.

// peerFilters returns the filter subjects that the recent heartbeats of
// relays other than instance give endpoint, and known: whether this
// relay's own heartbeat, which dates the others by the server's clock, was
// there to tell which are recent, and every recent one that names the
// endpoint says its filter (a relay from before heartbeats carried them
// does not).
func peerFilters(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, instance, endpoint string) (subjects []string, known bool, err error) {
	if instance == "" {
		return nil, false, nil
	}
	mine, err := kv.Get(ctx, relayKey(instance))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	keys, err := stream.Keys(ctx, js, event.BucketDelivery, relayKey("*"))
	if err != nil {
		return nil, false, err
	}
	known = true
	for _, k := range keys {
		if k == relayKey(instance) {
			continue
		}
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		} else if err != nil {
			return nil, false, err
		}
		var h heartbeat
		if json.Unmarshal(e.Value(), &h) != nil || mine.Created().Sub(e.Created()) > max(3*h.Every, heartbeatFresh) || !slices.Contains(h.Endpoints, endpoint) {
			continue
		}
		f, ok := h.Filters[endpoint]
		if !ok {
			known = false
			continue
		}
		subjects = append(subjects, f...)
	}
	return subjects, known, nil
}

// filterCover is one set of filter subjects that takes every subject of
// sets and that nats-server accepts: none overlapping another. A subject
// another takes whole is left out; when two still overlap (a status of
// every project, and every status of one project), the cover is every
// event, and the relays' own filters (takes) decide.
func filterCover(sets ...[]string) []string {
	var all []string
	for _, s := range sets {
		all = append(all, s...)
	}
	var out []string
	for i, s := range all {
		covered := false
		for j, o := range all {
			if j != i && covers(o, s) && (!covers(s, o) || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, s)
		}
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if overlap(out[i], out[j]) {
				return []string{event.SubjectsEvents}
			}
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

// overlap reports whether some subject is taken by both a and b.
func overlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		if at[i] == ">" || bt[i] == ">" {
			return true
		}
		if at[i] != "*" && bt[i] != "*" && at[i] != bt[i] {
			return false
		}
	}
	return len(at) == len(bt)
}

// liveFilters is the filter the endpoint's consumer on SENGO_EVENTS gets
// from this relay: its own, with those of the other relays' recent
// heartbeats; when those cannot be told (no heartbeat of this relay yet,
// or one from a relay that does not say its filter), with the consumer's
// present filter too, so that nothing is narrowed.
func liveFilters(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, instance string, ep Endpoint, present []string) ([]string, error) {
	if instance == "" {
		return ep.FilterSubjects, nil
	}
	peers, known, err := peerFilters(ctx, js, kv, instance, ep.Name)
	if err != nil {
		return nil, err
	}
	if !known {
		return filterCover(ep.FilterSubjects, peers, present), nil
	}
	return filterCover(ep.FilterSubjects, peers), nil
}

// consumerFilters is liveFilters for ep's consumer on SENGO_EVENTS as it
// is now (none: not there).
func consumerFilters(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, instance string, ep Endpoint) ([]string, error) {
	var present []string
	cons, err := js.Consumer(ctx, event.StreamEvents, ConsumerName(ep.Name))
	switch {
	case err == nil:
		present = stream.ConsumerFilters(cons.CachedInfo())
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("look up consumer %s on %s: %w", ConsumerName(ep.Name), event.StreamEvents, err)
	}
	filters, err := liveFilters(ctx, js, kv, instance, ep, present)
	if err != nil {
		return nil, fmt.Errorf("the relays' filters of endpoint %s: %w", ep.Name, err)
	}
	return filters, nil
}
