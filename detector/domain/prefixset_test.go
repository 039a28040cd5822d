package domain

import (
	"net/netip"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func TestPrefixSetContains(t *testing.T) {
	s := NewPrefixSet(prefixes("10.0.0.0/8", "198.51.100.0/25", "2001:db8::/32", "::ffff:100.64.0.0/106", "192.0.2.7/32"))
	tests := []struct {
		addr string
		want bool
	}{
		{"10.0.0.0", true},
		{"10.255.255.255", true},
		{"11.0.0.0", false},
		{"9.255.255.255", false},
		{"198.51.100.127", true},
		{"198.51.100.128", false},
		{"192.0.2.7", true},
		{"192.0.2.8", false},
		{"2001:db8::1", true},
		{"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true},
		{"2001:db9::", false},
		{"fe80::1%eth0", false},
		{"2001:db8::1%eth0", true},
		// IPv4-mapped addresses are their IPv4 address; mapped entries
		// are their IPv4 prefix.
		{"::ffff:10.1.2.3", true},
		{"::ffff:11.1.2.3", false},
		{"100.64.0.1", true},
		{"100.128.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := s.Contains(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("Contains(%s) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
	if s.Contains(netip.Addr{}) {
		t.Error("the zero Addr is in the set")
	}
}

func TestPrefixSetEmpty(t *testing.T) {
	var nilSet *PrefixSet
	for name, s := range map[string]*PrefixSet{
		"nil":     nilSet,
		"none":    NewPrefixSet(nil),
		"invalid": NewPrefixSet([]netip.Prefix{{}}),
	} {
		t.Run(name, func(t *testing.T) {
			if !s.Empty() || s.Len() != 0 {
				t.Errorf("Empty() = %v, Len() = %d", s.Empty(), s.Len())
			}
			if s.Contains(netip.MustParseAddr("10.0.0.1")) || s.ContainsPrefix(netip.MustParsePrefix("0.0.0.0/0")) {
				t.Error("an empty set contains something")
			}
			if _, ok := s.Overlapping(netip.MustParsePrefix("::/0")); ok {
				t.Error("an empty set overlaps something")
			}
		})
	}
	all := NewPrefixSet(prefixes("0.0.0.0/0", "::/0"))
	if all.Empty() || all.Len() != 2 {
		t.Errorf("Empty() = %v, Len() = %d", all.Empty(), all.Len())
	}
	for _, a := range []string{"0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		if !all.Contains(netip.MustParseAddr(a)) {
			t.Errorf("%s not in 0.0.0.0/0 + ::/0", a)
		}
	}
}

func TestPrefixSetContainsPrefix(t *testing.T) {
	s := NewPrefixSet(prefixes("10.0.0.0/8", "198.51.100.0/25", "2001:db8::/32"))
	tests := []struct {
		p    string
		want bool
	}{
		{"10.0.0.0/8", true},
		{"10.1.0.0/16", true},
		{"10.1.2.3/32", true},
		{"10.0.0.0/7", false},
		{"0.0.0.0/0", false},
		{"198.51.100.0/24", false},
		{"198.51.100.0/25", true},
		{"198.51.100.64/26", true},
		{"198.51.100.128/25", false},
		{"2001:db8:1::/48", true},
		{"2001:db8::/31", false},
		{"::ffff:10.1.0.0/112", true},
	}
	for _, tt := range tests {
		t.Run(tt.p, func(t *testing.T) {
			if got := s.ContainsPrefix(netip.MustParsePrefix(tt.p)); got != tt.want {
				t.Errorf("ContainsPrefix(%s) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestPrefixSetOverlapping(t *testing.T) {
	// The entry named is the first configured one that overlaps, as given.
	s := NewPrefixSet(prefixes("198.51.100.0/25", "198.51.100.64/26", "10.0.0.0/8", "2001:db8::/48", "::ffff:192.0.2.0/120"))
	tests := []struct {
		p    string
		want string // "" for no overlap
	}{
		{"198.51.100.0/24", "198.51.100.0/25"},
		{"198.51.100.64/27", "198.51.100.0/25"},
		{"198.51.100.128/25", ""},
		{"0.0.0.0/0", "198.51.100.0/25"},
		{"10.9.9.9/32", "10.0.0.0/8"},
		{"11.0.0.0/8", ""},
		{"2001:db8::/32", "2001:db8::/48"},
		{"2001:db8:0:1::/64", "2001:db8::/48"},
		{"2001:db8:1::/48", ""},
		{"192.0.2.128/25", "::ffff:192.0.2.0/120"},
		{"192.0.3.0/24", ""},
	}
	for _, tt := range tests {
		t.Run(tt.p, func(t *testing.T) {
			got, ok := s.Overlapping(netip.MustParsePrefix(tt.p))
			if tt.want == "" {
				if ok {
					t.Errorf("Overlapping(%s) = %s, want none", tt.p, got)
				}
				return
			}
			if !ok || got != netip.MustParsePrefix(tt.want) {
				t.Errorf("Overlapping(%s) = %s, %v, want %s", tt.p, got, ok, tt.want)
			}
		})
	}
}

func TestPrefixSetContainsNoAllocs(t *testing.T) {
	s := NewPrefixSet(prefixes("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "2001:db8:1:2::/64"))
	addrs := []netip.Addr{
		netip.MustParseAddr("10.1.2.3"),
		netip.MustParseAddr("192.0.3.1"),
		netip.MustParseAddr("::ffff:192.0.2.9"),
		netip.MustParseAddr("2001:db8:1:2::1"),
		netip.MustParseAddr("2001:db8::1%eth0"),
		netip.MustParseAddr("2001:db9::1"),
	}
	var n int
	if got := testing.AllocsPerRun(1000, func() {
		for _, a := range addrs {
			if s.Contains(a) {
				n++
			}
		}
	}); got != 0 {
		t.Errorf("Contains allocates %v times per run", got)
	}
	if n == 0 {
		t.Error("nothing was found")
	}
}

// TestPrefixSetCover checks the ranges Contains searches: nested prefixes
// dropped, adjacent ones merged, IPv4-mapped ones with the IPv4 ones.
func TestPrefixSetCover(t *testing.T) {
	s := NewPrefixSet(prefixes(
		"10.0.0.0/8",
		"10.1.0.0/16", // inside the /8
		"192.0.2.0/25",
		"192.0.2.128/25", // CIDR sibling: merged
		"192.0.3.0/24",   // adjacent, not a sibling: merged too
		"::ffff:198.51.100.0/120",
		"2001:db8::/32",
		"2001:db8:ffff::/48",
		"fe80::1/128",
		"3000::/64",
		"3000:0:0:1::/64",
	))
	if len(s.v4) != 3 || len(s.v6) != 3 {
		t.Errorf("ranges v4 %v v6 %v, want 3 and 3", s.v4, s.v6)
	}
	for addr, want := range map[string]bool{
		"10.0.0.0": true, "10.255.255.255": true, "11.0.0.0": false, "9.255.255.255": false,
		"192.0.2.0": true, "192.0.2.255": true, "192.0.3.255": true, "192.0.4.0": false, "198.51.100.77": true,
		"198.51.101.0": false, "0.0.0.0": false, "255.255.255.255": false,
		"2001:db8::": true, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff": true, "2001:db9::": false,
		"fe80::1": true, "fe80::2": false, "3000::": true, "3000:0:0:1:ffff:ffff:ffff:ffff": true, "3000:0:0:2::": false, "::": false,
	} {
		if got := s.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
	if s.Len() != 11 {
		t.Errorf("Len() = %d, want the 11 prefixes given", s.Len())
	}
}
