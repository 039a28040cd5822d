package detector

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/store/postgres"
	"github.com/rtbh/rtbh/store/postgres/pgtest"
)

// instance is one Manager of several on one PostgreSQL, following it.
type instance struct {
	db      *postgres.DB
	speaker *bgp.Speaker
	m       *Manager
}

func startInstances(t *testing.T, names ...string) []*instance {
	t.Helper()
	return startInstancesWith(t, testPolicy(), names...)
}

func startInstancesWith(t *testing.T, pol Policy, names ...string) []*instance {
	t.Helper()
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var out []*instance
	for _, name := range names {
		db, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Instance: name}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		sp, err := bgp.New(bgp.Config{ASN: 64500, RouterID: netip.MustParseAddr("192.0.2.254"),
			NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1")}, quiet, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := sp.Start(ctx); err != nil {
			t.Fatal(err)
		}
		m, err := NewManager(Config{Policy: pol, Reports: ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour, MinReporters: 1}}, db, sp, quiet, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.SetLeadership(db.Leader)
		wg.Go(func() { m.Run(ctx) })
		wg.Go(func() { db.Follow(ctx, m) })
		out = append(out, &instance{db, sp, m})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, in := range out {
			in.speaker.Close()
			in.db.Close()
		}
	})
	for _, in := range out {
		testkit.WaitFor(t, 10*time.Second, "the listener connected", in.db.Up)
	}
	return out
}

// holds reports whether in's committed view and BGP RIB hold exactly ps.
func (in *instance) holds(ps ...string) bool {
	active := in.m.Active()
	if len(active) != len(ps) {
		return false
	}
	rib := map[string]bool{}
	for _, p := range in.speaker.Announced() {
		rib[p.String()] = true
	}
	if len(rib) != len(ps) {
		return false
	}
	for i, b := range active {
		if b.Prefix.String() != ps[i] || !rib[ps[i]] {
			return false
		}
	}
	return true
}

// What one instance commits reaches the other's committed view, watchers
// and BGP; an entry the other removed and this one added again stays
// (an ended row ends only the entry it was); and only the leader expires.
func TestSyncFollowsOtherInstances(t *testing.T) {
	ins := startInstances(t, "a", "b")
	a, b := ins[0], ins[1]
	ctx := context.Background()
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	_, events := b.m.Watch(watchCtx)

	p := pfx("198.51.100.7")
	if _, _, err := a.m.Add(ctx, Request{Prefix: p, Reason: "from a", Origin: "operator:noc", Actor: "noc"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, time.Second, "b to hold a's add", func() bool { return b.holds("198.51.100.7/32") })
	select {
	case ev := <-events:
		if ev.Type != EventAdded || ev.Blackhole.Prefix != p || ev.Actor != syncActor {
			t.Fatalf("b's watcher got %+v, want the add from sync", ev)
		}
	case <-time.After(time.Second):
		t.Fatal("b's watcher was not told of a's add")
	}

	// b removes it, a adds it again at once: both end with a's new entry.
	if _, err := b.m.Remove(ctx, RemoveRequest{Prefix: p, Reason: "from b", Actor: "noc"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, time.Second, "a to see b's removal", func() bool { return a.holds() })
	if _, _, err := a.m.Add(ctx, Request{Prefix: p, Reason: "again", Origin: "operator:noc", Actor: "noc"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, time.Second, "both to hold the new entry", func() bool {
		return a.holds("198.51.100.7/32") && b.holds("198.51.100.7/32")
	})
	ba, _ := a.m.Lookup(p)
	bb, _ := b.m.Lookup(p)
	if !sameEntry(ba, bb) || ba.Reason != "again" {
		t.Fatalf("a holds %+v, b holds %+v: want the same new entry", ba, bb)
	}

	// The same without waiting: a decides on its view from before b's
	// removal (an extension that the store turns into a new entry) or
	// after it, whichever the timing gives; both end with one entry.
	q := pfx("198.51.100.9")
	if _, _, err := a.m.Add(ctx, Request{Prefix: q, Reason: "q", Origin: "operator:noc", Actor: "noc"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, time.Second, "b to hold q", func() bool { return b.holds("198.51.100.7/32", "198.51.100.9/32") })
	for i := range 20 {
		if _, err := b.m.Remove(ctx, RemoveRequest{Prefix: q, Reason: "from b", Actor: "noc"}); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if _, _, err := a.m.Add(ctx, Request{Prefix: q, Reason: "q again", Origin: "operator:noc", Actor: "noc"}); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		testkit.WaitFor(t, 2*time.Second, "both to hold q again", func() bool {
			return a.holds("198.51.100.7/32", "198.51.100.9/32") && b.holds("198.51.100.7/32", "198.51.100.9/32")
		})
	}
	if _, err := a.m.Remove(ctx, RemoveRequest{Prefix: q, Reason: "done", Actor: "noc"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, time.Second, "both without q", func() bool {
		return a.holds("198.51.100.7/32") && b.holds("198.51.100.7/32")
	})

	// b adds and removes an entry before a has read either, and a adds
	// the prefix anew meanwhile: reading b's ended row later must not end
	// a's own, newer entry.
	for i := range 20 {
		r := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)}), 32)
		if _, _, err := b.m.Add(ctx, Request{Prefix: r, Reason: "b", Origin: "operator:noc", Actor: "noc"}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.m.Remove(ctx, RemoveRequest{Prefix: r, Reason: "b", Actor: "noc"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.m.Add(ctx, Request{Prefix: r, Reason: "a", Origin: "operator:noc", Actor: "noc"}); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, 2*time.Second, "both to hold a's entry", func() bool {
			return a.holds("198.51.100.7/32", r.String()) && b.holds("198.51.100.7/32", r.String())
		})
		if _, err := a.m.Remove(ctx, RemoveRequest{Prefix: r, Reason: "a", Actor: "noc"}); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, 2*time.Second, "both without it", func() bool {
			return a.holds("198.51.100.7/32") && b.holds("198.51.100.7/32")
		})
	}

	// A short entry expires on the leader's timer, once, on both.
	leader, follower := a, b
	if !a.db.Leader() {
		leader, follower = b, a
	}
	if !leader.db.Leader() || follower.db.Leader() {
		t.Fatalf("leaders: a %v, b %v; want exactly one", a.db.Leader(), b.db.Leader())
	}
	e := pfx("198.51.100.8")
	if _, _, err := follower.m.Add(ctx, Request{Prefix: e, TTL: 500 * time.Millisecond, HasTTL: true, Reason: "short", Origin: "operator:noc", Actor: "noc"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the expiry on both", func() bool {
		return a.holds("198.51.100.7/32") && b.holds("198.51.100.7/32")
	})
	log, err := a.db.AuditLog(ctx, "198.51.100.8/32", 0)
	if err != nil {
		t.Fatal(err)
	}
	var expires []string
	for _, r := range log {
		if r.Action == "expire" {
			expires = append(expires, r.Instance)
		}
	}
	if len(expires) != 1 || expires[0] != leader.db.Instance() {
		t.Fatalf("expire rows by %v, want one by the leader %s", expires, leader.db.Instance())
	}
}
