package detector

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtbh/rtbh/detector/domain"
)

// Config configures a Manager.
type Config struct {
	Policy  Policy
	Reports ReportPolicy
	// ServerMemory is how long learned servers are remembered
	// (detector.server_memory); 0 means DefaultServerMemory.
	ServerMemory time.Duration
	// Retention (store.retention): reports, evidence and audit rows older
	// than this are deleted at start and every RetainEvery, except those of
	// active blackholes; 0 keeps everything.
	Retention time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultServerMemory is detector.server_memory's default.
const DefaultServerMemory = 168 * time.Hour

// Manager is the one decision path: every blackhole request — from an
// operator, a partner, report fusion or a detector rule — is checked
// against policy here (checkAdd), recorded in the store with its audit row,
// and handed to BGP. It also expires entries on time and streams changes to
// watchers.
//
// Decisions are taken under one mutex, in order; the store write is queued
// in that same order and the caller waits for the group commit outside the
// mutex, so concurrent requests share transactions. Route changes are
// queued in decision order too (routeQueue) and applied by one goroutine.
// The parts — active set and expiry (activeSet), watch fan-out (watchers),
// report scoring (scoreboard) — are plain data structures guarded by mu.
type Manager struct {
	log    *slog.Logger
	db     Store
	routes Announcer
	now    func() time.Time

	mu       sync.Mutex
	policy   Policy
	reports  ReportPolicy
	active   *activeSet
	watchers *watchers
	scores   *scoreboard
	restored bool // Restore has run

	serverMemory time.Duration
	retention    time.Duration // guarded by mu

	wake   chan struct{} // the earliest expiry may have changed, or a resync is due
	routeQ *routeQueue
	resync atomic.Bool // a write failed: rebuild state from the store
}

// NewManager loads the active set from db. Entries that expired while rtbhd
// was down are expired (and audited) by Run before anything is announced.
// The policy must have been validated (the config does that).
func NewManager(cfg Config, db Store, routes Announcer, logger *slog.Logger, reg prometheus.Registerer) (*Manager, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ServerMemory <= 0 {
		cfg.ServerMemory = DefaultServerMemory
	}
	m := &Manager{
		serverMemory: cfg.ServerMemory,
		retention:    cfg.Retention,
		log:          logger,
		db:           db,
		routes:       routes,
		now:          cfg.Now,
		policy:       cfg.Policy,
		reports:      cfg.Reports,
		active:       newActiveSet(),
		watchers:     newWatchers(logger),
		scores:       newScoreboard(cfg.Reports.MaxTrackedAddresses),
		wake:         make(chan struct{}, 1),
		routeQ:       newRouteQueue(),
	}
	m.mu.Lock()
	err := m.load(context.Background())
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if reg != nil {
		if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rtbh_blackholes_active",
			Help: "Active blackholes.",
		}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(m.active.len())
		})); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
		if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rtbh_reports_tracked_addresses",
			Help: "Reported addresses whose scores are kept in memory (at most reports.max_tracked_addresses).",
		}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(m.scores.len())
		})); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
		if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "rtbh_reports_evicted_addresses_total",
			Help: "Reported addresses forgotten, least recently reported first, to keep within reports.max_tracked_addresses.",
		}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(m.scores.evicted)
		})); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

// load replaces the in-memory state with the store's; m.mu must be held.
func (m *Manager) load(ctx context.Context) error {
	active, err := m.db.ActiveBlackholes(ctx)
	if err != nil {
		return fmt.Errorf("loading blackholes: %w", err)
	}
	var reps []domain.Report
	if m.reports.Window > 0 {
		if reps, err = m.db.ReportsSince(ctx, m.now().Add(-m.reports.Window)); err != nil {
			return fmt.Errorf("loading reports: %w", err)
		}
	}
	m.active.reset(active)
	m.scores.reset()
	for _, r := range reps {
		m.scores.mark(r.Address, r.Reporter, r.Trust, r.ObservedAt, r.Operator)
	}
	return nil
}

// SetPolicy replaces the policy (config reload). Active entries stay,
// except those the new never_blackhole or protected infrastructure covers;
// the new policy applies to new requests.
func (m *Manager) SetPolicy(p Policy, r ReportPolicy) {
	m.mu.Lock()
	m.policy, m.reports = p, r
	m.scores.setMax(r.MaxTrackedAddresses)
	waits := m.enforceNever()
	m.mu.Unlock()
	m.waitAll(waits)
}

// enforceNever ends active entries that overlap never_blackhole or
// protected infrastructure (forbidden): a policy change (reload, restart
// with a new config) applies to what is already announced, not only to new
// requests. m.mu must be held.
func (m *Manager) enforceNever() []func() error {
	var waits []func() error
	now := m.now().UTC()
	for _, p := range m.active.prefixes() {
		if err := forbidden(m.policy, p); err != nil {
			b, _ := m.active.get(p)
			m.log.Warn("withdrawing a blackhole that the policy now forbids", "prefix", p, "why", err.Error())
			waits = append(waits, m.end(b, "removed", "policy", err.Error(), now))
		}
	}
	return waits
}

// waitAll waits for queued writes, handling failures.
func (m *Manager) waitAll(waits []func() error) {
	for _, wait := range waits {
		if err := wait(); err != nil {
			m.writeFailed(err)
		}
	}
}

// Add checks req against policy, records it and announces it. Adding an
// active prefix keeps one entry and moves its expiry to the later of the
// two; when an operator adds a partner's entry, the operator takes it over
// (its origin becomes the operator's, audited, and the change is Extended
// even if the expiry did not move). The returned error is a *Error for
// refusals.
func (m *Manager) Add(ctx context.Context, req Request) (domain.Blackhole, Change, error) {
	m.mu.Lock()
	ttl, err := checkAdd(m.policy, req)
	if err != nil {
		m.mu.Unlock()
		return domain.Blackhole{}, 0, err
	}
	p := req.Prefix
	now := m.now().UTC()
	expires := now.Add(ttl)
	w := &domain.Write{At: now, Evidence: req.evidence}
	if req.offense {
		w.Offense = p.Addr()
	}
	audit := domain.AuditEntry{Actor: req.Actor, Prefix: p.String(), Origin: req.Origin, Reason: req.Reason}
	var (
		b      domain.Blackhole
		change Change
	)
	var takenFrom string
	if old, ok := m.active.get(p); ok {
		b = old
		later := expires.After(old.ExpiresAt)
		// An operator who adds or extends a partner's entry takes it over
		// (SPEC.md): the partner can no longer remove it. This holds for a
		// re-add that does not move the expiry too.
		if domain.IsOperatorOrigin(req.Origin) && domain.IsPartnerOrigin(old.Origin) {
			takenFrom = old.Origin
			b.Origin = req.Origin
		}
		switch {
		case later:
			change = Extended
			b.ExpiresAt = expires
			w.Op = domain.BlackholeExtend
			audit.Action = "extend"
			audit.Detail = fmt.Sprintf("expires_at %s -> %s", old.ExpiresAt.Format(time.RFC3339), expires.Format(time.RFC3339))
			m.active.put(b)
			poke(m.wake)
		case takenFrom != "":
			change = Extended
			w.Op = domain.BlackholeExtend
			audit.Action = "add"
			audit.Detail = fmt.Sprintf("already active until %s", old.ExpiresAt.Format(time.RFC3339))
			m.active.put(b)
		default:
			change = Unchanged
			audit.Action = "add"
			audit.Detail = fmt.Sprintf("already active until %s (origin %s)", old.ExpiresAt.Format(time.RFC3339), old.Origin)
		}
		if takenFrom != "" {
			audit.Detail += "; taken over from " + takenFrom
		}
	} else {
		if m.active.len() >= m.policy.MaxActive {
			m.mu.Unlock()
			return domain.Blackhole{}, 0, refuse(KindLimit, "max_active (%d) blackholes are active: refusing %s", m.policy.MaxActive, p)
		}
		change = Added
		b = domain.Blackhole{Prefix: p, Origin: req.Origin, Reason: req.Reason, CreatedAt: now, ExpiresAt: expires}
		w.Op = domain.BlackholeInsert
		audit.Action = "add"
		audit.Detail = "expires_at " + expires.Format(time.RFC3339)
		m.active.put(b)
		poke(m.wake)
		m.routeQ.push(routeChange{p, true})
	}
	w.Blackhole = b
	w.Audit = []domain.AuditEntry{audit}
	wait := m.db.Submit(w)
	switch change {
	case Added:
		m.watchers.broadcast(Event{Type: EventAdded, Blackhole: b, Actor: req.Actor})
	case Extended:
		m.watchers.broadcast(Event{Type: EventExtended, Blackhole: b, Actor: req.Actor, TakenOverFrom: takenFrom})
	}
	m.mu.Unlock()
	if err := wait(); err != nil {
		m.writeFailed(err)
		return domain.Blackhole{}, 0, fmt.Errorf("recording blackhole %s: %w", p, err)
	}
	return b, change, nil
}

// Remove withdraws an active blackhole now.
func (m *Manager) Remove(ctx context.Context, req RemoveRequest) (domain.Blackhole, error) {
	if err := checkRemove(req); err != nil {
		return domain.Blackhole{}, err
	}
	p := req.Prefix
	m.mu.Lock()
	b, ok := m.active.get(p)
	if !ok {
		m.mu.Unlock()
		return domain.Blackhole{}, refuse(KindNotFound, "%s is not blackholed", p)
	}
	if req.Owner != "" && b.Origin != req.Owner {
		m.mu.Unlock()
		return domain.Blackhole{}, refuse(KindScope, "%s belongs to %s, not to you", p, b.Origin)
	}
	wait := m.end(b, "removed", req.Actor, req.Reason, m.now().UTC())
	m.mu.Unlock()
	if err := wait(); err != nil {
		m.writeFailed(err)
		return domain.Blackhole{}, fmt.Errorf("recording removal of %s: %w", p, err)
	}
	return b, nil
}

// end ends an active entry; m.mu must be held.
func (m *Manager) end(b domain.Blackhole, why, actor, reason string, now time.Time) func() error {
	m.active.delete(b.Prefix)
	m.routeQ.push(routeChange{b.Prefix, false})
	audit := domain.AuditEntry{Actor: actor, Action: "remove", Prefix: b.Prefix.String(), Origin: b.Origin, Reason: reason}
	typ := EventRemoved
	if why == "expired" {
		audit.Action, audit.Detail, typ = "expire", "expires_at "+b.ExpiresAt.Format(time.RFC3339), EventExpired
	}
	m.watchers.broadcast(Event{Type: typ, Blackhole: b, Actor: actor})
	return m.db.Submit(&domain.Write{Op: domain.BlackholeEnd, Blackhole: b, EndReason: why, At: now,
		Audit: []domain.AuditEntry{audit}})
}

// Active returns the active blackholes sorted by prefix.
func (m *Manager) Active() []domain.Blackhole {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active.sorted()
}

// Lookup returns the active blackhole for p, if any.
func (m *Manager) Lookup(p netip.Prefix) (domain.Blackhole, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active.get(p)
}

// Watch returns the active set and a channel of every later change. The
// channel is closed when ctx ends, or when the watcher falls more than
// watchBuffer events behind (the client should reconnect). Events wait
// for the reader in a queue that grows only as far as it falls behind.
func (m *Manager) Watch(ctx context.Context) ([]domain.Blackhole, <-chan Event) {
	m.mu.Lock()
	snap := m.active.sorted()
	w := m.watchers.add()
	m.mu.Unlock()
	go func() {
		w.pump(ctx)
		m.mu.Lock()
		m.watchers.remove(w)
		m.mu.Unlock()
	}()
	return snap, w.ch
}

// Restore expires what ran out while rtbhd was down (auditing it) and
// announces every remaining entry. Call it before the BGP sessions start,
// so that routers in graceful restart get the whole set before End-of-RIB
// and never flush a blackhole that is still active.
func (m *Manager) Restore(ctx context.Context) error {
	m.expireDue()
	m.mu.Lock()
	waits := m.enforceNever()
	m.mu.Unlock()
	m.waitAll(waits)
	m.mu.Lock()
	all := m.active.prefixes()
	m.restored = true
	m.mu.Unlock()
	if err := m.routes.Announce(ctx, all); err != nil {
		return fmt.Errorf("announcing %d stored blackholes: %w", len(all), err)
	}
	return nil
}

// pruneEvery is how often report scores that left the window are dropped.
const pruneEvery = time.Minute

// Run expires entries on time and applies route changes until ctx ends.
// Without an earlier Restore it restores first.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	restored := m.restored
	m.mu.Unlock()
	if !restored {
		if err := m.Restore(ctx); err != nil {
			return err
		}
	}

	var wg sync.WaitGroup
	wg.Go(func() { m.routeQ.run(ctx, m.routes, m.log) })
	wg.Go(func() { m.retain(ctx) })
	defer wg.Wait()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	prune := time.NewTicker(pruneEvery)
	defer prune.Stop()
	for {
		m.mu.Lock()
		next, ok := m.active.next()
		m.mu.Unlock()
		d := time.Hour
		if ok {
			d = max(next.Sub(m.now()), 0)
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			m.expireDue()
		case <-m.wake:
		case <-prune.C:
			m.pruneScores()
		}
		if m.resync.Swap(false) {
			m.rebuild(ctx)
		}
	}
}

func (m *Manager) expireDue() {
	m.mu.Lock()
	now := m.now().UTC()
	var waits []func() error
	for {
		b, ok := m.active.popDue(now)
		if !ok {
			break
		}
		waits = append(waits, m.end(b, "expired", "expiry", "ttl elapsed", now))
	}
	m.mu.Unlock()
	m.waitAll(waits)
}

// writeFailed handles a failed store write: memory may now be ahead of the
// store, so Run rebuilds the state from the store and re-syncs BGP.
func (m *Manager) writeFailed(err error) {
	m.log.Error("store write failed; rebuilding state from the store", "err", err)
	m.resync.Store(true)
	poke(m.wake)
}

// rebuild replaces the in-memory state with the store's after a failed
// write and queues the route changes that make BGP match it. It holds m.mu
// throughout, and first waits for every write submitted before it (an
// empty write queued behind them), so no decision can slip between the
// store read and the new state.
func (m *Manager) rebuild(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_ = m.db.Submit(&domain.Write{At: m.now().UTC()})()
	before := m.active.prefixes()
	if err := m.load(ctx); err != nil {
		m.log.Error("rebuilding state from the store failed", "err", err)
		m.resync.Store(true)
		return
	}
	var cs []routeChange
	for _, p := range before {
		if _, ok := m.active.get(p); !ok {
			cs = append(cs, routeChange{p, false})
		}
	}
	for _, p := range m.active.prefixes() {
		cs = append(cs, routeChange{p, true})
	}
	m.routeQ.push(cs...)
}
