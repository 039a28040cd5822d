package detector

import (
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rtbh/rtbh/detector/domain"
)

// The policy check is a pure function of policy and request: no store, no
// clock, no BGP.
func TestCheckAdd(t *testing.T) {
	pol := testPolicy()
	scope := domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/25")})
	for _, tc := range []struct {
		name    string
		req     Request
		wantTTL time.Duration
		kind    Kind
		msg     string
	}{
		{"default ttl", Request{Prefix: pfx("198.51.100.7")}, time.Hour, 0, ""},
		{"clamped ttl", Request{Prefix: pfx("198.51.100.7"), TTL: 1000 * time.Hour, HasTTL: true}, 24 * time.Hour, 0, ""},
		{"explicit ttl", Request{Prefix: pfx("2001:db8::7"), TTL: time.Minute, HasTTL: true}, time.Minute, 0, ""},
		{"missing prefix", Request{}, 0, KindInvalid, "missing or malformed prefix"},
		{"host bits", Request{Prefix: netip.MustParsePrefix("198.51.100.7/24")}, 0, KindInvalid,
			"198.51.100.7/24 has host bits set (did you mean 198.51.100.0/24?)"},
		{"mapped", Request{Prefix: netip.MustParsePrefix("::ffff:198.51.100.7/128")}, 0, KindInvalid,
			"::ffff:198.51.100.7/128: use the IPv4 form, not IPv4-mapped IPv6"},
		{"zero explicit ttl", Request{Prefix: pfx("198.51.100.7"), HasTTL: true}, 0, KindInvalid, "ttl must be positive, got 0s"},
		{"negative ttl", Request{Prefix: pfx("198.51.100.7"), TTL: -time.Second}, 0, KindInvalid, "ttl must be positive, got -1s"},
		{"invalid beats scope", Request{Prefix: netip.MustParsePrefix("203.0.113.7/24"), Scope: scope}, 0, KindInvalid,
			"203.0.113.7/24 has host bits set (did you mean 203.0.113.0/24?)"},
		{"outside scope", Request{Prefix: pfx("198.51.100.200"), Scope: scope}, 0, KindScope, "198.51.100.200/32 is outside your prefixes"},
		{"scope beats policy", Request{Prefix: pfx("198.51.100.0/24"), Scope: scope}, 0, KindScope, "198.51.100.0/24 is outside your prefixes"},
		{"inside scope", Request{Prefix: pfx("198.51.100.7"), Scope: scope}, time.Hour, 0, ""},
		{"too short v4", Request{Prefix: pfx("198.51.100.0/31")}, 0, KindPolicy, "198.51.100.0/31 is shorter than /32 (policy.min_prefix_len_v4)"},
		{"too short v6", Request{Prefix: pfx("2001:db8::/64")}, 0, KindPolicy, "2001:db8::/64 is shorter than /128 (policy.min_prefix_len_v6)"},
		{"never", Request{Prefix: pfx("198.51.100.53")}, 0, KindPolicy, "198.51.100.53/32 overlaps 198.51.100.53/32 in policy.never_blackhole"},
		{"never v6", Request{Prefix: pfx("2001:db8:53::1")}, 0, KindPolicy, "2001:db8:53::1/128 overlaps 2001:db8:53::/48 in policy.never_blackhole"},
		{"reason at the limit", Request{Prefix: pfx("198.51.100.7"), Reason: strings.Repeat("r", 1024)}, time.Hour, 0, ""},
		{"reason too long", Request{Prefix: pfx("198.51.100.7"), Reason: strings.Repeat("r", 1025)}, 0, KindInvalid,
			"reason: 1025 bytes, at most 1024"},
		{"reason counted in bytes", Request{Prefix: pfx("198.51.100.7"), Reason: strings.Repeat("é", 513)}, 0, KindInvalid,
			"reason: 1026 bytes, at most 1024"},
		{"reason with a NUL byte", Request{Prefix: pfx("198.51.100.7"), Reason: "zombie\x00"}, 0, KindInvalid,
			"reason: contains a NUL byte"},
		{"long reason beats scope and policy", Request{Prefix: pfx("198.51.100.53"), Scope: scope, Reason: strings.Repeat("r", 2000)},
			0, KindInvalid, "reason: 2000 bytes, at most 1024"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ttl, err := checkAdd(pol, tc.req)
			if KindOf(err) != tc.kind || (err != nil && err.Error() != tc.msg) {
				t.Fatalf("checkAdd = %v (kind %d), want %q (kind %d)", err, KindOf(err), tc.msg, tc.kind)
			}
			if err == nil && ttl != tc.wantTTL {
				t.Fatalf("ttl = %s, want %s", ttl, tc.wantTTL)
			}
		})
	}
}

func TestCheckRemove(t *testing.T) {
	scope := domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/25")})
	for _, tc := range []struct {
		name string
		req  RemoveRequest
		kind Kind
		msg  string
	}{
		{"ok", RemoveRequest{Prefix: pfx("198.51.100.7"), Reason: "done"}, 0, ""},
		{"reason at the limit", RemoveRequest{Prefix: pfx("198.51.100.7"), Reason: strings.Repeat("r", 1024)}, 0, ""},
		{"reason too long", RemoveRequest{Prefix: pfx("198.51.100.7"), Reason: strings.Repeat("r", 1025)}, KindInvalid,
			"reason: 1025 bytes, at most 1024"},
		{"long reason beats scope", RemoveRequest{Prefix: pfx("198.51.100.200"), Scope: scope, Reason: strings.Repeat("r", 1025)},
			KindInvalid, "reason: 1025 bytes, at most 1024"},
		{"outside scope", RemoveRequest{Prefix: pfx("198.51.100.200"), Scope: scope}, KindScope, "198.51.100.200/32 is outside your prefixes"},
		{"host bits", RemoveRequest{Prefix: netip.MustParsePrefix("198.51.100.7/24")}, KindInvalid,
			"198.51.100.7/24 has host bits set (did you mean 198.51.100.0/24?)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRemove(tc.req)
			if KindOf(err) != tc.kind || (err != nil && err.Error() != tc.msg) {
				t.Fatalf("checkRemove = %v (kind %d), want %q (kind %d)", err, KindOf(err), tc.msg, tc.kind)
			}
		})
	}
}

// The reasons rtbhd writes itself are cut, never refused.
func TestClipReason(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		wantLen  int
	}{
		{"short", "smtp-fanout: 25 destinations", 28},
		{"at the limit", strings.Repeat("r", 1024), 1024},
		{"cut", strings.Repeat("r", 5000), 1024},
		{"cut on a character boundary", strings.Repeat("é", 600), 1023}, // 510 two-byte runes + "..."
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ClipReason(tc.in)
			if len(got) != tc.wantLen {
				t.Errorf("len(ClipReason) = %d, want %d", len(got), tc.wantLen)
			}
			if !utf8.ValidString(got) || checkReason(got) != nil {
				t.Errorf("ClipReason = %q: invalid UTF-8 or over the limit", got)
			}
			if len(tc.in) > MaxReasonBytes && !strings.HasSuffix(got, "...") {
				t.Errorf("a cut reason does not end in ...: %q", got[len(got)-10:])
			}
		})
	}
}

func TestFoldRouteChanges(t *testing.T) {
	a, b, c := domain.Key{Prefix: pfx("198.51.100.1")}, domain.Key{Prefix: pfx("198.51.100.2")}, domain.Key{Prefix: pfx("198.51.100.3")}
	// A filter on a's prefix is its own entry: a's withdrawal leaves it.
	af := domain.Key{Prefix: a.Prefix, Match: "tcp/25"}
	ann, wd := fold([]routeChange{{a, true}, {af, true}, {b, true}, {a, false}, {c, false}, {b, false}, {b, true}})
	if len(ann) != 2 || ann[0] != af || ann[1] != b || len(wd) != 2 || wd[0] != a || wd[1] != c {
		t.Fatalf("fold = announce %v, withdraw %v; want [%s %s], [%s %s]", ann, wd, af, b, a, c)
	}
	routes, filters := splitKeys(ann)
	if len(routes) != 1 || routes[0] != b.Prefix || len(filters) != 1 || filters[0] != af {
		t.Fatalf("splitKeys = %v, %v", routes, filters)
	}
}

// protectedPolicy protects what app.policy would for a config with router
// id 192.0.2.254, neighbors 127.0.0.2 and 198.51.100.2, the default next
// hops, the API on 198.51.100.250 and sFlow agents 198.51.100.2 (also a
// neighbor), 198.51.100.64/28 and 2001:db8:a::1. Prefix lengths are not
// limited, so that covering prefixes reach the protection check.
func protectedPolicy() Policy {
	pol := testPolicy()
	pol.MinPrefixLenV4, pol.MinPrefixLenV6 = 0, 0
	pol.Protected = NewProtection([]Protected{
		{pfx("192.0.2.254"), "BGP router id"},
		{pfx("127.0.0.2"), "BGP neighbor"},
		{pfx("198.51.100.2"), "BGP neighbor"},
		{pfx("192.0.2.1"), "IPv4 next hop"},
		{pfx("100::1"), "IPv6 next hop"},
		{pfx("198.51.100.250"), "api.listen"},
		{pfx("198.51.100.2"), "sFlow agent"},
		{pfx("198.51.100.64/28"), "sFlow agent"},
		{pfx("2001:db8:a::1"), "sFlow agent"},
	})
	return pol
}

// Protected infrastructure is refused whoever asks (FAILED_PRECONDITION),
// naming why; prefixes covering it too.
func TestCheckAddProtected(t *testing.T) {
	pol := protectedPolicy()
	partner := domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.51.100.64/26")})
	for _, tc := range []struct {
		name string
		req  Request
		kind Kind
		msg  string
	}{
		{"neighbor", Request{Prefix: pfx("127.0.0.2")}, KindPolicy, "protected: BGP neighbor 127.0.0.2"},
		{"router id", Request{Prefix: pfx("192.0.2.254")}, KindPolicy, "protected: BGP router id 192.0.2.254"},
		{"next hop v4", Request{Prefix: pfx("192.0.2.1")}, KindPolicy, "protected: IPv4 next hop 192.0.2.1"},
		{"next hop v6", Request{Prefix: pfx("100::1")}, KindPolicy, "protected: IPv6 next hop 100::1"},
		{"listen address", Request{Prefix: pfx("198.51.100.250")}, KindPolicy, "protected: api.listen 198.51.100.250"},
		{"agent", Request{Prefix: pfx("2001:db8:a::1")}, KindPolicy, "protected: sFlow agent 2001:db8:a::1"},
		{"neighbor and agent: the first entry names it", Request{Prefix: pfx("198.51.100.2")}, KindPolicy,
			"protected: BGP neighbor 198.51.100.2"},
		{"inside an agent prefix", Request{Prefix: pfx("198.51.100.70")}, KindPolicy,
			"198.51.100.70/32 is inside protected: sFlow agent 198.51.100.64/28"},
		{"covering a neighbor", Request{Prefix: pfx("198.51.100.0/24")}, KindPolicy,
			"198.51.100.0/24 covers protected: BGP neighbor 198.51.100.2"},
		{"covering an agent prefix", Request{Prefix: pfx("198.51.100.64/26")}, KindPolicy,
			"198.51.100.64/26 covers protected: sFlow agent 198.51.100.64/28"},
		{"covering v6", Request{Prefix: pfx("2001:db8:a::/48")}, KindPolicy,
			"2001:db8:a::/48 covers protected: sFlow agent 2001:db8:a::1"},
		{"everything: the first entry configured", Request{Prefix: pfx("0.0.0.0/0")}, KindPolicy,
			"0.0.0.0/0 covers protected: BGP router id 192.0.2.254"},
		{"partner inside its scope", Request{Prefix: pfx("198.51.100.66"), Scope: partner}, KindPolicy,
			"198.51.100.66/32 is inside protected: sFlow agent 198.51.100.64/28"},
		{"detector and reports too", Request{Prefix: pfx("198.51.100.2"), Origin: "detector:smtp-fanout"}, KindPolicy,
			"protected: BGP neighbor 198.51.100.2"},
		// As for never_blackhole: the caller's scope is checked first, so
		// a partner learns nothing about addresses outside its space.
		{"partner outside its scope", Request{Prefix: pfx("127.0.0.2"), Scope: partner}, KindScope,
			"127.0.0.2/32 is outside your prefixes"},
		{"malformed first", Request{Prefix: pfx("127.0.0.2"), Reason: strings.Repeat("r", 1025)}, KindInvalid,
			"reason: 1025 bytes, at most 1024"},
		{"beside the protected addresses", Request{Prefix: pfx("198.51.100.3")}, 0, ""},
		{"beside an agent prefix", Request{Prefix: pfx("198.51.100.80")}, 0, ""},
		{"never_blackhole still applies", Request{Prefix: pfx("198.51.100.53")}, KindPolicy,
			"198.51.100.53/32 overlaps 198.51.100.53/32 in policy.never_blackhole"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkAdd(pol, tc.req)
			if KindOf(err) != tc.kind || (err != nil && err.Error() != tc.msg) {
				t.Fatalf("checkAdd(%s) = %v (kind %d), want %q (kind %d)", tc.req.Prefix, err, KindOf(err), tc.msg, tc.kind)
			}
		})
	}
	// A removal is never refused for protection: withdrawing is always safe.
	if err := checkRemove(RemoveRequest{Prefix: pfx("127.0.0.2")}); err != nil {
		t.Errorf("checkRemove of a protected address = %v", err)
	}
	var none *Protection
	if _, ok := none.Overlapping(pfx("127.0.0.2")); ok || none.Entries() != nil {
		t.Error("a nil Protection protects something")
	}
}
