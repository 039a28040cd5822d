package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rtbh/rtbh/detector/domain"
)

// A database made by the previous schema (4) migrates to 5: its active
// blackholes keep their rows as routes (match ”), and afterwards a route
// and a filter on one prefix are two active entries, two filters with
// different matches too, while a second active row with the same prefix
// and match is refused.
func TestMigration5FromSchema4(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rtbh.db")
	raw, err := sql.Open("sqlite3", fileDSN(path, "_journal_mode=WAL"))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range migrations[:4] {
		if _, err := raw.Exec(m); err != nil {
			t.Fatalf("migration %d: %v", i+1, err)
		}
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	exp := now.Add(time.Hour)
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO blackholes(prefix, origin, reason, created_at, expires_at) VALUES('198.51.100.7/32', 'operator:noc', 'old', %d, %d)`, now.UnixNano(), exp.UnixNano()),
		fmt.Sprintf(`INSERT INTO blackholes(prefix, origin, reason, created_at, expires_at, ended_at, end_reason) VALUES('198.51.100.8/32', 'operator:noc', 'gone', %d, %d, %d, 'removed')`, now.UnixNano(), exp.UnixNano(), now.UnixNano()),
		`PRAGMA user_version = 4`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	db := openTest(t, path)
	if v, err := db.SchemaVersion(context.Background()); err != nil || v != len(migrations) {
		t.Fatalf("schema version = %d, %v; want %d", v, err, len(migrations))
	}
	old := domain.Blackhole{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Origin: "operator:noc", Reason: "old", CreatedAt: now, ExpiresAt: exp}
	active := func() []domain.Blackhole {
		t.Helper()
		got, err := db.ActiveBlackholes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if diff := cmp.Diff([]domain.Blackhole{old}, active(), netipEqual); diff != "" {
		t.Fatalf("active after migration (-want +got):\n%s", diff)
	}

	f25 := old
	f25.Match, f25.Reason = "tcp/25", "smtp only"
	f53 := old
	f53.Match = "udp/53,5353"
	for _, b := range []domain.Blackhole{f25, f53} {
		if err := db.Commit(&domain.Write{Op: domain.BlackholeInsert, Blackhole: b, At: now,
			Audit: []domain.AuditEntry{{Actor: "noc", Action: "add", Prefix: b.Prefix.String(), Detail: "flowspec " + b.Match}}}); err != nil {
			t.Fatalf("inserting %s: %v", b.Key(), err)
		}
	}
	// The same (prefix, match) twice is refused, as a route was before.
	if err := db.Commit(&domain.Write{Op: domain.BlackholeInsert, Blackhole: f25, At: now}); err == nil || !errors.Is(err, domain.ErrStoreUnavailable) {
		t.Fatalf("a second active tcp/25 filter: %v, want a stale-write refusal", err)
	}
	// Extending and ending a filter touch only its row.
	f25.ExpiresAt = exp.Add(time.Hour)
	if err := db.Commit(&domain.Write{Op: domain.BlackholeExtend, Blackhole: f25, At: now}); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit(&domain.Write{Op: domain.BlackholeEnd, Blackhole: f53, EndReason: "removed", At: now}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]domain.Blackhole{old, f25}, active(), netipEqual); diff != "" {
		t.Fatalf("active (-want +got):\n%s", diff)
	}
	// Ending the route leaves the filter.
	if err := db.Commit(&domain.Write{Op: domain.BlackholeEnd, Blackhole: old, EndReason: "removed", At: now}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]domain.Blackhole{f25}, active(), netipEqual); diff != "" {
		t.Fatalf("active after ending the route (-want +got):\n%s", diff)
	}
	log, err := db.AuditLog(context.Background(), "198.51.100.7/32", 0)
	if err != nil || len(log) != 2 || log[0].Detail != "flowspec tcp/25" {
		t.Fatalf("audit rows of the filters: %+v, %v", log, err)
	}
}

var netipEqual = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})
