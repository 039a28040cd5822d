package detector

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/detector/domain"
)

// listFixture holds 300 IPv4 /32s in 10.0.0.0/23 (two /24s), 20 IPv6
// /128s and a 10.0.0.0/24 and a 10.0.1.0/25 entry, with origins by rule.
func listFixture(t *testing.T) (*fixture, []domain.Blackhole) {
	t.Helper()
	pol := testPolicy()
	pol.MaxActive = 1000
	pol.MinPrefixLenV4, pol.MinPrefixLenV6 = 24, 64
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), pol, ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	var reqs []Request
	for i := range 300 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i / 150), byte(i % 150)})
		origin := []string{"operator:noc", "detector:smtp", "detector:worm", "partner:p"}[i%4]
		reqs = append(reqs, Request{Prefix: netip.PrefixFrom(a, 32), Origin: origin, Actor: "t"})
	}
	for i := range 20 {
		reqs = append(reqs, Request{Prefix: pfx(fmt.Sprintf("2001:db8::%x", i+1)), Origin: "reports", Actor: "t"})
	}
	reqs = append(reqs, Request{Prefix: pfx("10.0.0.0/24"), Origin: "operator:noc", Actor: "t"},
		Request{Prefix: pfx("10.0.1.0/25"), Origin: "operator:noc", Actor: "t"})
	if _, ref, err := f.m.AddBatch(context.Background(), reqs); err != nil || len(ref) != 0 {
		t.Fatalf("AddBatch: %v, refused %v", err, ref)
	}
	return f, f.m.Active()
}

// pageAll pages through q with the given page size, checking each page.
func pageAll(t *testing.T, m *Manager, q ListQuery) []string {
	t.Helper()
	var out []string
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		page, more := m.List(q)
		if len(page) > q.Limit {
			t.Fatalf("page of %d, limit %d", len(page), q.Limit)
		}
		for _, b := range page {
			out = append(out, b.Prefix.String())
		}
		if !more {
			return out
		}
		if len(page) == 0 {
			t.Fatal("an empty page says more follow")
		}
		k := KeyOf(page[len(page)-1])
		q.After = &k
	}
}

func TestListPagesAndFilters(t *testing.T) {
	f, all := listFixture(t)
	// The model: the whole set filtered, in ListKey order.
	model := func(keep func(domain.Blackhole) bool) []string {
		bs := slices.Clone(all)
		slices.SortFunc(bs, func(a, b domain.Blackhole) int { return compareKeys(KeyOf(a), KeyOf(b)) })
		var out []string
		for _, b := range bs {
			if keep(b) {
				out = append(out, b.Prefix.String())
			}
		}
		return out
	}
	within := func(w string) func(domain.Blackhole) bool {
		wp := netip.MustParsePrefix(w)
		return func(b domain.Blackhole) bool { return wp.Bits() <= b.Prefix.Bits() && wp.Contains(b.Prefix.Addr()) }
	}
	for _, tc := range []struct {
		name string
		q    ListQuery
		keep func(domain.Blackhole) bool
		n    int
	}{
		{"all", ListQuery{}, func(domain.Blackhole) bool { return true }, 322},
		{"within /24", ListQuery{Within: pfx("10.0.0.0/24")}, within("10.0.0.0/24"), 151},
		{"within /25 of the second /24", ListQuery{Within: pfx("10.0.1.0/25")}, within("10.0.1.0/25"), 129},
		{"within a /32", ListQuery{Within: pfx("10.0.1.7")}, within("10.0.1.7/32"), 1},
		{"within nothing active", ListQuery{Within: pfx("192.0.2.0/24")}, within("192.0.2.0/24"), 0},
		{"within v6", ListQuery{Within: pfx("2001:db8::/64")}, within("2001:db8::/64"), 20},
		{"origin exact", ListQuery{Origin: "detector:smtp"}, func(b domain.Blackhole) bool { return b.Origin == "detector:smtp" }, 75},
		{"origin prefix", ListQuery{Origin: "detector:"}, func(b domain.Blackhole) bool { return strings.HasPrefix(b.Origin, "detector:") }, 150},
		{"origin is not a prefix without ':'", ListQuery{Origin: "detector"}, func(domain.Blackhole) bool { return false }, 0},
		{"within and origin", ListQuery{Within: pfx("10.0.1.0/24"), Origin: "operator:noc"},
			func(b domain.Blackhole) bool { return within("10.0.1.0/24")(b) && b.Origin == "operator:noc" }, 38},
		{"visible", ListQuery{Visible: func(b domain.Blackhole) bool { return b.Origin == "partner:p" }},
			func(b domain.Blackhole) bool { return b.Origin == "partner:p" }, 75},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := model(tc.keep)
			if len(want) != tc.n {
				t.Fatalf("model has %d entries, the test expects %d", len(want), tc.n)
			}
			for _, size := range []int{1, 7, 100, 1000} {
				q := tc.q
				q.Limit = size
				if diff := cmp.Diff(want, pageAll(t, f.m, q)); diff != "" {
					t.Fatalf("page size %d (-want +got):\n%s", size, diff)
				}
			}
		})
	}
}

// A page token (the last key) stays valid while entries come and go:
// paging continues after it, with what was added behind it not shown and
// what was removed ahead of it gone, nothing repeated or skipped.
func TestListPagingStableUnderChanges(t *testing.T) {
	f, _ := listFixture(t)
	ctx := context.Background()
	page, more := f.m.List(ListQuery{Within: pfx("10.0.0.0/24"), Limit: 50})
	if !more || len(page) != 50 {
		t.Fatalf("first page: %d entries, more %v", len(page), more)
	}
	last := KeyOf(page[len(page)-1]) // 10.0.0.48/32 (10.0.0.0/24 sorts after 10.0.0.0/32)
	if last.Prefix.String() != "10.0.0.48/32" {
		t.Fatalf("last key of the first page = %s", last.Prefix)
	}
	// Remove the entry the token names, one behind it and one ahead of it.
	for _, p := range []string{"10.0.0.48", "10.0.0.10", "10.0.0.60"} {
		if _, err := f.m.Remove(ctx, RemoveRequest{Prefix: pfx(p), Actor: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	var rest []string
	q := ListQuery{Within: pfx("10.0.0.0/24"), Limit: 1000, After: &last}
	for _, b := range must(f.m.List(q)) {
		rest = append(rest, b.Prefix.String())
	}
	if rest[0] != "10.0.0.49/32" || slices.Contains(rest, "10.0.0.60/32") || slices.Contains(rest, "10.0.0.10/32") {
		t.Fatalf("after the token: %v", rest[:3])
	}
	if len(rest) != 151-50-1 {
		t.Fatalf("%d entries after the token, want %d", len(rest), 151-50-1)
	}
}

func must(page []domain.Blackhole, _ bool) []domain.Blackhole { return page }
