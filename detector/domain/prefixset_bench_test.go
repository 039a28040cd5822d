package domain

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// The hot-path lookup against the implementation it replaced (legacy) and
// the library's trie walk (bart.Lite), on the shapes of set the detector
// uses: a few subscriber prefixes that almost
// every sample hits, a never_blackhole list it almost always misses, and
// larger lists of random IPv4 prefixes hit half the time.
func BenchmarkPrefixSetContains(b *testing.B) {
	for _, c := range benchCases() {
		legacy := newLegacyPrefixSet(c.prefixes)
		set := NewPrefixSet(c.prefixes)
		for i, a := range c.addrs {
			if set.Contains(a) != legacy.contains(a) {
				b.Fatalf("%s: sets disagree on %s (address %d)", c.name, a, i)
			}
		}
		b.Run(c.name+"/legacy", func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for i := 0; b.Loop(); i++ {
				// The legacy set left unmapping to its callers.
				if legacy.contains(c.addrs[i&(len(c.addrs)-1)].Unmap()) {
					n++
				}
			}
			benchSink = n
		})
		// The library's own lookup, a trie walk, for comparison.
		b.Run(c.name+"/bart.Lite", func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for i := 0; b.Loop(); i++ {
				if set.trie.Contains(c.addrs[i&(len(c.addrs)-1)]) {
					n++
				}
			}
			benchSink = n
		})
		b.Run(c.name+"/PrefixSet", func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for i := 0; b.Loop(); i++ {
				if set.Contains(c.addrs[i&(len(c.addrs)-1)]) {
					n++
				}
			}
			benchSink = n
		})
	}
}

var benchSink int

type benchCase struct {
	name     string
	prefixes []netip.Prefix
	addrs    []netip.Addr // a power of two of them
}

func benchCases() []benchCase {
	rng := rand.New(rand.NewPCG(3, 4))
	const nAddrs = 1024
	v4 := func(u uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
	}
	var subs, never, subs6 []netip.Addr
	for range nAddrs {
		subs = append(subs, v4(10<<24|rng.Uint32()>>8))
		never = append(never, v4(10<<24|rng.Uint32()>>8))
		a := netip.MustParseAddr("2001:db8::").As16()
		for j := 4; j < 16; j++ {
			a[j] = byte(rng.Uint32())
		}
		subs6 = append(subs6, netip.AddrFrom16(a))
	}
	cases := []benchCase{
		{"subscribers-v4", prefixes("10.0.0.0/8", "2001:db8::/32"), subs},
		{"subscribers-v6", prefixes("10.0.0.0/8", "2001:db8::/32"), subs6},
		{"never-miss", prefixes("10.255.0.0/16"), never},
	}
	for _, n := range []int{100, 10_000} {
		var ps []netip.Prefix
		for range n {
			ps = append(ps, netip.PrefixFrom(v4(rng.Uint32()), 16+rng.IntN(17)).Masked())
		}
		var as []netip.Addr
		for i := range nAddrs {
			if i%2 == 0 {
				p := ps[rng.IntN(len(ps))]
				host := rng.Uint32() >> p.Bits()
				if p.Bits() == 32 {
					host = 0
				}
				b := p.Addr().As4()
				as = append(as, v4(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3])|host))
				continue
			}
			as = append(as, v4(rng.Uint32()))
		}
		cases = append(cases, benchCase{fmt.Sprintf("random-%d", n), ps, as})
	}
	return cases
}

// TestPrefixSetMatchesLegacy checks PrefixSet against the implementation it
// replaced on random sets (IPv4, IPv6, IPv4-mapped, nested, adjacent) and
// addresses near their edges.
func TestPrefixSetMatchesLegacy(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	addr := func(v6 bool) netip.Addr {
		if !v6 {
			return netip.AddrFrom4([4]byte{byte(rng.IntN(4)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		}
		var a [16]byte
		a[0] = byte(rng.IntN(4))
		for j := 1; j < 16; j++ {
			a[j] = byte(rng.Uint32())
		}
		return netip.AddrFrom16(a)
	}
	for round := range 200 {
		var ps []netip.Prefix
		for range 1 + rng.IntN(40) {
			v6 := rng.IntN(2) == 0
			bits := rng.IntN(33)
			if v6 {
				bits = rng.IntN(129)
			}
			p := netip.PrefixFrom(addr(v6), bits).Masked()
			if !v6 && rng.IntN(8) == 0 { // the same prefix, IPv4-mapped
				p = netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96)
			}
			ps = append(ps, p)
		}
		legacy := newLegacyPrefixSet(ps)
		set := NewPrefixSet(ps)
		var probes []netip.Addr
		for _, p := range ps {
			first := p.Masked().Addr().Unmap()
			last := netipLast(p)
			probes = append(probes, first, first.Prev(), last, last.Next())
		}
		for range 200 {
			probes = append(probes, addr(rng.IntN(2) == 0))
		}
		for _, a := range probes {
			if !a.IsValid() {
				continue
			}
			if got, want := set.Contains(a), legacy.contains(a.Unmap()); got != want {
				t.Fatalf("round %d: Contains(%s) = %v, legacy %v; set %v", round, a, got, want, ps)
			}
		}
	}
}

// netipLast is the last address of p, unmapped.
func netipLast(p netip.Prefix) netip.Addr {
	p = p.Masked()
	a := p.Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	for i := bits; i < 128; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(a).Unmap()
}

// legacyPrefixSet is detector/fanout's prefix set before PrefixSet replaced
// it, kept here only as the benchmark's baseline and the differential
// test's reference. It answers "is this address inside any of these prefixes" with a
// binary search over merged, sorted address ranges: O(log n) whatever the
// number of prefixes, no allocation.
type legacyPrefixSet struct {
	v4 []legacyRange4
	v6 []legacyRange6
}

type legacyRange4 struct{ lo, hi uint32 }

type legacyU128 struct{ hi, lo uint64 }

func (a legacyU128) less(b legacyU128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a legacyU128) inc() (legacyU128, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
		if hi == 0 {
			return legacyU128{}, false
		}
	}
	return legacyU128{hi, lo}, true
}

type legacyRange6 struct{ lo, hi legacyU128 }

func newLegacyPrefixSet(prefixes []netip.Prefix) legacyPrefixSet {
	var s legacyPrefixSet
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			a = a.Unmap()
			bits = max(bits-96, 0)
		}
		p = netip.PrefixFrom(a, bits).Masked()
		if a.Is4() {
			lo := binary.BigEndian.Uint32(p.Addr().AsSlice())
			var hostMask uint32
			if bits < 32 {
				hostMask = ^uint32(0) >> bits
			}
			s.v4 = append(s.v4, legacyRange4{lo, lo | hostMask})
			continue
		}
		b := p.Addr().As16()
		lo := legacyU128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
		hi := lo
		switch {
		case bits == 0:
			hi = legacyU128{^uint64(0), ^uint64(0)}
		case bits <= 64:
			hi = legacyU128{lo.hi | ^uint64(0)>>bits, ^uint64(0)}
		case bits < 128:
			hi.lo |= ^uint64(0) >> (bits - 64)
		}
		s.v6 = append(s.v6, legacyRange6{lo, hi})
	}
	slices.SortFunc(s.v4, func(a, b legacyRange4) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	merged4 := s.v4[:0]
	for _, r := range s.v4 {
		if n := len(merged4); n > 0 && (merged4[n-1].hi == ^uint32(0) || r.lo <= merged4[n-1].hi+1) {
			merged4[n-1].hi = max(merged4[n-1].hi, r.hi)
			continue
		}
		merged4 = append(merged4, r)
	}
	s.v4 = merged4
	slices.SortFunc(s.v6, func(a, b legacyRange6) int {
		switch {
		case a.lo.less(b.lo):
			return -1
		case b.lo.less(a.lo):
			return 1
		}
		return 0
	})
	merged6 := s.v6[:0]
	for _, r := range s.v6 {
		if n := len(merged6); n > 0 {
			last := &merged6[n-1]
			next, ok := last.hi.inc()
			if !ok || !next.less(r.lo) {
				if last.hi.less(r.hi) {
					last.hi = r.hi
				}
				continue
			}
		}
		merged6 = append(merged6, r)
	}
	s.v6 = merged6
	return s
}

func (s *legacyPrefixSet) empty() bool { return len(s.v4) == 0 && len(s.v6) == 0 }

// contains reports whether a (already unmapped) is inside the set.
func (s *legacyPrefixSet) contains(a netip.Addr) bool {
	if a.Is4() {
		if len(s.v4) == 0 {
			return false
		}
		b := a.As4()
		return s.contains4(binary.BigEndian.Uint32(b[:]))
	}
	if len(s.v6) == 0 || !a.Is6() {
		return false
	}
	b := a.As16()
	return s.contains6(legacyU128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])})
}

func (s *legacyPrefixSet) contains4(x uint32) bool {
	// Find the last range with lo <= x.
	lo, hi := 0, len(s.v4)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.v4[m].lo <= x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo > 0 && x <= s.v4[lo-1].hi
}

func (s *legacyPrefixSet) contains6(x legacyU128) bool {
	lo, hi := 0, len(s.v6)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !x.less(s.v6[m].lo) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo > 0 && !s.v6[lo-1].hi.less(x)
}
