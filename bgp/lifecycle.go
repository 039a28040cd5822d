package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/rtbh/rtbh/detector/domain"
)

// Close stops the speaker without sending a BGP NOTIFICATION (Cease):
// routers that negotiated graceful restart keep our routes as stale until
// we are back. The sessions' TCP connections are shut down first, then
// GoBGP is stopped (its Cease then has nowhere to go). On systems other than
// Linux the sessions are left to the end of the process instead.
func (s *Speaker) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.started {
		return nil
	}
	nbrs := make(map[netip.Addr]uint16, len(s.cfg.Neighbors))
	for _, n := range s.cfg.Neighbors {
		nbrs[n.Address] = n.port()
	}
	listen := 0
	if s.cfg.ListenAddress != "" {
		listen = s.cfg.listenPort()
	}
	n := shutdownSessions(nbrs, listen)
	if n < 0 {
		s.logger.Warn("bgp speaker: sessions stay open until the process exits (no Cease sent)")
		return nil
	}
	s.srv.Stop()
	s.cancel()
	for _, nb := range s.cfg.Neighbors {
		s.metrics.neighborUp.WithLabelValues(nb.Address.String()).Set(0)
	}
	s.logger.Info("bgp speaker stopped without Cease", "sessions_closed", n)
	return nil
}

// restartPoll is how often, while routers may still hold our routes as
// stale after a restart, keepRestarting looks for neighbors that GoBGP
// took out of restarting mode before their session was back.
const restartPoll = 50 * time.Millisecond

// keepRestarting keeps restarting mode (Start) for the neighbors in
// pending whose session is not back yet. GoBGP ends restarting mode for
// all its neighbors at once, as soon as the established ones have sent
// End-of-RIB (pkg/server/server.go, handleFSMMessage: "sync finished"): a
// router that reconnects later would get an OPEN without the Forwarding
// State bit and delete the routes it kept for us. So a neighbor that GoBGP
// took out of restarting mode while it has no TCP connection (idle,
// connect, active) is added again in restarting mode; removing a neighbor
// without a connection sends nothing. A neighbor whose OPEN is already out
// (opensent, openconfirm) is left alone: removing it then could race its
// session coming up, and GoBGP sends a Cease when it removes an
// established neighbor.
//
// It ends when every pending neighbor has been established once, when ctx
// is done (Close) or at until, when routers have dropped the stale routes
// anyway.
func (s *Speaker) keepRestarting(ctx context.Context, pending map[netip.Addr]bool, until time.Time) {
	tick := time.NewTicker(restartPoll)
	defer tick.Stop()
	for len(pending) > 0 && time.Now().Before(until) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !s.rearm(ctx, pending) {
			return
		}
	}
}

// rearm is one round of keepRestarting; it returns false once the speaker
// is closed.
func (s *Speaker) rearm(ctx context.Context, pending map[netip.Addr]bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	type peer struct {
		state      api.PeerState_SessionState
		restarting bool
	}
	peers := make(map[netip.Addr]peer, len(pending))
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State == nil || p.Conf == nil {
			return
		}
		a, err := netip.ParseAddr(p.Conf.NeighborAddress)
		if err != nil {
			return
		}
		peers[a] = peer{state: p.State.SessionState, restarting: p.GracefulRestart.GetLocalRestarting()}
	})
	if err != nil {
		return true // try again at the next tick
	}
	for addr := range pending {
		i := slices.IndexFunc(s.cfg.Neighbors, func(n Neighbor) bool { return n.Address == addr })
		p, ok := peers[addr]
		if i < 0 || !ok || p.state == api.PeerState_ESTABLISHED {
			delete(pending, addr) // removed by Reconfigure, or had its session
			continue
		}
		if p.restarting || (p.state != api.PeerState_IDLE && p.state != api.PeerState_CONNECT &&
			p.state != api.PeerState_ACTIVE && p.state != api.PeerState_UNKNOWN) {
			continue
		}
		n := &s.cfg.Neighbors[i]
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			s.logger.Warn("bgp neighbor not back yet: cannot keep graceful restart for it", "neighbor", addr, "err", err)
			delete(pending, addr)
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConfig(n, true)}); err != nil {
			s.logger.Error("bgp neighbor not back yet: re-adding it failed", "neighbor", addr, "err", err)
			delete(pending, addr)
			continue
		}
		s.logger.Info("bgp neighbor not back yet: kept in graceful restart for its session", "neighbor", addr)
	}
	return true
}

func sameSession(a, b *Neighbor) bool {
	return a.ASN == b.ASN && a.port() == b.port() && a.Passive == b.Passive &&
		a.Multihop == b.Multihop && a.Password == b.Password && a.FlowSpec == b.FlowSpec
}

func samePolicy(a, b *Neighbor) bool {
	return a.Role == b.Role && slices.Equal(a.Communities, b.Communities) &&
		slices.Equal(a.LargeCommunities, b.LargeCommunities)
}

// CheckReconfigure reports whether Reconfigure would refuse cfg (an
// invalid config, or a change that needs a restart) without changing
// anything: a reload checks every component first and applies none of it
// when one refuses. Reconfigure can still fail afterwards where GoBGP
// refuses a call.
func (s *Speaker) CheckReconfigure(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("validating bgp config: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refuses(&cfg)
}

// refuses is Reconfigure's refusals of a validated cfg; s.mu must be held.
func (s *Speaker) refuses(cfg *Config) error {
	if s.closed {
		return errors.New("reconfiguring: bgp speaker closed")
	}
	old := s.cfg
	if cfg.ASN != old.ASN || cfg.RouterID != old.RouterID || cfg.ListenAddress != old.ListenAddress ||
		cfg.listenPort() != old.listenPort() || cfg.GracefulRestart != old.GracefulRestart ||
		cfg.restartTime() != old.restartTime() || cfg.LongLivedStaleTime != old.LongLivedStaleTime {
		return errors.New("reconfiguring bgp: asn, router_id, listen_address, listen_port, graceful_restart, " +
			"graceful_restart_time and long_lived_stale_time need a restart")
	}
	if cfg.NextHopV4 != old.NextHopV4 || cfg.NextHopV6 != old.NextHopV6 {
		if _, err := newPathBuilder(cfg.NextHopV4, cfg.NextHopV6); err != nil {
			return err
		}
	}
	return nil
}

// Reconfigure applies a new configuration without dropping sessions:
// changed own prefixes, communities, roles and max_routes are applied by a
// policy rewrite (neighbors whose communities changed get their routes
// again; a route a neighbor may no longer have is withdrawn and
// re-announced, which withdraws it there). Added neighbors are started and
// removed ones stopped; a neighbor whose session parameters (asn, port,
// passive, multihop, password, flowspec) changed is restarted (FlowSpec
// filters whose placement changed are sent again). ASN, router ID and
// listen address/port need a restart: changes to them are refused.
func (s *Speaker) Reconfigure(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("validating bgp config: %w", err)
	}
	cfg = cloneConfig(cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refuses(&cfg); err != nil {
		return err
	}
	old := s.cfg
	oldByAddr := make(map[netip.Addr]*Neighbor, len(old.Neighbors))
	for i := range old.Neighbors {
		oldByAddr[old.Neighbors[i].Address] = &old.Neighbors[i]
	}
	newByAddr := make(map[netip.Addr]*Neighbor, len(cfg.Neighbors))
	for i := range cfg.Neighbors {
		newByAddr[cfg.Neighbors[i].Address] = &cfg.Neighbors[i]
	}

	// Admission in a stable order: what a neighbor had stays first.
	order := make([]netip.Prefix, 0, len(s.announced))
	for p := range s.announced {
		order = append(order, p)
	}
	slices.SortFunc(order, netip.Prefix.Compare)
	nbrs := s.newNeighborStates(&cfg, order)
	placeFilters(&cfg, nbrs, s.filters)

	var pb *pathBuilder
	if cfg.NextHopV4 != old.NextHopV4 || cfg.NextHopV6 != old.NextHopV6 {
		var err error
		if pb, err = newPathBuilder(cfg.NextHopV4, cfg.NextHopV6); err != nil {
			return err
		}
	}
	if !s.started {
		s.cfg, s.nbrs = cfg, nbrs
		if pb != nil {
			s.pb = pb
		}
		return nil
	}

	var errs []error
	// 1. Stop removed and changed neighbors.
	var removed, added []*Neighbor
	for addr, o := range oldByAddr {
		if n, ok := newByAddr[addr]; !ok || !sameSession(o, n) {
			removed = append(removed, o)
		}
	}
	for addr, n := range newByAddr {
		if o, ok := oldByAddr[addr]; !ok || !sameSession(o, n) {
			added = append(added, n)
		}
	}
	for _, n := range removed {
		s.logger.Info("bgp neighbor removed or changed, stopping its session", "neighbor", n.Address)
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: n.Address.String()}); err != nil {
			errs = append(errs, fmt.Errorf("removing bgp neighbor %s: %w", n.Address, err))
		}
		s.metrics.neighborUp.DeleteLabelValues(n.Address.String())
		s.stateMu.Lock()
		delete(s.states, n.Address)
		s.stateMu.Unlock()
	}

	// 2. Which routes each surviving neighbor gains or loses.
	gain := make(map[netip.Prefix]struct{})
	lose := make(map[netip.Prefix]struct{})
	var resetOut []netip.Addr
	for addr, n := range newByAddr {
		o, ok := oldByAddr[addr]
		if !ok || !sameSession(o, n) {
			continue // a new session gets everything it may have
		}
		if !samePolicy(o, n) {
			resetOut = append(resetOut, addr)
		}
		os, ns := s.nbrs[addr], nbrs[addr]
		for _, p := range order {
			was := old.eligible(o.Role, p) && !has(os.held, p)
			is := cfg.eligible(n.Role, p) && !has(ns.held, p)
			switch {
			case was && !is:
				lose[p] = struct{}{}
			case !was && is:
				gain[p] = struct{}{}
				if !slices.Contains(resetOut, addr) {
					resetOut = append(resetOut, addr)
				}
			}
		}
	}
	// Filters whose block communities change are added again below, with
	// the new ones: GoBGP then sends them where they may now go and
	// withdraws them where they may not.
	oldBlocks := make(map[domain.Key]string, len(s.filters))
	for k := range s.filters {
		oldBlocks[k] = blockKey(s.blocks(k))
	}

	// 3. The new policy.
	s.cfg, s.nbrs = cfg, nbrs
	if pb != nil {
		s.pb = pb
	}
	if err := s.srv.SetPolicies(ctx, buildPolicies(&s.cfg, s.nbrs)); err != nil {
		return errors.Join(append(errs, fmt.Errorf("setting bgp policies: %w", err))...)
	}

	// 4. Routes: withdraw-and-announce what someone lost (GoBGP cannot
	// withdraw a route from one neighbor only); everything again when the
	// next hops changed. What a neighbor gained goes out by the soft reset
	// out below (GoBGP does not resend an unchanged route).
	if len(lose) > 0 {
		s.logger.Warn("bgp reconfigure: withdrawing routes neighbors may no longer have (others see them re-announced)", "routes", len(lose))
	}
	for p := range lose {
		if err := s.deletePath(ctx, p); err != nil {
			errs = append(errs, err)
		}
		if err := s.addPath(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	movedFilters := 0
	for _, k := range filterOrder(s.filters) {
		if blockKey(s.blocks(k)) == oldBlocks[k] {
			continue
		}
		movedFilters++
		if err := s.addFilterPath(ctx, k); err != nil {
			errs = append(errs, err)
		}
	}
	if pb != nil {
		rest := slices.DeleteFunc(slices.Clone(order), func(p netip.Prefix) bool { return has(lose, p) })
		if _, err := forEach(ctx, rest, s.addPath); err != nil {
			errs = append(errs, err)
		}
	}

	// 5. New sessions, and communities re-sent where they changed.
	for _, n := range added {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConfig(n, false)}); err != nil {
			errs = append(errs, fmt.Errorf("adding bgp neighbor %s: %w", n.Address, err))
		}
		s.metrics.neighborUp.WithLabelValues(n.Address.String()).Set(0)
	}
	for _, addr := range resetOut {
		if err := s.softResetOut(ctx, addr); err != nil {
			errs = append(errs, err)
		}
	}
	s.logger.Info("bgp speaker reconfigured", "neighbors", len(cfg.Neighbors), "added", len(added),
		"removed", len(removed), "routes_lost", len(lose), "routes_gained", len(gain), "filters_moved", movedFilters)
	return errors.Join(errs...)
}

func has(m map[netip.Prefix]struct{}, p netip.Prefix) bool {
	_, ok := m[p]
	return ok
}
