package bgp

// FlowSpec filters (RFC 8955 for IPv4, RFC 8956 for IPv6): "traffic from
// this source, of this IP protocol, to these destination ports: discard".
//
// A filter is one FlowSpec path in GoBGP's global RIB with the components
// source prefix (the entry's prefix), IP protocol and destination port, and
// the attributes ORIGIN IGP, an empty AS_PATH, NO_EXPORT, the traffic-rate
// extended community with rate 0 (discard) and one internal tag: a large
// community bgp.asn:filterTagLocal1:N, unique per filter. GoBGP's policy
// cannot match FlowSpec NLRI with prefix sets, so the per-neighbor
// decisions — a peer gets only filters for sources inside own_prefixes, a
// neighbor gets at most max_flowspec filters — are taken here and handed
// to GoBGP as a large-community set per FlowSpec neighbor (its "blocked"
// set: the tags of the filters it must not get), which the export policy
// rejects. The export policy removes the tag from every FlowSpec path
// before it leaves, so routers never see it.
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

// filterTagLocal1 is the first local part of the internal tag ("rtbh").
const filterTagLocal1 = 0x72746268

var (
	familyFS4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_FLOW_SPEC_UNICAST}
	familyFS6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_FLOW_SPEC_UNICAST}
)

// filterAdmission is a FlowSpec neighbor's share of the filters: admitted
// ones are sent, blocked ones are in its blocked tag set — the held ones
// (beyond max_flowspec, promoted oldest first when admitted ones go) and,
// for peers, those outside own_prefixes.
type filterAdmission struct {
	limit    int // 0 = none
	admitted int
	blocked  map[domain.Key]uint32 // key -> tag: held and ineligible
	held     map[domain.Key]struct{}
	queue    []domain.Key // promotion order; may hold stale entries
	warned   bool
}

func newFilterAdmission(limit int) filterAdmission {
	return filterAdmission{limit: limit, blocked: make(map[domain.Key]uint32), held: make(map[domain.Key]struct{})}
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

// place decides filter k (tag) for the neighbor; it reports whether k is
// blocked for it (so its tag must be in the blocked set before the path
// exists).
func (st *neighborState) place(cfg *Config, k domain.Key, tag uint32) (blocked bool) {
	fa := &st.fs
	if !cfg.filterEligible(&st.n, k) {
		fa.blocked[k] = tag
		return true
	}
	if fa.limit > 0 && fa.admitted >= fa.limit {
		fa.blocked[k] = tag
		fa.held[k] = struct{}{}
		fa.queue = append(fa.queue, k)
		return true
	}
	fa.admitted++
	return false
}

// unplace undoes place for a filter that is gone; it reports whether k
// was blocked (its tag is to leave the blocked set).
func (st *neighborState) unplace(k domain.Key) (wasBlocked bool) {
	fa := &st.fs
	if _, ok := fa.blocked[k]; ok {
		delete(fa.blocked, k)
		delete(fa.held, k)
		return true
	}
	fa.admitted--
	return false
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

// placeFilters computes the filter admission of every neighbor of nbrs
// over filters, oldest (lowest tag) first.
func placeFilters(cfg *Config, nbrs map[netip.Addr]*neighborState, filters map[domain.Key]uint32) {
	order := slices.SortedFunc(maps.Keys(filters), func(a, b domain.Key) int { return int64cmp(filters[a], filters[b]) })
	for _, st := range nbrs {
		st.fs = newFilterAdmission(cfg.maxFlowSpec(&st.n))
		if !st.n.FlowSpec {
			continue
		}
		for _, k := range order {
			st.place(cfg, k, filters[k])
		}
	}
}

func int64cmp(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// blockedSetName is the large-community set of the filters blocked for a
// neighbor.
func blockedSetName(a netip.Addr) string { return setName("fsblock", a) }

// tagString is the large community of tag, as a set entry (GoBGP matches
// a plain A:B:C entry exactly).
func tagString(asn, tag uint32) string {
	return strconv.FormatUint(uint64(asn), 10) + ":" + strconv.FormatUint(filterTagLocal1, 10) + ":" + strconv.FormatUint(uint64(tag), 10)
}

// tagRegexp matches every tag of asn, for the export policy to remove.
func tagRegexp(asn uint32) string {
	return "^" + strconv.FormatUint(uint64(asn), 10) + ":" + strconv.FormatUint(filterTagLocal1, 10) + `:[0-9]+$`
}

// filterStatements are the export statements for filters: per FlowSpec
// neighbor, reject its blocked filters; then remove the internal tag from
// every FlowSpec path (no verdict: the default accepts).
func filterStatements(cfg *Config, nbrs map[netip.Addr]*neighborState) ([]*api.DefinedSet, []*api.Statement, *api.Statement) {
	var sets []*api.DefinedSet
	var stmts []*api.Statement
	for i := range cfg.Neighbors {
		n := &cfg.Neighbors[i]
		if !n.FlowSpec {
			continue
		}
		d := &api.DefinedSet{DefinedType: api.DefinedType_LARGE_COMMUNITY, Name: blockedSetName(n.Address)}
		if st := nbrs[n.Address]; st != nil {
			tags := slices.Sorted(maps.Values(st.fs.blocked))
			for _, t := range tags {
				d.List = append(d.List, tagString(cfg.ASN, t))
			}
		}
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
			Type: api.CommunityAction_REMOVE, Communities: []string{tagRegexp(cfg.ASN)}}},
	}
	return sets, stmts, untag
}

// changeBlocked adds tags to (or removes them from) a neighbor's blocked
// set in GoBGP.
func (s *Speaker) changeBlocked(ctx context.Context, addr netip.Addr, tags []uint32, remove bool) error {
	if len(tags) == 0 {
		return nil
	}
	d := &api.DefinedSet{DefinedType: api.DefinedType_LARGE_COMMUNITY, Name: blockedSetName(addr)}
	for _, t := range tags {
		d.List = append(d.List, tagString(s.cfg.ASN, t))
	}
	var err error
	if remove {
		err = s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: d, All: false})
	} else {
		err = s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: d})
	}
	if err != nil {
		return fmt.Errorf("updating blocked flowspec filters of neighbor %s: %w", addr, err)
	}
	return nil
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

// filterPath returns the API path announcing (or withdrawing) filter k
// with its tag.
func (s *Speaker) filterPath(k domain.Key, tag uint32, withdraw bool) (*api.Path, error) {
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
		bgp.NewPathAttributeLargeCommunities([]*bgp.LargeCommunity{bgp.NewLargeCommunity(s.cfg.ASN, filterTagLocal1, tag)}),
	}
	p, err := apiutil.NewPath(nlri, withdraw, attrs, time.Now())
	if err != nil {
		return nil, fmt.Errorf("encoding filter %s: %w", k, err)
	}
	return p, nil
}

func (s *Speaker) addFilterPath(ctx context.Context, k domain.Key, tag uint32) error {
	path, err := s.filterPath(k, tag, false)
	if err != nil {
		return err
	}
	if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
		return fmt.Errorf("announcing filter %s: %w", k, err)
	}
	return nil
}

func (s *Speaker) deleteFilterPath(ctx context.Context, k domain.Key, tag uint32) error {
	path, err := s.filterPath(k, tag, true)
	if err != nil {
		return err
	}
	if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path}); err != nil {
		return fmt.Errorf("withdrawing filter %s: %w", k, err)
	}
	return nil
}

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
		s.nextTag++
		s.filters[k] = s.nextTag
		fresh = append(fresh, k)
	}
	if len(fresh) == 0 {
		return nil
	}
	// Placement first: a blocked filter's tag must be in the neighbor's
	// blocked set before the path exists, or it would be sent.
	blocks := make(map[netip.Addr][]uint32)
	for addr, st := range s.nbrs {
		if !st.n.FlowSpec {
			continue
		}
		for _, k := range fresh {
			if st.place(&s.cfg, k, s.filters[k]) {
				blocks[addr] = append(blocks[addr], s.filters[k])
			}
		}
	}
	if !s.started {
		return nil
	}
	var errs []error
	var unplaced []domain.Key
	for addr, tags := range blocks {
		if err := s.changeBlocked(ctx, addr, tags, false); err != nil {
			errs = append(errs, fmt.Errorf("holding back %d flowspec filters for %s, so not announcing them: %w", len(tags), addr, err))
			for _, k := range fresh {
				if slices.Contains(tags, s.filters[k]) {
					unplaced = append(unplaced, k)
				}
			}
			continue
		}
		if st := s.nbrs[addr]; len(st.fs.held) > 0 && !st.fs.warned {
			st.fs.warned = true
			s.logger.Warn("bgp neighbor max_flowspec reached, holding filters back", "neighbor", addr,
				"max_flowspec", st.fs.limit, "held", len(st.fs.held))
		}
	}
	if len(unplaced) > 0 {
		fresh = slices.DeleteFunc(fresh, func(k domain.Key) bool { return slices.Contains(unplaced, k) })
		s.forgetFilters(unplaced)
	}
	for i, k := range fresh {
		if err := s.addFilterPath(ctx, k, s.filters[k]); err != nil {
			s.forgetFilters(fresh[i:])
			errs = append(errs, fmt.Errorf("announcing %d of %d filters failed: %w", len(fresh)-i, len(fresh), err))
			break
		}
	}
	return errors.Join(errs...)
}

// forgetFilters undoes the bookkeeping of filters that could not be
// announced.
func (s *Speaker) forgetFilters(ks []domain.Key) {
	for _, k := range ks {
		tag, ok := s.filters[k]
		if !ok {
			continue
		}
		delete(s.filters, k)
		for addr, st := range s.nbrs {
			if st.n.FlowSpec && st.unplace(k) && s.started {
				_ = s.changeBlocked(context.Background(), addr, []uint32{tag}, true)
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
	gone := make(map[domain.Key]uint32, len(filters))
	for _, k := range filters {
		if tag, ok := s.filters[k]; ok {
			gone[k] = tag
		}
	}
	if len(gone) == 0 {
		return nil
	}
	var errs []error
	if s.started {
		for k, tag := range gone {
			if err := s.deleteFilterPath(ctx, k, tag); err != nil {
				// Still announced as far as the routers know: keep it so a
				// later WithdrawFilters can retry.
				delete(gone, k)
				errs = append(errs, err)
			}
		}
	}
	for k := range gone {
		delete(s.filters, k)
	}
	for addr, st := range s.nbrs {
		if !st.n.FlowSpec {
			continue
		}
		var unblock []uint32
		for k, tag := range gone {
			if st.unplace(k) {
				unblock = append(unblock, tag)
			}
		}
		promoted := st.promote()
		for _, k := range promoted {
			unblock = append(unblock, s.filters[k])
		}
		if !s.started {
			continue
		}
		if err := s.changeBlocked(ctx, addr, unblock, true); err != nil {
			errs = append(errs, err)
		}
		if len(promoted) > 0 {
			// GoBGP does not resend an unchanged path: promoted filters go
			// out by a soft reset out of the neighbor.
			if err := s.softResetOut(ctx, addr); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
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
