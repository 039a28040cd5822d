// Package storetest is the one contract test suite of rtbh's stores: Run
// checks a backend (SQLite, PostgreSQL) against the semantics the decision
// path relies on (detector.Store) and the readers the daemon uses.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
)

// DB is what the daemon uses of a store.
type DB interface {
	detector.Store
	AuditLog(ctx context.Context, prefix string, limit int) ([]domain.AuditEntry, error)
	Agents(ctx context.Context) ([]domain.AgentRate, error)
	CountReports(ctx context.Context) (int, error)
	SchemaVersion(ctx context.Context) (int, error)
	ListAudit(ctx context.Context, q domain.AuditQuery) ([]domain.AuditEntry, error)
	ActiveHistory(ctx context.Context, from, to time.Time, step time.Duration) ([]domain.Count, error)
	DetectionsPerHour(ctx context.Context, from, to time.Time) ([]domain.Count, error)
	// SubmitAll is the group submit detector.Manager's batches use.
	SubmitAll(ws []*domain.Write) func() error
	// ObserveCommits reports each group commit's time (rtbhd's
	// rtbh_store_commit_seconds).
	ObserveCommits(f func(time.Duration))
	Close() error
}

// Opener opens (again) one store, writing audit rows as instance. A test
// closes one handle before it opens the next.
type Opener func(t *testing.T, instance string) DB

// Factory returns the Opener of a new, empty store.
type Factory func(t *testing.T) Opener

var netipEqual = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func bh(p string, exp time.Time) domain.Blackhole {
	return domain.Blackhole{Prefix: netip.MustParsePrefix(p), Origin: "operator:noc", Reason: "test",
		CreatedAt: exp.Add(-time.Hour), ExpiresAt: exp}
}

// Run runs the contract against the stores newStore makes.
func Run(t *testing.T, newStore Factory) {
	for _, tc := range []struct {
		name string
		f    func(t *testing.T, open Opener)
	}{
		{"LifecycleSurvivesReopen", lifecycleSurvivesReopen},
		{"ExtendRecordsTakeover", extendRecordsTakeover},
		{"GroupCommitIsolatesFailures", groupCommitIsolatesFailures},
		{"EvidenceReportsAndOffenses", evidenceReportsAndOffenses},
		{"SubmitAfterClose", submitAfterClose},
		{"Agents", agents},
		{"PruneBatchesKeepsActive", pruneBatchesKeepsActive},
		{"AuditInstance", auditInstance},
		{"ServersUpsert", serversUpsert},
		{"ListAuditFilters", listAuditFilters},
		{"ActiveHistory", activeHistory},
		{"DetectionsPerHour", detectionsPerHour},
		{"RouteAndFilter", routeAndFilter},
		{"SubmitAllIsAllOrNothing", submitAllIsAllOrNothing},
		{"SubmitAllKeepsOrder", submitAllKeepsOrder},
		{"ObserveCommits", observeCommits},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newStore(t)) })
	}
}

func closeAtEnd(t *testing.T, db DB) DB {
	t.Cleanup(func() { db.Close() })
	return db
}

func lifecycleSurvivesReopen(t *testing.T, open Opener) {
	ctx := context.Background()
	db := closeAtEnd(t, open(t, "a"))
	v, err := db.SchemaVersion(ctx)
	if err != nil || v < 1 {
		t.Fatalf("schema version = %d, %v", v, err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	a, b := bh("198.51.100.7/32", now.Add(time.Hour)), bh("2001:db8::1/128", now.Add(2*time.Hour))
	for _, x := range []domain.Blackhole{a, b} {
		if err := commit(db, &domain.Write{Op: domain.BlackholeInsert, Blackhole: x, At: now,
			Audit: []domain.AuditEntry{{Actor: "noc", Action: "add", Prefix: x.Prefix.String()}}}); err != nil {
			t.Fatal(err)
		}
	}
	a.ExpiresAt = now.Add(3 * time.Hour)
	if err := commit(db, &domain.Write{Op: domain.BlackholeExtend, Blackhole: a, At: now}); err != nil {
		t.Fatal(err)
	}
	if err := commit(db, &domain.Write{Op: domain.BlackholeEnd, Blackhole: b, EndReason: "removed", At: now,
		Audit: []domain.AuditEntry{{Actor: "noc", Action: "remove", Prefix: b.Prefix.String()}}}); err != nil {
		t.Fatal(err)
	}
	// Ending it twice fails, as unavailable (the caller reloads), and
	// writes no audit row: it is no longer active.
	err = commit(db, &domain.Write{Op: domain.BlackholeEnd, Blackhole: b, EndReason: "removed", At: now,
		Audit: []domain.AuditEntry{{Actor: "noc", Action: "remove", Prefix: b.Prefix.String()}}})
	if !errors.Is(err, domain.ErrStoreUnavailable) {
		t.Fatalf("ending an inactive entry = %v, want ErrStoreUnavailable", err)
	}
	db.Close()

	db = closeAtEnd(t, open(t, "a"))
	if v2, _ := db.SchemaVersion(ctx); v2 != v {
		t.Fatalf("schema version after reopen = %d, want %d", v2, v)
	}
	got, err := db.ActiveBlackholes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]domain.Blackhole{a}, got, netipEqual); diff != "" {
		t.Fatalf("active after reopen (-want +got):\n%s", diff)
	}
	log, err := db.AuditLog(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range log {
		actions = append(actions, e.Action+" "+e.Prefix)
	}
	want := []string{"add 198.51.100.7/32", "add 2001:db8::1/128", "remove 2001:db8::1/128"}
	if diff := cmp.Diff(want, actions); diff != "" {
		t.Fatalf("audit (-want +got):\n%s", diff)
	}
	if one, err := db.AuditLog(ctx, "2001:db8::1/128", 1); err != nil || len(one) != 1 || one[0].Action != "add" {
		t.Fatalf("AuditLog(prefix, 1) = %+v, %v", one, err)
	}
}

func commit(db DB, w *domain.Write) error { return db.Submit(w)() }

// An extension writes the entry's origin too: an operator taking over a
// partner's entry (SPEC.md) survives a reopen, with expires_at and reason.
func extendRecordsTakeover(t *testing.T, open Opener) {
	db := closeAtEnd(t, open(t, "a"))
	now := time.Now().UTC().Truncate(time.Microsecond)
	a := bh("203.0.113.9/32", now.Add(time.Hour))
	a.Origin = "partner:isp-b"
	if err := commit(db, &domain.Write{Op: domain.BlackholeInsert, Blackhole: a, At: now}); err != nil {
		t.Fatal(err)
	}
	a.Origin, a.Reason, a.ExpiresAt = "operator:noc", "confirmed", now.Add(2*time.Hour)
	if err := commit(db, &domain.Write{Op: domain.BlackholeExtend, Blackhole: a, At: now,
		Audit: []domain.AuditEntry{{Actor: "noc", Action: "extend", Prefix: a.Prefix.String(), Origin: a.Origin,
			Detail: "taken over from partner:isp-b"}}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = closeAtEnd(t, open(t, "a"))
	got, err := db.ActiveBlackholes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]domain.Blackhole{a}, got, netipEqual); diff != "" {
		t.Fatalf("active after reopen (-want +got):\n%s", diff)
	}
}

// A failing write in a group commit does not undo the others in the same
// transaction, and a failing write's audit row is not stored either.
func groupCommitIsolatesFailures(t *testing.T, open Opener) {
	db := closeAtEnd(t, open(t, "a"))
	now := time.Now().UTC()
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)}), 32)
			w := &domain.Write{Op: domain.BlackholeInsert, Blackhole: bh(p.String(), now.Add(time.Hour)), At: now,
				Audit: []domain.AuditEntry{{Actor: "t", Action: "add", Prefix: p.String()}}}
			if i%10 == 0 {
				// Ending an entry that does not exist fails.
				w.Op, w.EndReason = domain.BlackholeEnd, "removed"
			}
			errs[i] = commit(db, w)
		})
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if (i%10 == 0) != (err != nil) {
			t.Fatalf("write %d: err = %v", i, err)
		}
		if err != nil {
			failed++
		}
	}
	active, _ := db.ActiveBlackholes(context.Background())
	audit, _ := db.AuditLog(context.Background(), "", 0)
	if len(active) != n-failed || len(audit) != n-failed {
		t.Fatalf("active = %d, audit = %d, want %d each", len(active), len(audit), n-failed)
	}
}

func evidenceReportsAndOffenses(t *testing.T, open Opener) {
	db := closeAtEnd(t, open(t, "a"))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	addr := netip.MustParseAddr("198.51.100.9")
	ev := domain.Evidence{Address: addr, Rule: "smtp-fanout", Action: "log", Protocol: "tcp", DstPorts: []uint16{25, 465},
		DistinctDestinations: 120, EstimatedPackets: 5000, EstimatedConnections: 900, Window: 10 * time.Minute,
		FirstSeen: now.Add(-time.Minute), LastSeen: now, RecordedAt: now,
		Examples: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::25")}}
	rep := domain.Report{Address: addr, Reporter: "isp-b", Trust: 0.5, Kind: "spam", ObservedAt: now.Add(-time.Hour),
		Count: 3, Evidence: "Received: from ...", ReceivedAt: now}
	op := domain.Report{Address: addr, Reporter: "noc", Trust: 1, Kind: "scan", ObservedAt: now.Add(-2 * time.Hour),
		Count: 1, ReceivedAt: now, Operator: true}
	if err := commit(db, &domain.Write{At: now, Evidence: &ev, Offense: addr, Reports: []domain.Report{rep, op}}); err != nil {
		t.Fatal(err)
	}
	if err := commit(db, &domain.Write{At: now, Offense: addr}); err != nil {
		t.Fatal(err)
	}
	o, err := db.Offender(ctx, addr, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := domain.Offender{Address: addr, Evidence: []domain.Evidence{ev}, Reports: []domain.Report{rep, op}, Offenses: 2}
	if diff := cmp.Diff(want, o, netipEqual); diff != "" {
		t.Fatalf("offender (-want +got):\n%s", diff)
	}
	if n, err := db.Offenses(ctx, netip.MustParseAddr("192.0.2.99")); err != nil || n != 0 {
		t.Fatalf("offenses of an unknown address = %d, %v", n, err)
	}
	shadow, err := db.RecentEvidence(ctx, true, 10)
	if err != nil || len(shadow) != 1 {
		t.Fatalf("shadow evidence = %v, %v", shadow, err)
	}
	since, err := db.ReportsSince(ctx, now.Add(-90*time.Minute))
	if err != nil || len(since) != 1 || since[0].Reporter != "isp-b" {
		t.Fatalf("reports since 90m ago = %+v, %v; want isp-b's", since, err)
	}
	if n, err := db.CountReports(ctx); err != nil || n != 2 {
		t.Fatalf("CountReports = %d, %v", n, err)
	}
}

func submitAfterClose(t *testing.T, open Opener) {
	db := open(t, "a")
	db.Close()
	if err := commit(db, &domain.Write{At: time.Now()}); !errors.Is(err, domain.ErrStoreUnavailable) {
		t.Fatalf("commit after close = %v, want ErrStoreUnavailable", err)
	}
}

func agents(t *testing.T, open Opener) {
	ctx := context.Background()
	db := closeAtEnd(t, open(t, "a"))
	at := time.Unix(1700000000, 0).UTC()
	ag := netip.MustParseAddr("192.0.2.11")
	for _, rate := range []uint32{512, 2048} {
		if err := commit(db, &domain.Write{At: at, Agents: []domain.AgentRate{{Agent: ag, SamplingRate: rate, SeenAt: at}}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.Agents(ctx)
	if err != nil || len(got) != 1 || got[0].Agent != ag || got[0].SamplingRate != 2048 || !got[0].SeenAt.Equal(at) {
		t.Fatalf("Agents = %+v, %v", got, err)
	}
}

func serversUpsert(t *testing.T, open Opener) {
	ctx := context.Background()
	db := closeAtEnd(t, open(t, "a"))
	t0 := time.Unix(1700000000, 0).UTC()
	a := netip.MustParseAddr("198.51.100.25")
	for i, clients := range []uint64{5, 3} {
		at := t0.Add(time.Duration(i) * time.Hour)
		if err := commit(db, &domain.Write{At: at, Servers: []domain.Server{{Address: a, Rule: "smtp-fanout", Clients: clients,
			FirstSeen: at, LastSeen: at}}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.Servers(ctx, t0)
	want := []domain.Server{{Address: a, Rule: "smtp-fanout", Clients: 5, FirstSeen: t0, LastSeen: t0.Add(time.Hour)}}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, netipEqual); diff != "" {
		t.Fatalf("servers (-want +got):\n%s", diff)
	}
	if got, _ := db.Servers(ctx, t0.Add(2*time.Hour)); len(got) != 0 {
		t.Fatalf("servers seen since later = %+v, want none", got)
	}
}

// Prune deletes in batches of at most batch rows until nothing old is
// left, and keeps the rows of active blackholes.
func pruneBatchesKeepsActive(t *testing.T, open Opener) {
	ctx := context.Background()
	db := closeAtEnd(t, open(t, "a"))
	now := time.Now().UTC()
	old := now.Add(-48 * time.Hour)
	var reps []domain.Report
	for i := range 7 {
		at := old
		if i == 6 {
			at = now
		}
		reps = append(reps, domain.Report{Address: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Reporter: "isp-b",
			Trust: 0.5, Kind: "spam", Count: 1, ObservedAt: at, ReceivedAt: at})
	}
	// 198.51.100.0 is blackholed: its old report and audit row stay.
	active := bh("198.51.100.0/32", now.Add(time.Hour))
	if err := commit(db, &domain.Write{At: old, Reports: reps, Op: domain.BlackholeInsert, Blackhole: active,
		Audit: []domain.AuditEntry{{Actor: "noc", Action: "add", Prefix: "198.51.100.0/32"}, {Actor: "noc", Action: "report", Prefix: "198.51.100.1/32"}}}); err != nil {
		t.Fatal(err)
	}
	n, err := db.Prune(ctx, now.Add(-24*time.Hour), 2)
	if err != nil || n.Reports != 5 || n.Audit != 1 {
		t.Fatalf("Prune = %+v, %v; want 5 reports and 1 audit row", n, err)
	}
	if left, _ := db.CountReports(ctx); left != 2 {
		t.Fatalf("%d reports left, want 2 (the new one and the active entry's)", left)
	}
	if log, _ := db.AuditLog(ctx, "", 0); len(log) != 1 || log[0].Prefix != "198.51.100.0/32" {
		t.Fatalf("audit left = %+v, want the active entry's row", log)
	}
}

// Every audit row names the instance that wrote it, unless it names its own.
func auditInstance(t *testing.T, open Opener) {
	ctx := context.Background()
	db := closeAtEnd(t, open(t, "rs1.example"))
	now := time.Now().UTC()
	if err := commit(db, &domain.Write{At: now, Audit: []domain.AuditEntry{
		{Actor: "noc", Action: "report", Prefix: "198.51.100.1/32"},
		{Actor: "noc", Action: "report", Prefix: "198.51.100.2/32", Instance: "other"}}}); err != nil {
		t.Fatal(err)
	}
	log, err := db.AuditLog(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range log {
		got = append(got, fmt.Sprintf("%s %s", a.Prefix, a.Instance))
	}
	if diff := cmp.Diff([]string{"198.51.100.1/32 rs1.example", "198.51.100.2/32 other"}, got); diff != "" {
		t.Fatalf("audit instances (-want +got):\n%s", diff)
	}
}

// observeCommits: every group commit is reported once, with its time,
// before the writes it carried are answered — successful or not — and
// concurrent writes share commits.
func observeCommits(t *testing.T, open Opener) {
	db := closeAtEnd(t, open(t, "a"))
	var (
		mu    sync.Mutex
		times []time.Duration
	)
	db.ObserveCommits(func(d time.Duration) {
		mu.Lock()
		times = append(times, d)
		mu.Unlock()
	})
	seen := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(times)
	}
	now := time.Now().UTC()
	p := "10.9.0.1/32"
	w := &domain.Write{Op: domain.BlackholeInsert, Blackhole: bh(p, now.Add(time.Hour)), At: now,
		Audit: []domain.AuditEntry{{Actor: "t", Action: "add", Prefix: p}}}
	if err := commit(db, w); err != nil {
		t.Fatal(err)
	}
	if n := seen(); n != 1 {
		t.Fatalf("%d commits observed after one write, want 1 (before it was answered)", n)
	}
	// A write that fails still took a commit.
	stale := &domain.Write{Op: domain.BlackholeEnd, Blackhole: bh("10.9.0.2/32", now.Add(time.Hour)), At: now, EndReason: "removed"}
	if err := commit(db, stale); err == nil {
		t.Fatal("ending an entry that is not active succeeded")
	}
	if n := seen(); n != 2 {
		t.Fatalf("%d commits observed after a failed write, want 2", n)
	}
	const n = 100
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 1, byte(i)}), 32).String()
			if err := commit(db, &domain.Write{Op: domain.BlackholeInsert, Blackhole: bh(p, now.Add(time.Hour)), At: now,
				Audit: []domain.AuditEntry{{Actor: "t", Action: "add", Prefix: p}}}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := seen() - 2; got < 1 || got > n {
		t.Fatalf("%d commits observed for %d concurrent writes, want 1..%d", got, n, n)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, d := range times {
		if d <= 0 || d > time.Minute {
			t.Fatalf("commit %d took %v", i, d)
		}
	}
}
