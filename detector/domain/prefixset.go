package domain

import (
	"encoding/binary"
	"net/netip"

	"github.com/gaissmai/bart"
)

// PrefixSet answers prefix-membership questions about a fixed list of
// prefixes: subscriber space, never_blackhole, exempt sources, a partner's
// scope, a peer's own prefixes. It is built once and then only read, so it
// is safe for concurrent use. A nil *PrefixSet is the empty set.
//
// IPv4-mapped IPv6 prefixes and addresses are treated as the IPv4 ones they
// map (::ffff:10.0.0.0/104 is 10.0.0.0/8); invalid prefixes are ignored.
//
// The set is a bart.Lite trie, which answers the prefix questions
// (ContainsPrefix, Overlapping) and reduces the prefixes to their minimal
// cover (nested ones dropped, sibling halves merged: Lite.Aggregate).
// Contains, the per-sample question, binary-searches that cover laid out
// as sorted, disjoint address ranges (adjacent ones merged too): for the
// few prefixes the detector holds this is 1.5 to 2.5 times faster than
// walking the trie, as fast as the range set detector/fanout had before,
// and about equal to both for thousands of prefixes
// (BenchmarkPrefixSetContains). It allocates nothing.
type PrefixSet struct {
	trie bart.Lite

	// The minimal cover as sorted, disjoint address ranges.
	v4 []range4
	v6 []range6

	// entries are the configured prefixes, unmapped, in configured order;
	// orig[i] is entries[i] as it was given.
	entries []netip.Prefix
	orig    []netip.Prefix
}

type range4 struct{ lo, hi uint32 }

type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

// next is a+1, wrapping at the top (only compared to a later range's
// start, which never wraps).
func (a u128) next() u128 {
	if a.lo++; a.lo == 0 {
		a.hi++
	}
	return a
}

type range6 struct{ lo, hi u128 }

// NewPrefixSet returns the set of the given prefixes.
func NewPrefixSet(prefixes []netip.Prefix) *PrefixSet {
	s := &PrefixSet{}
	for _, p := range prefixes {
		n, ok := normalize(p)
		if !ok {
			continue
		}
		s.trie.Insert(n)
		s.entries = append(s.entries, n)
		s.orig = append(s.orig, p)
	}
	cover := s.trie.Clone()
	cover.Aggregate()
	for p := range cover.AllSorted4() {
		b := p.Addr().As4()
		r := range4{binary.BigEndian.Uint32(b[:]), 0}
		r.hi = r.lo | ^uint32(0)>>p.Bits()
		if n := len(s.v4); n > 0 && s.v4[n-1].hi+1 == r.lo {
			s.v4[n-1].hi = r.hi // adjacent but not CIDR siblings
			continue
		}
		s.v4 = append(s.v4, r)
	}
	for p := range cover.AllSorted6() {
		b := p.Addr().As16()
		lo := u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
		hi := lo
		switch bits := p.Bits(); {
		case bits == 0:
			hi = u128{^uint64(0), ^uint64(0)}
		case bits <= 64:
			hi = u128{lo.hi | ^uint64(0)>>bits, ^uint64(0)}
		case bits < 128:
			hi.lo |= ^uint64(0) >> (bits - 64)
		}
		if n := len(s.v6); n > 0 && s.v6[n-1].hi.next() == lo {
			s.v6[n-1].hi = hi
			continue
		}
		s.v6 = append(s.v6, range6{lo, hi})
	}
	return s
}

func normalize(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	if a := p.Addr(); a.Is4In6() {
		p = netip.PrefixFrom(a.Unmap(), max(p.Bits()-96, 0))
	}
	return p.Masked(), true
}

// Empty reports whether the set holds no prefix.
func (s *PrefixSet) Empty() bool { return s == nil || len(s.entries) == 0 }

// Len is the number of prefixes the set was built from, invalid ones left
// out.
func (s *PrefixSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// Contains reports whether a is inside one of the set's prefixes. It is the
// hot-path lookup and allocates nothing. An IPv4-mapped address is looked
// up as its IPv4 address, an IPv6 zone is ignored, an invalid address is
// in no set.
func (s *PrefixSet) Contains(a netip.Addr) bool {
	if s == nil {
		return false
	}
	a = a.Unmap()
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

// contains4 finds the last range starting at or below x.
func (s *PrefixSet) contains4(x uint32) bool {
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

func (s *PrefixSet) contains6(x u128) bool {
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

// ContainsPrefix reports whether p lies entirely inside one of the set's
// prefixes (an equal prefix counts).
func (s *PrefixSet) ContainsPrefix(p netip.Prefix) bool {
	if s == nil {
		return false
	}
	p, ok := normalize(p)
	return ok && s.trie.LookupPrefix(p)
}

// Overlapping returns the first configured prefix (as it was given, in
// configured order) that shares an address with p, if any.
func (s *PrefixSet) Overlapping(p netip.Prefix) (netip.Prefix, bool) {
	if s == nil {
		return netip.Prefix{}, false
	}
	p, ok := normalize(p)
	if !ok || !s.trie.OverlapsPrefix(p) {
		return netip.Prefix{}, false
	}
	// Only reached on an overlap, which refuses a request: a linear scan
	// names the first entry configured, whatever the trie's order.
	for i, e := range s.entries {
		if e.Overlaps(p) {
			return s.orig[i], true
		}
	}
	return netip.Prefix{}, false
}
