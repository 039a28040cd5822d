package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtbh/rtbh/detector/domain"
)

// Speaker is the embedded BGP speaker. Its methods are safe for concurrent
// use.
type Speaker struct {
	logger  *slog.Logger
	srv     *server.BgpServer
	pb      *pathBuilder
	metrics *metrics

	// mu serializes route and policy changes and guards the fields below.
	mu        sync.Mutex
	cfg       Config
	started   bool
	closed    bool
	announced map[netip.Prefix]struct{}
	// filters are the announced FlowSpec filters with the order they
	// were announced in (filterSeq is the last); filterIDs are the
	// neighbors' block community IDs (flowspec.go).
	filters   map[domain.Key]uint64
	filterSeq uint64
	filterIDs map[netip.Addr]uint32
	nbrs      map[netip.Addr]*neighborState
	cancel    context.CancelFunc

	stateMu sync.Mutex
	states  map[netip.Addr]peerState

	// heldFault, set only by tests, makes held-set updates for a neighbor
	// fail as GoBGP's could, to show that max_routes holds anyway.
	heldFault func(addr netip.Addr) error
}

type peerState struct {
	state string
	since time.Time
}

// neighborState tracks which announced routes a neighbor gets, to enforce
// its max_routes: admitted routes pass, held routes are in the neighbor's
// held prefix sets (rejected by the export policy) and are sent, oldest
// first, when admitted routes are withdrawn.
type neighborState struct {
	n         Neighbor
	limit     int // 0 = none
	admitted  int
	held      map[netip.Prefix]struct{}
	heldQueue []netip.Prefix // promotion order; may hold stale entries
	warned    bool
	fs        filterAdmission // FlowSpec filters (max_flowspec, own_prefixes)
}

// admit counts p against the neighbor's max_routes, or holds it back when
// the neighbor is full; it reports whether p was held.
func (st *neighborState) admit(p netip.Prefix) (held bool) {
	if st.limit > 0 && st.admitted >= st.limit {
		st.held[p] = struct{}{}
		st.heldQueue = append(st.heldQueue, p)
		return true
	}
	st.admitted++
	return false
}

// release undoes admit for a prefix that is gone; it reports whether p
// was held (heldQueue entries go stale and are skipped on promotion).
func (st *neighborState) release(p netip.Prefix) (wasHeld bool) {
	if _, ok := st.held[p]; ok {
		delete(st.held, p)
		return true
	}
	st.admitted--
	return false
}

// NeighborStatus is one session as Neighbors reports it.
type NeighborStatus struct {
	Address netip.Addr
	ASN     uint32
	Role    Role
	Port    uint16
	// State is the lower-case FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State      string
	StateSince time.Time // zero if the state has not changed since Start
	RoutesSent int       // routes currently advertised (IPv4 + IPv6)
	// RoutesHeld is the number of eligible routes held back by max_routes.
	RoutesHeld int
	// FlowSpec is set for a neighbor with flowspec: true (it negotiates
	// the FlowSpec AFI-SAFIs) whose session, once established, has them
	// (the router offered them too); FlowSpecSent counts the filters
	// currently advertised to it, FlowSpecHeld those held back by
	// max_flowspec.
	FlowSpec     bool
	FlowSpecSent int
	FlowSpecHeld int
}

// New validates cfg and returns a speaker that is not yet started. reg may
// be nil (no metrics).
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Speaker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating bgp config: %w", err)
	}
	pb, err := newPathBuilder(cfg.NextHopV4, cfg.NextHopV6)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Speaker{
		logger:    logger,
		pb:        pb,
		metrics:   m,
		cfg:       cloneConfig(cfg),
		announced: make(map[netip.Prefix]struct{}),
		filters:   make(map[domain.Key]uint64),
		filterIDs: make(map[netip.Addr]uint32),
		states:    make(map[netip.Addr]peerState),
	}
	s.nbrs = s.newNeighborStates(&s.cfg, nil)
	return s, nil
}

func cloneConfig(c Config) Config {
	c.Neighbors = slices.Clone(c.Neighbors)
	for i := range c.Neighbors {
		c.Neighbors[i].Communities = slices.Clone(c.Neighbors[i].Communities)
		c.Neighbors[i].LargeCommunities = slices.Clone(c.Neighbors[i].LargeCommunities)
	}
	c.OwnPrefixes = slices.Clone(c.OwnPrefixes)
	c.own = domain.NewPrefixSet(c.OwnPrefixes)
	return c
}

// newNeighborStates computes admission state for cfg's neighbors over the
// prefixes in order (earlier prefixes are admitted first).
func (s *Speaker) newNeighborStates(cfg *Config, order []netip.Prefix) map[netip.Addr]*neighborState {
	m := make(map[netip.Addr]*neighborState, len(cfg.Neighbors))
	for i := range cfg.Neighbors {
		n := &cfg.Neighbors[i]
		st := &neighborState{n: *n, limit: cfg.maxRoutes(n), held: make(map[netip.Prefix]struct{}),
			fs: newFilterAdmission(s.filterID(n.Address), cfg.maxFlowSpec(n))}
		for _, p := range order {
			if cfg.eligible(n.Role, p) {
				st.admit(p)
			}
		}
		m[n.Address] = st
	}
	return m
}

// Start starts the BGP server, installs the policies, the routes announced
// so far and then the neighbors. Announce before Start is allowed and is
// the right order at daemon start.
//
// Routes announced before Start are the stored set of a restart: with
// graceful restart on, the speaker then opens every session in restarting
// mode (RFC 4724 §4.1): the Restart State bit and, for IPv4 and IPv6
// unicast, the Forwarding State bit set in the OPEN (and the long-lived
// stale tuples' F bit), so routers that kept our routes as stale keep them
// until our End-of-RIB; the whole set goes out before End-of-RIB. Without
// the bits a router deletes the stale routes the moment the session is up
// (RFC 4724 §4.2) and holds none until the set has been sent again.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("starting bgp speaker: already started")
	}
	// GoBGP only warns when it cannot set a TCP MD5 key and carries on
	// unauthenticated: refuse instead.
	for i, n := range s.cfg.Neighbors {
		if n.Password == "" {
			continue
		}
		if err := tcpMD5Supported(); err != nil {
			return fmt.Errorf("starting bgp speaker: neighbors[%d] (%s) password: this system cannot do TCP MD5 (RFC 2385): %w", i, n.Address, err)
		}
	}
	s.srv = server.NewBgpServer(server.LoggerOption(newSlogAdapter(s.logger)))
	go s.srv.Serve()

	g := &api.Global{Asn: s.cfg.ASN, RouterId: s.cfg.RouterID.String(), ListenPort: -1}
	if s.cfg.ListenAddress != "" {
		g.ListenPort = int32(s.cfg.listenPort())
		g.ListenAddresses = []string{s.cfg.ListenAddress}
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("starting bgp server: %w", err)
	}
	s.started = true
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.watchPeers(wctx); err != nil {
		return err
	}
	if err := s.srv.SetPolicies(ctx, buildPolicies(&s.cfg, s.nbrs)); err != nil {
		return fmt.Errorf("setting bgp policies: %w", err)
	}
	for _, a := range []struct {
		dir    api.PolicyDirection
		name   string
		action api.RouteAction
	}{
		{api.PolicyDirection_IMPORT, importPolicy, api.RouteAction_REJECT},
		{api.PolicyDirection_EXPORT, exportPolicy, api.RouteAction_ACCEPT},
	} {
		err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: globalRIBName, Direction: a.dir, Policies: []*api.Policy{{Name: a.name}}, DefaultAction: a.action,
		}})
		if err != nil {
			return fmt.Errorf("assigning bgp policy %s: %w", a.name, err)
		}
	}
	for p := range s.announced {
		if err := s.addPath(ctx, p); err != nil {
			return err
		}
	}
	for _, k := range filterOrder(s.filters) {
		if err := s.addFilterPath(ctx, k); err != nil {
			return err
		}
	}
	restarting := s.cfg.GracefulRestart && (len(s.announced) > 0 || len(s.filters) > 0)
	pending := make(map[netip.Addr]bool, len(s.cfg.Neighbors))
	for i := range s.cfg.Neighbors {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConfig(&s.cfg.Neighbors[i], restarting)}); err != nil {
			return fmt.Errorf("adding bgp neighbor %s: %w", s.cfg.Neighbors[i].Address, err)
		}
		s.metrics.neighborUp.WithLabelValues(s.cfg.Neighbors[i].Address.String()).Set(0)
		pending[s.cfg.Neighbors[i].Address] = true
	}
	if restarting {
		until := time.Now().Add(s.cfg.restartTime() + s.cfg.LongLivedStaleTime)
		go s.keepRestarting(wctx, pending, until)
	}
	s.logger.Info("bgp speaker started", "asn", s.cfg.ASN, "router_id", s.cfg.RouterID,
		"listen", s.cfg.ListenAddress, "port", s.cfg.listenPort(), "neighbors", len(s.cfg.Neighbors),
		"routes", len(s.announced), "filters", len(s.filters), "graceful_restart", restarting)
	return nil
}

// restartDeferral is the DeferralTime given to GoBGP (whole seconds; 0
// would mean its default of 360 s). In restarting mode GoBGP sends a
// neighbor nothing until every neighbor has sent End-of-RIB or this timer
// has run out. GoBGP waits to select routes among what its peers send;
// rtbhd imports nothing and its whole set is in the RIB before any session
// opens, so the shortest wait is right: a router slow to send its
// End-of-RIB (or one that sends none) gets the set and our End-of-RIB after
// a second.
const restartDeferral = 1

// peerConfig is GoBGP's configuration of n; restarting opens its sessions
// in restarting mode (see Start).
func (s *Speaker) peerConfig(n *Neighbor, restarting bool) *api.Peer {
	p := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: n.Address.String(),
			PeerAsn:         n.ASN,
			AuthPassword:    n.Password,
			Description:     string(n.Role),
		},
		Transport: &api.Transport{
			RemotePort:  uint32(n.port()),
			PassiveMode: n.Passive,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{ConnectRetry: 5, HoldTime: 90, KeepaliveInterval: 30}},
	}
	if la, err := netip.ParseAddr(s.cfg.ListenAddress); err == nil && !la.IsUnspecified() && la.Is4() == n.Address.Is4() {
		p.Transport.LocalAddress = la.String()
	}
	if n.Multihop > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(n.Multihop)}
	}
	// GoBGP (pkg/server/fsm.go, capabilitiesFromConfig) sets the Restart
	// State bit from LocalRestarting and, for every family with
	// MpGracefulRestart enabled, the Forwarding State bit too; the
	// long-lived graceful restart tuples get the same F bit.
	gr := s.cfg.GracefulRestart
	llgr := uint32(s.cfg.LongLivedStaleTime / time.Second)
	if gr {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(s.cfg.restartTime() / time.Second),
			DeferralTime: restartDeferral, LocalRestarting: restarting, LonglivedEnabled: llgr > 0}
	}
	for _, f := range []*api.Family{familyV4, familyV6} {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if gr {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		if gr && llgr > 0 {
			af.LongLivedGracefulRestart = &api.LongLivedGracefulRestart{
				Config: &api.LongLivedGracefulRestartConfig{Enabled: true, RestartTime: llgr}}
		}
		p.AfiSafis = append(p.AfiSafis, af)
	}
	if n.FlowSpec {
		addFilterAfiSafis(p, gr, llgr)
	}
	return p
}

func (s *Speaker) watchPeers(ctx context.Context) error {
	err := s.srv.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		pe := r.GetPeer()
		if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil || pe.Peer.State == nil {
			return
		}
		addr, err := netip.ParseAddr(pe.Peer.State.NeighborAddress)
		if err != nil {
			return
		}
		state := stateName(pe.Peer.State.SessionState)
		s.stateMu.Lock()
		old := s.states[addr]
		if old.state != state {
			s.states[addr] = peerState{state: state, since: time.Now()}
		}
		s.stateMu.Unlock()
		if old.state == state {
			return
		}
		up := 0.0
		if state == "established" {
			up = 1
		}
		s.metrics.neighborUp.WithLabelValues(addr.String()).Set(up)
		s.logger.Info("bgp neighbor state", "neighbor", addr, "asn", pe.Peer.State.PeerAsn, "state", state, "previous", old.state)
	})
	if err != nil {
		return fmt.Errorf("watching bgp peer events: %w", err)
	}
	return nil
}

func stateName(st api.PeerState_SessionState) string {
	if st == api.PeerState_UNKNOWN {
		return "idle"
	}
	return strings.ToLower(st.String())
}

func (s *Speaker) addPath(ctx context.Context, p netip.Prefix) error {
	path, err := s.pb.path(p, false)
	if err != nil {
		return err
	}
	return s.sendPath(ctx, path, p)
}

func (s *Speaker) deletePath(ctx context.Context, p netip.Prefix) error {
	path, err := s.pb.path(p, true)
	if err != nil {
		return err
	}
	return s.sendPath(ctx, path, p)
}

// sendPath hands one path (a route or a filter, what names it in errors)
// to GoBGP: announced, or withdrawn when path.IsWithdraw.
func (s *Speaker) sendPath(ctx context.Context, path *api.Path, what fmt.Stringer) error {
	if path.IsWithdraw {
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path}); err != nil {
			return fmt.Errorf("withdrawing %s: %w", what, err)
		}
		return nil
	}
	if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
		return fmt.Errorf("announcing %s: %w", what, err)
	}
	return nil
}

// Announce announces prefixes (host routes as a rule; shorter prefixes are
// announced as given). Already announced prefixes are skipped, so Announce
// is idempotent. It returns when GoBGP has queued the routes to every
// established neighbor.
func (s *Speaker) Announce(ctx context.Context, prefixes []netip.Prefix) error {
	for _, p := range prefixes {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("announcing: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("announcing: bgp speaker closed")
	}
	fresh := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		if _, ok := s.announced[p]; ok {
			continue
		}
		s.announced[p] = struct{}{}
		fresh = append(fresh, p)
	}
	if len(fresh) == 0 {
		return nil
	}
	// Admission for max_routes first: held routes must be in the neighbor's
	// held set before the route exists, or it would be sent.
	heldAdds := make(map[netip.Addr][]netip.Prefix)
	for addr, st := range s.nbrs {
		for _, p := range fresh {
			if s.cfg.eligible(st.n.Role, p) && st.admit(p) {
				heldAdds[addr] = append(heldAdds[addr], p)
			}
		}
	}
	var errs []error
	if s.started {
		// A route that should be held for a neighbor whose held set could
		// not be updated would reach it past its max_routes: such routes are
		// not announced at all (the caller retries them).
		var unheld []netip.Prefix
		for addr, ps := range heldAdds {
			if err := s.changeHeldSets(ctx, addr, ps, false); err != nil {
				errs = append(errs, fmt.Errorf("holding back %d routes for %s (max_routes), so not announcing them: %w", len(ps), addr, err))
				unheld = append(unheld, ps...)
				continue
			}
			if st := s.nbrs[addr]; !st.warned {
				st.warned = true
				s.logger.Warn("bgp neighbor max_routes reached, holding routes back", "neighbor", addr, "max_routes", st.limit, "held", len(st.held))
			}
		}
		if len(unheld) > 0 {
			skip := make(map[netip.Prefix]bool, len(unheld))
			for _, p := range unheld {
				skip[p] = true
			}
			fresh = slices.DeleteFunc(fresh, func(p netip.Prefix) bool { return skip[p] })
			s.forget(slices.Collect(maps.Keys(skip)))
		}
		if failed, err := forEach(ctx, fresh, s.addPath); err != nil {
			s.forget(failed)
			errs = append(errs, fmt.Errorf("announcing %d of %d routes failed: %w", len(failed), len(fresh), err))
		}
	}
	s.metrics.routes.Set(float64(len(s.announced)))
	return errors.Join(errs...)
}

// forget undoes the bookkeeping of prefixes that could not be announced.
func (s *Speaker) forget(ps []netip.Prefix) {
	for _, p := range ps {
		delete(s.announced, p)
		for addr, st := range s.nbrs {
			if s.cfg.eligible(st.n.Role, p) && st.release(p) {
				_ = s.changeHeldSets(context.Background(), addr, []netip.Prefix{p}, true)
			}
		}
	}
}

// changeHeldSets adds prefixes to (or removes them from) a neighbor's held
// prefix sets in GoBGP.
func (s *Speaker) changeHeldSets(ctx context.Context, addr netip.Addr, ps []netip.Prefix, remove bool) error {
	if s.heldFault != nil && !remove {
		if err := s.heldFault(addr); err != nil {
			return err
		}
	}
	for _, v6 := range []bool{false, true} {
		d := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: heldSetName(addr, v6)}
		for _, p := range ps {
			if p.Addr().Is6() == v6 {
				d.Prefixes = append(d.Prefixes, exactPrefix(p))
			}
		}
		if len(d.Prefixes) == 0 {
			continue
		}
		var err error
		if remove {
			err = s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: d, All: false})
		} else {
			err = s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: d})
		}
		if err != nil {
			return fmt.Errorf("updating held-back routes of neighbor %s: %w", addr, err)
		}
	}
	return nil
}

// Withdraw withdraws prefixes from every neighbor; prefixes not announced
// are ignored. Routes held back from a neighbor by max_routes take the
// freed places.
func (s *Speaker) Withdraw(ctx context.Context, prefixes []netip.Prefix) error {
	for _, p := range prefixes {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("withdrawing: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("withdrawing: bgp speaker closed")
	}
	gone := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		if _, ok := s.announced[p]; !ok {
			continue
		}
		delete(s.announced, p)
		gone = append(gone, p)
	}
	if len(gone) == 0 {
		return nil
	}
	var errs []error
	if s.started {
		if failed, err := forEach(ctx, gone, s.deletePath); err != nil {
			// Still announced as far as the routers know: keep them so a
			// later Withdraw can retry.
			for _, p := range failed {
				s.announced[p] = struct{}{}
			}
			gone = slices.DeleteFunc(gone, func(p netip.Prefix) bool { return has(s.announced, p) })
			errs = append(errs, fmt.Errorf("withdrawing %d of %d routes failed: %w", len(failed), len(gone)+len(failed), err))
		}
	}
	// Bookkeeping and promotion of held routes.
	var promoted []netip.Addr
	for addr, st := range s.nbrs {
		var unheld []netip.Prefix
		for _, p := range gone {
			if s.cfg.eligible(st.n.Role, p) && st.release(p) {
				unheld = append(unheld, p)
			}
		}
		for st.admitted < st.limit && len(st.heldQueue) > 0 {
			p := st.heldQueue[0]
			st.heldQueue = st.heldQueue[1:]
			if _, ok := st.held[p]; !ok {
				continue
			}
			delete(st.held, p)
			st.admitted++
			unheld = append(unheld, p)
			if !slices.Contains(promoted, addr) {
				promoted = append(promoted, addr)
			}
		}
		if len(st.held) == 0 {
			st.heldQueue = nil
			st.warned = false
		}
		if s.started && len(unheld) > 0 {
			if err := s.changeHeldSets(ctx, addr, unheld, true); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.started {
		// GoBGP does not resend an unchanged route, so promoted routes go
		// out by a soft reset out of the neighbor (it gets all its routes
		// again; only neighbors at their cap pay this).
		for _, addr := range promoted {
			if err := s.softResetOut(ctx, addr); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.metrics.routes.Set(float64(len(s.announced)))
	return errors.Join(errs...)
}

// Announced returns the prefixes currently announced, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	out := make([]netip.Prefix, 0, len(s.announced))
	for p := range s.announced {
		out = append(out, p)
	}
	s.mu.Unlock()
	slices.SortFunc(out, netip.Prefix.Compare)
	return out
}

// Neighbors returns the state of every configured neighbor, in config order.
func (s *Speaker) Neighbors(ctx context.Context) ([]NeighborStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NeighborStatus, 0, len(s.cfg.Neighbors))
	idx := make(map[netip.Addr]int, len(s.cfg.Neighbors))
	for i, n := range s.cfg.Neighbors {
		idx[n.Address] = i
		ns := NeighborStatus{Address: n.Address, ASN: n.ASN, Role: n.Role, Port: n.port(), State: "idle"}
		if st := s.nbrs[n.Address]; st != nil {
			ns.RoutesHeld = len(st.held)
			ns.FlowSpecHeld = len(st.fs.held)
		}
		ns.FlowSpec = n.FlowSpec
		s.stateMu.Lock()
		if ps, ok := s.states[n.Address]; ok {
			ns.State, ns.StateSince = ps.state, ps.since
		}
		s.stateMu.Unlock()
		out = append(out, ns)
	}
	if !s.started || s.closed {
		return out, nil
	}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.State == nil {
			return
		}
		a, err := netip.ParseAddr(p.State.NeighborAddress)
		if err != nil {
			return
		}
		i, ok := idx[a]
		if !ok {
			return
		}
		out[i].State = stateName(p.State.SessionState)
		// With graceful restart negotiated, GoBGP counts an End-of-RIB
		// marker in each family's Advertised (getBestFromLocal): not a route.
		eor := 0
		if s.cfg.GracefulRestart && remoteGR(p.State) {
			eor = 1
		}
		sent, fs := 0, 0
		for _, af := range p.AfiSafis {
			if af.State == nil {
				continue
			}
			n := max(int(af.State.Advertised)-eor, 0)
			if isFlowSpecFamily(af.State.Family) || (af.Config != nil && isFlowSpecFamily(af.Config.Family)) {
				fs += n
			} else {
				sent += n
			}
		}
		out[i].RoutesSent, out[i].FlowSpecSent = sent, fs
		// Established: FlowSpec is on only if the router offered it too
		// (a router without FlowSpec configured shows false).
		if out[i].FlowSpec && p.State.SessionState == api.PeerState_ESTABLISHED && !remoteFlowSpec(p.State) {
			out[i].FlowSpec = false
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listing bgp neighbors: %w", err)
	}
	return out, nil
}

func (s *Speaker) softResetOut(ctx context.Context, addr netip.Addr) error {
	err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true, Direction: api.ResetPeerRequest_OUT})
	if err != nil {
		return fmt.Errorf("soft reset out of bgp neighbor %s: %w", addr, err)
	}
	return nil
}

// remoteFlowSpec reports whether the neighbor's OPEN offered IPv4 or IPv6
// FlowSpec (multiprotocol capability).
func remoteFlowSpec(st *api.PeerState) bool {
	caps, err := apiutil.UnmarshalCapabilities(st.GetRemoteCap())
	if err != nil {
		return false
	}
	for _, c := range caps {
		if mp, ok := c.(*bgp.CapMultiProtocol); ok && (mp.CapValue == bgp.RF_FS_IPv4_UC || mp.CapValue == bgp.RF_FS_IPv6_UC) {
			return true
		}
	}
	return false
}

// remoteGR reports whether the neighbor's OPEN carried the graceful
// restart capability (GoBGP then has graceful restart on for it).
func remoteGR(st *api.PeerState) bool {
	for _, c := range st.GetRemoteCap() {
		if strings.HasSuffix(c.GetTypeUrl(), "/apipb.GracefulRestartCapability") {
			return true
		}
	}
	return false
}
