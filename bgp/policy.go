package bgp

import (
	"net/netip"
	"strings"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/rtbh/rtbh/detector/domain"
)

const (
	exportPolicy  = "rtbh-export"
	importPolicy  = "rtbh-import"
	peersSet      = "rtbh-peers"
	ownSetV4      = "rtbh-own-v4"
	ownSetV6      = "rtbh-own-v6"
	globalRIBName = "global"
)

// setName names a per-neighbor defined set or statement.
func setName(kind string, a netip.Addr) string {
	return "rtbh-" + kind + "-" + strings.NewReplacer(".", "_", ":", "_").Replace(a.String())
}

// heldSetName is the prefix set of routes held back from a neighbor
// (beyond its max_routes) for one address family.
func heldSetName(a netip.Addr, v6 bool) string {
	if v6 {
		return setName("held6", a)
	}
	return setName("held4", a)
}

// buildPolicies returns the complete routing policy for cfg: defined sets
// (with the current held-back prefixes of each neighbor) and the global
// import and export policies.
//
// Export statements, evaluated in order for each route and neighbor:
//  1. per neighbor: add its communities and large communities (no verdict);
//  2. per neighbor: reject prefixes in its held sets (max_routes);
//  3. per FlowSpec neighbor: reject the filters in its blocked set
//     (max_flowspec; for peers, sources outside own_prefixes);
//  4. if there are peer-role neighbors: accept for peers the prefixes inside
//     own_prefixes, then reject every other unicast route for peers;
//  5. remove the internal filter tag from FlowSpec paths (flowspec.go).
//
// The default is accept (border routers get everything). An empty neighbor
// set would match every neighbor in GoBGP, so peer statements exist only
// when peers do; an empty prefix set matches nothing, so an empty
// own_prefixes leaves peers with nothing.
func buildPolicies(cfg *Config, held map[netip.Addr]*neighborState) *api.SetPoliciesRequest {
	var sets []*api.DefinedSet
	var stmts []*api.Statement
	var peers []string
	for i := range cfg.Neighbors {
		n := &cfg.Neighbors[i]
		ns := setName("n", n.Address)
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: ns, List: []string{domain.HostPrefix(n.Address).String()}})
		if n.Role == RolePeer {
			peers = append(peers, domain.HostPrefix(n.Address).String())
		}
		if len(n.Communities) > 0 || len(n.LargeCommunities) > 0 {
			act := &api.Actions{}
			if len(n.Communities) > 0 {
				act.Community = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: n.Communities}
			}
			if len(n.LargeCommunities) > 0 {
				act.LargeCommunity = &api.CommunityAction{Type: api.CommunityAction_ADD, Communities: n.LargeCommunities}
			}
			stmts = append(stmts, &api.Statement{
				Name:       setName("comm", n.Address),
				Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: ns}},
				Actions:    act,
			})
		}
	}
	for i := range cfg.Neighbors {
		n := &cfg.Neighbors[i]
		ns := setName("n", n.Address)
		for _, v6 := range []bool{false, true} {
			hs := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: heldSetName(n.Address, v6)}
			if st := held[n.Address]; st != nil {
				for p := range st.held {
					if p.Addr().Is6() == v6 {
						hs.Prefixes = append(hs.Prefixes, exactPrefix(p))
					}
				}
			}
			sets = append(sets, hs)
			stmts = append(stmts, &api.Statement{
				Name: hs.Name,
				Conditions: &api.Conditions{
					NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: ns},
					PrefixSet:   &api.MatchSet{Type: api.MatchSet_ANY, Name: hs.Name},
				},
				Actions: &api.Actions{RouteAction: api.RouteAction_REJECT},
			})
		}
	}
	fsets, fstmts, untag := filterStatements(cfg, held)
	sets, stmts = append(sets, fsets...), append(stmts, fstmts...)
	if len(peers) > 0 {
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: peersSet, List: peers})
		own := map[bool]*api.DefinedSet{
			false: {DefinedType: api.DefinedType_PREFIX, Name: ownSetV4},
			true:  {DefinedType: api.DefinedType_PREFIX, Name: ownSetV6},
		}
		for _, p := range cfg.OwnPrefixes {
			d := own[p.Addr().Is6()]
			d.Prefixes = append(d.Prefixes, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Addr().BitLen())})
		}
		for _, v6 := range []bool{false, true} {
			d := own[v6]
			if len(d.Prefixes) == 0 {
				continue
			}
			sets = append(sets, d)
			stmts = append(stmts, &api.Statement{
				Name: "rtbh-peers-accept-" + d.Name,
				Conditions: &api.Conditions{
					NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: peersSet},
					PrefixSet:   &api.MatchSet{Type: api.MatchSet_ANY, Name: d.Name},
				},
				Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT},
			})
		}
		// Unicast only: FlowSpec filters for peers were decided by
		// filterStatements' blocked sets.
		stmts = append(stmts, &api.Statement{
			Name: "rtbh-peers-reject-rest",
			Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: peersSet},
				AfiSafiIn: []*api.Family{familyV4, familyV6}},
			Actions: &api.Actions{RouteAction: api.RouteAction_REJECT},
		})
	}
	stmts = append(stmts, untag)
	return &api.SetPoliciesRequest{
		DefinedSets: sets,
		Policies: []*api.Policy{
			{Name: exportPolicy, Statements: stmts},
			{Name: importPolicy, Statements: []*api.Statement{{
				Name:       "rtbh-accept-local",
				Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
				Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
			}}},
		},
	}
}

func exactPrefix(p netip.Prefix) *api.Prefix {
	return &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Bits())}
}
