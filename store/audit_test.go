package store

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// TestListAuditScale: with 300,000 rows, a page of any filter is quick
// (the prefix, actor and time filters use indexes).
func TestListAuditScale(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 300,000 rows")
	}
	db := openTest(t, filepath.Join(t.TempDir(), "rtbh.db"))
	t0 := time.Now().Add(-100 * time.Hour)
	const n, per = 300000, 5000
	for i := 0; i < n; i += per {
		w := &domain.Write{At: t0.Add(time.Duration(i) * time.Second)}
		for j := i; j < i+per; j++ {
			actor := "detector:smtp-fanout"
			if j%10000 == 0 {
				actor = "rare-operator"
			}
			w.Audit = append(w.Audit, domain.AuditEntry{Actor: actor, Action: "add",
				Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j >> 16), byte(j >> 8), byte(j)}), 32).String()})
		}
		if err := db.Commit(w); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, q := range []domain.AuditQuery{
		{Limit: 1000},
		{Actor: "rare-operator", Limit: 1000},
		{Prefix: netip.MustParsePrefix("10.3.7.9/32"), Limit: 1000},
		{Prefix: netip.MustParsePrefix("10.3.7.0/24"), Limit: 1000},
		{Prefix: netip.MustParsePrefix("10.4.0.0/20"), Limit: 1000},
		{Since: t0.Add(time.Duration(n-per) * time.Second), Limit: 1000},
		{Until: t0.Add(100 * time.Second), Limit: 1000},
	} {
		start := time.Now()
		rows, err := db.ListAudit(ctx, q)
		took := time.Since(start)
		if err != nil || len(rows) == 0 {
			t.Fatalf("%+v: %d rows, %v", q, len(rows), err)
		}
		t.Logf("%+v: %d rows in %s", q, len(rows), took)
		if took > 500*time.Millisecond {
			t.Errorf("%+v took %s", q, took)
		}
	}
}
