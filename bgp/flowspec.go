package bgp

// FlowSpec filters (RFC 8955 for IPv4, RFC 8956 for IPv6): "traffic from
// this source, of this IP protocol, to these destination ports: discard".
//
// A filter is one FlowSpec path in GoBGP's global RIB with the components
// source prefix (the entry's prefix), IP protocol and destination port, and
// the attributes ORIGIN IGP, an empty AS_PATH, NO_EXPORT and the
// traffic-rate extended community with rate 0 (discard).
//
// GoBGP's policy cannot match FlowSpec NLRI with prefix sets, so the
// per-neighbor decisions — a peer gets only filters for sources inside
// own_prefixes, a neighbor gets at most max_flowspec filters, the rest held
// back and promoted oldest first — are taken here and carried on the path
// itself: a filter that a neighbor must not get carries that neighbor's
// internal "block" large community bgp.asn:filterBlockLocal1:ID, and the
// export policy rejects, for each FlowSpec neighbor, the paths carrying its
// ID (a one-entry set: one comparison per path, however many filters are
// held). The export policy removes every block community before a path
// leaves, so routers never see them. A filter whose placement changes (a
// promotion, a reload) is added again with its new block communities:
// GoBGP replaces the path, sends it to a neighbor that may now have it and
// withdraws it from one that may no longer.
//
// Only neighbors with flowspec: true negotiate the FlowSpec AFI-SAFIs,
// and GoBGP sends a neighbor only the families it negotiated: a neighbor
// without flowspec: true never receives a filter.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/rtbh/rtbh/detector/domain"
)

// filterBlockLocal1 is the first local part of the internal block
// communities ("rtbh").
const filterBlockLocal1 = 0x72746268

var (
	familyFS4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_FLOW_SPEC_UNICAST}
	familyFS6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_FLOW_SPEC_UNICAST}
)

// filterAdmission is a FlowSpec neighbor's share of the filters: admitted
// ones are sent; blocked ones carry its block community — the held ones
// (beyond max_flowspec, promoted oldest first when admitted ones go) and,
// for peers, those outside own_prefixes.
type filterAdmission struct {
	id       uint32 // its block community's last part; stable while the speaker runs
	limit    int    // 0 = none
	admitted int
	blocked  map[domain.Key]struct{} // held and ineligible
	held     map[domain.Key]struct{}
	queue    []domain.Key // promotion order; may hold stale entries
	warned   bool
}

func newFilterAdmission(id uint32, limit int) filterAdmission {
	return filterAdmission{id: id, limit: limit, blocked: make(map[domain.Key]struct{}), held: make(map[domain.Key]struct{})}
}

// filterID returns the block community ID of the neighbor at addr,
// assigning one the first time; s.mu must be held (or s not yet shared).
func (s *Speaker) filterID(addr netip.Addr) uint32 {
	id, ok := s.filterIDs[addr]
	if !ok {
		id = uint32(len(s.filterIDs) + 1)
		s.filterIDs[addr] = id
	}
	return id
}

// maxFlowSpec is the effective filter cap for n, 0 = none.
func (c *Config) maxFlowSpec(n *Neighbor) int {
	if n.MaxFlowSpec > 0 {
		return n.MaxFlowSpec
	}
	return c.DefaultMaxRoutes
}

// filterEligible reports whether n may receive filter k: it negotiates
// FlowSpec and, for a peer, k's source is inside own_prefixes.
func (c *Config) filterEligible(n *Neighbor, k domain.Key) bool {
	return n.FlowSpec && (n.Role != RolePeer || c.own.ContainsPrefix(k.Prefix))
}

// place decides filter k for the neighbor.
func (st *neighborState) place(cfg *Config, k domain.Key) {
	fa := &st.fs
	if !cfg.filterEligible(&st.n, k) {
		fa.blocked[k] = struct{}{}
		return
	}
	if fa.limit > 0 && fa.admitted >= fa.limit {
		fa.blocked[k] = struct{}{}
		fa.held[k] = struct{}{}
		fa.queue = append(fa.queue, k)
		return
	}
	fa.admitted++
}

// unplace undoes place for a filter that is gone.
func (st *neighborState) unplace(k domain.Key) {
	fa := &st.fs
	if _, ok := fa.blocked[k]; ok {
		delete(fa.blocked, k)
		delete(fa.held, k)
		return
	}
	fa.admitted--
}

// promote admits held filters while there is room; it returns them.
func (st *neighborState) promote() []domain.Key {
	fa := &st.fs
	var out []domain.Key
	for (fa.limit == 0 || fa.admitted < fa.limit) && len(fa.queue) > 0 {
		k := fa.queue[0]
		fa.queue = fa.queue[1:]
		if _, ok := fa.held[k]; !ok {
			continue
		}
		delete(fa.held, k)
		delete(fa.blocked, k)
		fa.admitted++
		out = append(out, k)
	}
	if len(fa.held) == 0 {
		fa.queue = nil
		fa.warned = false
	}
	return out
}

// filterOrder returns the filters oldest first (the order they were
// announced in).
func filterOrder(filters map[domain.Key]uint64) []domain.Key {
	return slices.SortedFunc(maps.Keys(filters), func(a, b domain.Key) int {
		switch x, y := filters[a], filters[b]; {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
}

// placeFilters computes the filter admission of every FlowSpec neighbor of
// nbrs over filters, oldest first.
func placeFilters(cfg *Config, nbrs map[netip.Addr]*neighborState, filters map[domain.Key]uint64) {
	order := filterOrder(filters)
	for _, st := range nbrs {
		if !st.n.FlowSpec {
			continue
		}
		for _, k := range order {
			st.place(cfg, k)
		}
	}
}

// blockString is a neighbor's block community, as a set entry (GoBGP
// matches a plain A:B:C entry exactly).
func blockString(asn, id uint32) string {
	return strconv.FormatUint(uint64(asn), 10) + ":" + strconv.FormatUint(filterBlockLocal1, 10) + ":" + strconv.FormatUint(uint64(id), 10)
}

// blockRegexp matches every block community of asn, for the export policy
// to remove.
func blockRegexp(asn uint32) string {
	return "^" + strconv.FormatUint(uint64(asn), 10) + ":" + strconv.FormatUint(filterBlockLocal1, 10) + `:[0-9]+$`
}

// blockedSetName is the one-entry large-community set of a neighbor's
// block community.
func blockedSetName(a netip.Addr) string { return setName("fsblock", a) }

// filterStatements are the export statements for filters: per FlowSpec
// neighbor, reject the paths with its block community; then remove the
// block communities from every FlowSpec path (no verdict: the default
// accepts).
func filterStatements(cfg *Config, nbrs map[netip.Addr]*neighborState) ([]*api.DefinedSet, []*api.Statement, *api.Statement) {
	var sets []*api.DefinedSet
	var stmts []*api.Statement
	for i := range cfg.Neighbors {
		n := &cfg.Neighbors[i]
		st := nbrs[n.Address]
		if !n.FlowSpec || st == nil {
			continue
		}
		d := &api.DefinedSet{DefinedType: api.DefinedType_LARGE_COMMUNITY, Name: blockedSetName(n.Address),
			List: []string{blockString(cfg.ASN, st.fs.id)}}
		sets = append(sets, d)
		stmts = append(stmts, &api.Statement{
			Name: d.Name,
			Conditions: &api.Conditions{
				NeighborSet:       &api.MatchSet{Type: api.MatchSet_ANY, Name: setName("n", n.Address)},
				LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_ANY, Name: d.Name},
			},
			Actions: &api.Actions{RouteAction: api.RouteAction_REJECT},
		})
	}
	untag := &api.Statement{
		Name:       "rtbh-flowspec-untag",
		Conditions: &api.Conditions{AfiSafiIn: []*api.Family{familyFS4, familyFS6}},
		Actions: &api.Actions{LargeCommunity: &api.CommunityAction{
			Type: api.CommunityAction_REMOVE, Communities: []string{blockRegexp(cfg.ASN)}}},
	}
	return sets, stmts, untag
}

// checkFilter validates a filter given to AnnounceFilters or
// WithdrawFilters: a usable prefix and a canonical match.
func checkFilter(k domain.Key) (domain.FlowMatch, error) {
	if err := checkPrefix(k.Prefix); err != nil {
		return domain.FlowMatch{}, err
	}
	m, err := domain.ParseMatch(k.Match)
	if err != nil {
		return domain.FlowMatch{}, fmt.Errorf("filter %s: %w", k, err)
	}
	if m.String() != k.Match {
		return domain.FlowMatch{}, fmt.Errorf("filter %s: match is not canonical (%s)", k, m)
	}
	return m, nil
}

// blocks returns the block communities filter k carries now: those of the
// FlowSpec neighbors that must not get it.
func (s *Speaker) blocks(k domain.Key) []*bgp.LargeCommunity {
	var out []*bgp.LargeCommunity
	for _, st := range s.nbrs {
		if _, ok := st.fs.blocked[k]; ok && st.n.FlowSpec {
			out = append(out, bgp.NewLargeCommunity(s.cfg.ASN, filterBlockLocal1, st.fs.id))
		}
	}
	slices.SortFunc(out, func(a, b *bgp.LargeCommunity) int { return int(a.LocalData2) - int(b.LocalData2) })
	return out
}

// filterPath returns the API path announcing (or withdrawing) filter k.
func (s *Speaker) filterPath(k domain.Key, withdraw bool) (*api.Path, error) {
	m, err := checkFilter(k)
	if err != nil {
		return nil, err
	}
	rf, src, nh := bgp.RF_FS_IPv4_UC, k.Prefix.String(), "0.0.0.0"
	if k.Prefix.Addr().Is6() {
		rf, src, nh = bgp.RF_FS_IPv6_UC, k.Prefix.String()+"/0", "::" // RFC 8956 source offset 0
	}
	ports := make([]string, len(m.Ports))
	for i, r := range m.Ports {
		if r.First == r.Last {
			ports[i] = "==" + strconv.Itoa(int(r.First))
		} else {
			ports[i] = ">=" + strconv.Itoa(int(r.First)) + "&<=" + strconv.Itoa(int(r.Last))
		}
	}
	expr := "source " + src + " protocol ==" + m.ProtocolName() + " destination-port " + strings.Join(ports, " ")
	cs, err := bgp.ParseFlowSpecComponents(rf, expr)
	if err != nil {
		return nil, fmt.Errorf("encoding filter %s: %w", k, err)
	}
	var nlri bgp.AddrPrefixInterface
	if rf == bgp.RF_FS_IPv4_UC {
		nlri = bgp.NewFlowSpecIPv4Unicast(cs)
	} else {
		nlri = bgp.NewFlowSpecIPv6Unicast(cs)
	}
	as := uint16(0)
	if s.cfg.ASN <= 0xFFFF {
		as = uint16(s.cfg.ASN)
	}
	attrs := []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		bgp.NewPathAttributeAsPath(nil),
		bgp.NewPathAttributeMpReachNLRI(nh, []bgp.AddrPrefixInterface{nlri}),
		bgp.NewPathAttributeCommunities([]uint32{NoExport}),
		bgp.NewPathAttributeExtendedCommunities([]bgp.ExtendedCommunityInterface{bgp.NewTrafficRateExtended(as, 0)}),
	}
	if !withdraw {
		if b := s.blocks(k); len(b) > 0 {
			attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(b))
		}
	}
	p, err := apiutil.NewPath(nlri, withdraw, attrs, time.Now())
	if err != nil {
		return nil, fmt.Errorf("encoding filter %s: %w", k, err)
	}
	return p, nil
}

// addFilterPath adds (or replaces) filter k's path with its current block
// communities.
func (s *Speaker) addFilterPath(ctx context.Context, k domain.Key) error {
	path, err := s.filterPath(k, false)
	if err != nil {
		return err
	}
	return s.sendPath(ctx, path, filterName{k})
}

func (s *Speaker) deleteFilterPath(ctx context.Context, k domain.Key) error {
	path, err := s.filterPath(k, true)
	if err != nil {
		return err
	}
	return s.sendPath(ctx, path, filterName{k})
}

// filterName names a filter in errors ("filter 198.51.100.7/32 tcp/25").
type filterName struct{ k domain.Key }

func (f filterName) String() string { return "filter " + f.k.String() }

// AnnounceFilters announces FlowSpec filters (keys with a canonical
// match) to the neighbors with flowspec: true — peers only those with
// sources inside own_prefixes, each neighbor at most its max_flowspec
// (the rest held back and promoted, oldest first, as filters go).
// Already announced filters are skipped, so it is idempotent.
func (s *Speaker) AnnounceFilters(ctx context.Context, filters []domain.Key) error {
	for _, k := range filters {
		if _, err := checkFilter(k); err != nil {
			return fmt.Errorf("announcing: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("announcing: bgp speaker closed")
	}
	fresh := make([]domain.Key, 0, len(filters))
	for _, k := range filters {
		if _, ok := s.filters[k]; ok {
			continue
		}
		s.filterSeq++
		s.filters[k] = s.filterSeq
		fresh = append(fresh, k)
	}
	if len(fresh) == 0 {
		return nil
	}
	// Placement first: the path carries the neighbors that must not get it.
	for addr, st := range s.nbrs {
		if !st.n.FlowSpec {
			continue
		}
		for _, k := range fresh {
			st.place(&s.cfg, k)
		}
		if len(st.fs.held) > 0 && !st.fs.warned {
			st.fs.warned = true
			s.logger.Warn("bgp neighbor max_flowspec reached, holding filters back", "neighbor", addr,
				"max_flowspec", st.fs.limit, "held", len(st.fs.held))
		}
	}
	defer func() { s.metrics.filters.Set(float64(len(s.filters))) }()
	if !s.started {
		return nil
	}
	for i, k := range fresh {
		if err := s.addFilterPath(ctx, k); err != nil {
			s.forgetFilters(fresh[i:])
			return fmt.Errorf("announcing %d of %d filters failed: %w", len(fresh)-i, len(fresh), err)
		}
	}
	return nil
}

// forgetFilters undoes the bookkeeping of filters that could not be
// announced. Filters promoted into the places they took are sent with
// their new block communities.
func (s *Speaker) forgetFilters(ks []domain.Key) {
	for _, k := range ks {
		if _, ok := s.filters[k]; !ok {
			continue
		}
		delete(s.filters, k)
		for _, st := range s.nbrs {
			if st.n.FlowSpec {
				st.unplace(k)
			}
		}
	}
	promoted := make(map[domain.Key]struct{})
	for _, st := range s.nbrs {
		if st.n.FlowSpec {
			for _, k := range st.promote() {
				promoted[k] = struct{}{}
			}
		}
	}
	if s.started {
		for _, k := range filterOrder(filtersOf(s.filters, promoted)) {
			if err := s.addFilterPath(context.Background(), k); err != nil {
				// Still held back on the routers: correct, only late.
				s.logger.Warn("sending a promoted flowspec filter failed", "filter", k.String(), "err", err)
			}
		}
	}
}

// WithdrawFilters withdraws FlowSpec filters from every neighbor; filters
// not announced are ignored. Filters held back from a neighbor by
// max_flowspec take the freed places.
func (s *Speaker) WithdrawFilters(ctx context.Context, filters []domain.Key) error {
	for _, k := range filters {
		if _, err := checkFilter(k); err != nil {
			return fmt.Errorf("withdrawing: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("withdrawing: bgp speaker closed")
	}
	gone := make([]domain.Key, 0, len(filters))
	for _, k := range filters {
		if _, ok := s.filters[k]; ok {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	var errs []error
	if s.started {
		gone = slices.DeleteFunc(gone, func(k domain.Key) bool {
			if err := s.deleteFilterPath(ctx, k); err != nil {
				// Still announced as far as the routers know: keep it so a
				// later WithdrawFilters can retry.
				errs = append(errs, err)
				return true
			}
			return false
		})
	}
	defer func() { s.metrics.filters.Set(float64(len(s.filters))) }()
	promoted := make(map[domain.Key]struct{})
	for _, k := range gone {
		delete(s.filters, k)
		for _, st := range s.nbrs {
			if st.n.FlowSpec {
				st.unplace(k)
			}
		}
	}
	for _, st := range s.nbrs {
		if st.n.FlowSpec {
			for _, k := range st.promote() {
				promoted[k] = struct{}{}
			}
		}
	}
	if s.started {
		// A promoted filter goes out again without the block community of
		// the neighbors it may now have: GoBGP sends it to them.
		for _, k := range filterOrder(filtersOf(s.filters, promoted)) {
			if err := s.addFilterPath(ctx, k); err != nil {
				errs = append(errs, fmt.Errorf("promoting held filter: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// filtersOf returns the entries of filters whose keys are in ks.
func filtersOf(filters map[domain.Key]uint64, ks map[domain.Key]struct{}) map[domain.Key]uint64 {
	out := make(map[domain.Key]uint64, len(ks))
	for k := range ks {
		if seq, ok := filters[k]; ok {
			out[k] = seq
		}
	}
	return out
}

// AnnouncedFilters returns the filters currently announced, sorted.
func (s *Speaker) AnnouncedFilters() []domain.Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.SortedFunc(maps.Keys(s.filters), domain.Key.Compare)
}

// addFilterAfiSafis adds the FlowSpec AFI-SAFIs to a neighbor's config,
// with the unicast families' graceful restart settings.
func addFilterAfiSafis(p *api.Peer, gr bool, llgr uint32) {
	for _, f := range []*api.Family{familyFS4, familyFS6} {
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
}

// isFlowSpecFamily reports whether f is IPv4 or IPv6 FlowSpec.
func isFlowSpecFamily(f *api.Family) bool {
	return f != nil && f.Safi == api.Family_SAFI_FLOW_SPEC_UNICAST
}

// blockKey is a comparable form of a filter's block communities.
func blockKey(bs []*bgp.LargeCommunity) string {
	var b strings.Builder
	for _, c := range bs {
		b.WriteString(strconv.FormatUint(uint64(c.LocalData2), 10))
		b.WriteByte(',')
	}
	return b.String()
}
