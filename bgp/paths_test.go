package bgp

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// nlriBytes writes what GoBGP's own NLRI types serialize, for every
// prefix length of both families.
func TestNLRIBytesAsGoBGP(t *testing.T) {
	for _, a := range []netip.Addr{netip.MustParseAddr("203.0.113.77"), netip.MustParseAddr("255.255.255.255"),
		netip.MustParseAddr("2001:db8:ffff:1234:5678:9abc:def0:1"), netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")} {
		for bits := 0; bits <= a.BitLen(); bits++ {
			p := netip.PrefixFrom(a, bits).Masked()
			var want []byte
			var err error
			if a.Is4() {
				want, err = bgp.NewIPAddrPrefix(uint8(bits), p.Addr().String()).Serialize()
			} else {
				want, err = bgp.NewIPv6AddrPrefix(uint8(bits), p.Addr().String()).Serialize()
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := nlriBytes(p); !bytes.Equal(got, want) {
				t.Fatalf("%s: nlriBytes %x, GoBGP %x", p, got, want)
			}
		}
	}
}

func BenchmarkPath(b *testing.B) {
	pb, err := newPathBuilder(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("100::1"))
	if err != nil {
		b.Fatal(err)
	}
	p := netip.MustParsePrefix("203.0.113.77/32")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pb.path(p, false); err != nil {
			b.Fatal(err)
		}
	}
}
