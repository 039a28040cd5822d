package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/store/postgres/pgtest"
	"github.com/rtbh/rtbh/store/storetest"
)

func open(t *testing.T, dsn, instance string) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := Open(ctx, Config{DSN: dsn, Instance: instance}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// twoInstances opens instances named a and b on one new database of srv,
// closed when the test ends.
func twoInstances(t *testing.T, srv *pgtest.Server, a, b string) (*DB, *DB) {
	t.Helper()
	dsn := srv.NewDatabase(t)
	x, y := open(t, dsn, a), open(t, dsn, b)
	t.Cleanup(func() {
		x.Close()
		y.Close()
	})
	return x, y
}

// TestContract runs the store contract (store/storetest) on PostgreSQL.
func TestContract(t *testing.T) {
	srv := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		dsn := srv.NewDatabase(t)
		return func(t *testing.T, instance string) storetest.DB { return open(t, dsn, instance) }
	})
}

func bh(p string, exp time.Time) domain.Blackhole {
	return domain.Blackhole{Prefix: netip.MustParsePrefix(p), Origin: "operator:noc", Reason: "test",
		CreatedAt: exp.Add(-time.Hour), ExpiresAt: exp}
}

func add(b domain.Blackhole, actor string) *domain.Write {
	return &domain.Write{Op: domain.BlackholeInsert, Blackhole: b, At: b.CreatedAt,
		Audit: []domain.AuditEntry{{Actor: actor, Action: "add", Prefix: b.Prefix.String(), Origin: b.Origin}}}
}

// Two instances that add the same prefix at once end with one active
// entry, the later expiry, and one add and one extension audited; an
// expiry takes effect once, and only when the stored entry is due.
func TestInstancesShareOneEntry(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	a, b := open(t, dsn, "a"), open(t, dsn, "b")
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	const n = 100
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := range n {
		p := fmt.Sprintf("198.51.100.%d/32", i)
		wg.Go(func() { errs[2*i] = a.Commit(add(bh(p, now.Add(time.Hour)), "noc")) })
		wg.Go(func() { errs[2*i+1] = b.Commit(add(bh(p, now.Add(2*time.Hour)), "noc")) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent adds: %v", err)
	}
	active, err := a.ActiveBlackholes(ctx)
	if err != nil || len(active) != n {
		t.Fatalf("%d active entries (%v), want %d", len(active), err, n)
	}
	for _, e := range active {
		if !e.ExpiresAt.Equal(now.Add(2 * time.Hour)) {
			t.Fatalf("%s expires %s, want the later expiry %s", e.Prefix, e.ExpiresAt, now.Add(2*time.Hour))
		}
	}
	log, _ := a.AuditLog(ctx, "198.51.100.7/32", 0)
	if len(log) != 2 || log[0].Action != "add" || log[1].Action != "extend" || log[0].Instance == log[1].Instance {
		t.Fatalf("audit of a doubly added prefix = %+v, want an add and an extension by the two instances", log)
	}

	// An expiry of an entry another instance extended does not take effect.
	e := bh("198.51.100.7/32", now.Add(time.Hour))
	err = a.Commit(&domain.Write{Op: domain.BlackholeEnd, Blackhole: e, EndReason: "expired", At: now.Add(90 * time.Minute),
		Audit: []domain.AuditEntry{{Actor: "expiry", Action: "expire", Prefix: e.Prefix.String()}}})
	if !errors.Is(err, domain.ErrStoreUnavailable) {
		t.Fatalf("expiring an entry extended elsewhere = %v, want unavailable (stale)", err)
	}
	// Both instances expire it when due: one wins, one audit row.
	at := now.Add(3 * time.Hour)
	ends := make([]error, 2)
	for i, db := range []*DB{a, b} {
		wg.Go(func() {
			ends[i] = db.Commit(&domain.Write{Op: domain.BlackholeEnd, Blackhole: e, EndReason: "expired", At: at,
				Audit: []domain.AuditEntry{{Actor: "expiry", Action: "expire", Prefix: e.Prefix.String()}}})
		})
	}
	wg.Wait()
	if (ends[0] == nil) == (ends[1] == nil) {
		t.Fatalf("two expiries of one entry: %v and %v, want exactly one to take effect", ends[0], ends[1])
	}
	log, _ = a.AuditLog(ctx, "198.51.100.7/32", 0)
	expires := 0
	for _, r := range log {
		if r.Action == "expire" {
			expires++
		}
	}
	if expires != 1 {
		t.Fatalf("%d expire rows, want 1: %+v", expires, log)
	}
	// An extension of an entry that ended elsewhere adds it again.
	if err := b.Commit(&domain.Write{Op: domain.BlackholeExtend, Blackhole: bh("198.51.100.7/32", now.Add(4*time.Hour)), At: at,
		Audit: []domain.AuditEntry{{Actor: "noc", Action: "extend", Prefix: "198.51.100.7/32"}}}); err != nil {
		t.Fatal(err)
	}
	log, _ = a.AuditLog(ctx, "198.51.100.7/32", 0)
	if last := log[len(log)-1]; last.Action != "add" || last.Instance != "b" {
		t.Fatalf("re-add audited as %+v", last)
	}
}

// PostgreSQL going away makes writes and batches unavailable (nothing
// acknowledged, nothing of them stored), the store reports itself down,
// and writes succeed again once it is back.
func TestOutageIsUnavailable(t *testing.T) {
	srv := pgtest.Start(t)
	db := open(t, srv.NewDatabase(t), "a")
	defer db.Close()
	now := time.Now().UTC()
	if err := db.Commit(add(bh("198.51.100.1/32", now.Add(time.Hour)), "noc")); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	err := db.Commit(add(bh("198.51.100.2/32", now.Add(time.Hour)), "noc"))
	if !errors.Is(err, domain.ErrStoreUnavailable) {
		t.Fatalf("write with PostgreSQL stopped = %v, want ErrStoreUnavailable", err)
	}
	err = db.SubmitAll([]*domain.Write{add(bh("198.51.100.3/32", now.Add(time.Hour)), "noc"),
		add(bh("198.51.100.4/32", now.Add(time.Hour)), "noc")})()
	if !errors.Is(err, domain.ErrStoreUnavailable) {
		t.Fatalf("batch with PostgreSQL stopped = %v, want ErrStoreUnavailable", err)
	}
	if db.writesOK.Load() {
		t.Fatal("store says its writes work with PostgreSQL stopped")
	}
	srv.Restart()
	var last error
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if last = db.Commit(add(bh("198.51.100.2/32", now.Add(time.Hour)), "noc")); last == nil {
			break
		}
	}
	if last != nil {
		t.Fatalf("writes still failing 15 s after PostgreSQL came back: %v", last)
	}
	active, err := db.ActiveBlackholes(context.Background())
	if err != nil || len(active) != 2 {
		t.Fatalf("active = %+v, %v; want both", active, err)
	}
}

// Two instances with one ha.instance would miss each other's changes: the
// second one's listener refuses to follow, and says why.
func TestDuplicateInstanceName(t *testing.T) {
	a, b := twoInstances(t, pgtest.Start(t), "rs1", "rs1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { a.Follow(ctx, nopFollower{}) })
	testkit.WaitFor(t, 10*time.Second, "the first instance following", a.Up)
	err := b.followOnce(ctx, nopFollower{})
	if err == nil || !strings.Contains(err.Error(), `another rtbhd is connected as ha.instance "rs1"`) {
		t.Fatalf("second listener with the same name: %v", err)
	}
	if b.Up() {
		t.Fatal("the second instance says it is up")
	}
}

// A DSN naming a unix socket directory works like a TCP one (the dialer
// sets TCP keepalives and a user timeout only on TCP connections), the
// listener included.
func TestUnixSocketDSN(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	name := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	db := open(t, srv.SocketDSN(name), "a")
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { db.Follow(ctx, nopFollower{}) })
	testkit.WaitFor(t, 15*time.Second, "the listener on the unix socket", func() bool { return db.Up() && db.Leader() })
	now := time.Now().UTC()
	if err := db.Commit(add(bh("198.51.100.1/32", now.Add(time.Hour)), "noc")); err != nil {
		t.Fatal(err)
	}
	active, err := db.ActiveBlackholes(ctx)
	if err != nil || len(active) != 1 {
		t.Fatalf("active = %+v, %v", active, err)
	}
}

type nopFollower struct{}

func (nopFollower) Resync(context.Context) error { return nil }
func (nopFollower) Sync(ctx context.Context, fetch func(context.Context) (domain.Changes, error)) error {
	_, err := fetch(ctx)
	return err
}
func (nopFollower) LeadershipChanged() {}
