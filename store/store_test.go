package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/detector/domain"
)

var netipEqual = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func openTest(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func bh(p string, exp time.Time) domain.Blackhole {
	return domain.Blackhole{Prefix: netip.MustParsePrefix(p), Origin: "operator:noc", Reason: "test",
		CreatedAt: exp.Add(-time.Hour), ExpiresAt: exp}
}

func TestOpenMigratesAndUsesWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rtbh.db")
	db := openTest(t, path)
	v, err := db.SchemaVersion(context.Background())
	if err != nil || v != len(migrations) {
		t.Fatalf("schema version = %d, %v; want %d", v, err, len(migrations))
	}
	var mode string
	if err := db.r.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	db.Close()
	// Reopening applies nothing and keeps the version.
	db2 := openTest(t, path)
	if v, _ := db2.SchemaVersion(context.Background()); v != len(migrations) {
		t.Fatalf("version after reopen = %d", v)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rtbh.db")
	db := openTest(t, path)
	if _, err := db.w.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("opening a database with a newer schema succeeded")
	}
}

func TestBlackholeLifecycleSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rtbh.db")
	db := openTest(t, path)
	now := time.Now().UTC().Truncate(time.Microsecond)
	a, b := bh("198.51.100.7/32", now.Add(time.Hour)), bh("2001:db8::1/128", now.Add(2*time.Hour))
	for _, x := range []domain.Blackhole{a, b} {
		if err := db.Commit(&domain.Write{Op: domain.BlackholeInsert, Blackhole: x, At: now,
			Audit: []domain.AuditEntry{{Actor: "noc", Action: "add", Prefix: x.Prefix.String()}}}); err != nil {
			t.Fatal(err)
		}
	}
	a.ExpiresAt = now.Add(3 * time.Hour)
	if err := db.Commit(&domain.Write{Op: domain.BlackholeExtend, Blackhole: a, At: now}); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit(&domain.Write{Op: domain.BlackholeEnd, Blackhole: b, EndReason: "removed", At: now,
		Audit: []domain.AuditEntry{{Actor: "noc", Action: "remove", Prefix: b.Prefix.String()}}}); err != nil {
		t.Fatal(err)
	}
	// Ending it twice fails: it is no longer active.
	if err := db.Commit(&domain.Write{Op: domain.BlackholeEnd, Blackhole: b, EndReason: "removed", At: now}); err == nil {
		t.Fatal("ending an inactive entry succeeded")
	}
	db.Close()

	db = openTest(t, path)
	got, err := db.ActiveBlackholes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]domain.Blackhole{a}, got, netipEqual); diff != "" {
		t.Fatalf("active after reopen (-want +got):\n%s", diff)
	}
	log, err := db.AuditLog(context.Background(), "", 0)
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
}

// An extension writes the entry's origin too: an operator taking over a
// partner's entry (SPEC.md) survives a reopen, with expires_at and reason.
func TestExtendRecordsTakeover(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rtbh.db")
	db := openTest(t, path)
	now := time.Now().UTC().Truncate(time.Microsecond)
	a := bh("203.0.113.9/32", now.Add(time.Hour))
	a.Origin = "partner:isp-b"
	if err := db.Commit(&domain.Write{Op: domain.BlackholeInsert, Blackhole: a, At: now}); err != nil {
		t.Fatal(err)
	}
	a.Origin, a.Reason, a.ExpiresAt = "operator:noc", "confirmed", now.Add(2*time.Hour)
	if err := db.Commit(&domain.Write{Op: domain.BlackholeExtend, Blackhole: a, At: now,
		Audit: []domain.AuditEntry{{Actor: "noc", Action: "extend", Prefix: a.Prefix.String(), Origin: a.Origin,
			Detail: "taken over from partner:isp-b"}}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openTest(t, path)
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
func TestGroupCommitIsolatesFailures(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "rtbh.db"))
	now := time.Now().UTC()
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)}), 32)
			w := &domain.Write{Op: domain.BlackholeInsert, Blackhole: bh(p.String(), now.Add(time.Hour)), At: now,
				Audit: []domain.AuditEntry{{Actor: "t", Action: "add", Prefix: p.String()}}}
			if i%10 == 0 {
				// Extending an entry that does not exist fails.
				w.Op = domain.BlackholeExtend
			}
			errs[i] = db.Commit(w)
		}()
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

func TestEvidenceReportsAndOffenses(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "rtbh.db"))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	addr := netip.MustParseAddr("198.51.100.9")
	ev := domain.Evidence{Address: addr, Rule: "smtp-fanout", Action: "log", Protocol: "tcp", DstPorts: []uint16{25, 465},
		DistinctDestinations: 120, EstimatedPackets: 5000, EstimatedConnections: 900, Window: 10 * time.Minute,
		FirstSeen: now.Add(-time.Minute), LastSeen: now, RecordedAt: now,
		Examples: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::25")}}
	rep := domain.Report{Address: addr, Reporter: "isp-b", Trust: 0.5, Kind: "spam", ObservedAt: now.Add(-time.Hour),
		Count: 3, Evidence: "Received: from ...", ReceivedAt: now}
	if err := db.Commit(&domain.Write{At: now, Evidence: &ev, Offense: addr, Reports: []domain.Report{rep}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit(&domain.Write{At: now, Offense: addr}); err != nil {
		t.Fatal(err)
	}
	o, err := db.Offender(ctx, addr, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := domain.Offender{Address: addr, Evidence: []domain.Evidence{ev}, Reports: []domain.Report{rep}, Offenses: 2}
	if diff := cmp.Diff(want, o, netipEqual); diff != "" {
		t.Fatalf("offender (-want +got):\n%s", diff)
	}
	shadow, err := db.RecentEvidence(ctx, true, 10)
	if err != nil || len(shadow) != 1 {
		t.Fatalf("shadow evidence = %v, %v", shadow, err)
	}
	since, err := db.ReportsSince(ctx, now.Add(-30*time.Minute))
	if err != nil || len(since) != 0 {
		t.Fatalf("reports since 30m ago = %v, %v; want none", since, err)
	}
}

func TestSubmitAfterClose(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "rtbh.db"))
	db.Close()
	if err := db.Commit(&domain.Write{At: time.Now()}); !errors.Is(err, ErrClosed) || !errors.Is(err, domain.ErrStoreUnavailable) {
		t.Fatalf("commit after close = %v, want ErrClosed", err)
	}
}

// Paths with the characters SQLite's URI syntax uses (?, #, %) work, and
// agents' sampling rates are kept and read back without opening for write.
func TestOddPathsAndAgents(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a?b#c%d", "rtbhd?.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadAgents(ctx, path); err != nil || got != nil {
		t.Fatalf("ReadAgents of a missing file = %v, %v", got, err)
	}
	db, err := Open(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 0).UTC()
	ag := netip.MustParseAddr("192.0.2.11")
	for _, rate := range []uint32{512, 2048} {
		if err := db.Commit(&domain.Write{At: at, Agents: []domain.AgentRate{{Agent: ag, SamplingRate: rate, SeenAt: at}}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadAgents(ctx, path)
	if err != nil || len(got) != 1 || got[0].Agent != ag || got[0].SamplingRate != 2048 || !got[0].SeenAt.Equal(at) {
		t.Fatalf("ReadAgents beside the open store = %+v, %v", got, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the store is not at the odd path: %v", err)
	}
}

// TestDiskFullIsUnavailable: a write on a full disk fails as
// domain.ErrStoreUnavailable with SQLite's reason, nothing of it is
// stored, and the same write succeeds once space is back. Needs root for
// the small tmpfs (CI runs as root).
func TestDiskFullIsUnavailable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs for the disk-full fault (CI runs the tests as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v: %s", dir, err, out)
		}
	})
	db := openTest(t, filepath.Join(dir, "rtbh.db"))
	ballast := filepath.Join(dir, "ballast")
	f, err := os.Create(ballast)
	if err != nil {
		t.Fatal(err)
	}
	for n := 64 << 10; n > 0; n /= 2 {
		for {
			if _, err := f.Write(make([]byte, n)); err != nil {
				break
			}
		}
	}
	f.Close()
	exp := time.Now().Add(time.Hour).Round(0)
	var err2 error
	for i := range 200 { // the WAL may hold a few writes before it must grow
		b := bh(fmt.Sprintf("198.51.100.%d/32", i), exp)
		b.Reason = strings.Repeat("x", 900)
		if err2 = db.Commit(&domain.Write{Op: domain.BlackholeInsert, At: time.Now(), Blackhole: b}); err2 != nil {
			break
		}
	}
	if !errors.Is(err2, domain.ErrStoreUnavailable) {
		t.Fatalf("write on a full disk = %v, want domain.ErrStoreUnavailable", err2)
	}
	if got, want := err2.Error(), "store unavailable: database or disk is full: try again"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	before, err := db.ActiveBlackholes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	b := bh("203.0.113.1/32", exp)
	if err := db.Commit(&domain.Write{Op: domain.BlackholeInsert, At: time.Now(), Blackhole: b}); err != nil {
		t.Fatalf("write once space is back = %v", err)
	}
	after, err := db.ActiveBlackholes(context.Background())
	if err != nil || len(after) != len(before)+1 {
		t.Fatalf("after the space came back: %d entries (%v), want %d", len(after), err, len(before)+1)
	}
	// A write that does not fit the stored state (an earlier write failed)
	// is unavailable too: the caller reloads and tries again.
	err = db.Commit(&domain.Write{Op: domain.BlackholeEnd, At: time.Now(), Blackhole: bh("203.0.113.2/32", exp), EndReason: "removed"})
	if !errors.Is(err, domain.ErrStoreUnavailable) {
		t.Fatalf("ending an entry that is not stored = %v, want domain.ErrStoreUnavailable", err)
	}
}

// Prune deletes in batches of at most batch rows until nothing old is left.
func TestPruneBatches(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, filepath.Join(t.TempDir(), "rtbh.db"))
	now := time.Now().UTC()
	var reps []domain.Report
	for i := range 7 {
		at := now.Add(-48 * time.Hour)
		if i == 6 {
			at = now
		}
		reps = append(reps, domain.Report{Address: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Reporter: "isp-b",
			Trust: 0.5, Kind: "spam", Count: 1, ObservedAt: at, ReceivedAt: at})
	}
	if err := db.Commit(&domain.Write{At: now, Reports: reps}); err != nil {
		t.Fatal(err)
	}
	n, err := db.Prune(ctx, now.Add(-24*time.Hour), 2)
	if err != nil || n.Reports != 6 {
		t.Fatalf("Prune = %+v, %v; want 6 reports", n, err)
	}
	if left, _ := db.CountReports(ctx); left != 1 {
		t.Fatalf("%d reports left, want 1 (the new one)", left)
	}
}
