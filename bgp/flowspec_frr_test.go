package bgp

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// FRR as a peer ISP (address-family ipv4/ipv6 flowspec) gets the filters
// for sources in our own space — discard, IPv4 and IPv6 — and never those
// for anyone else's; they are withdrawn within 1 s.
func TestFRRPeerGetsOnlyOwnFilters(t *testing.T) {
	ctx := context.Background()
	me, rtr := testAddr(t), testAddr(t)
	port := testkit.FreePort(t, me)
	f := routertest.StartFRR(t, routertest.FRRConfig{LocalAddr: rtr, LocalASN: 64502, PeerAddr: me, PeerPort: port, PeerASN: 64500, FlowSpec: true})
	s := newTestSpeaker(t, me, Config{
		ListenAddress: me.String(), ListenPort: port, GracefulRestart: true,
		OwnPrefixes: pfxs("198.51.100.0/24", "2001:db8::/32"),
		Neighbors: []Neighbor{{
			Address: rtr, ASN: 64502, Role: RolePeer, Passive: true, FlowSpec: true,
			Communities: []string{"64502:666"},
		}},
	})
	f.WaitEstablished(30 * time.Second)
	own4, own6 := fkey("198.51.100.7/32", "tcp/25"), fkey("2001:db8::7/128", "tcp/25,465-587")
	foreign4, foreign6 := fkey("203.0.113.9/32", "tcp/25"), fkey("3fff::9/128", "udp/53")
	if err := s.AnnounceFilters(ctx, []domain.Key{foreign4, own4, foreign6, own6}); err != nil {
		t.Fatal(err)
	}
	// Updates go out in order on the one session: once a filter announced
	// after the foreign ones is there, they would be too.
	marker := fkey("198.51.100.8/32", "udp/25")
	if err := s.AnnounceFilters(ctx, []domain.Key{marker}); err != nil {
		t.Fatal(err)
	}
	fl4 := f.WaitFlows(routertest.IPv4, 5*time.Second, "own filters and the marker", func(fs []routertest.Flow) bool { return len(fs) >= 2 })
	fl6 := f.WaitFlows(routertest.IPv6, 5*time.Second, "own IPv6 filter", func(fs []routertest.Flow) bool { return len(fs) >= 1 })
	var got []string
	for _, fl := range append(fl4, fl6...) {
		if !fl.TrafficRateZero() {
			t.Errorf("FRR flow %s is not discard:\n%s", fl.Src, fl.Raw)
		}
		got = append(got, fl.Src+" "+fl.Proto+" "+fl.DPort)
	}
	slices.Sort(got)
	want := []string{"198.51.100.7/32 6 25", "198.51.100.8/32 17 25", "2001:db8::7/128/off 0 6 25 , >= 465 , <= 587"}
	if !slices.Equal(got, want) {
		t.Fatalf("FRR flows = %q, want %q (never the foreign ones)", got, want)
	}
	start := time.Now()
	if err := s.WithdrawFilters(ctx, []domain.Key{own4, own6, marker, foreign4, foreign6}); err != nil {
		t.Fatal(err)
	}
	f.WaitFlows(routertest.IPv4, time.Second, "no IPv4 filters", func(fs []routertest.Flow) bool { return len(fs) == 0 })
	f.WaitFlows(routertest.IPv6, time.Second, "no IPv6 filters", func(fs []routertest.Flow) bool { return len(fs) == 0 })
	t.Logf("withdrawn from FRR in %s", time.Since(start))
}

// A reload that changes own_prefixes changes which filters the peer has:
// filters now inside it arrive, filters now outside it are withdrawn from
// the peer, without dropping the session.
func TestFRRPeerFiltersFollowOwnPrefixesReload(t *testing.T) {
	ctx := context.Background()
	me, rtr := testAddr(t), testAddr(t)
	port := testkit.FreePort(t, me)
	f := routertest.StartFRR(t, routertest.FRRConfig{LocalAddr: rtr, LocalASN: 64502, PeerAddr: me, PeerPort: port, PeerASN: 64500, FlowSpec: true})
	cfg := Config{
		ASN: 64500, RouterID: me, ListenAddress: me.String(), ListenPort: port,
		NextHopV4: pfx("192.0.2.1/32").Addr(), NextHopV6: pfx("100::1/128").Addr(),
		OwnPrefixes: pfxs("198.51.100.0/24"),
		Neighbors:   []Neighbor{{Address: rtr, ASN: 64502, Role: RolePeer, Passive: true, FlowSpec: true}},
	}
	s := newTestSpeaker(t, me, cfg)
	f.WaitEstablished(30 * time.Second)
	own, other := fkey("198.51.100.7/32", "tcp/25"), fkey("203.0.113.9/32", "tcp/25")
	if err := s.AnnounceFilters(ctx, []domain.Key{other, own}); err != nil {
		t.Fatal(err)
	}
	srcs := func(want ...string) func([]routertest.Flow) bool {
		return func(fs []routertest.Flow) bool {
			var got []string
			for _, fl := range fs {
				got = append(got, fl.Src)
			}
			slices.Sort(got)
			return slices.Equal(got, want)
		}
	}
	f.WaitFlows(routertest.IPv4, 5*time.Second, "the own filter only", srcs("198.51.100.7/32"))
	cfg.OwnPrefixes = pfxs("203.0.113.0/24")
	if err := s.Reconfigure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	f.WaitFlows(routertest.IPv4, 5*time.Second, "the filter now in own space, not the other", srcs("203.0.113.9/32"))
	if !f.Established() {
		t.Fatal("the reload dropped the session")
	}
}
