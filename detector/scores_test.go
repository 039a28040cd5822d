package detector

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

// The scoreboard keeps at most max addresses, forgetting the least recently
// reported first; reporting an address again makes it the most recent.
func TestScoreboardEvictsLeastRecentlyReported(t *testing.T) {
	now := time.Now()
	s := newScoreboard(3)
	a := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}) }
	for i := 1; i <= 3; i++ {
		s.mark(a(i), "isp-a", 0.5, now, false)
	}
	s.mark(a(1), "isp-b", 0.5, now, false) // 1 is now the most recent: 2 goes next
	s.mark(a(4), "isp-a", 0.5, now, false)
	if s.len() != 3 || s.evicted != 1 {
		t.Fatalf("len %d, evicted %d; want 3, 1", s.len(), s.evicted)
	}
	for i, want := range map[int]float64{1: 1, 2: 0, 3: 0.5, 4: 0.5} {
		if got := s.score(a(i), now, time.Hour); got != want {
			t.Errorf("score(%s) = %v, want %v", a(i), got, want)
		}
	}
	s.setMax(1)
	if s.len() != 1 || s.score(a(4), now, time.Hour) != 0.5 {
		t.Fatalf("after setMax(1): len %d, score of the newest %v", s.len(), s.score(a(4), now, time.Hour))
	}
	s.prune(now.Add(2*time.Hour), time.Hour)
	if s.len() != 0 || s.head != -1 || s.tail != -1 || len(s.free) != len(s.ents) {
		t.Fatalf("after prune: len %d, head %d, tail %d, %d of %d entries free", s.len(), s.head, s.tail, len(s.free), len(s.ents))
	}
	// Pruning the inline reporter keeps a newer second one.
	s.setMax(0)
	s.mark(a(5), "isp-a", 0.5, now.Add(-2*time.Hour), false)
	s.mark(a(5), "isp-b", 0.25, now, true)
	s.prune(now, time.Hour)
	if names, op := s.reporters(a(5), now, time.Hour); len(names) != 1 || names[0] != "isp-b" || !op || s.score(a(5), now, time.Hour) != 0.25 {
		t.Fatalf("after pruning the first reporter: reporters %v, operator %v, score %v", names, op, s.score(a(5), now, time.Hour))
	}
	s.reset()
	if s.len() != 0 || s.head != -1 {
		t.Fatalf("after reset: len %d, head %d", s.len(), s.head)
	}
	unbounded := newScoreboard(0)
	for i := range 1000 {
		unbounded.mark(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "isp-a", 0.1, now, false)
	}
	if unbounded.len() != 1000 {
		t.Fatalf("max 0 kept %d of 1000", unbounded.len())
	}
}

// Through the Manager: an evicted address no longer counts although its
// reports are stored; reported again it counts from the new report; a
// reload that lowers the bound evicts at once.
func TestManagerMaxTrackedAddresses(t *testing.T) {
	ctx := context.Background()
	rp := ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour, MaxTrackedAddresses: 100}
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), rp)
	first := netip.MustParseAddr("203.0.113.1")
	if _, _, err := f.m.SubmitReports(ctx, Reporter{Name: "isp-a", Trust: 0.5}, []Report{{Address: first.String()}}); err != nil {
		t.Fatal(err)
	}
	var batch []Report
	for i := range 100 {
		batch = append(batch, Report{Address: fmt.Sprintf("10.1.%d.%d", i/256, i%256)})
	}
	if _, _, err := f.m.SubmitReports(ctx, Reporter{Name: "isp-a", Trust: 0.5}, batch); err != nil {
		t.Fatal(err)
	}
	if n := f.m.trackedAddresses(); n != 100 {
		t.Fatalf("tracked %d, want 100", n)
	}
	if s := f.m.Score(first); s != 0 {
		t.Fatalf("evicted address scores %v, want 0", s)
	}
	o, _, err := f.m.Offender(ctx, first)
	if err != nil || len(o.Reports) != 1 {
		t.Fatalf("evicted address's stored reports: %d, %v; want 1 (the store keeps them)", len(o.Reports), err)
	}
	if _, _, err := f.m.SubmitReports(ctx, Reporter{Name: "isp-b", Trust: 0.5}, []Report{{Address: first.String()}}); err != nil {
		t.Fatal(err)
	}
	if s := f.m.Score(first); s != 0.5 {
		t.Fatalf("re-reported address scores %v, want 0.5 (the new report only)", s)
	}
	rp.MaxTrackedAddresses = 10
	f.m.SetPolicy(testPolicy(), rp)
	if n := f.m.trackedAddresses(); n != 10 {
		t.Fatalf("after a reload to 10: tracked %d", n)
	}
	if s := f.m.Score(first); s != 0.5 {
		t.Fatalf("the most recently reported address was evicted (score %v)", s)
	}
}
