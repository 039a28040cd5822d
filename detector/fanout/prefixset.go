package fanout

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// prefixSet answers "is this address inside any of these prefixes" with a
// binary search over merged, sorted address ranges: O(log n) whatever the
// number of prefixes, no allocation.
type prefixSet struct {
	v4 []range4
	v6 []range6
}

type range4 struct{ lo, hi uint32 }

type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) inc() (u128, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
		if hi == 0 {
			return u128{}, false
		}
	}
	return u128{hi, lo}, true
}

type range6 struct{ lo, hi u128 }

func newPrefixSet(prefixes []netip.Prefix) prefixSet {
	var s prefixSet
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
			s.v4 = append(s.v4, range4{lo, lo | hostMask})
			continue
		}
		b := p.Addr().As16()
		lo := u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
		hi := lo
		switch {
		case bits == 0:
			hi = u128{^uint64(0), ^uint64(0)}
		case bits <= 64:
			hi = u128{lo.hi | ^uint64(0)>>bits, ^uint64(0)}
		case bits < 128:
			hi.lo |= ^uint64(0) >> (bits - 64)
		}
		s.v6 = append(s.v6, range6{lo, hi})
	}
	slices.SortFunc(s.v4, func(a, b range4) int {
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
	slices.SortFunc(s.v6, func(a, b range6) int {
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

func (s *prefixSet) empty() bool { return len(s.v4) == 0 && len(s.v6) == 0 }

// contains reports whether a (already unmapped) is inside the set.
func (s *prefixSet) contains(a netip.Addr) bool {
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
	return s.contains6(u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])})
}

func (s *prefixSet) contains4(x uint32) bool {
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

func (s *prefixSet) contains6(x u128) bool {
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
