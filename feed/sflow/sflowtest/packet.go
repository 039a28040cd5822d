package sflowtest

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers used by Packet.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flag bits.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
)

// EtherTypes of VLAN tags accepted in Packet.VLANTPIDs.
const (
	TPID8021Q  = 0x8100
	TPID8021AD = 0x88a8
	TPIDQinQ   = 0x9100
)

// Packet describes one IP packet to be rendered as bytes: an Ethernet frame
// (AppendEthernet) or a bare IP packet (AppendIP). Src and Dst must be of
// the same family; that family picks IPv4 or IPv6.
type Packet struct {
	Src, Dst         netip.Addr
	Protocol         uint8 // ProtoTCP, ProtoUDP, or anything else (no L4 header then)
	SrcPort, DstPort uint16
	TCPFlags         uint8

	// VLANs are 802.1Q tags, outermost first. VLANTPIDs optionally gives the
	// TPID of each tag (default 0x8100 for all; use 0x88a8 or 0x9100 for the
	// outer tag of QinQ).
	VLANs     []uint16
	VLANTPIDs []uint16
	// MPLS labels, outermost first; the last one gets the bottom-of-stack bit.
	MPLS []uint32

	// IPv6 extension headers to insert before the L4 header: each entry is
	// a next-header value of 0 (hop-by-hop), 43 (routing) or 60
	// (destination options), rendered as 8-byte headers.
	IPv6Ext []uint8

	// FragmentOffset in 8-byte units; non-zero makes a non-first fragment
	// (no L4 header is written). MoreFragments sets MF (IPv4) or M (IPv6,
	// where any fragment info adds a fragment extension header).
	FragmentOffset uint16
	MoreFragments  bool

	// PayloadLen is the L4 payload length in bytes (zeros).
	PayloadLen int
	TTL        uint8 // default 64
}

func (p *Packet) is6() bool { return p.Src.Is6() && !p.Src.Is4In6() }

func (p *Packet) fragmented() bool { return p.FragmentOffset != 0 || p.MoreFragments }

// l4Len is the length of the L4 header written for p.
func (p *Packet) l4Len() int {
	if p.FragmentOffset != 0 {
		return 0
	}
	switch p.Protocol {
	case ProtoTCP:
		return 20
	case ProtoUDP:
		return 8
	}
	return 0
}

// IPLen is the total length of the IP packet described by p.
func (p *Packet) IPLen() int {
	n := p.l4Len() + p.PayloadLen
	if p.is6() {
		n += 40 + 8*len(p.IPv6Ext)
		if p.fragmented() {
			n += 8
		}
		return n
	}
	return n + 20
}

// FrameLen is the length of the Ethernet frame AppendEthernet writes for p
// (without FCS).
func (p *Packet) FrameLen() int {
	n := 14 + 4*len(p.VLANs) + 4*len(p.MPLS) + p.IPLen()
	if n < 60 {
		n = 60
	}
	return n
}

// Ethernet addresses used in frames.
var (
	dstMAC = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	srcMAC = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

// AppendEthernet appends an Ethernet II frame carrying p (VLAN tags, MPLS
// labels, IP, L4 header and zero payload, padded to the 60-byte minimum)
// to dst. It allocates only when dst lacks capacity.
func AppendEthernet(dst []byte, p Packet) []byte {
	start := len(dst)
	dst = append(dst, dstMAC[:]...)
	dst = append(dst, srcMAC[:]...)
	for i, v := range p.VLANs {
		tpid := uint16(TPID8021Q)
		if i < len(p.VLANTPIDs) && p.VLANTPIDs[i] != 0 {
			tpid = p.VLANTPIDs[i]
		}
		dst = binary.BigEndian.AppendUint16(dst, tpid)
		dst = binary.BigEndian.AppendUint16(dst, v&0x0fff)
	}
	switch {
	case len(p.MPLS) > 0:
		dst = binary.BigEndian.AppendUint16(dst, 0x8847)
		for i, l := range p.MPLS {
			v := (l&0xfffff)<<12 | 64
			if i == len(p.MPLS)-1 {
				v |= 0x100
			}
			dst = binary.BigEndian.AppendUint32(dst, v)
		}
	case p.is6():
		dst = binary.BigEndian.AppendUint16(dst, 0x86dd)
	default:
		dst = binary.BigEndian.AppendUint16(dst, 0x0800)
	}
	dst = AppendIP(dst, p)
	for len(dst)-start < 60 {
		dst = append(dst, 0)
	}
	return dst
}

// AppendIP appends the IP packet described by p (IPv4 or IPv6 header,
// extension headers, L4 header, zero payload) to dst.
func AppendIP(dst []byte, p Packet) []byte {
	ttl := p.TTL
	if ttl == 0 {
		ttl = 64
	}
	if p.is6() {
		dst = appendIPv6(dst, &p, ttl)
	} else {
		dst = appendIPv4(dst, &p, ttl)
	}
	dst = appendL4(dst, &p)
	for range p.PayloadLen {
		dst = append(dst, 0)
	}
	return dst
}

func appendIPv4(dst []byte, p *Packet, ttl uint8) []byte {
	h := len(dst)
	frag := p.FragmentOffset & 0x1fff
	if p.MoreFragments {
		frag |= 0x2000
	}
	dst = append(dst, 0x45, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(p.IPLen()))
	dst = append(dst, 0x12, 0x34) // identification
	dst = binary.BigEndian.AppendUint16(dst, frag)
	dst = append(dst, ttl, p.Protocol, 0, 0)
	s, d := p.Src.Unmap().As4(), p.Dst.Unmap().As4()
	dst = append(dst, s[:]...)
	dst = append(dst, d[:]...)
	var sum uint32
	for i := h; i < h+20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(dst[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(dst[h+10:], ^uint16(sum))
	return dst
}

func appendIPv6(dst []byte, p *Packet, ttl uint8) []byte {
	payload := p.IPLen() - 40
	dst = append(dst, 0x60, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(payload))
	first := p.Protocol
	switch {
	case len(p.IPv6Ext) > 0:
		first = p.IPv6Ext[0]
	case p.fragmented():
		first = 44
	}
	dst = append(dst, first, ttl)
	s, d := p.Src.As16(), p.Dst.As16()
	dst = append(dst, s[:]...)
	dst = append(dst, d[:]...)
	for i := range p.IPv6Ext {
		next := p.Protocol
		switch {
		case i+1 < len(p.IPv6Ext):
			next = p.IPv6Ext[i+1]
		case p.fragmented():
			next = 44
		}
		dst = append(dst, next, 0, 1, 4, 0, 0, 0, 0) // 8 bytes, PadN option
	}
	if p.fragmented() {
		fo := p.FragmentOffset << 3
		if p.MoreFragments {
			fo |= 1
		}
		dst = append(dst, p.Protocol, 0)
		dst = binary.BigEndian.AppendUint16(dst, fo)
		dst = append(dst, 0, 0, 0x56, 0x78)
	}
	return dst
}

func appendL4(dst []byte, p *Packet) []byte {
	if p.FragmentOffset != 0 {
		return dst
	}
	switch p.Protocol {
	case ProtoTCP:
		dst = binary.BigEndian.AppendUint16(dst, p.SrcPort)
		dst = binary.BigEndian.AppendUint16(dst, p.DstPort)
		dst = append(dst, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, p.TCPFlags, 0xff, 0xff, 0, 0, 0, 0)
	case ProtoUDP:
		dst = binary.BigEndian.AppendUint16(dst, p.SrcPort)
		dst = binary.BigEndian.AppendUint16(dst, p.DstPort)
		dst = binary.BigEndian.AppendUint16(dst, uint16(8+p.PayloadLen))
		dst = append(dst, 0, 0)
	}
	return dst
}
