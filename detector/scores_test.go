package detector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
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
	// A restart reloads the window's reports oldest first, within the
	// bound: the most recently observed addresses are the ones kept.
	f.close()
	f2 := newFixture(t, f.path, testPolicy(), rp)
	if n := f2.m.trackedAddresses(); n != 10 {
		t.Fatalf("after a restart with the bound at 10: tracked %d", n)
	}
	// Replaying in order evicts first's older report again, as it was
	// while running: the restart reproduces the running score.
	if s := f2.m.Score(first); s != 0.5 {
		t.Fatalf("after a restart, the most recently reported address scores %v, want 0.5 as before it", s)
	}
}

// The scoreboard agrees with a plain model (a map and a recency list) over
// random marks, prunes and bound changes.
func TestScoreboardMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	type model struct {
		marks map[netip.Addr]map[string]reportMark
		order []netip.Addr // least recent first
	}
	md := model{marks: map[netip.Addr]map[string]reportMark{}}
	touch := func(a netip.Addr) {
		md.order = slices.DeleteFunc(md.order, func(x netip.Addr) bool { return x == a })
		md.order = append(md.order, a)
	}
	max := 20
	s := newScoreboard(max)
	evictModel := func() {
		for max > 0 && len(md.order) > max {
			delete(md.marks, md.order[0])
			md.order = md.order[1:]
		}
	}
	reporters := []string{"isp-a", "isp-b", "noc"}
	for step := range 20000 {
		a := netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(50))})
		switch op := rng.IntN(100); {
		case op < 90:
			who := reporters[rng.IntN(len(reporters))]
			at := now.Add(-time.Duration(rng.IntN(120)) * time.Minute)
			s.mark(a, who, 0.25, at, who == "noc")
			rs := md.marks[a]
			if rs == nil {
				rs = map[string]reportMark{}
				md.marks[a] = rs
			}
			if old, ok := rs[who]; !ok || at.After(old.at) {
				rs[who] = reportMark{trust: 0.25, at: at, operator: who == "noc"}
			}
			touch(a)
			evictModel()
		case op < 95:
			s.prune(now, time.Hour)
			for x, rs := range md.marks {
				for who, r := range rs {
					if now.Sub(r.at) > time.Hour {
						delete(rs, who)
					}
				}
				if len(rs) == 0 {
					delete(md.marks, x)
					md.order = slices.DeleteFunc(md.order, func(y netip.Addr) bool { return y == x })
				}
			}
		default:
			max = rng.IntN(30)
			s.setMax(max)
			evictModel()
		}
		if s.len() != len(md.marks) {
			t.Fatalf("step %d: tracked %d, model %d", step, s.len(), len(md.marks))
		}
		for i := range 50 {
			x := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
			var want float64
			for _, r := range md.marks[x] {
				if now.Sub(r.at) <= 2*time.Hour {
					want += r.trust
				}
			}
			if got := s.score(x, now, 2*time.Hour); got != want {
				t.Fatalf("step %d: score(%s) = %v, model %v", step, x, got, want)
			}
		}
	}
}
