package bgp

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// birdSetup starts our speaker on a fresh address (listening, the
// neighbor passive) and a BIRD border router that connects to it.
func birdSetup(t *testing.T, gr bool) (*Speaker, *routertest.BIRD, Config) {
	me, rtr := testAddr(t), testAddr(t)
	port := testkit.FreePort(t, me)
	b := routertest.StartBIRD(t, routertest.BIRDConfig{
		LocalAddr: rtr, LocalASN: 64501, PeerAddr: me, PeerPort: port, PeerASN: 64500, GracefulRestart: gr,
	})
	cfg := Config{
		ASN: 64500, RouterID: me, ListenAddress: me.String(), ListenPort: port,
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"),
		GracefulRestart: gr,
		Neighbors: []Neighbor{{
			Address: rtr, ASN: 64501, Role: RoleBorder, Port: uint16(b.Port()), Passive: true,
			Communities: []string{"65535:666", "64501:666"}, LargeCommunities: []string{"64500:666:0"},
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

func TestBIRDBorderGetsBlackholes(t *testing.T) {
	ctx := context.Background()
	s, b, _ := birdSetup(t, false)
	v4, v6 := pfx("198.51.100.7/32"), pfx("2001:db8::7/128")
	if err := s.Announce(ctx, []netip.Prefix{v4, v6}); err != nil {
		t.Fatal(err)
	}
	wantComms := []string{"64501:666", "65535:65281", "65535:666"}
	for _, tc := range []struct {
		p  netip.Prefix
		nh string
	}{{v4, "192.0.2.1"}, {v6, "100::1"}} {
		r := b.WaitRoute(tc.p, 5*time.Second, nil)
		if !r.Blackhole || r.NextHop != netip.MustParseAddr(tc.nh) || r.Origin != "IGP" || r.ASPath != "64500" ||
			!slices.Equal(r.Communities, wantComms) || !slices.Equal(r.LargeCommunities, []string{"64500:666:0"}) {
			t.Errorf("BIRD route %s: got %+v\nwant blackhole, next hop %s, origin IGP, as_path 64500, communities %v, large [64500:666:0]\nraw:\n%s",
				tc.p, r, tc.nh, wantComms, r.Raw)
		}
	}
	start := time.Now()
	if err := s.Withdraw(ctx, []netip.Prefix{v4, v6}); err != nil {
		t.Fatal(err)
	}
	b.WaitNoRoute(v4, time.Second)
	b.WaitNoRoute(v6, time.Second)
	t.Logf("withdrawn from BIRD in %s", time.Since(start))
}

// TestCloseKeepsRoutesOnGracefulRestart: Close sends no Cease, so BIRD
// (graceful restart on) keeps the routes as stale; a new speaker that
// announces the current set before Start replaces them, and what it no
// longer announces is flushed at End-of-RIB.
func TestCloseKeepsRoutesOnGracefulRestart(t *testing.T) {
	ctx := context.Background()
	s, b, cfg := birdSetup(t, true)
	keep, drop := pfx("198.51.100.7/32"), pfx("198.51.100.8/32")
	if err := s.Announce(ctx, []netip.Prefix{keep, drop, pfx("2001:db8::7/128")}); err != nil {
		t.Fatal(err)
	}
	b.WaitRoute(keep, 5*time.Second, nil)
	b.WaitRoute(drop, 5*time.Second, nil)
	b.WaitRoute(pfx("2001:db8::7/128"), 5*time.Second, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// BIRD decides when it notices the session is gone: keep the routes as
	// stale (graceful restart) or flush them (a Cease, or no graceful
	// restart). Wait for that decision rather than for time to pass.
	testkit.WaitFor(t, 5*time.Second, "BIRD to notice the session is gone", func() bool { return !b.Established() })
	if !testkit.Poll(5*time.Second, b.GracefulRestartActive) {
		out, _ := b.Birdc("show protocols all " + routertest.ProtocolName)
		t.Fatalf("BIRD is not in graceful restart after Close: a Cease was sent or graceful restart not negotiated:\n%s", out)
	}
	for _, p := range []netip.Prefix{keep, drop, pfx("2001:db8::7/128")} {
		if r, ok, err := b.Route(p); err != nil || !ok || !r.Blackhole {
			t.Fatalf("BIRD dropped %s after Close (err %v): a Cease was sent or graceful restart not negotiated", p, err)
		}
	}
	if out, _ := b.Birdc("show protocols all " + routertest.ProtocolName); strings.Contains(out, "Received: Cease") ||
		strings.Contains(out, "Received: Administrative") {
		t.Errorf("BIRD received a NOTIFICATION:\n%s", out)
	}

	// Restart: the new speaker announces the current set before Start.
	s2, err := New(cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Announce(ctx, []netip.Prefix{keep, pfx("2001:db8::7/128")}); err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	b.WaitEstablished(30 * time.Second)
	b.WaitNoRoute(drop, 10*time.Second)
	if r := b.WaitRoute(keep, 5*time.Second, nil); !r.Blackhole {
		t.Errorf("route %s after restart: %+v", keep, r)
	}
	b.WaitRoute(pfx("2001:db8::7/128"), 5*time.Second, nil)
}
