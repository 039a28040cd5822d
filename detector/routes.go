package detector

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Announcer is the BGP side: it announces and withdraws routes. Calls come
// from one goroutine, in the order the decisions were taken.
type Announcer interface {
	Announce(ctx context.Context, prefixes []netip.Prefix) error
	Withdraw(ctx context.Context, prefixes []netip.Prefix) error
}

type routeChange struct {
	prefix   netip.Prefix
	announce bool
}

// routeQueue is the ordered queue of route changes between the decisions
// and BGP. Decisions push in decision order; one goroutine (run) folds what
// is queued to each prefix's last state and applies it, retrying failures.
type routeQueue struct {
	mu   sync.Mutex
	q    []routeChange
	wake chan struct{}
}

func newRouteQueue() *routeQueue { return &routeQueue{wake: make(chan struct{}, 1)} }

// push appends changes in decision order.
func (rq *routeQueue) push(cs ...routeChange) {
	if len(cs) == 0 {
		return
	}
	rq.mu.Lock()
	rq.q = append(rq.q, cs...)
	rq.mu.Unlock()
	poke(rq.wake)
}

func (rq *routeQueue) take() []routeChange {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	q := rq.q
	rq.q = nil
	return q
}

// requeue puts failed changes back in front of anything queued since.
func (rq *routeQueue) requeue(failed []routeChange) {
	rq.mu.Lock()
	rq.q = append(failed, rq.q...)
	rq.mu.Unlock()
}

// retryAfter is how long a failed route change waits before it is retried.
const retryAfter = time.Second

// run applies queued changes through routes until ctx ends.
func (rq *routeQueue) run(ctx context.Context, routes Announcer, log *slog.Logger) {
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-rq.wake:
		case <-retry:
			retry = nil
		}
		q := rq.take()
		if len(q) == 0 {
			continue
		}
		ann, wd := fold(q)
		var failed []routeChange
		if len(wd) > 0 {
			if err := routes.Withdraw(ctx, wd); err != nil {
				log.Error("withdrawing routes failed; will retry", "routes", len(wd), "err", err)
				for _, p := range wd {
					failed = append(failed, routeChange{p, false})
				}
			}
		}
		if len(ann) > 0 {
			if err := routes.Announce(ctx, ann); err != nil {
				log.Error("announcing routes failed; will retry", "routes", len(ann), "err", err)
				for _, p := range ann {
					failed = append(failed, routeChange{p, true})
				}
			}
		}
		if len(failed) > 0 && ctx.Err() == nil {
			rq.requeue(failed)
			retry = time.After(retryAfter)
		}
	}
}

// fold reduces a run of changes to each prefix's last state, in the order
// the prefixes first appear.
func fold(q []routeChange) (announce, withdraw []netip.Prefix) {
	last := make(map[netip.Prefix]bool, len(q))
	order := make([]netip.Prefix, 0, len(q))
	for _, c := range q {
		if _, seen := last[c.prefix]; !seen {
			order = append(order, c.prefix)
		}
		last[c.prefix] = c.announce
	}
	for _, p := range order {
		if last[p] {
			announce = append(announce, p)
		} else {
			withdraw = append(withdraw, p)
		}
	}
	return announce, withdraw
}

// poke does a non-blocking send on a wake-up channel.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
