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

// Output of BIRD 2.0.12 for a flow4 and a flow6 table, and of FRR 8.4
// `show bgp ipv6 flowspec detail`.
const (
	birdFlows = `BIRD 2.0.12 ready.
Table flowtab4:
flow4 { src 198.51.100.9/32; proto 6; dport 25,465..587; }  [rtbh 23:19:48.771 from 127.0.20.13] * (100) [AS64500i]
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 64500
	BGP.local_pref: 100
	BGP.community: (65535,65281) (64501,666)
	BGP.ext_community: (generic, 0x8006fbf4, 0x0)
	BGP.large_community: (64500, 666, 0)
flow6 { src 2001:db8::7/128; next header 17; dport 53,5353; }  [rtbh 23:19:48.771 from 127.0.20.13] * (100) [AS64500i]
	Type: BGP univ
	BGP.ext_community: (generic, 0x8006fbf4, 0x3f800000)
`
	frrFlows = `BGP flowspec entry: (flags 0x418)
	Source Address 2001:db8::7/128/off 0
	IP Protocol = 6 
	Destination Port = 25 , >= 465 , <= 587 
	FS:rate 0.000000
	received for 00:00:02
	not installed in PBR

Displayed  1 flowspec entries
`
)

func TestParseFlows(t *testing.T) {
	got, err := parseBIRDFlows(birdFlows)
	if err != nil {
		t.Fatal(err)
	}
	want := []Flow{
		{Match: "src 198.51.100.9/32; proto 6; dport 25,465..587;", Src: "198.51.100.9/32", Proto: "6", DPort: "25,465..587",
			Communities: []string{"64501:666", "65535:65281"}, LargeCommunities: []string{"64500:666:0"},
			ExtCommunities: []string{"generic, 0x8006fbf4, 0x0"}},
		{Match: "src 2001:db8::7/128; next header 17; dport 53,5353;", Src: "2001:db8::7/128", Proto: "17", DPort: "53,5353",
			ExtCommunities: []string{"generic, 0x8006fbf4, 0x3f800000"}},
	}
	opts := cmp.Options{cmpopts.IgnoreFields(Flow{}, "Raw"), cmpopts.EquateEmpty()}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("parseBIRDFlows (-want +got):\n%s", diff)
	}
	if !got[0].TrafficRateZero() || got[1].TrafficRateZero() {
		t.Error("TrafficRateZero: rate 0 not recognized, or rate 1.0 taken for it")
	}
	fr := parseFRRFlows(frrFlows)
	if len(fr) != 1 || fr[0].Src != "2001:db8::7/128/off 0" || fr[0].Proto != "6" || fr[0].DPort != "25 , >= 465 , <= 587" || !fr[0].TrafficRateZero() {
		t.Errorf("parseFRRFlows = %+v", fr)
	}
}
