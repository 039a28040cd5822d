package storetest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// auditFixture writes rows about a mix of prefixes and actors, one second
// apart, and returns them oldest first as stored.
func auditFixture(t *testing.T, db DB, t0 time.Time) []domain.AuditEntry {
	t.Helper()
	prefixes := []string{"198.51.100.7/32", "198.51.100.0/24", "198.51.101.9/32", "198.5.1.1/32", "10.1.2.3/32",
		"2001:db8::1/128", "2001:db8:1::/48", "2001:db9::7/128", "2001:0:0:1::5/128", "2001::1:0:0:1:5/128", ""}
	actors := []string{"noc", "partner-a", "detector:smtp-fanout", "expiry"}
	for i := range 60 {
		a := domain.AuditEntry{Actor: actors[i%len(actors)], Action: "add", Prefix: prefixes[i%len(prefixes)],
			Origin: "operator:noc", Reason: fmt.Sprintf("row %d", i)}
		if err := commit(db, &domain.Write{At: t0.Add(time.Duration(i) * time.Second), Audit: []domain.AuditEntry{a}}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := db.AuditLog(context.Background(), "", 0)
	if err != nil || len(all) != 60 {
		t.Fatalf("AuditLog: %d rows, %v", len(all), err)
	}
	return all
}

// listAuditFilters: every filter of ListAudit, paged and unpaged, selects
// exactly what domain.AuditQuery.Match says, newest first, with the
// instance that wrote each row.
func listAuditFilters(t *testing.T, open Opener) {
	db := closeAtEnd(t, open(t, "rs1"))
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	all := auditFixture(t, db, t0)
	newestFirst := slices.Clone(all)
	slices.Reverse(newestFirst)
	for _, tc := range []struct {
		name string
		q    domain.AuditQuery
	}{
		{"all", domain.AuditQuery{}},
		{"host v4", domain.AuditQuery{Prefix: netip.MustParsePrefix("198.51.100.7/32")}},
		{"/24 holds itself and its host", domain.AuditQuery{Prefix: netip.MustParsePrefix("198.51.100.0/24")}},
		{"/16 not aligned text", domain.AuditQuery{Prefix: netip.MustParsePrefix("198.51.0.0/16")}},
		{"/23 not octet aligned", domain.AuditQuery{Prefix: netip.MustParsePrefix("198.51.100.0/23")}},
		{"/6 no stem", domain.AuditQuery{Prefix: netip.MustParsePrefix("196.0.0.0/6")}},
		{"/0 v4", domain.AuditQuery{Prefix: netip.MustParsePrefix("0.0.0.0/0")}},
		{"v6 /32", domain.AuditQuery{Prefix: netip.MustParsePrefix("2001:db8::/32")}},
		{"v6 /64 zero groups", domain.AuditQuery{Prefix: netip.MustParsePrefix("2001:0:0:1::/64")}},
		{"v6 /0", domain.AuditQuery{Prefix: netip.MustParsePrefix("::/0")}},
		{"host v6", domain.AuditQuery{Prefix: netip.MustParsePrefix("2001:db8::1/128")}},
		{"actor", domain.AuditQuery{Actor: "partner-a"}},
		{"unknown actor", domain.AuditQuery{Actor: "nobody"}},
		{"since until", domain.AuditQuery{Since: t0.Add(10 * time.Second), Until: t0.Add(20 * time.Second)}},
		{"everything", domain.AuditQuery{Prefix: netip.MustParsePrefix("198.51.0.0/16"), Actor: "noc", Since: t0.Add(5 * time.Second)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []int64
			for _, a := range newestFirst {
				if tc.q.Match(a) {
					want = append(want, a.ID)
				}
			}
			got := pageThrough(t, db, tc.q, 7)
			if !slices.Equal(got, want) {
				t.Fatalf("paged by 7: ids %v, want %v", got, want)
			}
			if got := pageThrough(t, db, tc.q, 0); !slices.Equal(got, want) {
				t.Fatalf("unpaged: ids %v, want %v", got, want)
			}
		})
	}
	rows, err := db.ListAudit(context.Background(), domain.AuditQuery{Limit: 1})
	if err != nil || len(rows) != 1 || rows[0].Instance != "rs1" || rows[0].Reason != "row 59" {
		t.Fatalf("newest row = %+v, %v; want row 59 by rs1", rows, err)
	}
	// The model is right about the cases that matter.
	hosts := func(q domain.AuditQuery) map[string]bool {
		m := map[string]bool{}
		for _, a := range all {
			if q.Match(a) {
				m[a.Prefix] = true
			}
		}
		return m
	}
	if got := hosts(domain.AuditQuery{Prefix: netip.MustParsePrefix("198.51.100.0/24")}); len(got) != 2 || !got["198.51.100.7/32"] || !got["198.51.100.0/24"] {
		t.Errorf("inside 198.51.100.0/24: %v", got)
	}
	if got := hosts(domain.AuditQuery{Prefix: netip.MustParsePrefix("198.51.100.7/32")}); len(got) != 1 {
		t.Errorf("a host prefix matched %v (not the /24 covering it)", got)
	}
	if got := hosts(domain.AuditQuery{Prefix: netip.MustParsePrefix("2001:0:0:1::/64")}); len(got) != 2 {
		t.Errorf("inside 2001:0:0:1::/64: %v", got)
	}
}

func pageThrough(t *testing.T, db DB, q domain.AuditQuery, size int) []int64 {
	t.Helper()
	q.Limit = size
	var ids []int64
	for range 100 {
		rows, err := db.ListAudit(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			ids = append(ids, r.ID)
		}
		if size == 0 || len(rows) < size {
			return ids
		}
		q.BeforeID = rows[len(rows)-1].ID
	}
	t.Fatal("paging did not end")
	return nil
}

// activeHistory: counts of active blackholes at each point, against
// entries with known lifetimes (started before the range, ended inside
// it, still active, extended).
func activeHistory(t *testing.T, open Opener) {
	db := closeAtEnd(t, open(t, "a"))
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	type life struct {
		prefix     string
		start, end time.Duration // from t0; end 0 = still active
	}
	lives := []life{
		{"198.51.100.1/32", -time.Hour, 0},                      // before the range, active throughout
		{"198.51.100.2/32", -time.Hour, 30 * time.Minute},       // ends at point 2 (not active then)
		{"198.51.100.3/32", 15 * time.Minute, time.Hour},        // active from point 1, ends at point 4
		{"198.51.100.4/32", 20 * time.Minute, 0},                // starts between 1 and 2
		{"198.51.100.5/32", -2 * time.Hour, -time.Hour},         // ended before the range
		{"198.51.100.6/32", 2 * time.Hour, 0},                   // starts after the range
		{"198.51.100.7/32", 45 * time.Minute, 45 * time.Minute}, // zero length: never counted
	}
	for _, l := range lives {
		b := domain.Blackhole{Prefix: netip.MustParsePrefix(l.prefix), Origin: "operator:noc", Reason: "r",
			CreatedAt: t0.Add(l.start), ExpiresAt: t0.Add(10 * time.Hour)}
		if err := commit(db, &domain.Write{At: b.CreatedAt, Op: domain.BlackholeInsert, Blackhole: b}); err != nil {
			t.Fatal(err)
		}
		if l.end != 0 {
			if err := commit(db, &domain.Write{At: t0.Add(l.end), Op: domain.BlackholeEnd, Blackhole: b, EndReason: "removed"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	got, err := db.ActiveHistory(ctx, t0, t0.Add(time.Hour), 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Points 0, 15, 30, 45, 60 minutes.
	want := []int{2, 3, 3, 3, 2}
	var vals []int
	for i, p := range got {
		vals = append(vals, p.Value)
		if !p.At.Equal(t0.Add(time.Duration(i) * 15 * time.Minute)) {
			t.Errorf("point %d at %s", i, p.At)
		}
	}
	if !slices.Equal(vals, want) {
		t.Fatalf("active = %v, want %v", vals, want)
	}
	// Brute force agrees.
	for i, p := range got {
		n := 0
		for _, l := range lives {
			at := time.Duration(i) * 15 * time.Minute
			if l.start <= at && (l.end == 0 || l.end > at) {
				n++
			}
		}
		if n != p.Value {
			t.Errorf("point %d: %d, brute force %d", i, p.Value, n)
		}
	}
	if _, err := db.ActiveHistory(ctx, t0, t0.Add(-time.Hour), time.Minute); err == nil {
		t.Error("a reversed range was accepted")
	}
	if _, err := db.ActiveHistory(ctx, t0, t0.Add(1000*time.Hour), time.Minute); err == nil {
		t.Error("60,001 points were accepted")
	}
}

func detectionsPerHour(t *testing.T, open Opener) {
	db := closeAtEnd(t, open(t, "a"))
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i, off := range []time.Duration{-time.Minute, 5 * time.Minute, 59 * time.Minute, 61 * time.Minute, 3*time.Hour + time.Second} {
		ev := domain.Evidence{Address: netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), Rule: "smtp-fanout", Action: "log", RecordedAt: t0.Add(off)}
		if err := commit(db, &domain.Write{At: ev.RecordedAt, Evidence: &ev}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.DetectionsPerHour(context.Background(), t0.Add(10*time.Minute), t0.Add(2*time.Hour+30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var vals []int
	for _, p := range got {
		vals = append(vals, p.Value)
	}
	if want := []int{2, 1, 0}; !slices.Equal(vals, want) || !got[0].At.Equal(t0) {
		t.Fatalf("per hour from %s: %v, want %v from %s", got[0].At, vals, want, t0)
	}
}

// routeAndFilter: a blackhole route and a FlowSpec filter on one prefix are
// two entries (keyed by prefix and match), each extended and ended alone.
func routeAndFilter(t *testing.T, open Opener) {
	db := closeAtEnd(t, open(t, "a"))
	now := time.Now().UTC().Truncate(time.Microsecond)
	route := bh("198.51.100.7/32", now.Add(time.Hour))
	filter := route
	filter.Match = "tcp/25,465-587"
	for _, b := range []domain.Blackhole{route, filter} {
		if err := commit(db, &domain.Write{Op: domain.BlackholeInsert, Blackhole: b, At: now}); err != nil {
			t.Fatal(err)
		}
	}
	// The same key again never makes a second active entry: SQLite refuses
	// it, PostgreSQL settles it as an extension (another instance's add).
	_ = commit(db, &domain.Write{Op: domain.BlackholeInsert, Blackhole: filter, At: now})
	if got, err := db.ActiveBlackholes(context.Background()); err != nil || len(got) != 2 {
		t.Fatalf("active after a second insert of the filter = %d entries, %v; want 2", len(got), err)
	}
	filter.ExpiresAt = now.Add(2 * time.Hour)
	if err := commit(db, &domain.Write{Op: domain.BlackholeExtend, Blackhole: filter, At: now}); err != nil {
		t.Fatal(err)
	}
	if err := commit(db, &domain.Write{Op: domain.BlackholeEnd, Blackhole: route, EndReason: "removed", At: now}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = closeAtEnd(t, open(t, "a"))
	got, err := db.ActiveBlackholes(context.Background())
	if err != nil || len(got) != 1 || got[0].Match != filter.Match || !got[0].ExpiresAt.Equal(filter.ExpiresAt) {
		t.Fatalf("active = %+v, %v; want only the extended filter", got, err)
	}
}
