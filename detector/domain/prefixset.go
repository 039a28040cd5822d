package domain

import (
	"net/netip"

	"github.com/gaissmai/bart"
)

// PrefixSet answers prefix-membership questions about a fixed list of
// prefixes: subscriber space, never_blackhole, exempt sources, a partner's
// scope, a peer's own prefixes. It is built once and then only read, so it
// is safe for concurrent use.
//
// IPv4-mapped IPv6 prefixes and addresses are treated as the IPv4 ones they
// map (::ffff:10.0.0.0/104 is 10.0.0.0/8); invalid prefixes are ignored.
//
// The lookups run on a bart.Lite trie (popcount-compressed multibit trie):
// Contains does not allocate, whatever the size of the set.
type PrefixSet struct {
	trie bart.Lite
	// entries are the configured prefixes, unmapped, in configured order;
	// orig[i] is entries[i] as it was given.
	entries []netip.Prefix
	orig    []netip.Prefix
}

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
	return s
}

func normalize(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	if a := p.Addr(); a.Is4In6() {
		p = netip.PrefixFrom(a.Unmap(), max(p.Bits()-96, 0))
	}
	return p, true
}

// Empty reports whether the set holds no prefix. A nil set is empty.
func (s *PrefixSet) Empty() bool { return s == nil || len(s.entries) == 0 }

// Len is the number of prefixes the set was built from (invalid ones left out).
func (s *PrefixSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// Contains reports whether a is inside one of the set's prefixes. It is the
// hot-path lookup: no allocation. An IPv4-mapped address is looked up as
// its IPv4 address; an invalid address is in no set.
func (s *PrefixSet) Contains(a netip.Addr) bool {
	if s == nil {
		return false
	}
	if a.Is4In6() {
		a = a.Unmap()
	}
	return s.trie.Contains(a)
}

// ContainsPrefix reports whether p lies entirely inside one of the set's
// prefixes (equal counts).
func (s *PrefixSet) ContainsPrefix(p netip.Prefix) bool {
	if s == nil {
		return false
	}
	p, ok := normalize(p)
	if !ok {
		return false
	}
	return s.trie.LookupPrefix(p)
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
	// keeps the entry named the first one configured.
	for i, e := range s.entries {
		if e.Overlaps(p) {
			return s.orig[i], true
		}
	}
	return netip.Prefix{}, false
}
