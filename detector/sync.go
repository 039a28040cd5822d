package detector

import (
	"context"
	"net/netip"

	"github.com/rtbh/rtbh/detector/domain"
)

// Several rtbhd instances on one shared store (store.driver: postgres)
// each run a Manager. Each decides on its own requests as usual; what the
// others commit reaches it through Sync (incremental) and Resync (full),
// driven by the store's change notifications, so that its active set,
// expiry heap, committed view, watchers and BGP follow the store. Work that
// must happen once across instances — expiry, report fusion and retention
// — is done only while the leadership function says so.

// SetLeadership makes the Manager expire entries, fuse reports and apply
// the retention only while leads returns true (nil, the default: always).
// Call it before Run; call LeadershipChanged when its answer changes.
func (m *Manager) SetLeadership(leads func() bool) {
	if leads == nil {
		m.leader.Store(nil)
		return
	}
	m.leader.Store(&leads)
}

// leads reports whether this instance does the once-only work.
func (m *Manager) leads() bool {
	f := m.leader.Load()
	return f == nil || (*f)()
}

// LeadershipChanged wakes Run to re-arm (or stop) the expiry timer.
func (m *Manager) LeadershipChanged() { poke(m.wake) }

// Resync replaces the decisions' state with the store's and makes the
// committed view, the watchers and BGP match it (after a shared store's
// listener (re)connected: whatever it missed is in the store).
func (m *Manager) Resync(ctx context.Context) error { return m.rebuild(ctx) }

// syncActor is the actor of watch events for changes other instances made.
const syncActor = "sync"

// Sync applies changes that other instances committed. It holds the
// decision lock throughout: it first waits for this instance's writes in
// flight, then calls fetch, so that what fetch reads is at least as new as
// every decision this instance took, and no decision slips in between.
// Rows come in commit order; an ended row ends the local entry only if it
// is the same entry (its created_at), since this instance may have added
// the prefix again since. Reports other instances stored count in the
// scores here too, and the leader fuses them.
func (m *Manager) Sync(ctx context.Context, fetch func(context.Context) (domain.Changes, error)) error {
	m.mu.Lock()
	m.cmu.Lock()
	var last *inflight
	if n := len(m.unsettled); n > 0 {
		last = m.unsettled[n-1]
	}
	m.cmu.Unlock()
	if last != nil {
		// Its failure is handled by its own waiter.
		_ = m.settle(last)
	}
	ch, err := fetch(ctx)
	if err != nil || m.stale {
		// A stale state is rebuilt from the store anyway (Run).
		m.mu.Unlock()
		return err
	}
	m.cmu.Lock()
	for _, c := range ch.Blackholes {
		m.applyRemote(c)
	}
	m.cmu.Unlock()
	addrs := make([]netip.Addr, 0, len(ch.Reports))
	for _, r := range ch.Reports {
		m.scores.mark(r.Address, r.Reporter, r.Trust, r.ObservedAt, r.Operator)
		addrs = append(addrs, r.Address)
	}
	m.mu.Unlock()
	if len(addrs) > 0 {
		m.fuse(ctx, addrs, m.now().UTC())
	}
	return nil
}

// applyRemote applies one row another instance committed to the active
// set and the committed view; m.mu and m.cmu must be held, and no write of
// this instance in flight (so the two agree).
func (m *Manager) applyRemote(c domain.Change) {
	b := c.Blackhole
	p := b.Key()
	if c.Ended {
		if old, ok := m.active.get(p); ok && old.CreatedAt.Equal(b.CreatedAt) {
			m.active.delete(p)
		}
		if old, ok := m.committed[p]; ok && old.CreatedAt.Equal(b.CreatedAt) {
			typ := EventRemoved
			if c.EndReason == "expired" {
				typ = EventExpired
			}
			m.applyCommitted(Event{Type: typ, Blackhole: old, Actor: syncActor}, routeChange{p, false})
		}
		return
	}
	if old, ok := m.active.get(p); !ok || !sameEntry(old, b) {
		m.active.put(b)
		poke(m.wake)
	}
	switch old, ok := m.committed[p]; {
	case !ok:
		m.applyCommitted(Event{Type: EventAdded, Blackhole: b, Actor: syncActor}, routeChange{p, true})
	case !sameEntry(old, b):
		m.applyCommitted(Event{Type: EventExtended, Blackhole: b, Actor: syncActor})
	}
}
