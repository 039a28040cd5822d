package domain

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMatch(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ports    []PortRange
	}{
		{"tcp/25", "tcp/25", []PortRange{{25, 25}}},
		{"TCP/25", "tcp/25", []PortRange{{25, 25}}},
		{"udp/53,5353", "udp/53,5353", []PortRange{{53, 53}, {5353, 5353}}},
		{"tcp/25,465-587", "tcp/25,465-587", []PortRange{{25, 25}, {465, 587}}},
		{"tcp/587,25,26", "tcp/25-26,587", []PortRange{{25, 26}, {587, 587}}},
		{" tcp/ 465-500 , 490-587 ", "tcp/465-587", []PortRange{{465, 587}}},
		{"udp/1-65535", "udp/1-65535", []PortRange{{1, 65535}}},
		{"tcp/25,25", "tcp/25", []PortRange{{25, 25}}},
		{"tcp/10-20,21", "tcp/10-21", []PortRange{{10, 21}}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			m, err := ParseMatch(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if diff := cmp.Diff(tc.ports, m.Ports); diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
			again, err := ParseMatch(m.String())
			if err != nil || again.String() != m.String() {
				t.Errorf("canonical form does not parse to itself: %v, %q", err, again)
			}
		})
	}
}

func TestParseMatchRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"tcp/0", "port 0 is out of range 1-65535"},
		{"tcp/70000", "port 70000 is out of range 1-65535"},
		{"icmp/25", `protocol "icmp": want tcp or udp`},
		{"sctp", `protocol "sctp": want tcp or udp`},
		{"tcp", "no destination ports"},
		{"tcp/", "no destination ports"},
		{"", "empty flowspec match"},
		{"/25", "missing protocol"},
		{"tcp/25,", "empty port"},
		{"tcp/x", `port "x" is not a number`},
		{"tcp/600-500", "port range 600-500 ends before it starts"},
		{"tcp/-5", "empty port"},
		{"tcp/5-70000", "port 70000 is out of range"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParseMatch(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseMatch(%q) = %v, want an error containing %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestNewFlowMatchRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proto uint8
		ports []PortRange
	}{
		{"icmp", 1, []PortRange{{25, 25}}},
		{"no ports", ProtoTCP, nil},
		{"port 0", ProtoTCP, []PortRange{{0, 0}}},
		{"reversed", ProtoUDP, []PortRange{{9, 8}}},
		{"too many ranges", ProtoUDP, func() []PortRange {
			var rs []PortRange
			for p := uint16(1); p <= 2*MaxMatchRanges+2; p += 2 {
				rs = append(rs, PortRange{p, p})
			}
			return rs
		}()},
	} {
		if _, err := NewFlowMatch(tc.proto, tc.ports); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestKey(t *testing.T) {
	p := netip.MustParsePrefix("198.51.100.7/32")
	route, filter := Key{p, ""}, Key{p, "tcp/25"}
	if route == filter {
		t.Fatal("a route and a filter on one prefix have the same key")
	}
	if route.Compare(filter) >= 0 {
		t.Error("a route does not sort before its filters")
	}
	if got := filter.String(); got != "198.51.100.7/32 flowspec tcp/25" {
		t.Errorf("String() = %q", got)
	}
	if (Blackhole{Prefix: p, Match: "tcp/25"}).Key() != filter {
		t.Error("Blackhole.Key is not its prefix and match")
	}
}

func FuzzParseMatch(f *testing.F) {
	for _, s := range []string{"tcp/25", "udp/53,5353", "tcp/25,465-587", "tcp/0", "icmp/25", "tcp/1-65535,3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMatch(s)
		if err != nil {
			return
		}
		c := m.String()
		m2, err := ParseMatch(c)
		if err != nil || m2.String() != c {
			t.Fatalf("%q -> %q does not round-trip: %v", s, c, err)
		}
		for i, r := range m.Ports {
			if r.First == 0 || r.Last < r.First || (i > 0 && int(r.First) <= int(m.Ports[i-1].Last)+1) {
				t.Fatalf("%q: not canonical: %v", s, m.Ports)
			}
		}
	})
}
