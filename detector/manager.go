package detector

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/store"
)

// Policy is the operator's policy every blackhole request is checked
// against (the policy section of the config).
type Policy struct {
	OwnPrefixes    []netip.Prefix
	NeverBlackhole []netip.Prefix
	MaxActive      int
	DefaultTTL     time.Duration
	MaxTTL         time.Duration
	MinPrefixLenV4 int
	MinPrefixLenV6 int
}

// ReportPolicy is how partner reports become blackholes.
type ReportPolicy struct {
	Window    time.Duration // reports observed longer ago stop counting
	Threshold float64       // score at which the address is blackholed
	TTL       time.Duration // TTL of a blackhole caused by reports
}

// Announcer is the BGP side: it announces and withdraws routes. Calls come
// from one goroutine, in the order the decisions were taken.
type Announcer interface {
	Announce(ctx context.Context, prefixes []netip.Prefix) error
	Withdraw(ctx context.Context, prefixes []netip.Prefix) error
}

// Config configures a Manager.
type Config struct {
	Policy  Policy
	Reports ReportPolicy
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Manager is the one decision path: every blackhole request — from an
// operator, a partner, report fusion or a detector rule — is validated
// against policy here, recorded in the store with its audit row, and handed
// to BGP. It also expires entries on time and streams changes to watchers.
//
// Decisions are taken under one mutex, in order; the store write is queued
// in that same order and the caller waits for the group commit outside the
// mutex, so concurrent requests share transactions. Route changes are
// queued in decision order too and applied by one goroutine (Run).
type Manager struct {
	log    *slog.Logger
	db     *store.DB
	routes Announcer
	now    func() time.Time

	mu       sync.Mutex
	policy   Policy
	reports  ReportPolicy
	active   map[netip.Prefix]domain.Blackhole
	expiry   expiryHeap
	watchers map[*watcher]struct{}
	scores   map[netip.Addr]map[string]reportMark // address -> reporter -> newest report

	wake chan struct{} // the earliest expiry may have changed

	routeMu   sync.Mutex
	routeQ    []routeChange
	routeWake chan struct{}
	resync    bool // a write failed: rebuild state from the store

	restored bool // Restore has run (guarded by mu)
}

type reportMark struct {
	trust float64
	at    time.Time // newest observed_at from this reporter
}

type routeChange struct {
	prefix   netip.Prefix
	announce bool
}

type watcher struct{ ch chan Event }

// watchBuffer is how many events a watcher may fall behind before it is
// dropped (its channel closed) so that one slow client cannot stall rtbh.
const watchBuffer = 65536

// NewManager loads the active set from db. Entries that expired while rtbhd
// was down are expired (and audited) by Run before anything is announced.
func NewManager(cfg Config, db *store.DB, routes Announcer, logger *slog.Logger, reg prometheus.Registerer) (*Manager, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Policy.validate(); err != nil {
		return nil, err
	}
	m := &Manager{
		log:       logger,
		db:        db,
		routes:    routes,
		now:       cfg.Now,
		policy:    cfg.Policy,
		reports:   cfg.Reports,
		active:    make(map[netip.Prefix]domain.Blackhole),
		watchers:  make(map[*watcher]struct{}),
		scores:    make(map[netip.Addr]map[string]reportMark),
		wake:      make(chan struct{}, 1),
		routeWake: make(chan struct{}, 1),
	}
	if err := m.load(context.Background()); err != nil {
		return nil, err
	}
	if reg != nil {
		if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rtbh_blackholes_active",
			Help: "Active blackholes.",
		}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(len(m.active))
		})); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

func (p Policy) validate() error {
	if p.MaxActive < 1 {
		return errors.New("policy: max_active must be at least 1")
	}
	if p.DefaultTTL <= 0 || p.MaxTTL <= 0 {
		return errors.New("policy: default_ttl and max_ttl must be positive")
	}
	return nil
}

// load rebuilds the in-memory state from the store.
func (m *Manager) load(ctx context.Context) error {
	active, err := m.db.ActiveBlackholes(ctx)
	if err != nil {
		return fmt.Errorf("loading blackholes: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.active)
	m.expiry = m.expiry[:0]
	for _, b := range active {
		m.active[b.Prefix] = b
		m.expiry = append(m.expiry, expiryItem{b.ExpiresAt, b.Prefix})
	}
	heap.Init(&m.expiry)
	if m.reports.Window > 0 {
		reps, err := m.db.ReportsSince(ctx, m.now().Add(-m.reports.Window))
		if err != nil {
			return fmt.Errorf("loading reports: %w", err)
		}
		clear(m.scores)
		for _, r := range reps {
			m.markReport(r.Address, r.Reporter, r.Trust, r.ObservedAt)
		}
	}
	return nil
}

// SetPolicy replaces the policy (config reload). Active entries stay; the
// new policy applies to new requests.
func (m *Manager) SetPolicy(p Policy, r ReportPolicy) error {
	if err := p.validate(); err != nil {
		return err
	}
	m.mu.Lock()
	m.policy, m.reports = p, r
	waits := m.enforceNever()
	m.mu.Unlock()
	m.waitAll(waits)
	return nil
}

// enforceNever ends active entries that overlap never_blackhole: a policy
// change (reload, restart with a new config) applies to what is already
// announced, not only to new requests. m.mu must be held.
func (m *Manager) enforceNever() []func() error {
	var waits []func() error
	now := m.now().UTC()
	for p, b := range m.active {
		if n, ok := neverOverlap(p, m.policy.NeverBlackhole); ok {
			m.log.Warn("withdrawing a blackhole that policy.never_blackhole now covers", "prefix", p, "never_blackhole", n)
			waits = append(waits, m.end(b, "removed", "policy", "overlaps "+n.String()+" in policy.never_blackhole", now))
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

// Add validates req against policy, records it and announces it. Adding an
// active prefix keeps one entry and moves its expiry to the later of the
// two. The returned error is a *Error for refusals.
func (m *Manager) Add(ctx context.Context, req Request) (domain.Blackhole, Change, error) {
	// Malformed requests are INVALID_ARGUMENT whatever else is wrong with
	// them; then scope, then policy.
	p := req.Prefix
	if err := checkWellFormed(p); err != nil {
		return domain.Blackhole{}, 0, err
	}
	ttl := req.TTL
	if ttl < 0 || (req.HasTTL && ttl == 0) {
		return domain.Blackhole{}, 0, refuse(KindInvalid, "ttl must be positive, got %s", ttl)
	}
	m.mu.Lock()
	pol := m.policy
	if err := checkAllowed(p, req.Scope, pol); err != nil {
		m.mu.Unlock()
		return domain.Blackhole{}, 0, err
	}
	switch {
	case ttl == 0:
		ttl = pol.DefaultTTL
	case ttl > pol.MaxTTL:
		ttl = pol.MaxTTL
	}
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
	if old, ok := m.active[p]; ok {
		b = old
		if expires.After(old.ExpiresAt) {
			change = Extended
			b.ExpiresAt = expires
			w.Op = domain.BlackholeExtend
			audit.Action = "extend"
			audit.Detail = fmt.Sprintf("expires_at %s -> %s", old.ExpiresAt.Format(time.RFC3339), expires.Format(time.RFC3339))
			m.active[p] = b
			heap.Push(&m.expiry, expiryItem{expires, p})
			m.compactExpiry()
			m.poke(m.wake)
		} else {
			change = Unchanged
			audit.Action = "add"
			audit.Detail = fmt.Sprintf("already active until %s (origin %s)", old.ExpiresAt.Format(time.RFC3339), old.Origin)
		}
	} else {
		if len(m.active) >= pol.MaxActive {
			m.mu.Unlock()
			return domain.Blackhole{}, 0, refuse(KindLimit, "max_active (%d) blackholes are active: refusing %s", pol.MaxActive, p)
		}
		change = Added
		b = domain.Blackhole{Prefix: p, Origin: req.Origin, Reason: req.Reason, CreatedAt: now, ExpiresAt: expires}
		w.Op = domain.BlackholeInsert
		audit.Action = "add"
		audit.Detail = "expires_at " + expires.Format(time.RFC3339)
		m.active[p] = b
		heap.Push(&m.expiry, expiryItem{expires, p})
		m.poke(m.wake)
		m.queueRoutes(routeChange{p, true})
	}
	w.Blackhole = b
	w.Audit = []domain.AuditEntry{audit}
	wait := m.db.Submit(w)
	switch change {
	case Added:
		m.broadcast(Event{Type: EventAdded, Blackhole: b, Actor: req.Actor})
	case Extended:
		m.broadcast(Event{Type: EventExtended, Blackhole: b, Actor: req.Actor})
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
	p := req.Prefix
	if err := checkWellFormed(p); err != nil {
		return domain.Blackhole{}, err
	}
	if req.Scope != nil && !inside(p, req.Scope) {
		return domain.Blackhole{}, refuse(KindScope, "%s is outside your prefixes", p)
	}
	m.mu.Lock()
	b, ok := m.active[p]
	if !ok {
		m.mu.Unlock()
		return domain.Blackhole{}, refuse(KindNotFound, "%s is not blackholed", p)
	}
	if req.Owner != "" && b.Origin != req.Owner {
		m.mu.Unlock()
		return domain.Blackhole{}, refuse(KindScope, "%s was added by %s, not by you", p, b.Origin)
	}
	now := m.now().UTC()
	wait := m.end(b, "removed", req.Actor, req.Reason, now)
	m.mu.Unlock()
	if err := wait(); err != nil {
		m.writeFailed(err)
		return domain.Blackhole{}, fmt.Errorf("recording removal of %s: %w", p, err)
	}
	return b, nil
}

// end ends an active entry; m.mu must be held.
func (m *Manager) end(b domain.Blackhole, why, actor, reason string, now time.Time) func() error {
	delete(m.active, b.Prefix)
	m.queueRoutes(routeChange{b.Prefix, false})
	audit := domain.AuditEntry{Actor: actor, Action: "remove", Prefix: b.Prefix.String(), Origin: b.Origin, Reason: reason}
	typ := EventRemoved
	if why == "expired" {
		audit.Action, audit.Detail, typ = "expire", "expires_at "+b.ExpiresAt.Format(time.RFC3339), EventExpired
	}
	m.broadcast(Event{Type: typ, Blackhole: b, Actor: actor})
	return m.db.Submit(&domain.Write{Op: domain.BlackholeEnd, Blackhole: b, EndReason: why, At: now,
		Audit: []domain.AuditEntry{audit}})
}

// Active returns the active blackholes sorted by prefix.
func (m *Manager) Active() []domain.Blackhole {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapshot()
}

// snapshot returns the active set sorted by prefix; m.mu must be held.
func (m *Manager) snapshot() []domain.Blackhole {
	out := make([]domain.Blackhole, 0, len(m.active))
	for _, b := range m.active {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b domain.Blackhole) int { return a.Prefix.Compare(b.Prefix) })
	return out
}

// Lookup returns the active blackhole for p, if any.
func (m *Manager) Lookup(p netip.Prefix) (domain.Blackhole, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.active[p]
	return b, ok
}

// Watch returns the active set and a channel of every later change. The
// channel is closed when ctx ends, or when the watcher falls more than
// watchBuffer events behind (the client should reconnect).
func (m *Manager) Watch(ctx context.Context) ([]domain.Blackhole, <-chan Event) {
	w := &watcher{ch: make(chan Event, watchBuffer)}
	m.mu.Lock()
	snap := m.snapshot()
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	go func() {
		<-ctx.Done()
		m.mu.Lock()
		if _, ok := m.watchers[w]; ok {
			delete(m.watchers, w)
			close(w.ch)
		}
		m.mu.Unlock()
	}()
	return snap, w.ch
}

// broadcast sends ev to every watcher; m.mu must be held.
func (m *Manager) broadcast(ev Event) {
	for w := range m.watchers {
		select {
		case w.ch <- ev:
		default:
			m.log.Warn("dropping a watcher that fell too far behind", "buffered", watchBuffer)
			delete(m.watchers, w)
			close(w.ch)
		}
	}
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
	all := make([]netip.Prefix, 0, len(m.active))
	for p := range m.active {
		all = append(all, p)
	}
	m.restored = true
	m.mu.Unlock()
	if err := m.routes.Announce(ctx, all); err != nil {
		return fmt.Errorf("announcing %d stored blackholes: %w", len(all), err)
	}
	return nil
}

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
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.routeLoop(ctx)
	}()
	defer wg.Wait()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		m.mu.Lock()
		next, ok := m.nextExpiry()
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
		if m.takeResync() {
			m.rebuild(ctx)
		}
	}
}

// nextExpiry drops stale heap items and returns the earliest real expiry;
// m.mu must be held.
func (m *Manager) nextExpiry() (time.Time, bool) {
	for len(m.expiry) > 0 {
		it := m.expiry[0]
		if m.live(it) {
			return it.at, true
		}
		heap.Pop(&m.expiry)
	}
	return time.Time{}, false
}

func (m *Manager) expireDue() {
	m.mu.Lock()
	now := m.now().UTC()
	var waits []func() error
	for {
		at, ok := m.nextExpiry()
		if !ok || at.After(now) {
			break
		}
		it := heap.Pop(&m.expiry).(expiryItem)
		waits = append(waits, m.end(m.active[it.prefix], "expired", "expiry", "ttl elapsed", now))
	}
	m.mu.Unlock()
	m.waitAll(waits)
}

// poke does a non-blocking send on a wake-up channel.
func (m *Manager) poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// queueRoutes appends route changes in decision order.
func (m *Manager) queueRoutes(cs ...routeChange) {
	if len(cs) == 0 {
		return
	}
	m.routeMu.Lock()
	m.routeQ = append(m.routeQ, cs...)
	m.routeMu.Unlock()
	m.poke(m.routeWake)
}

// routeLoop applies queued route changes. Consecutive changes are folded
// to each prefix's last state, then withdrawn and announced in batches.
func (m *Manager) routeLoop(ctx context.Context) {
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.routeWake:
		case <-retry:
			retry = nil
		}
		m.routeMu.Lock()
		q := m.routeQ
		m.routeQ = nil
		m.routeMu.Unlock()
		if len(q) == 0 {
			continue
		}
		last := make(map[netip.Prefix]bool, len(q))
		order := make([]netip.Prefix, 0, len(q))
		for _, c := range q {
			if _, seen := last[c.prefix]; !seen {
				order = append(order, c.prefix)
			}
			last[c.prefix] = c.announce
		}
		var ann, wd []netip.Prefix
		for _, p := range order {
			if last[p] {
				ann = append(ann, p)
			} else {
				wd = append(wd, p)
			}
		}
		var failed []routeChange
		if len(wd) > 0 {
			if err := m.routes.Withdraw(ctx, wd); err != nil {
				m.log.Error("withdrawing routes failed; will retry", "routes", len(wd), "err", err)
				for _, p := range wd {
					failed = append(failed, routeChange{p, false})
				}
			}
		}
		if len(ann) > 0 {
			if err := m.routes.Announce(ctx, ann); err != nil {
				m.log.Error("announcing routes failed; will retry", "routes", len(ann), "err", err)
				for _, p := range ann {
					failed = append(failed, routeChange{p, true})
				}
			}
		}
		if len(failed) > 0 && ctx.Err() == nil {
			m.routeMu.Lock()
			m.routeQ = append(failed, m.routeQ...)
			m.routeMu.Unlock()
			retry = time.After(time.Second)
		}
	}
}

// writeFailed handles a failed store write: memory may now be ahead of the
// store, so Run rebuilds the state from the store and re-syncs BGP.
func (m *Manager) writeFailed(err error) {
	m.log.Error("store write failed; rebuilding state from the store", "err", err)
	m.routeMu.Lock()
	m.resync = true
	m.routeMu.Unlock()
	m.poke(m.wake)
}

func (m *Manager) takeResync() bool {
	m.routeMu.Lock()
	defer m.routeMu.Unlock()
	r := m.resync
	m.resync = false
	return r
}

func (m *Manager) rebuild(ctx context.Context) {
	m.mu.Lock()
	before := make(map[netip.Prefix]bool, len(m.active))
	for p := range m.active {
		before[p] = true
	}
	m.mu.Unlock()
	if err := m.load(ctx); err != nil {
		m.log.Error("rebuilding state from the store failed", "err", err)
		return
	}
	m.mu.Lock()
	var cs []routeChange
	for p := range before {
		if _, ok := m.active[p]; !ok {
			cs = append(cs, routeChange{p, false})
		}
	}
	for p := range m.active {
		cs = append(cs, routeChange{p, true})
	}
	m.queueRoutes(cs...)
	m.mu.Unlock()
}

// checkWellFormed refuses what is not a usable prefix (INVALID_ARGUMENT).
func checkWellFormed(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return refuse(KindInvalid, "missing or malformed prefix")
	case p.Addr().Zone() != "":
		return refuse(KindInvalid, "%s: zones are not allowed", p)
	case p.Addr().Is4In6():
		return refuse(KindInvalid, "%s: use the IPv4 form, not IPv4-mapped IPv6", p)
	case p.Masked() != p:
		return refuse(KindInvalid, "%s has host bits set (did you mean %s?)", p, p.Masked())
	}
	return nil
}

// checkAllowed applies the caller's scope, then policy.
func checkAllowed(p netip.Prefix, scope []netip.Prefix, pol Policy) error {
	if scope != nil && !inside(p, scope) {
		return refuse(KindScope, "%s is outside your prefixes", p)
	}
	minLen, key := pol.MinPrefixLenV4, "min_prefix_len_v4"
	if p.Addr().Is6() {
		minLen, key = pol.MinPrefixLenV6, "min_prefix_len_v6"
	}
	if p.Bits() < minLen {
		return refuse(KindPolicy, "%s is shorter than /%d (policy.%s)", p, minLen, key)
	}
	if n, ok := neverOverlap(p, pol.NeverBlackhole); ok {
		return refuse(KindPolicy, "%s overlaps %s in policy.never_blackhole", p, n)
	}
	return nil
}

// neverOverlap returns the never_blackhole entry p overlaps, if any.
func neverOverlap(p netip.Prefix, never []netip.Prefix) (netip.Prefix, bool) {
	for _, n := range never {
		if n.Overlaps(p) {
			return n, true
		}
	}
	return netip.Prefix{}, false
}

// inside reports whether p lies within one of ps.
func inside(p netip.Prefix, ps []netip.Prefix) bool {
	for _, s := range ps {
		if s.Bits() <= p.Bits() && s.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// compactExpiry drops stale heap items (left by extensions) once they
// outnumber the live ones; m.mu must be held.
func (m *Manager) compactExpiry() {
	if len(m.expiry) < 2*len(m.active)+1024 {
		return
	}
	live := m.expiry[:0]
	for _, it := range m.expiry {
		if m.live(it) {
			live = append(live, it)
		}
	}
	m.expiry = live
	heap.Init(&m.expiry)
}

// live reports whether it is the current expiry of an active entry (not
// one left stale by an extension or removal); m.mu must be held.
func (m *Manager) live(it expiryItem) bool {
	b, ok := m.active[it.prefix]
	return ok && b.ExpiresAt.Equal(it.at)
}

type expiryItem struct {
	at     time.Time
	prefix netip.Prefix
}

type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
