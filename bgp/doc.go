// Package bgp is rtbh's embedded BGP speaker: the only package that talks
// BGP (through GoBGP v3, run in-process without its gRPC server).
//
// A Speaker announces each active blackhole as one route — an IPv4 /32 with
// NEXT_HOP Config.NextHopV4, or an IPv6 /128 carried in MP_REACH_NLRI with
// next hop Config.NextHopV6 over the same sessions — with ORIGIN IGP and
// NO_EXPORT. Everything that differs per neighbor is done by one global
// export policy whose statements match a neighbor set per neighbor:
//
//   - the neighbor's communities and large communities are added;
//   - prefixes beyond the neighbor's max_routes are held back through a
//     per-neighbor prefix set (and sent when room frees up);
//   - neighbors with RolePeer get only prefixes inside Config.OwnPrefixes.
//
// FlowSpec filters (AnnounceFilters, flowspec.go) are FlowSpec paths —
// source prefix, IP protocol, destination ports, traffic-rate 0 — sent only
// to neighbors with FlowSpec set (which negotiate the FlowSpec AFI-SAFIs),
// to peers only for sources inside Config.OwnPrefixes, each neighbor at
// most its MaxFlowSpec; the per-neighbor decisions ride on the path as
// internal block communities that the export policy acts on and strips.
//
// The global import policy accepts only locally originated routes: whatever
// routers send us is dropped.
//
// Close never sends a BGP NOTIFICATION (Cease): it shuts the sessions' TCP
// sockets down first, so routers that negotiated graceful restart keep the
// routes as stale until rtbhd is back and has sent End-of-RIB.
package bgp
