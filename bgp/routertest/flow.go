package routertest

import (
	"bufio"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// The BIRD tables of the flow4 and flow6 channels (BIRDConfig.FlowSpec).
const (
	FlowTable4 = "flowtab4"
	FlowTable6 = "flowtab6"
)

// Flow is a FlowSpec route as a router shows it.
type Flow struct {
	// Match is the router's own text of the NLRI, e.g. BIRD's
	// "src 198.51.100.7/32; proto 6; dport 25;".
	Match string
	// Components: Src is the source prefix (as the router prints it),
	// Proto the protocol (BIRD: flow4 "proto", flow6 "next header"), DPort
	// the destination port expression (BIRD: "25,465..587").
	Src, Proto, DPort string
	Communities       []string // "65535:65281"
	LargeCommunities  []string // "64500:666:0"
	// ExtCommunities are BIRD's raw extended communities, e.g.
	// "generic, 0x80060000, 0x0" (traffic-rate, AS 0x0000, rate 0.0).
	ExtCommunities []string
	Raw            string
}

// TrafficRateZero reports whether the flow carries the traffic-rate
// extended community with rate 0 (discard, RFC 8955 §7.3): type 0x8006,
// any AS, rate 0.0 (IEEE float 0x00000000).
func (f Flow) TrafficRateZero() bool {
	for _, e := range f.ExtCommunities {
		p := strings.Split(strings.ReplaceAll(e, " ", ""), ",")
		if len(p) == 3 && p[0] == "generic" && strings.HasPrefix(p[1], "0x8006") && (p[2] == "0x0" || p[2] == "0x00000000") {
			return true
		}
		if e == "FS:rate 0.000000" { // FRR's text of the same
			return true
		}
	}
	return false
}

// Flows returns the FlowSpec routes BIRD holds from the speaker for a
// family (best paths only), in BIRD's order.
func (b *BIRD) Flows(f Family) ([]Flow, error) {
	table := FlowTable4
	if f == IPv6 {
		table = FlowTable6
	}
	out, err := b.Birdc("show route all table " + table + " protocol " + ProtocolName)
	if err != nil {
		return nil, fmt.Errorf("reading BIRD flows: %w", err)
	}
	return parseBIRDFlows(out)
}

// FlowCount is the number of FlowSpec routes BIRD holds from the speaker
// in a family.
func (b *BIRD) FlowCount(f Family) (int, error) {
	fs, err := b.Flows(f)
	return len(fs), err
}

// WaitFlows waits until ok(flows) holds for BIRD's flows of a family and
// returns them; it fails the test after timeout.
func (b *BIRD) WaitFlows(f Family, timeout time.Duration, what string, ok func([]Flow) bool) []Flow {
	b.t.Helper()
	var last []Flow
	var lastErr error
	if !testkit.Poll(timeout, func() bool {
		last, lastErr = b.Flows(f)
		return lastErr == nil && ok(last)
	}) {
		var raw strings.Builder
		for _, fl := range last {
			raw.WriteString(fl.Raw)
		}
		b.t.Fatalf("BIRD flows: %s not reached within %s (err %v); last seen %d:\n%s", what, timeout, lastErr, len(last), raw.String())
	}
	return last
}

var birdFlowLine = regexp.MustCompile(`^(flow[46]) \{ (.*?) \}\s+\S*\s*\[`)

// parseBIRDFlows parses `birdc show route all table flowtabN` output.
func parseBIRDFlows(out string) ([]Flow, error) {
	var flows []Flow
	var cur *Flow
	var raw strings.Builder
	flush := func() {
		if cur != nil {
			cur.Raw = raw.String()
			slices.Sort(cur.Communities)
			slices.Sort(cur.LargeCommunities)
			flows = append(flows, *cur)
		}
		cur = nil
		raw.Reset()
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	skipping := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "BIRD ") || strings.HasPrefix(line, "Table ") || strings.TrimSpace(line) == "":
			flush()
			skipping = false
			continue
		case strings.HasPrefix(line, "flow4 {") || strings.HasPrefix(line, "flow6 {"):
			flush()
			m := birdFlowLine.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("parsing BIRD flow line %q", line)
			}
			if !strings.Contains(line, "] * ") && !strings.HasSuffix(line, "] *") {
				skipping = true
				continue
			}
			skipping = false
			cur = &Flow{Match: strings.TrimSpace(m[2])}
			for part := range strings.SplitSeq(cur.Match, ";") {
				part = strings.TrimSpace(part)
				if v, ok := strings.CutPrefix(part, "next header "); ok { // flow6's protocol
					cur.Proto = v
					continue
				}
				k, v, _ := strings.Cut(part, " ")
				switch k {
				case "src":
					cur.Src = v
				case "proto":
					cur.Proto = v
				case "dport":
					cur.DPort = v
				}
			}
			raw.WriteString(line + "\n")
			continue
		case !strings.HasPrefix(line, "\t") && strings.Contains(line, "["):
			flush() // another path of the same flow
			skipping = true
			continue
		}
		if skipping || cur == nil {
			continue
		}
		raw.WriteString(line + "\n")
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "BGP.community":
			for _, m := range birdCommunity.FindAllStringSubmatch(val, -1) {
				cur.Communities = append(cur.Communities, m[1]+":"+m[2])
			}
		case "BGP.large_community":
			for _, m := range birdLarge.FindAllStringSubmatch(val, -1) {
				cur.LargeCommunities = append(cur.LargeCommunities, m[1]+":"+m[2]+":"+m[3])
			}
		case "BGP.ext_community":
			for _, m := range birdExt.FindAllStringSubmatch(val, -1) {
				cur.ExtCommunities = append(cur.ExtCommunities, m[1])
			}
		}
	}
	flush()
	return flows, sc.Err()
}

var birdExt = regexp.MustCompile(`\(([^()]+)\)`)

// Flows returns the FlowSpec routes bgpd holds in a family, parsed from
// `show bgp ipv4|ipv6 flowspec detail`: Src is FRR's source text
// ("198.51.100.7/32", IPv6 "2001:db8::7/128/off 0"), Proto e.g. "6",
// DPort e.g. "25 , >= 465 , <= 587", ExtCommunities its action lines
// ("FS:rate 0.000000"). FRR does not show communities there.
func (f *FRR) Flows(fam Family) ([]Flow, error) {
	afi := "ipv4"
	if fam == IPv6 {
		afi = "ipv6"
	}
	out, err := f.Vtysh("show bgp " + afi + " flowspec detail")
	if err != nil {
		return nil, fmt.Errorf("reading FRR flows: %w", err)
	}
	return parseFRRFlows(out), nil
}

func parseFRRFlows(out string) []Flow {
	var flows []Flow
	var cur *Flow
	for line := range strings.Lines(out) {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "BGP flowspec entry:") {
			flows = append(flows, Flow{})
			cur = &flows[len(flows)-1]
		}
		if cur == nil {
			continue
		}
		cur.Raw += line
		switch {
		case strings.HasPrefix(l, "Source Address "):
			cur.Src = strings.TrimPrefix(l, "Source Address ")
		case strings.HasPrefix(l, "IP Protocol = "):
			cur.Proto = strings.TrimSpace(strings.TrimPrefix(l, "IP Protocol = "))
		case strings.HasPrefix(l, "Destination Port = "):
			cur.DPort = strings.TrimSpace(strings.TrimPrefix(l, "Destination Port = "))
		case strings.HasPrefix(l, "FS:"):
			cur.ExtCommunities = append(cur.ExtCommunities, l)
		}
	}
	return flows
}

// WaitFlows waits until ok(flows) holds for bgpd's flows of a family and
// returns them; it fails the test after timeout.
func (f *FRR) WaitFlows(fam Family, timeout time.Duration, what string, ok func([]Flow) bool) []Flow {
	f.t.Helper()
	var last []Flow
	var lastErr error
	if !testkit.Poll(timeout, func() bool {
		last, lastErr = f.Flows(fam)
		return lastErr == nil && ok(last)
	}) {
		var raw strings.Builder
		for _, fl := range last {
			raw.WriteString(fl.Raw)
		}
		f.t.Fatalf("FRR flows: %s not reached within %s (err %v); last seen %d:\n%s", what, timeout, lastErr, len(last), raw.String())
	}
	return last
}
