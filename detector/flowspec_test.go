package detector

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// filters waits up to 2 s for BGP to hold exactly want as FlowSpec
// filters ("198.51.100.7/32 flowspec tcp/25").
func (f *fixture) filters(want ...string) {
	f.t.Helper()
	slices.Sort(want)
	var got []string
	testkit.WaitFor(f.t, 2*time.Second, fmt.Sprintf("BGP to announce exactly the filters %v", want), func() bool {
		got = got[:0]
		for _, k := range f.speaker.AnnouncedFilters() {
			got = append(got, k.String())
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	})
}

// A filter is an entry of its own, keyed by (prefix, match): beside the
// route on the same prefix, deduplicated (add again = extend), audited
// with its match, counted by max_active, removed by its match alone, and
// restored with its match after a restart.
func TestFilterEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	f := newFixture(t, path, testPolicy(), ReportPolicy{})
	ctx := context.Background()
	p := pfx("198.51.100.7")
	add := func(match string, ttl time.Duration) (domain.Blackhole, Change, error) {
		return f.m.Add(ctx, Request{Prefix: p, Match: match, TTL: ttl, Origin: "operator:noc", Actor: "noc", Reason: "zombie"})
	}
	if _, c, err := add("", 0); err != nil || c != Added {
		t.Fatalf("route: %v, %v", c, err)
	}
	b, c, err := add("tcp/25", 0)
	if err != nil || c != Added || b.Match != "tcp/25" {
		t.Fatalf("filter: %+v, %v, %v", b, c, err)
	}
	// Non-canonical text names the same filter.
	if _, c, err := add("TCP/25,25", 2*time.Hour); err != nil || c != Extended {
		t.Fatalf("the same filter again, longer: %v, %v; want Extended", c, err)
	}
	if _, c, err := add("udp/53", 0); err != nil || c != Added {
		t.Fatalf("second filter: %v, %v", c, err)
	}
	f.announced("198.51.100.7/32")
	f.filters("198.51.100.7/32 flowspec tcp/25", "198.51.100.7/32 flowspec udp/53")
	if got := len(f.m.Active()); got != 3 {
		t.Fatalf("%d active entries, want 3", got)
	}
	if es := f.m.OnPrefix(p); len(es) != 3 || es[0].Match != "" || es[1].Match != "tcp/25" || es[2].Match != "udp/53" {
		t.Fatalf("OnPrefix = %+v", es)
	}
	// max_active (5) counts routes and filters together.
	for _, m := range []string{"tcp/465", "tcp/587"} {
		if _, _, err := add(m, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := add("tcp/2525", 0); KindOf(err) != KindLimit {
		t.Fatalf("a sixth entry: %v, want KindLimit", err)
	}
	// Malformed matches are refused as malformed requests.
	for _, m := range []string{"tcp/0", "tcp/70000", "icmp/25", "sctp"} {
		if _, _, err := add(m, 0); KindOf(err) != KindInvalid {
			t.Errorf("Add match %q: %v, want KindInvalid", m, err)
		}
		if _, err := f.m.Remove(ctx, RemoveRequest{Prefix: p, Match: m}); KindOf(err) != KindInvalid {
			t.Errorf("Remove match %q: %v, want KindInvalid", m, err)
		}
	}
	// Removing a filter leaves the route and the other filters.
	if _, err := f.m.Remove(ctx, RemoveRequest{Prefix: p, Match: "udp/53", Actor: "noc", Reason: "cleaned"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Remove(ctx, RemoveRequest{Prefix: p, Match: "udp/53"}); KindOf(err) != KindNotFound {
		t.Fatalf("second removal: %v, want KindNotFound", err)
	}
	f.announced("198.51.100.7/32")
	f.filters("198.51.100.7/32 flowspec tcp/25", "198.51.100.7/32 flowspec tcp/465", "198.51.100.7/32 flowspec tcp/587")
	log, err := f.db.AuditLog(ctx, "198.51.100.7/32", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log {
		// "flowspec tcp/25; expires_at ..." -> "flowspec tcp/25"; a route's "expires_at ..." -> "expires_at"
		w := strings.Fields(e.Detail)
		what := w[0]
		if what == "flowspec" {
			what += " " + strings.TrimSuffix(w[1], ";")
		}
		got = append(got, e.Action+" "+what)
	}
	want := []string{"add expires_at", "add flowspec tcp/25", "extend flowspec tcp/25", "add flowspec udp/53",
		"add flowspec tcp/465", "add flowspec tcp/587", "remove flowspec udp/53"}
	if !slices.Equal(got, want) {
		t.Fatalf("audit = %q, want %q", got, want)
	}

	// A restart restores the filters with their matches.
	f.close()
	f2 := newFixture(t, path, testPolicy(), ReportPolicy{})
	f2.announced("198.51.100.7/32")
	f2.filters("198.51.100.7/32 flowspec tcp/25", "198.51.100.7/32 flowspec tcp/465", "198.51.100.7/32 flowspec tcp/587")
	if b, ok := f2.m.LookupKey(domain.Key{Prefix: p, Match: "tcp/25"}); !ok || b.ExpiresAt.Sub(b.CreatedAt) < 2*time.Hour {
		t.Fatalf("restored tcp/25 filter: %+v, %v", b, ok)
	}

	// A policy that now forbids the prefix withdraws its filters too.
	pol := testPolicy()
	pol.NeverBlackhole = domain.NewPrefixSet(append(testNever, p))
	f2.m.SetPolicy(pol, ReportPolicy{})
	f2.announced()
	f2.filters()
}

// A filter expires on time, like a route.
func TestFilterExpires(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), ReportPolicy{})
	ctx := context.Background()
	b, _, err := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.7"), Match: "tcp/25", TTL: 300 * time.Millisecond, HasTTL: true, Actor: "noc"})
	if err != nil {
		t.Fatal(err)
	}
	f.filters("198.51.100.7/32 flowspec tcp/25")
	testkit.WaitFor(t, 2*time.Second, "the filter to expire", func() bool { return len(f.m.Active()) == 0 })
	f.filters()
	if late := time.Since(b.ExpiresAt); late > time.Second {
		t.Errorf("expired %s late", late)
	}
	log, _ := f.db.AuditLog(ctx, "198.51.100.7/32", 0)
	if len(log) != 2 || log[1].Action != "expire" || !strings.HasPrefix(log[1].Detail, "flowspec tcp/25; expires_at ") {
		t.Fatalf("audit = %+v", log)
	}
}

// A detector rule with action flowspec files a filter of its protocol and
// ports, not a route; a second firing while it is active only records
// evidence.
func TestDetectedFlowSpec(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), ReportPolicy{})
	ctx := context.Background()
	ev := domain.Evidence{Address: pfx("198.51.100.9").Addr(), Rule: "smtp", Action: "flowspec", Protocol: "tcp",
		DstPorts: []uint16{587, 25, 465}, DistinctDestinations: 30, EstimatedPackets: 3000}
	b, err := f.m.Detected(ctx, ev, time.Hour)
	if err != nil || b == nil || b.Match != "tcp/25,465,587" || b.Origin != "detector:smtp" {
		t.Fatalf("Detected = %+v, %v", b, err)
	}
	f.announced()
	f.filters("198.51.100.9/32 flowspec tcp/25,465,587")
	if _, err := f.m.Detected(ctx, ev, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := len(f.m.Active()); n != 1 {
		t.Fatalf("%d entries after a second firing, want 1", n)
	}
	off, _, err := f.m.Offender(ctx, ev.Address)
	if err != nil || len(off.Evidence) != 2 || off.Offenses != 1 {
		t.Fatalf("offender = %+v, %v", off, err)
	}
}
