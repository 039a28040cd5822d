package bgp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

func TestAnnounceWithdrawToGoBGP(t *testing.T) {
	ctx := context.Background()
	me := testAddr(t)
	border := startReceiver(t, 64501, me, 64500, receiverOpts{})
	peer := startReceiver(t, 64502, me, 64500, receiverOpts{})

	bn := border.neighbor(RoleBorder)
	bn.Communities = []string{"65535:666", "64501:666"}
	bn.LargeCommunities = []string{"64500:666:0"}
	pn := peer.neighbor(RolePeer)
	pn.Communities = []string{"64502:666"}
	pn.LargeCommunities = []string{"64502:666:1"}

	reg := prometheus.NewRegistry()
	cfg := Config{
		ASN: 64500, RouterID: me, ListenAddress: me.String(), ListenPort: testkit.FreePort(t, me),
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"),
		GracefulRestart: true,
		Neighbors:       []Neighbor{bn, pn},
		OwnPrefixes:     pfxs("198.51.100.0/24", "2001:db8::/32"),
	}
	s, err := New(cfg, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitEstablished(t, s, border.addr)
	waitEstablished(t, s, peer.addr)
	if got := testutil.ToFloat64(s.metrics.neighborUp.WithLabelValues(border.addr.String())); got != 1 {
		t.Errorf("rtbh_bgp_neighbor_up{neighbor=%s} = %v, want 1", border.addr, got)
	}

	all := pfxs("198.51.100.7/32", "203.0.113.9/32", "2001:db8::7/128", "3fff::9/128", "198.51.100.128/25")
	if err := s.Announce(ctx, all); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	if err := s.Announce(ctx, all[:2]); err != nil { // idempotent
		t.Fatalf("Announce again: %v", err)
	}

	borderV4 := route{NextHop: netip.MustParseAddr("192.0.2.1"), Origin: 0, ASPath: []uint32{64500},
		Communities: []string{"64501:666", "65535:65281", "65535:666"}, Large: []string{"64500:666:0"}}
	borderV6 := borderV4
	borderV6.NextHop = netip.MustParseAddr("100::1")
	peerV4 := route{NextHop: netip.MustParseAddr("192.0.2.1"), Origin: 0, ASPath: []uint32{64500},
		Communities: []string{"64502:666", "65535:65281"}, Large: []string{"64502:666:1"}}
	peerV6 := peerV4
	peerV6.NextHop = netip.MustParseAddr("100::1")

	wantBorder := map[netip.Prefix]route{}
	for _, p := range all {
		if p.Addr().Is4() {
			wantBorder[p] = borderV4
		} else {
			wantBorder[p] = borderV6
		}
	}
	wantPeer := map[netip.Prefix]route{
		pfx("198.51.100.7/32"):   peerV4,
		pfx("198.51.100.128/25"): peerV4,
		pfx("2001:db8::7/128"):   peerV6,
	}
	testkit.WaitFor(t, 5*time.Second, "border routes", func() bool { return border.count(t) == len(wantBorder) })
	testkit.WaitFor(t, 5*time.Second, "peer routes", func() bool { return peer.count(t) == len(wantPeer) })
	if diff := cmp.Diff(wantBorder, border.routes(t), cmpNetip); diff != "" {
		t.Errorf("border routes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantPeer, peer.routes(t), cmpNetip); diff != "" {
		t.Errorf("peer routes (-want +got):\n%s", diff)
	}
	ns, err := s.Neighbors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gotNS := map[netip.Addr]int{}
	for _, n := range ns {
		if n.State != "established" || n.StateSince.IsZero() {
			t.Errorf("neighbor %s: state %q since %v", n.Address, n.State, n.StateSince)
		}
		gotNS[n.Address] = n.RoutesSent
	}
	if diff := cmp.Diff(map[netip.Addr]int{border.addr: 5, peer.addr: 3}, gotNS, cmpNetip); diff != "" {
		t.Errorf("RoutesSent (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(s.metrics.routes); got != 5 {
		t.Errorf("rtbh_bgp_routes_announced = %v, want 5", got)
	}

	// Withdraw, including a prefix never announced.
	if err := s.Withdraw(ctx, pfxs("198.51.100.7/32", "2001:db8::7/128", "192.0.2.99/32")); err != nil {
		t.Fatalf("Withdraw: %v", err)
	}
	delete(wantBorder, pfx("198.51.100.7/32"))
	delete(wantBorder, pfx("2001:db8::7/128"))
	delete(wantPeer, pfx("198.51.100.7/32"))
	delete(wantPeer, pfx("2001:db8::7/128"))
	testkit.WaitFor(t, time.Second, "withdrawals on the border", func() bool { return border.count(t) == len(wantBorder) })
	testkit.WaitFor(t, time.Second, "withdrawals on the peer", func() bool { return peer.count(t) == len(wantPeer) })
	if diff := cmp.Diff(keys(wantBorder), keys(border.routes(t)), cmpNetip); diff != "" {
		t.Errorf("border after withdraw (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(keys(wantPeer), keys(peer.routes(t)), cmpNetip); diff != "" {
		t.Errorf("peer after withdraw (-want +got):\n%s", diff)
	}

	// The border router drops the session (hard reset, it forgets what it
	// had); when it comes back it gets the full current set.
	if err := border.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: me.String()}); err != nil {
		t.Fatalf("resetting session on the receiver: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "border to forget routes", func() bool { return border.count(t) == 0 })
	testkit.WaitFor(t, 60*time.Second, "border to get the full set after reconnecting", func() bool { return border.count(t) == len(wantBorder) })
	if diff := cmp.Diff(wantBorder, border.routes(t), cmpNetip); diff != "" {
		t.Errorf("border routes after reconnect (-want +got):\n%s", diff)
	}
}

func TestAnnounceRejectsBadPrefixes(t *testing.T) {
	me := testAddr(t)
	s := newTestSpeaker(t, me, Config{})
	for _, p := range []netip.Prefix{{}, netip.PrefixFrom(netip.MustParseAddr("198.51.100.7"), 24), pfx("::ffff:198.51.100.7/128")} {
		if err := s.Announce(context.Background(), []netip.Prefix{p}); err == nil {
			t.Errorf("Announce(%v) succeeded, want error", p)
		}
	}
	if got := s.Announced(); len(got) != 0 {
		t.Errorf("Announced() = %v after refused announcements", got)
	}
}
