package main

// FlowSpec end to end: rtbhd as a process, BIRD 2 with flow4/flow6
// channels as a border router, FRR bgpd with the flowspec address
// families as a peer ISP.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// flowSetup starts rtbhd (BGP on speaker) with a BIRD border neighbor
// with flow4/flow6 channels (flowspec: true, max_flowspec maxFS) and,
// when frr is valid, an FRR peer with the flowspec families.
func flowSetup(t *testing.T, cfg daemonConfig, maxFS int, speaker, bird, frr netip.Addr) (*daemon, *routertest.BIRD, *routertest.FRR) {
	t.Helper()
	cfg.BGPAddr = speaker.String()
	cfg.BGPPort = testkit.FreePort(t, speaker)
	cfg.Neighbors = fmt.Sprintf(`    - address: %s
      asn: 64501
      role: border
      passive: true
      communities: ["64501:666"]
      flowspec: true`, bird)
	if maxFS > 0 {
		cfg.Neighbors += fmt.Sprintf("\n      max_flowspec: %d", maxFS)
	}
	if frr.IsValid() {
		cfg.Neighbors += fmt.Sprintf(`
    - address: %s
      asn: 64502
      role: peer
      passive: true
      communities: ["64502:666"]
      flowspec: true`, frr)
	}
	d := startDaemon(t, cfg)
	b := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: bird, LocalASN: 64501, PeerAddr: speaker,
		PeerPort: cfg.BGPPort, PeerASN: 64500, GracefulRestart: true, FlowSpec: true})
	b.WaitEstablished(20 * time.Second)
	var f *routertest.FRR
	if frr.IsValid() {
		f = routertest.StartFRR(t, routertest.FRRConfig{LocalAddr: frr, LocalASN: 64502, PeerAddr: speaker,
			PeerPort: cfg.BGPPort, PeerASN: 64500, FlowSpec: true})
		f.WaitEstablished(20 * time.Second)
	}
	return d, b, f
}

// hasFlow returns a predicate for WaitFlows: a flow from src with this
// protocol and destination ports (the router's text) is there.
func hasFlow(src, proto, dport string) func([]routertest.Flow) bool {
	return func(fs []routertest.Flow) bool {
		return slices.ContainsFunc(fs, func(f routertest.Flow) bool { return f.Src == src && f.Proto == proto && f.DPort == dport })
	}
}

func noFlowFrom(src string) func([]routertest.Flow) bool {
	return func(fs []routertest.Flow) bool {
		return !slices.ContainsFunc(fs, func(f routertest.Flow) bool { return f.Src == src })
	}
}

func flowSources(fs []routertest.Flow) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Src)
	}
	slices.Sort(out)
	return out
}

func TestFlowSpecEndToEnd(t *testing.T) {
	speaker, birdA, frrA := netip.MustParseAddr("127.0.51.1"), netip.MustParseAddr("127.0.51.2"), netip.MustParseAddr("127.0.51.3")
	d, bird, frr := flowSetup(t, newDaemonConfig(t, t.TempDir()), 0, speaker, birdA, frrA)

	// rtbhctl add --flowspec tcp/25: BIRD shows the filter (source,
	// protocol 6, port 25, traffic-rate 0, NO_EXPORT and the neighbor's
	// community) within 1 s, and gets no /32 route for the host.
	start := time.Now()
	out := ctl(t, d, "add", "--flowspec", "tcp/25", "--reason", "zombie smtp", "198.51.100.7")
	if !strings.HasPrefix(out, "added 198.51.100.7/32 flowspec tcp/25:") {
		t.Fatalf("rtbhctl add output %q", out)
	}
	fs := bird.WaitFlows(routertest.IPv4, 5*time.Second, "198.51.100.7 tcp/25", hasFlow("198.51.100.7/32", "6", "25"))
	within(t, "add --flowspec -> filter on BIRD", start, time.Second)
	for _, f := range fs {
		if !f.TrafficRateZero() || !slices.Equal(f.Communities, []string{"64501:666", "65535:65281"}) || len(f.LargeCommunities) != 0 {
			t.Errorf("BIRD flow %q: ext %v, communities %v, large %v; want traffic-rate 0, [64501:666 65535:65281], none",
				f.Match, f.ExtCommunities, f.Communities, f.LargeCommunities)
		}
	}
	if _, found, err := bird.Route(netip.MustParsePrefix("198.51.100.7/32")); err != nil || found {
		t.Errorf("BIRD has a /32 route for the filtered host (err %v): the household would be cut off", err)
	}
	fr := frr.WaitFlows(routertest.IPv4, 5*time.Second, "own-space filter on FRR", hasFlow("198.51.100.7/32", "6", "25"))
	if !fr[0].TrafficRateZero() {
		t.Errorf("FRR flow is not discard:\n%s", fr[0].Raw)
	}

	// The IPv6 form reaches flow6 (and the peer: own space).
	ctl(t, d, "add", "--flowspec", "udp/53,5353", "--reason", "v6 resolver abuse", "2001:db8::7")
	bird.WaitFlows(routertest.IPv6, 5*time.Second, "2001:db8::7 udp/53,5353 in flow6", hasFlow("2001:db8::7/128", "17", "53,5353"))
	frr.WaitFlows(routertest.IPv6, 5*time.Second, "IPv6 own-space filter on FRR", hasFlow("2001:db8::7/128/off 0", "17", "53 , = 5353"))

	// Outside own_prefixes: BIRD only. A filter added after it reaching
	// FRR proves it would have been there by now.
	ctl(t, d, "add", "--flowspec", "tcp/25", "--reason", "partner said", "203.0.113.9")
	fs = bird.WaitFlows(routertest.IPv4, 5*time.Second, "foreign filter on BIRD", hasFlow("203.0.113.9/32", "6", "25"))
	// It carries rtbhd's internal mark for the peer that must not get it;
	// the mark never leaves rtbhd.
	for _, f := range fs {
		if len(f.LargeCommunities) != 0 || !slices.Equal(f.Communities, []string{"64501:666", "65535:65281"}) {
			t.Errorf("BIRD flow %q: communities %v, large %v; want [64501:666 65535:65281] and no large ones", f.Match, f.Communities, f.LargeCommunities)
		}
	}
	ctl(t, d, "add", "--flowspec", "tcp/25,465-587", "--reason", "marker", "198.51.100.8")
	fr = frr.WaitFlows(routertest.IPv4, 5*time.Second, "marker on FRR", hasFlow("198.51.100.8/32", "6", "25 , >= 465 , <= 587"))
	if got := flowSources(fr); !slices.Equal(got, []string{"198.51.100.7/32", "198.51.100.8/32"}) {
		t.Errorf("FRR (a peer) holds filters for %v, want only the own-space ones", got)
	}

	// A blackhole route on the same prefix is a second entry; list shows both.
	ctl(t, d, "add", "--reason", "route too", "198.51.100.7")
	bird.WaitRoute(netip.MustParsePrefix("198.51.100.7/32"), 5*time.Second, nil)
	out = ctl(t, d, "list")
	for _, want := range []string{"198.51.100.7/32  -", "198.51.100.7/32  tcp/25 ", "2001:db8::7/128  udp/53,5353", "198.51.100.8/32  tcp/25,465-587"} {
		if !strings.Contains(out, want) {
			t.Errorf("rtbhctl list lacks %q:\n%s", want, out)
		}
	}
	out = ctl(t, d, "neighbors")
	if !strings.Contains(out, "FLOWSPEC") || !regexpLine(out, birdA.String(), "4") || !regexpLine(out, frrA.String(), "3") {
		t.Errorf("rtbhctl neighbors does not show 4 filters to BIRD and 3 to FRR:\n%s", out)
	}

	// Malformed matches: a clear CLI error (exit 2, nothing sent), and
	// INVALID_ARGUMENT from the API.
	c := dial(t, d.apiAddr(), testToken)
	for _, bad := range []struct {
		text string
		m    *rtbhv1.FlowSpecMatch
	}{
		{"tcp/0", &rtbhv1.FlowSpecMatch{Protocol: "tcp", DstPorts: []uint32{0}}},
		{"tcp/70000", &rtbhv1.FlowSpecMatch{Protocol: "tcp", DstPorts: []uint32{70000}}},
		{"icmp/25", &rtbhv1.FlowSpecMatch{Protocol: "icmp", DstPorts: []uint32{25}}},
		{"sctp", &rtbhv1.FlowSpecMatch{Protocol: "sctp"}},
	} {
		o, e, code := rtbhctl(t, d, "add", "--flowspec", bad.text, "--reason", "x", "198.51.100.9")
		if code != 2 || o != "" || !strings.Contains(e, "--flowspec: flowspec match") {
			t.Errorf("rtbhctl add --flowspec %s: exit %d, stdout %q, stderr %q; want exit 2 with the reason", bad.text, code, o, e)
		}
		_, err := c.bh.AddBlackhole(context.Background(), &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.9", Reason: "x", Flowspec: bad.m})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("AddBlackhole flowspec %s: %v, want INVALID_ARGUMENT", bad.text, err)
		}
	}

	// remove --flowspec withdraws the filter from BIRD and FRR within 1 s;
	// the route on the same prefix stays.
	start = time.Now()
	ctl(t, d, "remove", "--flowspec", "tcp/25", "--reason", "cleaned", "198.51.100.7")
	bird.WaitFlows(routertest.IPv4, 5*time.Second, "filter withdrawn from BIRD", noFlowFrom("198.51.100.7/32"))
	frr.WaitFlows(routertest.IPv4, 5*time.Second, "filter withdrawn from FRR", noFlowFrom("198.51.100.7/32"))
	within(t, "remove --flowspec -> withdrawn from BIRD and FRR", start, time.Second)
	if _, found, err := bird.Route(netip.MustParsePrefix("198.51.100.7/32")); err != nil || !found {
		t.Errorf("removing the filter took the route on the same prefix too (err %v)", err)
	}
	// 3 filters left (::7, 203.0.113.9, .8) and 1 route: both counted.
	m := d.metrics()
	for _, want := range []string{"rtbh_bgp_flowspec_filters_announced 3", "rtbh_bgp_routes_announced 1", "rtbh_blackholes_active 4"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A 3 s filter disappears within about a second of its expiry.
	resp, err := c.bh.AddBlackhole(context.Background(), &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.10", Reason: "short",
		Ttl: durationpb.New(3 * time.Second), Flowspec: &rtbhv1.FlowSpecMatch{Protocol: "tcp", DstPorts: []uint32{25}}})
	if err != nil {
		t.Fatal(err)
	}
	bird.WaitFlows(routertest.IPv4, 2*time.Second, "short filter on BIRD", hasFlow("198.51.100.10/32", "6", "25"))
	frr.WaitFlows(routertest.IPv4, 2*time.Second, "short filter on FRR", hasFlow("198.51.100.10/32", "6", "25"))
	expires := resp.Blackhole.ExpiresAt.AsTime()
	bird.WaitFlows(routertest.IPv4, time.Until(expires)+5*time.Second, "expired filter gone from BIRD", noFlowFrom("198.51.100.10/32"))
	frr.WaitFlows(routertest.IPv4, 2*time.Second, "expired filter gone from FRR", noFlowFrom("198.51.100.10/32"))
	if late := time.Since(expires); late > 1200*time.Millisecond {
		t.Errorf("3 s filter withdrawn %s after expires_at, want about 1 s at most", late.Round(time.Millisecond))
	} else {
		t.Logf("3 s filter withdrawn %s after expires_at", late.Round(time.Millisecond))
	}
	d.stop()
}

// regexpLine reports whether a line of out starts with addr and ends with
// last (the neighbors table's FLOWSPEC column).
func regexpLine(out, addr, last string) bool {
	for l := range strings.Lines(out) {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == addr && f[len(f)-1] == last {
			return true
		}
	}
	return false
}

// kill -9 and restart: the filters are back without a gap — BIRD kept them
// as stale (graceful restart), never holds fewer at any sample, and they
// are still there, refreshed, after End-of-RIB; a filter added after the
// restart arrives too.
func TestFlowSpecKill9Restart(t *testing.T) {
	speaker, birdA := netip.MustParseAddr("127.0.52.1"), netip.MustParseAddr("127.0.52.2")
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.BGPAddr = speaker.String()
	cfg.BGPPort = testkit.FreePort(t, speaker)
	bird := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: birdA, LocalASN: 64501, PeerAddr: speaker,
		PeerPort: cfg.BGPPort, PeerASN: 64500, GracefulRestart: true, Passive: true, FlowSpec: true})
	cfg.Neighbors = fmt.Sprintf(`    - address: %s
      asn: 64501
      role: border
      port: %d
      flowspec: true`, birdA, bird.Port())
	d := startDaemon(t, cfg)
	bird.WaitEstablished(20 * time.Second)

	c := dial(t, d.apiAddr(), testToken)
	const n = 30
	for i := range n {
		if _, err := c.bh.AddBlackhole(context.Background(), &rtbhv1.AddBlackholeRequest{
			Prefix: fmt.Sprintf("198.51.100.%d", i+1), Reason: "zombie",
			Flowspec: &rtbhv1.FlowSpecMatch{Protocol: "tcp", DstPorts: []uint32{25}}}); err != nil {
			t.Fatal(err)
		}
	}
	bird.WaitFlows(routertest.IPv4, 10*time.Second, fmt.Sprintf("%d filters", n), func(fs []routertest.Flow) bool { return len(fs) == n })

	stop := make(chan struct{})
	least := make(chan int, 1)
	go func() {
		m := 1 << 30
		defer func() { least <- m }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if k, err := bird.FlowCount(routertest.IPv4); err == nil && k < m {
				m = k
			}
		}
	}()
	d.kill9()
	testkit.WaitFor(t, 10*time.Second, "BIRD to notice the session is gone", func() bool { return !bird.Established() })
	d2 := startDaemon(t, d.cfg)
	bird.WaitEstablished(20 * time.Second)
	testkit.WaitFor(t, 30*time.Second, "End-of-RIB on BIRD", func() bool { return bird.Established() && !bird.GracefulRestartActive() })
	c2 := dial(t, d2.apiAddr(), testToken)
	if _, err := c2.bh.AddBlackhole(context.Background(), &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.99", Reason: "after",
		Flowspec: &rtbhv1.FlowSpecMatch{Protocol: "udp", DstPorts: []uint32{25}}}); err != nil {
		t.Fatal(err)
	}
	bird.WaitFlows(routertest.IPv4, 5*time.Second, "the filters and the new one", func(fs []routertest.Flow) bool { return len(fs) == n+1 })
	close(stop)
	if m := <-least; m < n {
		t.Fatalf("BIRD held only %d filters at some point of the kill -9 restart, want never fewer than %d", m, n)
	}
	list, err := c2.bh.ListBlackholes(context.Background(), &rtbhv1.ListBlackholesRequest{})
	if err != nil || len(list.Blackholes) != n+1 {
		t.Fatalf("after restart: %d entries (%v), want %d", len(list.GetBlackholes()), err, n+1)
	}
	for _, b := range list.Blackholes {
		if b.Flowspec == nil {
			t.Fatalf("entry %s lost its match across the restart", b.Prefix)
		}
	}
}

// A detector rule with action: flowspec turns an sFlow-detected zombie
// into a filter of its tcp/25, not a route.
func TestFlowSpecDetectorRule(t *testing.T) {
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.Rules = `    - name: smtp-filter
      protocol: tcp
      dst_ports: [25, 465]
      min_destinations: 20
      min_packets: 1000
      ttl: 1h
      action: flowspec`
	d, bird, _ := flowSetup(t, cfg, 0, netip.MustParseAddr("127.0.53.1"), netip.MustParseAddr("127.0.53.2"), netip.Addr{})
	zombie := sendZombie(t, cfg.SFlowPort, netip.MustParseAddr("198.51.100.77"))
	bird.WaitFlows(routertest.IPv4, 10*time.Second, "the zombie's filter", hasFlow(zombie.String(), "6", "25,465"))
	// The entry is a filter of the rule's match, with its origin; no route.
	out := ctl(t, d, "list")
	if !strings.Contains(out, "198.51.100.77/32  tcp/25,465  detector:smtp-filter") {
		t.Errorf("rtbhctl list:\n%s", out)
	}
	if _, found, err := bird.Route(zombie); err != nil || found {
		t.Errorf("BIRD has a route for the zombie (err %v): action flowspec must not blackhole it", err)
	}
	if n, err := bird.Count(routertest.IPv4); err != nil || n != 0 {
		t.Errorf("BIRD holds %d IPv4 routes (err %v), want 0", n, err)
	}
	out = ctl(t, d, "offender", "198.51.100.77")
	if !strings.Contains(out, "flowspec filter") || !strings.Contains(out, "smtp-filter") {
		t.Errorf("rtbhctl offender:\n%s", out)
	}
}

// max_flowspec 50 with 60 filters through rtbhd: BIRD never holds more
// than 50; removing 10 promotes the 10 held ones.
func TestFlowSpecMaxFlowSpec(t *testing.T) {
	d, bird, _ := flowSetup(t, newDaemonConfig(t, t.TempDir()), 50, netip.MustParseAddr("127.0.54.1"), netip.MustParseAddr("127.0.54.2"), netip.Addr{})
	c := dial(t, d.apiAddr(), testToken)
	stop := make(chan struct{})
	most := make(chan int, 1)
	go func() {
		m := 0
		defer func() { most <- m }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if k, err := bird.FlowCount(routertest.IPv4); err == nil && k > m {
				m = k
			}
		}
	}()
	tcp25 := &rtbhv1.FlowSpecMatch{Protocol: "tcp", DstPorts: []uint32{25}}
	for i := range 60 {
		if _, err := c.bh.AddBlackhole(context.Background(), &rtbhv1.AddBlackholeRequest{
			Prefix: fmt.Sprintf("198.51.100.%d", i+101), Reason: "zombie", Flowspec: tcp25}); err != nil {
			t.Fatal(err)
		}
	}
	bird.WaitFlows(routertest.IPv4, 10*time.Second, "50 filters", func(fs []routertest.Flow) bool { return len(fs) == 50 })
	for i := range 10 {
		if _, err := c.bh.RemoveBlackhole(context.Background(), &rtbhv1.RemoveBlackholeRequest{
			Prefix: fmt.Sprintf("198.51.100.%d", i+101), Reason: "cleaned", Flowspec: tcp25}); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := 10; i < 60; i++ {
		want = append(want, fmt.Sprintf("198.51.100.%d/32", i+101))
	}
	slices.Sort(want)
	bird.WaitFlows(routertest.IPv4, 10*time.Second, "the 50 remaining filters (10 promoted)", func(fs []routertest.Flow) bool {
		return slices.Equal(flowSources(fs), want)
	})
	close(stop)
	if m := <-most; m > 50 {
		t.Fatalf("BIRD held %d filters at some point, more than max_flowspec 50", m)
	}
}

// kill -9 with a neighbor at its max_flowspec: the restarted rtbhd admits
// the same filters (oldest first) as before, so BIRD, holding them as
// stale, never has more than the cap nor fewer, and the held ones stay
// held.
func TestFlowSpecKill9RestartAtCap(t *testing.T) {
	speaker, birdA := netip.MustParseAddr("127.0.55.1"), netip.MustParseAddr("127.0.55.2")
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.BGPAddr = speaker.String()
	cfg.BGPPort = testkit.FreePort(t, speaker)
	bird := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: birdA, LocalASN: 64501, PeerAddr: speaker,
		PeerPort: cfg.BGPPort, PeerASN: 64500, GracefulRestart: true, Passive: true, FlowSpec: true})
	cfg.Neighbors = fmt.Sprintf(`    - address: %s
      asn: 64501
      role: border
      port: %d
      flowspec: true
      max_flowspec: 5`, birdA, bird.Port())
	d := startDaemon(t, cfg)
	bird.WaitEstablished(20 * time.Second)
	c := dial(t, d.apiAddr(), testToken)
	var want []string
	for i := range 8 {
		if _, err := c.bh.AddBlackhole(context.Background(), &rtbhv1.AddBlackholeRequest{
			Prefix: fmt.Sprintf("198.51.100.%d", 150+i), Reason: "zombie",
			Flowspec: &rtbhv1.FlowSpecMatch{Protocol: "tcp", DstPorts: []uint32{25}}}); err != nil {
			t.Fatal(err)
		}
		if i < 5 {
			want = append(want, fmt.Sprintf("198.51.100.%d/32", 150+i))
		}
	}
	same := func(fs []routertest.Flow) bool { return slices.Equal(flowSources(fs), want) }
	bird.WaitFlows(routertest.IPv4, 10*time.Second, "the 5 oldest filters", same)

	stop := make(chan struct{})
	bounds := make(chan [2]int, 1)
	go func() {
		lo, hi := 1<<30, 0
		defer func() { bounds <- [2]int{lo, hi} }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if k, err := bird.FlowCount(routertest.IPv4); err == nil {
				lo, hi = min(lo, k), max(hi, k)
			}
		}
	}()
	d.kill9()
	testkit.WaitFor(t, 10*time.Second, "BIRD to notice the session is gone", func() bool { return !bird.Established() })
	startDaemon(t, d.cfg)
	bird.WaitEstablished(20 * time.Second)
	testkit.WaitFor(t, 30*time.Second, "End-of-RIB on BIRD", func() bool { return bird.Established() && !bird.GracefulRestartActive() })
	bird.WaitFlows(routertest.IPv4, 5*time.Second, "the same 5 filters after the restart", same)
	close(stop)
	if b := <-bounds; b[0] < 5 || b[1] > 5 {
		t.Fatalf("BIRD held between %d and %d filters during the restart, want always exactly max_flowspec 5", b[0], b[1])
	}
}
