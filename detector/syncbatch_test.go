package detector

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/store/postgres"
)

// On PostgreSQL a batch is one store unit too, not one write each.
var _ groupSubmitter = (*postgres.DB)(nil)

// holdsN reports whether in's committed view and BGP RIB hold exactly n
// entries inside within.
func (in *instance) holdsN(n int, within netip.Prefix) bool {
	got := 0
	for _, b := range in.m.Active() {
		if within.Contains(b.Prefix.Addr()) {
			got++
		}
	}
	rib := 0
	for _, p := range in.speaker.Announced() {
		if within.Contains(p.Addr()) {
			rib++
		}
	}
	return got == n && rib == n
}

// A batch of a few hundred adds committed through one instance (one
// SubmitAll unit) reaches the other's committed view and BGP, with one
// audit row per item; a batch of removals through the other comes back.
func TestSyncFollowsBatches(t *testing.T) {
	pol := testPolicy()
	pol.OwnPrefixes = append(pol.OwnPrefixes, netip.MustParsePrefix("10.9.0.0/16"))
	pol.MaxActive = 1000
	ins := startInstancesWith(t, pol, "a", "b")
	a, b := ins[0], ins[1]
	ctx := context.Background()
	within := netip.MustParsePrefix("10.9.0.0/16")
	const n = 400
	reqs := make([]Request, 0, n+1)
	rems := make([]RemoveRequest, 0, n)
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i / 256), byte(i)}), 32)
		reqs = append(reqs, Request{Prefix: p, Reason: "batch", Origin: "operator:noc", Actor: "noc"})
		rems = append(rems, RemoveRequest{Prefix: p, Reason: "batch done", Actor: "noc"})
	}
	reqs = append(reqs, Request{Prefix: pfx("198.51.100.53"), Origin: "operator:noc", Actor: "noc"}) // never_blackhole
	start := time.Now()
	acc, ref, err := a.m.AddBatch(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(acc) != n || len(ref) != 1 || ref[0].Index != n {
		t.Fatalf("accepted %d, refused %+v; want %d and the last", len(acc), ref, n)
	}
	committed := time.Since(start)
	testkit.WaitFor(t, 10*time.Second, "b to hold a's batch", func() bool { return b.holdsN(n, within) })
	t.Logf("batch of %d: committed on a in %v, on b's RIB after %v", n, committed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	testkit.WaitFor(t, 10*time.Second, "a to announce its own batch", func() bool { return a.holdsN(n, within) })
	for _, x := range acc {
		bb, ok := b.m.Lookup(x.Blackhole.Prefix)
		if !ok || !sameEntry(bb, x.Blackhole) {
			t.Fatalf("b holds %+v (%v) for %s, want a's %+v", bb, ok, x.Blackhole.Prefix, x.Blackhole)
		}
	}
	log, err := a.db.AuditLog(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	adds := 0
	for _, r := range log {
		if r.Action == "add" && r.Instance == "a" && within.Contains(netip.MustParsePrefix(r.Prefix).Addr()) {
			adds++
		}
	}
	if adds != n {
		t.Fatalf("%d add audit rows from a, want %d", adds, n)
	}

	acc, ref, err = b.m.RemoveBatch(ctx, rems)
	if err != nil || len(acc) != n || len(ref) != 0 {
		t.Fatalf("RemoveBatch on b: accepted %d, refused %+v, %v", len(acc), ref, err)
	}
	// b's own route queue withdraws from its RIB after the commit, beside
	// a's sync: the call's answer waits for neither.
	testkit.WaitFor(t, 10*time.Second, "a to drop b's removals", func() bool { return a.holdsN(0, within) })
	testkit.WaitFor(t, 10*time.Second, "b to withdraw what it removed", func() bool { return b.holdsN(0, within) })
}
