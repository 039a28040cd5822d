package store

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

func insertWrite(p string, now time.Time) *domain.Write {
	return &domain.Write{Op: domain.BlackholeInsert, Blackhole: bh(p, now.Add(time.Hour)), At: now,
		Audit: []domain.AuditEntry{{Actor: "t", Action: "add", Prefix: p}}}
}

// SubmitAll commits its writes together: all of them, or — when one fails —
// none, while single writes queued beside it are unaffected.
func TestSubmitAllIsAllOrNothing(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "rtbh.db"))
	ctx := context.Background()
	now := time.Now().UTC()
	var good []*domain.Write
	for i := range 3000 {
		good = append(good, insertWrite(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i / 256), byte(i)}), 32).String(), now))
	}
	bad := []*domain.Write{insertWrite("10.2.0.1/32", now), insertWrite("10.2.0.2/32", now),
		{Op: domain.BlackholeExtend, Blackhole: bh("10.2.0.3/32", now), At: now}} // extends nothing: fails
	var wg sync.WaitGroup
	var errGood, errBad error
	singles := make([]error, 50)
	wg.Go(func() { errGood = db.SubmitAll(good)() })
	wg.Go(func() { errBad = db.SubmitAll(bad)() })
	for i := range singles {
		wg.Go(func() { singles[i] = db.Commit(insertWrite(fmt.Sprintf("10.3.0.%d/32", i), now)) })
	}
	wg.Wait()
	if errGood != nil {
		t.Fatalf("good batch: %v", errGood)
	}
	if errBad == nil {
		t.Fatal("a batch with a failing write succeeded")
	}
	for i, err := range singles {
		if err != nil {
			t.Fatalf("single write %d: %v", i, err)
		}
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
	db.Close()
	if err := db.SubmitAll(good[:1])(); err == nil {
		t.Fatal("SubmitAll after Close succeeded")
	}
}
