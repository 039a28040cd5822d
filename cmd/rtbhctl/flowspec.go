package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// flowspecFlag parses --flowspec ("tcp/25", "udp/53,5353",
// "tcp/25,465-587") into the request's match; "" is nil (a route). A
// malformed match is a usage error: nothing is sent.
func flowspecFlag(s string) (*rtbhv1.FlowSpecMatch, error) {
	if s == "" {
		return nil, nil
	}
	m, err := domain.ParseMatch(s)
	if err != nil {
		return nil, usagef("--flowspec: %v", err)
	}
	out := &rtbhv1.FlowSpecMatch{Protocol: m.ProtocolName()}
	for _, r := range m.Ports {
		if r.First == r.Last {
			out.DstPorts = append(out.DstPorts, uint32(r.First))
		} else {
			out.DstPortRanges = append(out.DstPortRanges, &rtbhv1.PortRange{First: uint32(r.First), Last: uint32(r.Last)})
		}
	}
	return out, nil
}

// matchText is a match as rtbhctl prints it ("tcp/25,465-587"); "-" for
// a route.
func matchText(m *rtbhv1.FlowSpecMatch) string {
	if m == nil {
		return "-"
	}
	type rng struct{ first, last uint32 }
	var rs []rng
	for _, p := range m.GetDstPorts() {
		rs = append(rs, rng{p, p})
	}
	for _, r := range m.GetDstPortRanges() {
		rs = append(rs, rng{r.GetFirst(), r.GetLast()})
	}
	slices.SortFunc(rs, func(a, b rng) int { return int(a.first) - int(b.first) })
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = strconv.FormatUint(uint64(r.first), 10)
		if r.last != r.first {
			parts[i] += "-" + strconv.FormatUint(uint64(r.last), 10)
		}
	}
	return m.GetProtocol() + "/" + strings.Join(parts, ",")
}

// entryName is a prefix, with " flowspec MATCH" for a filter.
func entryName(prefix string, m *rtbhv1.FlowSpecMatch) string {
	if m == nil {
		return prefix
	}
	return fmt.Sprintf("%s flowspec %s", prefix, matchText(m))
}
