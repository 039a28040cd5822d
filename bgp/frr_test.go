package bgp

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// TestFRRPeerGetsOnlyOwnSpace: FRR bgpd as a peer ISP gets blackholes in
// our own space, with its community, and never anything else.
func TestFRRPeerGetsOnlyOwnSpace(t *testing.T) {
	ctx := context.Background()
	me, rtr := testAddr(t), testAddr(t)
	port := testkit.FreePort(t, me)
	f := routertest.StartFRR(t, routertest.FRRConfig{LocalAddr: rtr, LocalASN: 64502, PeerAddr: me, PeerPort: port, PeerASN: 64500})
	s := newTestSpeaker(t, me, Config{
		ListenAddress: me.String(), ListenPort: port, GracefulRestart: true,
		OwnPrefixes: pfxs("198.51.100.0/24", "2001:db8::/32"),
		Neighbors: []Neighbor{{
			Address: rtr, ASN: 64502, Role: RolePeer, Passive: true,
			Communities: []string{"64502:666"}, LargeCommunities: []string{"64502:666:0"},
		}},
	})
	f.WaitEstablished(30 * time.Second)
	own4, own6 := pfx("198.51.100.7/32"), pfx("2001:db8::7/128")
	foreign4, foreign6 := pfx("203.0.113.9/32"), pfx("3fff::9/128")
	if err := s.Announce(ctx, []netip.Prefix{foreign4, own4, own6, foreign6}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p  netip.Prefix
		nh string
	}{{own4, "192.0.2.1"}, {own6, "100::1"}} {
		r := f.WaitRoute(tc.p, 5*time.Second, nil)
		if r.NextHop != netip.MustParseAddr(tc.nh) || r.Origin != "IGP" || r.ASPath != "64500" ||
			!slices.Equal(r.Communities, []string{"64502:666", "65535:65281"}) ||
			!slices.Equal(r.LargeCommunities, []string{"64502:666:0"}) {
			t.Errorf("FRR route %s: %+v", tc.p, r)
		}
	}
	// The speaker sends FRR its updates in order on the one session: once a
	// route announced after the foreign ones is there, so would they be.
	marker := pfx("198.51.100.8/32")
	if err := s.Announce(ctx, []netip.Prefix{marker}); err != nil {
		t.Fatal(err)
	}
	f.WaitRoute(marker, 5*time.Second, nil)
	for _, p := range []netip.Prefix{foreign4, foreign6} {
		if _, found, err := f.Route(p); err != nil || found {
			t.Errorf("FRR holds route %s (err %v), which it must never get", p, err)
		}
	}
	if n4, err := f.Count(routertest.IPv4); err != nil || n4 != 2 {
		t.Errorf("FRR IPv4 routes = %d (%v), want 2 (%s and %s)", n4, err, own4, marker)
	}
	if err := s.Withdraw(ctx, []netip.Prefix{own4, own6, marker}); err != nil {
		t.Fatal(err)
	}
	f.WaitNoRoute(own4, time.Second)
	f.WaitNoRoute(own6, time.Second)
	f.WaitNoRoute(marker, time.Second)
}
