package bgp

import (
	"fmt"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// NoExport is the well-known NO_EXPORT community (65535:65281), on every route.
const NoExport uint32 = 0xFFFFFF01

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// pathBuilder makes GoBGP API paths in their binary form: the attributes
// shared by every route are serialized once, so a path costs one small NLRI
// encoding (plus the MP_REACH attribute for IPv6) and no protobuf Any.
type pathBuilder struct {
	nh6    string
	attrs4 [][]byte // ORIGIN, AS_PATH, NEXT_HOP, COMMUNITIES
	attrs6 [][]byte // ORIGIN, AS_PATH, COMMUNITIES (+ per-path MP_REACH)
}

func newPathBuilder(nh4, nh6 netip.Addr) (*pathBuilder, error) {
	ser := func(a bgp.PathAttributeInterface) ([]byte, error) {
		b, err := a.Serialize()
		if err != nil {
			return nil, fmt.Errorf("serializing path attribute %s: %w", a.GetType(), err)
		}
		return b, nil
	}
	var common [][]byte
	for _, a := range []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		bgp.NewPathAttributeAsPath(nil),
		bgp.NewPathAttributeCommunities([]uint32{NoExport}),
	} {
		b, err := ser(a)
		if err != nil {
			return nil, err
		}
		common = append(common, b)
	}
	nh, err := ser(bgp.NewPathAttributeNextHop(nh4.String()))
	if err != nil {
		return nil, err
	}
	pb := &pathBuilder{nh6: nh6.String()}
	pb.attrs4 = append(append([][]byte{}, common...), nh)
	pb.attrs6 = common
	return pb, nil
}

// path returns the API path announcing (or, withdraw, withdrawing) p.
func (pb *pathBuilder) path(p netip.Prefix, withdraw bool) (*api.Path, error) {
	if p.Addr().Is4() {
		return &api.Path{Family: familyV4, NlriBinary: nlriBytes(p), PattrsBinary: pb.attrs4, IsWithdraw: withdraw}, nil
	}
	nlri := bgp.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
	b, err := nlri.Serialize()
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", p, err)
	}
	mp, err := bgp.NewPathAttributeMpReachNLRI(pb.nh6, []bgp.AddrPrefixInterface{nlri}).Serialize()
	if err != nil {
		return nil, fmt.Errorf("encoding MP_REACH for %s: %w", p, err)
	}
	attrs := make([][]byte, 0, len(pb.attrs6)+1)
	attrs = append(append(attrs, pb.attrs6...), mp)
	return &api.Path{Family: familyV6, NlriBinary: b, PattrsBinary: attrs, IsWithdraw: withdraw}, nil
}

// nlriBytes is p's NLRI in the wire form (RFC 4271 4.3: the length in
// bits, then the prefix's significant octets), as bgp.IPAddrPrefix's
// Serialize writes it, without building and parsing one: one allocation.
// p is masked (checkPrefix).
func nlriBytes(p netip.Prefix) []byte {
	n := (p.Bits() + 7) / 8
	b := make([]byte, 1+n)
	b[0] = byte(p.Bits())
	if p.Addr().Is4() {
		a := p.Addr().As4()
		copy(b[1:], a[:n])
	} else {
		a := p.Addr().As16()
		copy(b[1:], a[:n])
	}
	return b
}

// checkPrefix validates a prefix given to Announce or Withdraw.
func checkPrefix(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Zone() != "" {
		return fmt.Errorf("invalid prefix %s", p)
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("prefix %s: IPv4-mapped IPv6 prefixes are not routed, use the IPv4 form", p)
	}
	if p != p.Masked() {
		return fmt.Errorf("prefix %s has host bits set", p)
	}
	return nil
}
