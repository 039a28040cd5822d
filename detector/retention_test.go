package detector

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/store"
)

// store.retention, on a real SQLite file with the Manager's clock injected:
// the pass at start deletes rows older than the retention, keeps those of an
// active blackhole whatever their age, and keeps new rows.
func TestRetentionPrunesOldRowsKeepsActiveAndNew(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC) // the Manager's clock
	clock := func() time.Time { return now }
	const retention = 720 * time.Hour
	old, fresh := now.Add(-retention-time.Hour), now.Add(-time.Hour)
	gone := netip.MustParseAddr("198.51.100.1")
	active := netip.MustParseAddr("198.51.100.2")
	recent := netip.MustParseAddr("2001:db8::3")

	path := filepath.Join(t.TempDir(), "rtbh.db")
	db, err := store.Open(path, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows := func(a netip.Addr, at time.Time) *domain.Write {
		return &domain.Write{At: at,
			Audit:    []domain.AuditEntry{{Actor: "isp-b", Action: "report", Prefix: domain.HostPrefix(a).String()}},
			Evidence: &domain.Evidence{Address: a, Rule: "smtp-fanout", Action: "log", Protocol: "tcp", RecordedAt: at, FirstSeen: at, LastSeen: at},
			Reports:  []domain.Report{{Address: a, Reporter: "isp-b", Trust: 0.5, Kind: "spam", Count: 1, ObservedAt: at, ReceivedAt: at}}}
	}
	for _, w := range []*domain.Write{rows(gone, old), rows(active, old), rows(recent, fresh)} {
		if err := db.Commit(w); err != nil {
			t.Fatal(err)
		}
	}
	// active's blackhole was created long ago and is still active.
	if err := db.Commit(&domain.Write{Op: domain.BlackholeInsert, At: old,
		Blackhole: domain.Blackhole{Prefix: domain.HostPrefix(active), Origin: "operator:noc", Reason: "long-running",
			CreatedAt: old, ExpiresAt: now.Add(time.Hour)},
		Audit: []domain.AuditEntry{{Actor: "noc", Action: "add", Prefix: domain.HostPrefix(active).String()}}}); err != nil {
		t.Fatal(err)
	}

	sp, err := bgp.New(bgp.Config{ASN: 64500, RouterID: netip.MustParseAddr("192.0.2.254"),
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1")}, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	rctx, cancel := context.WithCancel(ctx)
	if err := sp.Start(rctx); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{Policy: testPolicy(), Reports: ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour},
		Retention: retention, Now: clock}, db, sp, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()
	defer func() { cancel(); <-done }()

	count := func(a netip.Addr) (reports, evidence, audit int) {
		o, err := db.Offender(ctx, a, 100)
		if err != nil {
			t.Fatal(err)
		}
		log, err := db.AuditLog(ctx, domain.HostPrefix(a).String(), 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(o.Reports), len(o.Evidence), len(log)
	}
	testkit.WaitFor(t, 5*time.Second, "the retention pass at start", func() bool {
		r, e, a := count(gone)
		return r+e+a == 0
	})
	if r, e, a := count(active); r != 1 || e != 1 || a != 2 {
		t.Errorf("active blackhole's old rows: %d reports, %d evidence, %d audit; want 1, 1, 2 (kept)", r, e, a)
	}
	if r, e, a := count(recent); r != 1 || e != 1 || a != 1 {
		t.Errorf("new rows: %d reports, %d evidence, %d audit; want 1, 1, 1 (kept)", r, e, a)
	}

	// Once the blackhole has ended, a later pass deletes its old rows.
	if _, err := m.Remove(ctx, RemoveRequest{Prefix: domain.HostPrefix(active), Actor: "noc", Reason: "done"}); err != nil {
		t.Fatal(err)
	}
	m.pruneStore(ctx)
	if r, e, _ := count(active); r != 0 || e != 0 {
		t.Errorf("after the blackhole ended: %d reports, %d evidence left; want 0", r, e)
	}
}
