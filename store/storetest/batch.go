package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

func insertWrite(p string, now time.Time) *domain.Write {
	return &domain.Write{Op: domain.BlackholeInsert, Blackhole: bh(p, now.Add(time.Hour)), At: now,
		Audit: []domain.AuditEntry{{Actor: "t", Action: "add", Prefix: p}}}
}

// SubmitAll commits its writes together: all of them, each with its own
// audit row, or — when one fails — none, while single writes queued beside
// it are unaffected; after Close it is unavailable.
func submitAllIsAllOrNothing(t *testing.T, open Opener) {
	db := open(t, "a")
	defer db.Close()
	ctx := context.Background()
	now := time.Now().UTC()
	var good []*domain.Write
	for i := range 3000 {
		good = append(good, insertWrite(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i / 256), byte(i)}), 32).String(), now))
	}
	// Ending an entry that does not exist fails, on every backend.
	bad := []*domain.Write{insertWrite("10.2.0.1/32", now), insertWrite("10.2.0.2/32", now),
		{Op: domain.BlackholeEnd, EndReason: "removed", Blackhole: bh("10.2.0.3/32", now), At: now,
			Audit: []domain.AuditEntry{{Actor: "t", Action: "remove", Prefix: "10.2.0.3/32"}}}}
	var wg sync.WaitGroup
	var errGood, errBad error
	singles := make([]error, 50)
	wg.Go(func() { errGood = db.SubmitAll(good)() })
	wg.Go(func() { errBad = db.SubmitAll(bad)() })
	for i := range singles {
		wg.Go(func() { singles[i] = commit(db, insertWrite(fmt.Sprintf("10.3.0.%d/32", i), now)) })
	}
	wg.Wait()
	if errGood != nil {
		t.Fatalf("good batch: %v", errGood)
	}
	if errBad == nil {
		t.Fatal("a batch with a failing write succeeded")
	}
	if err := errors.Join(singles...); err != nil {
		t.Fatalf("single writes beside the batches: %v", err)
	}
	active, err := db.ActiveBlackholes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	audit, err := db.AuditLog(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(good) + len(singles); len(active) != want || len(audit) != want {
		t.Fatalf("active %d, audit %d; want %d each (nothing of the failed batch)", len(active), len(audit), want)
	}
	for _, b := range active {
		if b.Prefix.Addr().As4()[1] == 2 {
			t.Fatalf("%s of the failed batch is stored", b.Prefix)
		}
	}
	for _, a := range audit {
		if a.Instance != "a" {
			t.Fatalf("audit row %+v: instance %q, want a", a, a.Instance)
		}
	}
	db.Close()
	if err := db.SubmitAll(good[:1])(); !errors.Is(err, domain.ErrStoreUnavailable) {
		t.Fatalf("SubmitAll after Close = %v, want ErrStoreUnavailable", err)
	}
}

// A SubmitAll unit keeps its place among the writes submitted before and
// after it: an add, a batch that removes it and adds another, and an add of
// the first again all succeed only in that order.
func submitAllKeepsOrder(t *testing.T, open Opener) {
	db := closeAtEnd(t, open(t, "a"))
	now := time.Now().UTC().Truncate(time.Microsecond)
	const rounds = 100
	waits := make([]func() error, 0, 3*rounds)
	for i := range rounds {
		x := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 4, 0, byte(i)}), 32).String()
		y := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, 0, byte(i)}), 32).String()
		end := &domain.Write{Op: domain.BlackholeEnd, EndReason: "removed", Blackhole: bh(x, now.Add(time.Hour)), At: now,
			Audit: []domain.AuditEntry{{Actor: "t", Action: "remove", Prefix: x}}}
		again := insertWrite(x, now)
		again.Blackhole.ExpiresAt = now.Add(2 * time.Hour)
		waits = append(waits, db.Submit(insertWrite(x, now)), db.SubmitAll([]*domain.Write{end, insertWrite(y, now)}),
			db.Submit(again))
	}
	for i, wait := range waits {
		if err := wait(); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	active, err := db.ActiveBlackholes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 2*rounds {
		t.Fatalf("%d active, want %d", len(active), 2*rounds)
	}
	for _, b := range active {
		if b.Prefix.Addr().As4()[1] == 4 && !b.ExpiresAt.Equal(now.Add(2*time.Hour)) {
			t.Fatalf("%s expires %s: not the add after the batch", b.Prefix, b.ExpiresAt)
		}
	}
	audit, err := db.AuditLog(context.Background(), "", 0)
	if err != nil || len(audit) != 4*rounds {
		t.Fatalf("%d audit rows (%v), want %d", len(audit), err, 4*rounds)
	}
}
