package stream

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrPullerStopped is returned by Puller.Next once the puller's Run has
// returned.
var ErrPullerStopped = errors.New("puller stopped")

// Puller hands the messages of one pull consumer to workers that each ask
// for one when they are free to start it, with one pull request for every
// worker waiting at that moment instead of one request per message.
//
// A message is pulled only for a worker already waiting for it, so none
// waits in the client behind another (its ack wait covers its own
// processing only), as with one Next per worker. Each pull lasts at most
// the puller's maximum wait; a worker that got nothing from it is told
// jetstream.ErrNoMessages, as Next would, and asks again.
type Puller struct {
	cons    jetstream.Consumer
	maxWait time.Duration

	mu      sync.Mutex
	queue   []chan pulled // workers waiting for the next pull
	stopped bool
	wake    chan struct{} // a worker joined an empty queue
}

type pulled struct {
	msg jetstream.Msg
	err error
}

// NewPuller returns a puller for cons whose pulls wait at most maxWait for
// messages. Its Run must be running for Next to return a message.
func NewPuller(cons jetstream.Consumer, maxWait time.Duration) *Puller {
	return &Puller{cons: cons, maxWait: maxWait, wake: make(chan struct{}, 1)}
}

// Next blocks until the next pull ends and returns this worker's message,
// or jetstream.ErrNoMessages when the pull ended without one for it, the
// pull's error, or ErrPullerStopped. It never waits longer than one pull
// (the maximum wait, plus the client library's margin) after Run is
// running. Safe for concurrent use.
func (p *Puller) Next() (jetstream.Msg, error) {
	ch := make(chan pulled, 1)
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil, ErrPullerStopped
	}
	p.queue = append(p.queue, ch)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default: // already woken
	}
	r := <-ch
	return r.msg, r.err
}

// Run pulls for the waiting workers until ctx ends; a pull in progress
// then runs to its end (at most the maximum wait) and its messages reach
// their workers. Workers still queued, and those that ask later, get
// ErrPullerStopped.
func (p *Puller) Run(ctx context.Context) {
	defer p.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for ctx.Err() == nil {
			p.mu.Lock()
			batch := p.queue
			p.queue = nil
			p.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			p.pull(batch)
		}
	}
}

// pull makes one pull request for every worker in batch and answers each
// of them exactly once.
func (p *Puller) pull(batch []chan pulled) {
	b, err := p.cons.Fetch(len(batch), jetstream.FetchMaxWait(p.maxWait))
	i := 0
	if err == nil {
		// At most len(batch) messages arrive, each for the next worker in
		// line; they stream in as the server sends them.
		for m := range b.Messages() {
			if i == len(batch) { // never more than asked for; defensive
				_ = m.Nak()
				continue
			}
			batch[i] <- pulled{msg: m}
			i++
		}
		err = b.Error()
	}
	if err == nil {
		err = jetstream.ErrNoMessages
	}
	for ; i < len(batch); i++ {
		batch[i] <- pulled{err: err}
	}
}

func (p *Puller) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	for _, ch := range p.queue {
		ch <- pulled{err: ErrPullerStopped}
	}
	p.queue = nil
}
