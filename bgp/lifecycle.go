package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v3/api"
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

func sameSession(a, b *Neighbor) bool {
	return a.ASN == b.ASN && a.port() == b.port() && a.Passive == b.Passive &&
		a.Multihop == b.Multihop && a.Password == b.Password
}

func samePolicy(a, b *Neighbor) bool {
	return a.Role == b.Role && slices.Equal(a.Communities, b.Communities) &&
		slices.Equal(a.LargeCommunities, b.LargeCommunities)
}

// Reconfigure applies a new configuration without dropping sessions:
// changed own prefixes, communities, roles and max_routes are applied by a
// policy rewrite (neighbors whose communities changed get their routes
// again; a route a neighbor may no longer have is withdrawn and
// re-announced, which withdraws it there). Added neighbors are started and
// removed ones stopped; a neighbor whose session parameters (asn, port,
// passive, multihop, password) changed is restarted. ASN, router ID and
// listen address/port need a restart: changes to them are refused.
func (s *Speaker) Reconfigure(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("validating bgp config: %w", err)
	}
	cfg = cloneConfig(cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("reconfiguring: bgp speaker closed")
	}
	old := s.cfg
	if cfg.ASN != old.ASN || cfg.RouterID != old.RouterID || cfg.ListenAddress != old.ListenAddress ||
		cfg.listenPort() != old.listenPort() || cfg.GracefulRestart != old.GracefulRestart {
		return errors.New("reconfiguring bgp: asn, router_id, listen_address, listen_port and graceful_restart need a restart")
	}
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
	if pb != nil {
		rest := slices.DeleteFunc(slices.Clone(order), func(p netip.Prefix) bool { return has(lose, p) })
		if _, err := forEach(ctx, rest, s.addPath); err != nil {
			errs = append(errs, err)
		}
	}

	// 5. New sessions, and communities re-sent where they changed.
	for _, n := range added {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConfig(n)}); err != nil {
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
		"removed", len(removed), "routes_lost", len(lose), "routes_gained", len(gain))
	return errors.Join(errs...)
}

func has(m map[netip.Prefix]struct{}, p netip.Prefix) bool {
	_, ok := m[p]
	return ok
}
