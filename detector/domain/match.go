package domain

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// IP protocol numbers a FlowSpec match may name.
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)

// PortRange is an inclusive range of ports; First == Last is one port.
type PortRange struct{ First, Last uint16 }

// FlowMatch is a parsed FlowSpec match (RFC 8955/8956): an IP protocol
// (tcp or udp) and destination ports. The source of a filter is its
// entry's prefix; its action is always discard (traffic-rate 0).
//
// Ports are kept canonical: sorted, overlapping and adjacent ranges merged,
// so two matches for the same traffic have the same String.
type FlowMatch struct {
	Protocol uint8 // ProtoTCP or ProtoUDP
	Ports    []PortRange
}

// ProtocolName is "tcp" or "udp".
func (m FlowMatch) ProtocolName() string {
	switch m.Protocol {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return strconv.Itoa(int(m.Protocol))
}

// String is the canonical text: "tcp/25", "udp/53,5353", "tcp/25,465-587".
func (m FlowMatch) String() string {
	var b strings.Builder
	b.WriteString(m.ProtocolName())
	b.WriteByte('/')
	for i, r := range m.Ports {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(r.First)))
		if r.Last != r.First {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(r.Last)))
		}
	}
	return b.String()
}

// ParseProtocol parses "tcp" or "udp" (any case).
func ParseProtocol(s string) (uint8, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "":
		return 0, fmt.Errorf("missing protocol: want tcp or udp")
	}
	return 0, fmt.Errorf("protocol %q: want tcp or udp", s)
}

// ParseMatch parses a FlowSpec match "PROTO/PORTS": PROTO is tcp or udp,
// PORTS a comma-separated list of ports (1-65535) and inclusive ranges
// ("25", "53,5353", "25,465-587"). The result is canonical: its String may
// differ from s ("tcp/587,25,26" is "tcp/25-26,587").
func ParseMatch(s string) (FlowMatch, error) {
	s = strings.TrimSpace(s)
	proto, ports, ok := strings.Cut(s, "/")
	if s == "" {
		return FlowMatch{}, fmt.Errorf("empty flowspec match: want PROTO/PORTS, e.g. tcp/25")
	}
	p, err := ParseProtocol(proto)
	if err != nil {
		return FlowMatch{}, fmt.Errorf("flowspec match %q: %w", s, err)
	}
	if !ok || strings.TrimSpace(ports) == "" {
		return FlowMatch{}, fmt.Errorf("flowspec match %q: no destination ports: want PROTO/PORTS, e.g. %s/25", s, strings.ToLower(proto))
	}
	var rs []PortRange
	for part := range strings.SplitSeq(ports, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := parsePort(lo)
		if err != nil {
			return FlowMatch{}, fmt.Errorf("flowspec match %q: %w", s, err)
		}
		last := first
		if isRange {
			if last, err = parsePort(hi); err != nil {
				return FlowMatch{}, fmt.Errorf("flowspec match %q: %w", s, err)
			}
			if last < first {
				return FlowMatch{}, fmt.Errorf("flowspec match %q: port range %s ends before it starts", s, part)
			}
		}
		rs = append(rs, PortRange{first, last})
	}
	return NewFlowMatch(p, rs)
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty port")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("port %q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d is out of range 1-65535", n)
	}
	return uint16(n), nil
}

// MaxMatchRanges is the most port ranges (after merging) a match may
// have: each costs up to 6 bytes of NLRI, and a FlowSpec NLRI with its
// UPDATE must fit in a 4,096-byte BGP message.
const MaxMatchRanges = 64

// NewFlowMatch checks and canonicalizes a match given as values (the API's
// form): protocol tcp or udp, at least one port range, every port 1-65535,
// every range first <= last, at most MaxMatchRanges ranges once merged.
func NewFlowMatch(proto uint8, ports []PortRange) (FlowMatch, error) {
	if proto != ProtoTCP && proto != ProtoUDP {
		return FlowMatch{}, fmt.Errorf("flowspec protocol %d: want tcp (6) or udp (17)", proto)
	}
	if len(ports) == 0 {
		return FlowMatch{}, fmt.Errorf("flowspec match: no destination ports")
	}
	rs := slices.Clone(ports)
	for _, r := range rs {
		if r.First == 0 || r.Last == 0 {
			return FlowMatch{}, fmt.Errorf("flowspec match: port 0 is out of range 1-65535")
		}
		if r.Last < r.First {
			return FlowMatch{}, fmt.Errorf("flowspec match: port range %d-%d ends before it starts", r.First, r.Last)
		}
	}
	slices.SortFunc(rs, func(a, b PortRange) int { return int(a.First) - int(b.First) })
	out := rs[:1]
	for _, r := range rs[1:] {
		cur := &out[len(out)-1]
		if int(r.First) <= int(cur.Last)+1 {
			cur.Last = max(cur.Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	if len(out) > MaxMatchRanges {
		return FlowMatch{}, fmt.Errorf("flowspec match: %d separate ports or ranges, at most %d", len(out), MaxMatchRanges)
	}
	return FlowMatch{Protocol: proto, Ports: out}, nil
}

// CanonicalMatch returns the canonical form of a match text; "" (a route)
// stays "".
func CanonicalMatch(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	m, err := ParseMatch(s)
	if err != nil {
		return "", err
	}
	return m.String(), nil
}

// Key identifies an active entry: a blackhole route (Match "") or a
// FlowSpec filter on Prefix. A route and a filter on one prefix are two
// entries.
type Key struct {
	Prefix netip.Prefix
	Match  string // canonical (FlowMatch.String), "" for a route
}

// Key is b's key.
func (b Blackhole) Key() Key { return Key{b.Prefix, b.Match} }

// IsFilter reports whether b is a FlowSpec filter rather than a route.
func (b Blackhole) IsFilter() bool { return b.Match != "" }

// IsFilter reports whether k names a FlowSpec filter.
func (k Key) IsFilter() bool { return k.Match != "" }

// String is the prefix, followed by " flowspec MATCH" for a filter.
func (k Key) String() string {
	if k.Match == "" {
		return k.Prefix.String()
	}
	return k.Prefix.String() + " flowspec " + k.Match
}

// Compare orders keys by prefix, then match (a route before its filters).
func (k Key) Compare(o Key) int {
	if c := k.Prefix.Compare(o.Prefix); c != 0 {
		return c
	}
	return strings.Compare(k.Match, o.Match)
}
