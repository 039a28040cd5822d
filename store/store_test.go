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
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/store/storetest"
)

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

// TestContract runs the store contract (store/storetest) on SQLite.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "rtbh.db")
		return func(t *testing.T, instance string) storetest.DB {
			db, err := Open(path, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			db.SetInstance(instance)
			return db
		}
	})
}

func insertWrite(p string, now time.Time) *domain.Write {
	return &domain.Write{Op: domain.BlackholeInsert, Blackhole: bh(p, now.Add(time.Hour)), At: now,
		Audit: []domain.AuditEntry{{Actor: "t", Action: "add", Prefix: p}}}
}
