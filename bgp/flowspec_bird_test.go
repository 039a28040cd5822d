package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// birdFlowSetup is birdSetup with a BIRD that has flow4/flow6 channels and
// a neighbor with flowspec: true (max_flowspec maxFS).
func birdFlowSetup(t *testing.T, gr bool, maxFS int) (*Speaker, *routertest.BIRD, Config) {
	me, rtr := testAddr(t), testAddr(t)
	port := testkit.FreePort(t, me)
	b := routertest.StartBIRD(t, routertest.BIRDConfig{
		LocalAddr: rtr, LocalASN: 64501, PeerAddr: me, PeerPort: port, PeerASN: 64500, GracefulRestart: gr, FlowSpec: true,
	})
	cfg := Config{
		ASN: 64500, RouterID: me, ListenAddress: me.String(), ListenPort: port,
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"),
		GracefulRestart: gr,
		Neighbors: []Neighbor{{
			Address: rtr, ASN: 64501, Role: RoleBorder, Port: uint16(b.Port()), Passive: true,
			Communities: []string{"64501:666"}, LargeCommunities: []string{"64500:666:0"},
			FlowSpec: true, MaxFlowSpec: maxFS,
		}},
	}
	s, err := New(cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	b.WaitEstablished(30 * time.Second)
	return s, b, cfg
}

func fkey(prefix, match string) domain.Key {
	return domain.Key{Prefix: netip.MustParsePrefix(prefix), Match: match}
}

// BIRD with flow4/flow6 gets the filter — source, protocol, destination
// ports, traffic-rate 0, NO_EXPORT and the neighbor's communities, no
// internal tag — and no /32 route for it; withdrawn within 1 s.
func TestBIRDFlowSpecFilters(t *testing.T) {
	ctx := context.Background()
	s, b, _ := birdFlowSetup(t, false, 0)
	f4, f6 := fkey("198.51.100.7/32", "tcp/25"), fkey("2001:db8::7/128", "udp/53,5353")
	f4r := fkey("198.51.100.9/32", "tcp/25,465-587")
	start := time.Now()
	if err := s.AnnounceFilters(ctx, []domain.Key{f4, f6, f4r}); err != nil {
		t.Fatal(err)
	}
	fl4 := b.WaitFlows(routertest.IPv4, time.Second, "2 IPv4 filters", func(fs []routertest.Flow) bool { return len(fs) == 2 })
	fl6 := b.WaitFlows(routertest.IPv6, time.Second, "1 IPv6 filter", func(fs []routertest.Flow) bool { return len(fs) == 1 })
	t.Logf("filters on BIRD in %s", time.Since(start))
	for _, fl := range append(fl4, fl6...) {
		t.Logf("%s", fl.Raw)
		if !fl.TrafficRateZero() || !slices.Equal(fl.Communities, []string{"64501:666", "65535:65281"}) ||
			!slices.Equal(fl.LargeCommunities, []string{"64500:666:0"}) {
			t.Errorf("flow %q: ext %v, communities %v, large %v; want traffic-rate 0, [64501:666 65535:65281], [64500:666:0]",
				fl.Match, fl.ExtCommunities, fl.Communities, fl.LargeCommunities)
		}
	}
	var got []string
	for _, fl := range append(fl4, fl6...) {
		got = append(got, fl.Src+" "+fl.Proto+" "+fl.DPort)
	}
	slices.Sort(got)
	want := []string{"198.51.100.7/32 6 25", "198.51.100.9/32 6 25,465..587", "2001:db8::7/128 17 53,5353"}
	if !slices.Equal(got, want) {
		t.Errorf("flows (source, protocol, dport) = %q, want %q", got, want)
	}
	for _, p := range []netip.Prefix{f4.Prefix, f6.Prefix, f4r.Prefix} {
		if _, ok, err := b.Route(p); err != nil || ok {
			t.Errorf("BIRD has a route for %s (err %v): a filter must not blackhole the host", p, err)
		}
	}
	start = time.Now()
	if err := s.WithdrawFilters(ctx, []domain.Key{f4, f6, f4r}); err != nil {
		t.Fatal(err)
	}
	b.WaitFlows(routertest.IPv4, time.Second, "no IPv4 filters", func(fs []routertest.Flow) bool { return len(fs) == 0 })
	b.WaitFlows(routertest.IPv6, time.Second, "no IPv6 filters", func(fs []routertest.Flow) bool { return len(fs) == 0 })
	t.Logf("withdrawn from BIRD in %s", time.Since(start))
}

// max_flowspec 50 with 60 filters: BIRD never holds more than 50 (watched
// the whole time, the speaker's count too); removing 10 admitted filters
// promotes the 10 held ones, so BIRD ends with exactly the 50 remaining.
func TestBIRDMaxFlowSpecHoldsAndPromotes(t *testing.T) {
	ctx := context.Background()
	s, b, cfg := birdFlowSetup(t, false, 50)
	var all []domain.Key
	for i := range 60 {
		all = append(all, fkey(netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}).String()+"/32", "tcp/25"))
	}
	stop := make(chan struct{})
	maxSeen := make(chan int, 1)
	go func() {
		most := 0
		defer func() { maxSeen <- most }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n, err := b.FlowCount(routertest.IPv4); err == nil && n > most {
				most = n
			}
		}
	}()
	// One by one, so that every announcement is a chance to overshoot.
	for _, k := range all {
		if err := s.AnnounceFilters(ctx, []domain.Key{k}); err != nil {
			t.Fatal(err)
		}
	}
	b.WaitFlows(routertest.IPv4, 5*time.Second, "50 filters", func(fs []routertest.Flow) bool { return len(fs) == 50 })
	ns, err := s.Neighbors(ctx)
	if err != nil || !ns[0].FlowSpec || ns[0].FlowSpecSent != 50 || ns[0].FlowSpecHeld != 10 || ns[0].RoutesSent != 0 {
		t.Fatalf("neighbor status %+v, %v; want flowspec, 50 sent, 10 held, 0 routes", ns, err)
	}
	start := time.Now()
	if err := s.WithdrawFilters(ctx, all[:10]); err != nil {
		t.Fatal(err)
	}
	want := make(map[string]bool)
	for _, k := range all[10:] {
		want[k.Prefix.String()] = true
	}
	b.WaitFlows(routertest.IPv4, 5*time.Second, "the 50 remaining filters", func(fs []routertest.Flow) bool {
		if len(fs) != 50 {
			return false
		}
		for _, f := range fs {
			if !want[f.Src] {
				return false
			}
		}
		return true
	})
	t.Logf("held filters promoted on BIRD in %s", time.Since(start))
	close(stop)
	if most := <-maxSeen; most > 50 {
		t.Fatalf("BIRD held %d filters at some point, more than max_flowspec 50", most)
	}
	if ns, _ := s.Neighbors(ctx); ns[0].FlowSpecHeld != 0 || ns[0].FlowSpecSent != 50 {
		t.Fatalf("neighbor status after promotion %+v", ns[0])
	}
	_ = cfg
}

// A neighbor without flowspec: true never receives a filter, even from a
// router that could take them: it gets the routes, its flow tables stay
// empty and the session stays up.
func TestBIRDWithoutFlowSpecGetsNoFilters(t *testing.T) {
	ctx := context.Background()
	me, rtr := testAddr(t), testAddr(t)
	port := testkit.FreePort(t, me)
	b := routertest.StartBIRD(t, routertest.BIRDConfig{
		LocalAddr: rtr, LocalASN: 64501, PeerAddr: me, PeerPort: port, PeerASN: 64500, FlowSpec: true,
	})
	s, err := New(Config{
		ASN: 64500, RouterID: me, ListenAddress: me.String(), ListenPort: port,
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"),
		Neighbors: []Neighbor{{Address: rtr, ASN: 64501, Role: RoleBorder, Port: uint16(b.Port()), Passive: true}},
	}, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	b.WaitEstablished(30 * time.Second)
	if err := s.AnnounceFilters(ctx, []domain.Key{fkey("198.51.100.7/32", "tcp/25"), fkey("2001:db8::7/128", "tcp/25")}); err != nil {
		t.Fatal(err)
	}
	// The route after the filters: once it is there, the filters would be too.
	marker := pfx("198.51.100.8/32")
	if err := s.Announce(ctx, []netip.Prefix{marker}); err != nil {
		t.Fatal(err)
	}
	b.WaitRoute(marker, 5*time.Second, nil)
	for _, f := range []routertest.Family{routertest.IPv4, routertest.IPv6} {
		if n, err := b.FlowCount(f); err != nil || n != 0 {
			t.Fatalf("BIRD got %d filters (err %v) over a session without flowspec", n, err)
		}
	}
	if !b.Established() {
		t.Fatal("session went down")
	}
	if ns, _ := s.Neighbors(ctx); ns[0].FlowSpec || ns[0].FlowSpecSent != 0 || ns[0].RoutesSent != 1 {
		t.Fatalf("neighbor status %+v", ns[0])
	}
}

// Graceful restart keeps the filters: after Close (no Cease) BIRD keeps
// them as stale, the restarted speaker announces its stored filters before
// Start in restarting mode (the FlowSpec families preserved too), BIRD
// never holds fewer than the kept set at any sample, and a filter the new
// speaker no longer has is flushed at End-of-RIB.
func TestBIRDFlowSpecSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	s, b, cfg := birdFlowSetup(t, true, 0)
	var keep []domain.Key
	for i := range 20 {
		keep = append(keep, fkey(netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}).String()+"/32", "tcp/25"))
	}
	keep = append(keep, fkey("2001:db8::7/128", "tcp/25"))
	drop := fkey("198.51.100.200/32", "udp/53")
	if err := s.AnnounceFilters(ctx, append(slices.Clone(keep), drop)); err != nil {
		t.Fatal(err)
	}
	b.WaitFlows(routertest.IPv4, 5*time.Second, "21 IPv4 filters", func(fs []routertest.Flow) bool { return len(fs) == 21 })
	b.WaitFlows(routertest.IPv6, 5*time.Second, "1 IPv6 filter", func(fs []routertest.Flow) bool { return len(fs) == 1 })

	stop := make(chan struct{})
	minSeen := make(chan int, 1)
	go func() {
		least := 1 << 30
		defer func() { minSeen <- least }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n, err := b.FlowCount(routertest.IPv4); err == nil && n < least {
				least = n
			}
		}
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "BIRD to notice the session is gone", func() bool { return !b.Established() })
	if !testkit.Poll(5*time.Second, b.GracefulRestartActive) {
		t.Fatal("BIRD is not in graceful restart after Close")
	}
	s2, err := New(cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	if err := s2.AnnounceFilters(ctx, keep); err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b.WaitEstablished(30 * time.Second)
	caps, err := b.NeighborGracefulRestart()
	if err != nil {
		t.Fatal(err)
	}
	if !caps.Recovery || !slices.Contains(caps.Preserved, "flow4") || !slices.Contains(caps.Preserved, "flow6") {
		t.Errorf("BIRD saw graceful restart %+v, want restart recovery with flow4 and flow6 preserved", caps)
	}
	waitEndOfRIB(t, b)
	b.WaitFlows(routertest.IPv4, 10*time.Second, "the 20 kept IPv4 filters, the dropped one flushed", func(fs []routertest.Flow) bool {
		return len(fs) == 20 && !slices.ContainsFunc(fs, func(f routertest.Flow) bool { return f.Src == drop.Prefix.String() })
	})
	b.WaitFlows(routertest.IPv6, 5*time.Second, "the IPv6 filter", func(fs []routertest.Flow) bool { return len(fs) == 1 })
	close(stop)
	if least := <-minSeen; least < 20 {
		t.Fatalf("BIRD held only %d IPv4 filters at some point of the restart, want never fewer than 20", least)
	}
}

// The shipped deploy/routers/bird2-flowspec.conf, on a real BIRD, accepts
// rtbhd's filters (its discard check matches what rtbhd sends) and holds
// no more than its import limit.
func TestBIRDShippedFlowSpecSnippet(t *testing.T) {
	ctx := context.Background()
	me, rtr := testAddr(t), testAddr(t)
	port := testkit.FreePort(t, me)
	raw, err := os.ReadFile("../deploy/routers/bird2-flowspec.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(raw)
	for old, repl := range map[string]string{
		"router id 127.0.0.2;":                    "router id " + rtr.String() + ";",
		"local 127.0.0.2 as 64501;":               "local " + rtr.String() + " as 64501;",
		"neighbor 127.0.0.1 port 10179 as 64500;": fmt.Sprintf("neighbor %s port %d as 64500;\n  strict bind on;\n  connect delay time 1;", me, port),
		"import limit 50 action block;":           "import limit 3 action block;",
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("the snippet no longer has %q", old)
		}
		conf = strings.ReplaceAll(conf, old, repl)
	}
	bport := testkit.FreePort(t, rtr)
	conf = strings.Replace(conf, "local "+rtr.String()+" as 64501;", fmt.Sprintf("local %s port %d as 64501;", rtr, bport), 1)
	b := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: rtr, ListenPort: bport, Config: conf})
	s := newTestSpeaker(t, me, Config{ListenAddress: me.String(), ListenPort: port,
		Neighbors: []Neighbor{{Address: rtr, ASN: 64501, Role: RoleBorder, Passive: true, Port: uint16(bport), FlowSpec: true}}})
	b.WaitEstablished(30 * time.Second)
	var ks []domain.Key
	for i := range 4 {
		ks = append(ks, fkey(fmt.Sprintf("198.51.100.%d/32", i+1), "tcp/25"))
	}
	if err := s.AnnounceFilters(ctx, append(ks[:2:2], fkey("2001:db8::7/128", "tcp/25"))); err != nil {
		t.Fatal(err)
	}
	b.WaitFlows(routertest.IPv4, 5*time.Second, "2 accepted filters", func(fs []routertest.Flow) bool { return len(fs) == 2 })
	b.WaitFlows(routertest.IPv6, 5*time.Second, "the IPv6 filter accepted", func(fs []routertest.Flow) bool { return len(fs) == 1 })
	if err := s.AnnounceFilters(ctx, ks[2:]); err != nil {
		t.Fatal(err)
	}
	out := ""
	testkit.WaitFor(t, 5*time.Second, "BIRD's import limit to be hit", func() bool {
		out, _ = b.Birdc("show protocols all " + routertest.ProtocolName)
		return strings.Contains(out, "[HIT]")
	})
	if n, err := b.FlowCount(routertest.IPv4); err != nil || n != 3 {
		t.Fatalf("BIRD holds %d IPv4 filters (err %v), want its import limit 3", n, err)
	}
}

// flowspec: true towards a router that has no FlowSpec configured: the
// session comes up with unicast only, routes flow, and the neighbor's
// status says FlowSpec is not on.
func TestFlowSpecNeighborWithoutRouterSupport(t *testing.T) {
	ctx := context.Background()
	me, rtr := testAddr(t), testAddr(t)
	port := testkit.FreePort(t, me)
	b := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: rtr, LocalASN: 64501, PeerAddr: me, PeerPort: port, PeerASN: 64500})
	s := newTestSpeaker(t, me, Config{ListenAddress: me.String(), ListenPort: port,
		Neighbors: []Neighbor{{Address: rtr, ASN: 64501, Role: RoleBorder, Passive: true, Port: uint16(b.Port()), FlowSpec: true}}})
	b.WaitEstablished(30 * time.Second)
	if err := s.AnnounceFilters(ctx, []domain.Key{fkey("198.51.100.7/32", "tcp/25")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(ctx, pfxs("198.51.100.8/32")); err != nil {
		t.Fatal(err)
	}
	b.WaitRoute(pfx("198.51.100.8/32"), 5*time.Second, nil)
	ns, err := s.Neighbors(ctx)
	if err != nil || ns[0].State != "established" || ns[0].FlowSpec || ns[0].FlowSpecSent != 0 || ns[0].RoutesSent != 1 {
		t.Fatalf("neighbor status %+v, %v; want established, FlowSpec off, 0 filters, 1 route", ns, err)
	}
}
