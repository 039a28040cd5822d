package routertest

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Output of BIRD 2.0.12 `show route all` with a second, non-best path.
const birdOut = `BIRD 2.0.12 ready.
Table master4:
198.51.100.7/32      blackhole [rtbh 00:26:44.272 from 127.0.20.13] * (100/?) [AS64500i]
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 64500
	BGP.next_hop: 192.0.2.1
	BGP.local_pref: 100
	BGP.community: (65535,65281) (65535,666) (64501,666)
	BGP.large_community: (64500, 666, 0)
                     unicast [other 00:26:44.272 from 127.0.20.99] (100/?) [AS64999i]
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 64999
	BGP.next_hop: 127.0.20.99
	BGP.community: (1,1)
2001:db8::7/128      unreachable [rtbh 00:26:44.272 from 127.0.20.13] * (100/?) [AS64500i]
	Type: BGP univ
	BGP.origin: Incomplete
	BGP.as_path: 64500 64510
	BGP.next_hop: 100::1 fe80::1
`

func TestParseBIRDRoutes(t *testing.T) {
	got, err := parseBIRDRoutes(birdOut)
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{
		{Prefix: netip.MustParsePrefix("198.51.100.7/32"), NextHop: netip.MustParseAddr("192.0.2.1"), Blackhole: true,
			Origin: "IGP", ASPath: "64500", Communities: []string{"64501:666", "65535:65281", "65535:666"},
			LargeCommunities: []string{"64500:666:0"}},
		{Prefix: netip.MustParsePrefix("2001:db8::7/128"), NextHop: netip.MustParseAddr("100::1"),
			Origin: "Incomplete", ASPath: "64500 64510"},
	}
	opts := cmp.Options{cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.IgnoreFields(Route{}, "Raw"), cmpopts.EquateEmpty()}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("parseBIRDRoutes (-want +got):\n%s", diff)
	}
}
