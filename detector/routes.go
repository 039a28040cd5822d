package detector

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// Announcer is the BGP side: it announces and withdraws blackhole routes
// and FlowSpec filters. Calls come from one goroutine, in the order the
// decisions were taken.
type Announcer interface {
	Announce(ctx context.Context, prefixes []netip.Prefix) error
	Withdraw(ctx context.Context, prefixes []netip.Prefix) error
	// AnnounceFilters and WithdrawFilters take FlowSpec filters: keys
	// with a canonical Match (domain.FlowMatch.String).
	AnnounceFilters(ctx context.Context, filters []domain.Key) error
	WithdrawFilters(ctx context.Context, filters []domain.Key) error
}

// routeChange is one entry's new BGP state: a route (key.Match "") or a
// FlowSpec filter.
type routeChange struct {
	key      domain.Key
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
		annR, annF := splitKeys(ann)
		wdR, wdF := splitKeys(wd)
		var failed []routeChange
		if len(wdR) > 0 {
			if err := routes.Withdraw(ctx, wdR); err != nil {
				log.Error("withdrawing routes failed; will retry", "routes", len(wdR), "err", err)
				for _, p := range wdR {
					failed = append(failed, routeChange{domain.Key{Prefix: p}, false})
				}
			}
		}
		if len(wdF) > 0 {
			if err := routes.WithdrawFilters(ctx, wdF); err != nil {
				log.Error("withdrawing flowspec filters failed; will retry", "filters", len(wdF), "err", err)
				for _, k := range wdF {
					failed = append(failed, routeChange{k, false})
				}
			}
		}
		if len(annR) > 0 {
			if err := routes.Announce(ctx, annR); err != nil {
				log.Error("announcing routes failed; will retry", "routes", len(annR), "err", err)
				for _, p := range annR {
					failed = append(failed, routeChange{domain.Key{Prefix: p}, true})
				}
			}
		}
		if len(annF) > 0 {
			if err := routes.AnnounceFilters(ctx, annF); err != nil {
				log.Error("announcing flowspec filters failed; will retry", "filters", len(annF), "err", err)
				for _, k := range annF {
					failed = append(failed, routeChange{k, true})
				}
			}
		}
		if len(failed) > 0 && ctx.Err() == nil {
			rq.requeue(failed)
			retry = time.After(retryAfter)
		}
	}
}

// splitKeys splits keys into route prefixes and FlowSpec filters, each in
// the order given.
func splitKeys(ks []domain.Key) (routes []netip.Prefix, filters []domain.Key) {
	for _, k := range ks {
		if k.IsFilter() {
			filters = append(filters, k)
		} else {
			routes = append(routes, k.Prefix)
		}
	}
	return routes, filters
}

// fold reduces a run of changes to each entry's last state, in the order
// the entries first appear.
func fold(q []routeChange) (announce, withdraw []domain.Key) {
	last := make(map[domain.Key]bool, len(q))
	order := make([]domain.Key, 0, len(q))
	for _, c := range q {
		if _, seen := last[c.key]; !seen {
			order = append(order, c.key)
		}
		last[c.key] = c.announce
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
