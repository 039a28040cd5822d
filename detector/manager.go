package detector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
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
//
// Readers never see a decision before it is durable: the active set under
// mu is the decisions' state, which runs ahead of the store while writes
// are in flight; what Active, Lookup and Watch show (committed), what
// watchers are told and what BGP announces follow the store instead, each
// write applied once it committed, in commit order (settle). A failed
// write is applied nowhere; Run then rebuilds the decisions' state from the
// store, retrying every rebuildRetry while the store fails.
type Manager struct {
	log    *slog.Logger
	db     Store
	routes Announcer
	now    func() time.Time

	mu       sync.Mutex
	policy   Policy
	reports  ReportPolicy
	active   *activeSet
	scores   *scoreboard
	restored bool // Restore has run
	// stale: a write failed and the active set may be ahead of the store
	// until rebuild reloads it; decisions are refused meanwhile.
	stale bool

	serverMemory time.Duration
	retention    time.Duration // guarded by mu

	wake   chan struct{} // the earliest expiry may have changed, or a resync is due
	routeQ *routeQueue
	resync atomic.Bool // a write failed: rebuild state from the store
	// leader, if set, says whether this instance does the once-only work
	// (expiry, fusion, retention) among several on a shared store (sync.go).
	leader atomic.Pointer[func() bool]

	// cmu guards the committed view, the watchers and the writes not yet
	// settled. Lock order: mu, then cmu.
	cmu       sync.Mutex
	committed map[domain.Key]domain.Blackhole
	watchers  *watchers
	unsettled []*inflight // submitted writes in commit order, not yet settled
	// listView is the committed view in List's order, built by the first
	// List after a change (nil: to be built); guarded by cmu.
	listView []domain.Blackhole
}

// inflight is a submitted write whose outcome is applied to the committed
// view (apply, under cmu) once it committed.
type inflight struct {
	once    sync.Once
	wait    func() error
	err     error
	apply   func()
	settled bool // popped from unsettled; guarded by cmu
}

// result waits for the store's outcome; any number of goroutines may call it.
func (f *inflight) result() error {
	f.once.Do(func() { f.err = f.wait() })
	return f.err
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
	m.committed = maps.Clone(m.active.byKey)
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if reg != nil {
		if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rtbh_blackholes_active",
			Help: "Active blackholes (committed to the store).",
		}, func() float64 {
			m.cmu.Lock()
			defer m.cmu.Unlock()
			return float64(len(m.committed))
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
	for _, k := range m.active.keys() {
		if err := forbidden(m.policy, k.Prefix); err != nil {
			b, _ := m.active.get(k)
			m.log.Warn("withdrawing a blackhole that the policy now forbids", "prefix", k.Prefix, "flowspec", k.Match, "why", err.Error())
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
	d, err := m.decideAdd(req, m.now().UTC(), nil)
	if err != nil {
		m.mu.Unlock()
		return domain.Blackhole{}, 0, err
	}
	wait := m.submit(d.w, m.applyFunc(d))
	m.mu.Unlock()
	if err := wait(); err != nil {
		m.writeFailed(err)
		return domain.Blackhole{}, 0, fmt.Errorf("recording blackhole %s: %w", d.b.Key(), err)
	}
	return d.b, d.change, nil
}

// decision is what decideAdd or decideRemove decided: the entry, the write
// that records it and what to apply once that write committed (the event
// of type ev on b, nothing when ev is 0; and b's route change when
// hasRoute) — data rather than a closure, so that a batch applies its
// decisions without a closure and a copied Event on the heap per item,
// and small, as a batch copies it around.
type decision struct {
	b         domain.Blackhole
	change    Change
	w         *domain.Write
	ev        EventType
	actor     string
	takenFrom string
	hasRoute  bool
	announce  bool
}

func (d *decision) event() Event {
	return Event{Type: d.ev, Blackhole: d.b, Actor: d.actor, TakenOverFrom: d.takenFrom}
}

func (d *decision) routeChange() routeChange { return routeChange{d.b.Key(), d.announce} }

// apply applies d once its write committed; m.cmu must be held.
func (m *Manager) applyDecision(d *decision) {
	switch {
	case d.ev == 0:
	case d.hasRoute:
		m.applyCommitted(d.event(), d.routeChange())
	default:
		m.applyCommitted(d.event())
	}
}

// applyFunc is d's apply for submit (nil: nothing to apply).
func (m *Manager) applyFunc(d decision) func() {
	if d.ev == 0 {
		return nil
	}
	return func() { m.applyDecision(&d) }
}

// scratch is what a batch's decisions take their writes and audit rows
// from: one array of each for the whole batch instead of two allocations
// per item, and the audit detail of the last expiry (a batch's items
// mostly share one). A nil *scratch allocates per call.
type scratch struct {
	ws     []domain.Write
	as     []domain.AuditEntry
	exp    time.Time
	detail string
}

func newScratch(n int) *scratch {
	return &scratch{ws: make([]domain.Write, n), as: make([]domain.AuditEntry, n)}
}

// next returns a zero write and a one-row audit slice.
func (s *scratch) next() (*domain.Write, []domain.AuditEntry) {
	if s == nil || len(s.ws) == 0 || len(s.as) == 0 {
		return &domain.Write{}, make([]domain.AuditEntry, 1)
	}
	w, a := &s.ws[0], s.as[:1:1]
	s.ws, s.as = s.ws[1:], s.as[1:]
	return w, a
}

// expiresDetail is "expires_at " + t in RFC 3339.
func (s *scratch) expiresDetail(t time.Time) string {
	if s == nil {
		return "expires_at " + t.Format(time.RFC3339)
	}
	if s.detail == "" || !s.exp.Equal(t) || s.exp.Location() != t.Location() {
		s.exp, s.detail = t, "expires_at "+t.Format(time.RFC3339)
	}
	return s.detail
}

// decideAdd is the decision of one add (Add, AddBatch): it checks req,
// updates the active set and returns the write to submit. m.mu must be
// held; the caller submits d.w in the same critical section. The write
// comes from sc (nil: allocated).
func (m *Manager) decideAdd(req Request, now time.Time, sc *scratch) (decision, error) {
	ttl, err := checkAdd(m.policy, req)
	if err != nil {
		return decision{}, err
	}
	if m.stale {
		return decision{}, errRecovering
	}
	p := req.Prefix
	match, _ := checkMatch(req.Match) // checkAdd refused a malformed one
	key := domain.Key{Prefix: p, Match: match}
	expires := now.Add(ttl)
	w, audits := sc.next()
	w.At, w.Evidence = now, req.evidence
	if req.offense {
		w.Offense = p.Addr()
	}
	audit := domain.AuditEntry{Actor: req.Actor, Prefix: p.String(), Origin: req.Origin, Reason: req.Reason}
	var (
		b      domain.Blackhole
		change Change
	)
	var takenFrom string
	if old, ok := m.active.get(key); ok {
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
			// Rewriting the unchanged entry checks that the store holds it
			// (an earlier write may have failed): no acknowledgement for an
			// entry that is not durable.
			w.Op = domain.BlackholeExtend
			audit.Action = "add"
			audit.Detail = fmt.Sprintf("already active until %s (origin %s)", old.ExpiresAt.Format(time.RFC3339), old.Origin)
		}
		if takenFrom != "" {
			audit.Detail += "; taken over from " + takenFrom
		}
	} else {
		if m.active.len() >= m.policy.MaxActive {
			return decision{}, refuse(KindLimit, "max_active (%d) blackholes and filters are active: refusing %s", m.policy.MaxActive, key)
		}
		change = Added
		b = domain.Blackhole{Prefix: p, Match: match, Origin: req.Origin, Reason: req.Reason, CreatedAt: now, ExpiresAt: expires}
		w.Op = domain.BlackholeInsert
		audit.Action = "add"
		audit.Detail = sc.expiresDetail(expires)
		m.active.put(b)
		poke(m.wake)
	}
	w.Blackhole = b
	audit.Detail = matchDetail(match, audit.Detail)
	audits[0] = audit
	w.Audit = audits
	d := decision{b: b, change: change, w: w, actor: req.Actor}
	switch change {
	case Added: // b.Key() is key
		d.ev, d.hasRoute, d.announce = EventAdded, true, true
	case Extended:
		d.ev, d.takenFrom = EventExtended, takenFrom
	}
	return d, nil
}

// Remove withdraws an active blackhole now.
func (m *Manager) Remove(ctx context.Context, req RemoveRequest) (domain.Blackhole, error) {
	if err := checkRemove(req); err != nil {
		return domain.Blackhole{}, err
	}
	m.mu.Lock()
	d, err := m.decideRemove(req, m.now().UTC(), nil)
	if err != nil {
		m.mu.Unlock()
		return domain.Blackhole{}, err
	}
	wait := m.submit(d.w, m.applyFunc(d))
	m.mu.Unlock()
	if err := wait(); err != nil {
		m.writeFailed(err)
		return domain.Blackhole{}, fmt.Errorf("recording removal of %s: %w", req.Prefix, err)
	}
	return d.b, nil
}

// decideRemove is the decision of one removal (Remove, RemoveBatch) that
// passed checkRemove: it ends the entry in the active set and returns the
// write to submit (from sc; nil: allocated). m.mu must be held.
func (m *Manager) decideRemove(req RemoveRequest, now time.Time, sc *scratch) (decision, error) {
	match, _ := checkMatch(req.Match) // checkRemove refused a malformed one
	p := domain.Key{Prefix: req.Prefix, Match: match}
	if m.stale {
		return decision{}, errRecovering
	}
	b, ok := m.active.get(p)
	if !ok {
		if match != "" {
			return decision{}, refuse(KindNotFound, "%s has no active flowspec filter %s", p.Prefix, match)
		}
		return decision{}, refuse(KindNotFound, "%s is not blackholed", p.Prefix)
	}
	if req.Owner != "" && b.Origin != req.Owner {
		return decision{}, refuse(KindScope, "%s belongs to %s, not to you", p, b.Origin)
	}
	return m.endDecision(b, "removed", req.Actor, req.Reason, now, sc), nil
}

// end ends an active entry; m.mu must be held.
func (m *Manager) end(b domain.Blackhole, why, actor, reason string, now time.Time) func() error {
	return m.submit(m.ending(b, why, actor, reason, now))
}

// ending ends an active entry in the active set and returns the write that
// records it and what to apply once it committed; m.mu must be held.
func (m *Manager) ending(b domain.Blackhole, why, actor, reason string, now time.Time) (*domain.Write, func()) {
	d := m.endDecision(b, why, actor, reason, now, nil)
	return d.w, m.applyFunc(d)
}

// endDecision is ending's decision, its write from sc (nil: allocated).
func (m *Manager) endDecision(b domain.Blackhole, why, actor, reason string, now time.Time, sc *scratch) decision {
	m.active.delete(b.Key())
	audit := domain.AuditEntry{Actor: actor, Action: "remove", Prefix: b.Prefix.String(), Origin: b.Origin, Reason: reason}
	typ := EventRemoved
	if why == "expired" {
		audit.Action, audit.Detail, typ = "expire", sc.expiresDetail(b.ExpiresAt), EventExpired
	}
	audit.Detail = matchDetail(b.Match, audit.Detail)
	w, audits := sc.next()
	audits[0] = audit
	*w = domain.Write{Op: domain.BlackholeEnd, Blackhole: b, EndReason: why, At: now, Audit: audits}
	return decision{b: b, w: w, ev: typ, actor: actor, hasRoute: true}
}

// matchDetail marks the audit detail of a FlowSpec filter's row: it starts
// with "flowspec MATCH" ("flowspec tcp/25; expires_at ..."), so that the
// audit log tells a filter from the route on the same prefix. A route's
// detail is unchanged.
func matchDetail(match, detail string) string {
	switch {
	case match == "":
		return detail
	case detail == "":
		return "flowspec " + match
	}
	return "flowspec " + match + "; " + detail
}

// submit queues w in the store and returns the function that waits for it
// (called exactly once). apply, if not nil, is run under cmu once w and
// every write submitted before it are settled, and only if w committed.
// m.mu must be held, so that unsettled is in the store's commit order.
func (m *Manager) submit(w *domain.Write, apply func()) func() error {
	f := &inflight{wait: m.db.Submit(w), apply: apply}
	m.cmu.Lock()
	m.unsettled = append(m.unsettled, f)
	m.cmu.Unlock()
	return func() error { return m.settle(f) }
}

// settle waits for f's outcome, then applies f and every write before it
// that is not yet applied, in commit order. The store completes writes in
// the order they were submitted, so the earlier ones have their outcome
// by the time f has.
func (m *Manager) settle(f *inflight) error {
	err := f.result()
	m.cmu.Lock()
	defer m.cmu.Unlock()
	for !f.settled {
		h := m.unsettled[0]
		m.unsettled[0] = nil
		m.unsettled = m.unsettled[1:]
		h.settled = true
		if h.result() == nil && h.apply != nil {
			h.apply()
		}
	}
	if len(m.unsettled) == 0 {
		m.unsettled = nil // let a burst's backing array go
	}
	return err
}

// applyCommitted applies a committed change to the readers' view: the
// committed set, the watchers and BGP. m.cmu must be held.
func (m *Manager) applyCommitted(ev Event, routes ...routeChange) {
	m.commitView(ev)
	m.watchers.broadcast(ev)
	m.routeQ.push(routes...)
}

// commitView applies ev to the committed set; m.cmu must be held.
func (m *Manager) commitView(ev Event) {
	switch ev.Type {
	case EventAdded, EventExtended:
		m.committed[ev.Blackhole.Key()] = ev.Blackhole
	case EventRemoved, EventExpired:
		delete(m.committed, ev.Blackhole.Key())
	}
	m.listView = nil // sorted again by the next List
}

// committedSorted returns the committed view sorted by prefix; m.cmu must
// be held.
func (m *Manager) committedSorted() []domain.Blackhole { return sortedByPrefix(m.committed) }

// Active returns the committed active blackholes sorted by prefix.
func (m *Manager) Active() []domain.Blackhole {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	return m.committedSorted()
}

// Lookup returns the committed active blackhole route for p, if any.
func (m *Manager) Lookup(p netip.Prefix) (domain.Blackhole, bool) {
	return m.LookupKey(domain.Key{Prefix: p})
}

// LookupKey returns the committed active entry for k (a route or a
// FlowSpec filter), if any. k.Match must be canonical.
func (m *Manager) LookupKey(k domain.Key) (domain.Blackhole, bool) {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	b, ok := m.committed[k]
	return b, ok
}

// OnPrefix returns the committed active entries on p — its route and its
// FlowSpec filters — route first. It scans the active set (for operator
// look-ups, not hot paths).
func (m *Manager) OnPrefix(p netip.Prefix) []domain.Blackhole {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	var out []domain.Blackhole
	for k, b := range m.committed {
		if k.Prefix == p {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b domain.Blackhole) int { return a.Key().Compare(b.Key()) })
	return out
}

// Watch returns the active set and a channel of every later change. The
// channel is closed when ctx ends, or when the watcher falls more than
// watchBuffer events behind (the client should reconnect). Events wait
// for the reader in a queue that grows only as far as it falls behind.
func (m *Manager) Watch(ctx context.Context) ([]domain.Blackhole, <-chan Event) {
	m.cmu.Lock()
	snap := m.committedSorted()
	w := m.watchers.add()
	m.cmu.Unlock()
	go func() {
		w.pump(ctx)
		m.cmu.Lock()
		m.watchers.remove(w)
		m.cmu.Unlock()
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
	routes, _ := splitKeys(m.active.keys())
	filters := m.active.filtersByAge()
	m.restored = true
	m.mu.Unlock()
	if err := m.routes.Announce(ctx, routes); err != nil {
		return fmt.Errorf("announcing %d stored blackholes: %w", len(routes), err)
	}
	if len(filters) > 0 {
		if err := m.routes.AnnounceFilters(ctx, filters); err != nil {
			return fmt.Errorf("announcing %d stored flowspec filters: %w", len(filters), err)
		}
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
	// retry is set while the store fails: expiries wait (they would fail
	// too) and the rebuild is tried again every rebuildRetry.
	var retry <-chan time.Time
	for {
		var expiry <-chan time.Time
		if retry == nil && m.leads() {
			m.mu.Lock()
			next, ok := m.active.next()
			m.mu.Unlock()
			d := time.Hour
			if ok {
				d = max(next.Sub(m.now()), 0)
			}
			timer.Reset(d)
			expiry = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-expiry:
			m.expireDue()
		case <-retry:
			retry = nil
			m.resync.Store(true)
		case <-m.wake:
		case <-prune.C:
			m.pruneScores()
		}
		if retry == nil && m.resync.Swap(false) {
			if err := m.rebuild(ctx); err != nil {
				m.log.Error("store still failing; retrying", "in", rebuildRetry, "err", err)
				retry = time.After(rebuildRetry)
			} else {
				m.log.Info("store writes succeed again; state and routes rebuilt from the store")
			}
		}
	}
}

// rebuildRetry is how often Run retries a rebuild while the store fails.
const rebuildRetry = time.Second

func (m *Manager) expireDue() {
	if !m.leads() {
		return
	}
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

// errRecovering refuses decisions between a failed write and the rebuild
// that reloads the store: until then the active set may hold entries that
// are not durable (or lack ones that are).
var errRecovering = fmt.Errorf("%w: recovering from a failed write: try again", domain.ErrStoreUnavailable)

// writeFailed handles a failed store write: memory may now be ahead of the
// store, so Run rebuilds the state from the store and re-syncs BGP.
func (m *Manager) writeFailed(err error) {
	m.log.Error("store write failed; rebuilding state from the store", "err", err)
	m.mu.Lock()
	m.stale = true
	m.mu.Unlock()
	m.resync.Store(true)
	poke(m.wake)
}

// rebuild replaces the in-memory state with the store's after a failed
// write, makes the committed view match it (telling watchers of any
// difference) and queues the route changes that make BGP match it — every
// stored entry announced again. It holds m.mu throughout, and first waits
// for every write submitted before it (an empty write queued behind them,
// which also tells whether writes succeed again), so no decision can slip
// between the store read and the new state. It returns an error while the
// store fails; the state is still reloaded when the store can be read, so
// that decisions are not taken on entries that never became durable.
func (m *Manager) rebuild(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	barrier := m.submit(&domain.Write{At: m.now().UTC()}, nil)()
	before := m.active.keys()
	if err := m.load(ctx); err != nil {
		return errors.Join(barrier, fmt.Errorf("rebuilding state from the store: %w", err))
	}
	m.stale = false
	m.cmu.Lock()
	defer m.cmu.Unlock()
	var cs []routeChange
	for _, p := range before {
		if _, ok := m.active.get(p); !ok {
			cs = append(cs, routeChange{p, false})
		}
	}
	for p, b := range m.committed {
		if _, ok := m.active.get(p); !ok {
			m.applyCommitted(Event{Type: EventRemoved, Blackhole: b, Actor: "resync"}, routeChange{p, false})
		}
	}
	for _, b := range m.active.sorted() {
		switch old, ok := m.committed[b.Key()]; {
		case !ok:
			m.applyCommitted(Event{Type: EventAdded, Blackhole: b, Actor: "resync"})
		case !sameEntry(old, b):
			m.applyCommitted(Event{Type: EventExtended, Blackhole: b, Actor: "resync"})
		}
		cs = append(cs, routeChange{b.Key(), true})
	}
	m.routeQ.push(cs...)
	return barrier
}

// sameEntry reports whether a and b are the same stored entry.
func sameEntry(a, b domain.Blackhole) bool {
	return a.Prefix == b.Prefix && a.Match == b.Match && a.Origin == b.Origin && a.Reason == b.Reason &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}
