package main

// kill -9 torture: rtbhd killed at random moments under a mixed load (API
// adds with and without short TTLs, removals, partner and operator reports,
// sFlow zombies for the detector), restarted on the same store each time,
// and checked the same way after every round (SPEC.md, "Safety defaults
// and limits": nothing acknowledged is ever lost; "BGP behaviour": a
// restart never extends a TTL and never resurrects a removed entry).

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

var tortureRounds = flag.Int("rtbh.torture", 20, "rounds of TestKill9Torture (kill -9 at a random moment each)")

// What the test knows of one prefix.
type tState int

const (
	tUnknown tState = iota // requested, outcome not known (failed or in flight at the kill)
	tPresent               // acknowledged (or seen after a restart): active until expiresAt
	tAbsent                // acknowledged removed (or seen gone after a restart)
	tNever                 // partner reports only: must never be blackholed
)

type tEntry struct {
	state     tState
	expiresAt time.Time // for tPresent
	pending   bool      // a removal or operator report on it is in flight or failed
	kind      string    // add, report, zombie
	expired   bool      // seen gone at its expiry
}

// tortureModel is every prefix the test ever asked for, by prefix string.
type tortureModel struct {
	mu sync.Mutex
	m  map[string]*tEntry
}

func (m *tortureModel) get(p string) *tEntry {
	e := m.m[p]
	if e == nil {
		e = &tEntry{}
		m.m[p] = e
	}
	return e
}

type tortureStats struct {
	adds, addsFailed, removes, removesFailed, reports, reportsFailed, opReports, zombies int
}

// TestKill9Torture: one BIRD (graceful restart) and one store for the whole
// test; each round runs a mixed load for a random 200..1500 ms, kills rtbhd
// with SIGKILL in the middle of it, restarts it and checks that
// ListBlackholes, the store and BIRD hold the same set, that it holds every
// acknowledged add not removed or expired, no acknowledged removal, nothing
// expired more than 1 s ago and nothing never requested.
//
//	go test -count=1 -run '^TestKill9Torture$' -v ./cmd/rtbhd -rtbh.torture=100
func TestKill9Torture(t *testing.T) {
	if onPostgres() {
		t.Skip("reads the SQLite file itself: not with RTBH_TEST_STORE=postgres")
	}
	speaker, birdA := netip.MustParseAddr("127.0.38.1"), netip.MustParseAddr("127.0.38.2")
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.LogLevel = "info"
	cfg.Subscribers = `"198.51.100.0/24", "100.64.0.0/16"` // zombies from 100.64/16
	d, bird := startWithRestartingBIRD(t, cfg, speaker, birdA)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x70727475))
	model := &tortureModel{m: map[string]*tEntry{}}
	var nextAdd, nextZombie, nextReport int
	start := time.Now()
	for round := 1; round <= *tortureRounds; round++ {
		if limit := time.Duration(*tortureRounds) * 20 * time.Second; time.Since(start) > limit {
			t.Fatalf("round %d: over %s in total", round, limit)
		}
		loadFor := time.Duration(200+rng.IntN(1301)) * time.Millisecond
		var st tortureStats
		stop := make(chan struct{})
		var wg sync.WaitGroup
		op := dial(t, d.apiAddr(), testToken)
		partner := dial(t, d.apiAddr(), partnerToken)
		seeds := [3]uint64{rng.Uint64(), rng.Uint64(), rng.Uint64()}
		call := func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 3*time.Second)
		}
		// every runs f every interval until stop (at most 2,000 times).
		every := func(interval time.Duration, f func()) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tk := time.NewTicker(interval)
				defer tk.Stop()
				for range 2000 {
					select {
					case <-stop:
						return
					case <-tk.C:
					}
					f()
				}
			}()
		}
		var statsMu sync.Mutex
		count := func(n *int) { statsMu.Lock(); *n++; statsMu.Unlock() }

		// Operator adds: fresh prefixes, one in five IPv6, one in three
		// with a TTL of 1..3 s.
		addRng := rand.New(rand.NewPCG(seeds[0], 1))
		var addMu sync.Mutex
		for range 2 {
			every(10*time.Millisecond, func() {
				addMu.Lock()
				nextAdd++
				n := nextAdd
				var ttl *durationpb.Duration
				if addRng.IntN(3) == 0 {
					ttl = durationpb.New(time.Duration(1000+addRng.IntN(2001)) * time.Millisecond)
				}
				addMu.Unlock()
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 32).String()
				if n%5 == 0 {
					p = netip.MustParsePrefix(fmt.Sprintf("2001:db8:7:%x::%x/128", n>>16, n&0xffff)).String()
				}
				model.mu.Lock()
				model.get(p).kind = "add"
				model.mu.Unlock()
				ctx, cancel := call()
				resp, err := op.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: p, Ttl: ttl, Reason: "torture"})
				cancel()
				if err != nil {
					count(&st.addsFailed)
					return
				}
				model.mu.Lock()
				e := model.get(p)
				e.state, e.expiresAt = tPresent, resp.Blackhole.ExpiresAt.AsTime()
				model.mu.Unlock()
				count(&st.adds)
			})
		}
		// Removals of earlier acknowledged adds (of this or earlier rounds).
		remRng := rand.New(rand.NewPCG(seeds[1], 2))
		every(15*time.Millisecond, func() {
			model.mu.Lock()
			var cands []string
			for p, e := range model.m {
				if e.kind == "add" && e.state == tPresent && !e.pending && time.Until(e.expiresAt) > 500*time.Millisecond {
					cands = append(cands, p)
				}
			}
			if len(cands) == 0 {
				model.mu.Unlock()
				return
			}
			sort.Strings(cands)
			p := cands[remRng.IntN(len(cands))]
			model.m[p].pending = true
			model.mu.Unlock()
			ctx, cancel := call()
			_, err := op.bh.RemoveBlackhole(ctx, &rtbhv1.RemoveBlackholeRequest{Prefix: p, Reason: "torture"})
			cancel()
			if err != nil {
				model.mu.Lock()
				e := model.m[p]
				e.state, e.pending = tUnknown, false
				model.mu.Unlock()
				count(&st.removesFailed)
				return
			}
			model.mu.Lock()
			e := model.m[p]
			e.state, e.pending = tAbsent, false
			model.mu.Unlock()
			count(&st.removes)
		})
		// Reports: the partner (trust 0.5, below threshold 1.0 and alone
		// under min_reporters 2) reports a fresh address; every other time
		// the operator reports an address the partner reported, which
		// blackholes it (origin reports).
		// Reported addresses are fresh ones of the partner's 203.0.113.0/24: 250, about
		// 27 rounds of reports; longer runs go on without them.
		repRng := rand.New(rand.NewPCG(seeds[2], 3))
		every(90*time.Millisecond, func() {
			if nextReport < 250 {
				nextReport++
				a := fmt.Sprintf("203.0.113.%d", nextReport)
				p := a + "/32"
				model.mu.Lock()
				e := model.get(p)
				e.kind, e.state = "report", tNever
				e.pending = true // not for the operator to report while in flight
				model.mu.Unlock()
				ctx, cancel := call()
				resp, err := partner.rep.SubmitReports(ctx, &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{{Address: a}}})
				cancel()
				model.mu.Lock()
				e.pending = false
				model.mu.Unlock()
				if err != nil || resp.Accepted != 1 {
					count(&st.reportsFailed)
				} else {
					count(&st.reports)
				}
			}
			if repRng.IntN(2) != 0 {
				return
			}
			model.mu.Lock()
			var cands []string
			for p, e := range model.m {
				if e.kind == "report" && e.state == tNever && !e.pending {
					cands = append(cands, p)
				}
			}
			if len(cands) == 0 {
				model.mu.Unlock()
				return
			}
			sort.Strings(cands)
			p := cands[repRng.IntN(len(cands))]
			e := model.m[p]
			e.state, e.pending = tUnknown, true
			model.mu.Unlock()
			ctx, cancel := call()
			resp, err := op.rep.SubmitReports(ctx, &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{
				{Address: netip.MustParsePrefix(p).Addr().String()}}})
			cancel()
			if err != nil || resp.Accepted != 1 {
				count(&st.reportsFailed)
				return
			}
			// SubmitReports fuses before it answers: the blackhole is
			// there now, for reports.ttl (6 h).
			model.mu.Lock()
			e.state, e.pending, e.expiresAt = tPresent, false, time.Now().Add(5*time.Hour)
			model.mu.Unlock()
			count(&st.opReports)
		})
		// sFlow zombies: 3 tcp/25 SYNs at 1:2048 to distinct mail servers
		// fire the default smtp-fanout rule. UDP: never acknowledged.
		conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", cfg.SFlowPort))
		if err != nil {
			t.Fatal(err)
		}
		stream := sflowtest.NewStream(netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + round%200)}), 2048)
		every(80*time.Millisecond, func() {
			nextZombie++
			z := netip.AddrFrom4([4]byte{100, 64, byte(nextZombie >> 8), byte(nextZombie)})
			model.mu.Lock()
			model.get(netip.PrefixFrom(z, 32).String()).kind = "zombie"
			model.mu.Unlock()
			conn.Write(stream.Datagram(fusionSYN(z, fusionMX(0)), fusionSYN(z, fusionMX(1)), fusionSYN(z, fusionMX(2))))
			count(&st.zombies)
		})

		// kill -9 at the random moment, the load still running.
		timer := time.NewTimer(loadFor)
		<-timer.C
		killed := time.Now()
		d.kill9()
		close(stop)
		wg.Wait()
		conn.Close()
		op.conn.Close()
		partner.conn.Close()

		// BIRD keeps the routes as stale; rtbhd comes back on the same store.
		testkit.WaitFor(t, 5*time.Second, "BIRD in graceful restart after kill -9", bird.GracefulRestartActive)
		d = startDaemon(t, d.cfg)
		healthy := time.Since(killed)
		testkit.WaitFor(t, 30*time.Second, "End-of-RIB for both families on BIRD", func() bool {
			return bird.Established() && !bird.GracefulRestartActive()
		})
		eor := time.Since(killed)
		c := dial(t, d.apiAddr(), testToken)
		active := tortureCheck(t, round, c, cfg.DB, bird, model)
		t.Logf("round %2d: killed at %4d ms; acked %3d adds (%d failed), %3d removes (%d failed), %2d partner + %2d operator reports (%d failed), %2d zombies sent; healthy +%s, End-of-RIB +%s, sets agree +%s; %s",
			round, loadFor.Milliseconds(), st.adds, st.addsFailed, st.removes, st.removesFailed, st.reports, st.opReports, st.reportsFailed, st.zombies,
			healthy.Round(time.Millisecond), eor.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), active)
		c.conn.Close()
	}
	t.Logf("%d rounds in %s", *tortureRounds, time.Since(start).Round(time.Millisecond))
	d.stop()
}

type tSnap struct {
	t0, t1 time.Time
	list   map[string]*rtbhv1.Blackhole
	store  map[string]time.Time
	bird   map[string]bool
}

func tortureSnapshot(t *testing.T, c clients, db string, bird *routertest.BIRD) tSnap {
	t.Helper()
	s := tSnap{t0: time.Now(), list: map[string]*rtbhv1.Blackhole{}, store: map[string]time.Time{}, bird: map[string]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := c.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{PageSize: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range l.Blackholes {
		s.list[netip.MustParsePrefix(b.Prefix).String()] = b
	}
	r, err := sql.Open("sqlite3", "file:"+db+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rows, err := r.QueryContext(ctx, `SELECT prefix, expires_at FROM blackholes WHERE ended_at IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p string
		var ns int64
		if err := rows.Scan(&p, &ns); err != nil {
			t.Fatal(err)
		}
		s.store[netip.MustParsePrefix(p).String()] = time.Unix(0, ns)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	for _, p := range birdSet(t, bird) {
		s.bird[p] = true
	}
	s.t1 = time.Now()
	return s
}

// tortureCheck waits until ListBlackholes, the store and BIRD agree (up to
// entries at their expiry: expired at most 1 s ago or expiring during the
// snapshot), checks them against the model, resolves the model's unknowns
// from what is there and returns the number of active blackholes.
func tortureCheck(t *testing.T, round int, c clients, db string, bird *routertest.BIRD, model *tortureModel) string {
	t.Helper()
	model.mu.Lock()
	defer model.mu.Unlock()
	var s tSnap
	var diffs []string
	agree := testkit.Poll(15*time.Second, func() bool {
		s = tortureSnapshot(t, c, db, bird)
		diffs = diffs[:0]
		exp := func(p string) (time.Time, bool) {
			if b, ok := s.list[p]; ok {
				return b.ExpiresAt.AsTime(), true
			}
			if e, ok := s.store[p]; ok {
				return e, true
			}
			if e := model.m[p]; e != nil && e.state == tPresent {
				return e.expiresAt, true
			}
			return time.Time{}, false
		}
		all := map[string]bool{}
		for p := range s.list {
			all[p] = true
		}
		for p := range s.store {
			all[p] = true
		}
		for p := range s.bird {
			all[p] = true
		}
		for p := range all {
			_, inL := s.list[p]
			_, inS := s.store[p]
			inB := s.bird[p]
			e, ok := exp(p)
			if ok && e.Before(s.t0.Add(-time.Second)) {
				diffs = append(diffs, fmt.Sprintf("%s expired at %s, %s before the snapshot, still held (list %v, store %v, BIRD %v)",
					p, e.Format(time.RFC3339Nano), s.t0.Sub(e).Round(time.Millisecond), inL, inS, inB))
				continue
			}
			if ok && !e.After(s.t1) {
				continue // at its expiry: either way
			}
			if inL != inS || inL != inB {
				diffs = append(diffs, fmt.Sprintf("%s: list %v, store %v, BIRD %v", p, inL, inS, inB))
			}
		}
		return len(diffs) == 0
	})
	if !agree {
		sort.Strings(diffs)
		t.Fatalf("round %d: ListBlackholes (%d), the store (%d) and BIRD (%d) do not agree within 15 s:\n%s",
			round, len(s.list), len(s.store), len(s.bird), strings.Join(diffs, "\n"))
	}
	origin := map[string]string{"add": "operator:noc", "report": "reports", "zombie": "detector:smtp-fanout"}
	var bad []string
	for p, b := range s.list {
		e := model.m[p]
		if e == nil {
			bad = append(bad, fmt.Sprintf("%s (%s) is active and was never requested", p, b.Origin))
			continue
		}
		if b.Origin != origin[e.kind] {
			bad = append(bad, fmt.Sprintf("%s: origin %s, want %s", p, b.Origin, origin[e.kind]))
		}
		switch e.state {
		case tAbsent:
			bad = append(bad, fmt.Sprintf("%s (%s) is active again after it was gone (acknowledged removal or seen absent)", p, e.kind))
		case tNever:
			bad = append(bad, fmt.Sprintf("%s blackholed on partner reports alone (trust 0.5, min_reporters 2)", p))
		case tPresent:
			if e.kind == "add" && !b.ExpiresAt.AsTime().Equal(e.expiresAt) {
				bad = append(bad, fmt.Sprintf("%s: expires_at %s, acknowledged %s (a restart never changes a TTL)",
					p, b.ExpiresAt.AsTime().Format(time.RFC3339Nano), e.expiresAt.Format(time.RFC3339Nano)))
			}
		}
	}
	for p, e := range model.m {
		b, in := s.list[p]
		switch e.state {
		case tPresent:
			if !in && e.expiresAt.After(s.t1) {
				bad = append(bad, fmt.Sprintf("%s (%s) acknowledged, expires %s, is gone", p, e.kind, e.expiresAt.Format(time.RFC3339Nano)))
			}
			if in {
				e.expiresAt = b.ExpiresAt.AsTime()
			} else {
				e.state, e.expired = tAbsent, true
			}
		case tUnknown:
			if in {
				e.state, e.expiresAt = tPresent, b.ExpiresAt.AsTime()
			} else if e.kind == "add" {
				// A store insert that did not commit before the kill.
				e.state = tAbsent
			}
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		t.Fatalf("round %d: %d violations:\n%s", round, len(bad), strings.Join(bad, "\n"))
	}
	n := map[string]int{}
	for _, b := range s.list {
		n[b.Origin]++
	}
	for _, e := range model.m {
		if e.expired {
			n["expired"]++
		}
	}
	return fmt.Sprintf("%d active (%d operator, %d reports, %d detector), %d expired so far",
		len(s.list), n[origin["add"]], n[origin["report"]], n[origin["zombie"]], n["expired"])
}
