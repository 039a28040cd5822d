package detector

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/store"
)

// smallTmpfs mounts a tmpfs of size bytes on a new directory, unmounted
// when the test ends. It skips the test when it cannot mount (not root).
func smallTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs for the disk-full fault (CI runs the tests as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for the disk-full fault: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes path until the filesystem is full (ENOSPC).
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			// Smaller writes take the last pages too.
			for len(buf) > 1 {
				buf = buf[:len(buf)/2]
				for {
					if _, err := f.Write(buf); err != nil {
						break
					}
				}
			}
			return
		}
	}
}

// faultModel is what one worker knows about its own prefixes: every prefix
// is used by one worker only, so the acknowledged answers, in order, say
// what must hold afterwards.
type faultModel struct {
	present  map[netip.Prefix]bool // acknowledged added and not acknowledged removed
	expiring map[netip.Prefix]bool // acknowledged with a short TTL: gone afterwards
	acked    map[string]int        // per phase
	refused  int
	reasons  map[string]int // refusal messages, without the prefix
	unknown  []error        // neither acknowledged nor refused as unavailable
}

// TestDiskFullRecovers is the fault-injection test: the database is on a
// small tmpfs that fills up while adds, removes, short-TTL expiries and
// detector writes run concurrently through a real Manager announcing to a
// GoBGP peer. Failed writes must be refused as unavailable and acknowledge
// nothing; once the space is freed rtbhd recovers by itself; afterwards
// every acknowledged write is there, nothing refused or removed is, and the
// Manager, a watcher, the store, the speaker and the peer hold the same set.
func TestDiskFullRecovers(t *testing.T) {
	dir := smallTmpfs(t, 8<<20)
	ctx := context.Background()

	local, remote, birdAddr := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	localPort := testkit.FreePort(t, local)
	peer := routertest.StartGoBGP(t, routertest.GoBGPConfig{LocalAddr: remote, LocalASN: 64501, PeerAddr: local, PeerASN: 64500})
	neighbors := []bgp.Neighbor{{Address: remote, ASN: 64501, Role: bgp.RoleBorder, Port: uint16(peer.Port())}}
	// A real BIRD too, where it is installed (CI: always; StartBIRD fails
	// there without it).
	var bird *routertest.BIRD
	if _, err := exec.LookPath(routertest.BIRDPath); err == nil || os.Getenv("CI") != "" {
		bird = routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: birdAddr, LocalASN: 64502,
			PeerAddr: local, PeerPort: localPort, PeerASN: 64500, Passive: true})
		neighbors = append(neighbors, bgp.Neighbor{Address: birdAddr, ASN: 64502, Role: bgp.RoleBorder, Port: uint16(bird.Port())})
	} else {
		t.Logf("%s not found: checking the GoBGP peer only", routertest.BIRDPath)
	}
	db, err := store.Open(filepath.Join(dir, "rtbhd.db"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := bgp.New(bgp.Config{ASN: 64500, RouterID: netip.MustParseAddr("192.0.2.254"),
		ListenAddress: local.String(), ListenPort: localPort,
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"),
		Neighbors: neighbors}, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	if err := sp.Start(runCtx); err != nil {
		t.Fatal(err)
	}
	pol := testPolicy()
	pol.OwnPrefixes = append(pol.OwnPrefixes, netip.MustParsePrefix("203.0.113.0/24"))
	pol.MaxActive = 10000
	m, err := NewManager(Config{Policy: pol}, db, sp, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		sp.Close()
		db.Close()
	})
	testkit.WaitFor(t, 20*time.Second, "session to the GoBGP peer", peer.Established)
	if bird != nil {
		bird.WaitEstablished(20 * time.Second)
	}

	// A watcher from the start: its snapshot plus events must end at the
	// final set, and it must never hear of an add that was refused.
	watchCtx, stopWatch := context.WithCancel(ctx)
	snap, events := m.Watch(watchCtx)
	watched := make(map[netip.Prefix]bool)
	for _, b := range snap {
		watched[b.Prefix] = true
	}
	var heard []Event
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for ev := range events {
			heard = append(heard, ev)
		}
	}()

	// Phases: space, full disk, space again. Workers run throughout.
	var phaseMu sync.Mutex
	phase := "space"
	getPhase := func() string { phaseMu.Lock(); defer phaseMu.Unlock(); return phase }
	setPhase := func(p string) { phaseMu.Lock(); phase = p; phaseMu.Unlock() }

	stop := make(chan struct{})
	var ackedN, refusedN atomic.Int64
	const maxOps = 20000 // per worker, besides the time bound
	worker := func(seed uint64, prefixes []netip.Prefix, op func(r *rand.Rand, p netip.Prefix, present bool) (ackPresent bool, short bool, err error)) *faultModel {
		fm := &faultModel{present: map[netip.Prefix]bool{}, expiring: map[netip.Prefix]bool{}, acked: map[string]int{}, reasons: map[string]int{}}
		r := rand.New(rand.NewPCG(seed, 1))
		for range maxOps {
			select {
			case <-stop:
				return fm
			default:
			}
			p := prefixes[r.IntN(len(prefixes))]
			ph := getPhase()
			nowPresent, short, err := op(r, p, fm.present[p])
			switch {
			case err == nil:
				ackedN.Add(1)
				fm.acked[ph]++
				fm.present[p] = nowPresent && !short
				if short {
					fm.expiring[p] = true
				} else if nowPresent {
					delete(fm.expiring, p)
				}
			case errors.Is(err, domain.ErrStoreUnavailable):
				refusedN.Add(1)
				fm.refused++
				msg := err.Error()
				if i := strings.Index(msg, "store unavailable: "); i >= 0 {
					msg = msg[i:]
				}
				fm.reasons[msg]++
				// A client backs off before trying again; this paces
				// the load, it waits for no condition.
				select {
				case <-stop:
				case <-time.After(5 * time.Millisecond):
				}
			case KindOf(err) == KindNotFound && !fm.present[p]:
			default:
				fm.unknown = append(fm.unknown, fmt.Errorf("%s in phase %s: %w", p, ph, err))
			}
		}
		return fm
	}
	hosts := func(base string, from, n int) []netip.Prefix {
		var out []netip.Prefix
		a := netip.MustParseAddr(base)
		for range from {
			a = a.Next()
		}
		for range n {
			out = append(out, netip.PrefixFrom(a, 32))
			a = a.Next()
		}
		return out
	}
	// Every entry an Add or Detected acknowledged (prefix, creation and
	// expiry): the only ones a watcher may hear of.
	type entryKey struct {
		p                netip.Prefix
		created, expires int64
	}
	keyOf := func(b domain.Blackhole) entryKey {
		return entryKey{b.Prefix, b.CreatedAt.UnixNano(), b.ExpiresAt.UnixNano()}
	}
	var ackMu sync.Mutex
	ackedEntries := map[entryKey]bool{}
	ack := func(b domain.Blackhole, err error) error {
		if err == nil {
			ackMu.Lock()
			ackedEntries[keyOf(b)] = true
			ackMu.Unlock()
		}
		return err
	}
	addRemove := func(r *rand.Rand, p netip.Prefix, present bool) (bool, bool, error) {
		if present && r.IntN(2) == 0 {
			_, err := m.Remove(ctx, RemoveRequest{Prefix: p, Actor: "noc", Reason: "done"})
			return false, false, err
		}
		b, _, err := m.Add(ctx, Request{Prefix: p, Origin: "operator:noc", Actor: "noc", Reason: "attack"})
		return true, false, ack(b, err)
	}
	shortLived := func(r *rand.Rand, p netip.Prefix, present bool) (bool, bool, error) {
		if present {
			return true, false, nil // not reached: short entries are never "present"
		}
		b, _, err := m.Add(ctx, Request{Prefix: p, TTL: 500 * time.Millisecond, HasTTL: true,
			Origin: "operator:noc", Actor: "noc", Reason: "short"})
		return true, true, ack(b, err)
	}
	detect := func(r *rand.Rand, p netip.Prefix, present bool) (bool, bool, error) {
		if present && r.IntN(2) == 0 {
			_, err := m.Remove(ctx, RemoveRequest{Prefix: p, Actor: "noc", Reason: "false positive"})
			return false, false, err
		}
		ev := domain.Evidence{Rule: "smtp-fanout", Action: "blackhole", Protocol: "tcp", DstPorts: []uint16{25},
			Address: p.Addr(), DistinctDestinations: 150, EstimatedPackets: 40000, Window: time.Minute,
			FirstSeen: time.Now().Add(-time.Minute), LastSeen: time.Now()}
		b, err := m.Detected(ctx, ev, time.Hour)
		if err == nil && b == nil {
			return false, false, errors.New("Detected acknowledged without a blackhole")
		}
		if err == nil {
			ack(*b, nil)
		}
		return true, false, err
	}

	var wg sync.WaitGroup
	models := make([]*faultModel, 5)
	start := func(i int, prefixes []netip.Prefix, op func(*rand.Rand, netip.Prefix, bool) (bool, bool, error)) {
		wg.Go(func() { models[i] = worker(uint64(i+1), prefixes, op) })
	}
	start(0, hosts("198.51.100.0", 1, 40), addRemove)
	start(1, hosts("198.51.100.0", 60, 40), addRemove)
	start(2, hosts("203.0.113.0", 1, 100), shortLived)
	start(3, hosts("198.51.100.0", 120, 40), detect)
	start(4, hosts("203.0.113.0", 120, 40), addRemove)

	t0 := time.Now()
	ballast := filepath.Join(dir, "ballast")
	testkit.WaitFor(t, 5*time.Second, "writes while there is space", func() bool { return ackedN.Load() > 50 })
	fill(t, ballast)
	setPhase("full")
	// Stay full until writes have been refused (bounded), then a while
	// longer, so that the rebuild retries against the full disk.
	refusedSeen := testkit.Poll(10*time.Second, func() bool { return refusedN.Load() > 0 })
	fullFor := time.Now()
	testkit.Poll(2*time.Second, func() bool { return time.Since(fullFor) > 1500*time.Millisecond })
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	setPhase("freed")
	freedAt := time.Now()
	testkit.Poll(3*time.Second, func() bool { return time.Since(freedAt) > 2*time.Second })
	close(stop)
	wg.Wait()
	t.Logf("ran %s", time.Since(t0).Round(time.Millisecond))

	want := map[netip.Prefix]bool{}
	var refused int
	acked := map[string]int{}
	reasons := map[string]int{}
	for i, fm := range models {
		for _, err := range fm.unknown {
			t.Errorf("worker %d: neither acknowledged nor unavailable: %v", i, err)
		}
		for p, ok := range fm.present {
			if ok {
				want[p] = true
			}
		}
		refused += fm.refused
		for r, n := range fm.reasons {
			reasons[r] += n
		}
		for ph, n := range fm.acked {
			acked[ph] += n
		}
	}
	t.Logf("acknowledged %v, refused as unavailable %d, expected set %d", acked, refused, len(want))
	for r, n := range reasons {
		t.Logf("refused %d× %q", n, r)
	}
	if !refusedSeen || refused == 0 {
		t.Fatalf("the full disk refused no write (refused %d): the fault was not exercised", refused)
	}
	if acked["freed"] == 0 {
		t.Fatalf("no write acknowledged after the space was freed: no recovery")
	}
	wantList := sortedPrefixes(want)

	// Everyone converges on the same set: short-TTL entries expire, the
	// rest is what was acknowledged.
	var got []netip.Prefix
	testkit.WaitFor(t, 15*time.Second, "the Manager to hold the acknowledged set", func() bool {
		got = got[:0]
		for _, b := range m.Active() {
			got = append(got, b.Prefix)
		}
		return slices.Equal(got, wantList)
	})
	stored, err := db.ActiveBlackholes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var storedList []netip.Prefix
	for _, b := range stored {
		storedList = append(storedList, b.Prefix)
	}
	slices.SortFunc(storedList, netip.Prefix.Compare)
	if !slices.Equal(storedList, wantList) {
		t.Errorf("store holds %d entries, want %d:\nmissing %v\nextra %v", len(storedList), len(wantList),
			minus(wantList, storedList), minus(storedList, wantList))
	}
	testkit.WaitFor(t, 10*time.Second, "the speaker and the GoBGP peer to hold the acknowledged set", func() bool {
		ps, err := peer.Prefixes()
		if err != nil {
			return false
		}
		slices.SortFunc(ps, netip.Prefix.Compare)
		ann := sp.Announced()
		slices.SortFunc(ann, netip.Prefix.Compare)
		return slices.Equal(ps, wantList) && slices.Equal(ann, wantList)
	})
	if bird != nil {
		var got []netip.Prefix
		testkit.WaitFor(t, 10*time.Second, "BIRD to hold the acknowledged set", testkit.AtMostEvery(200*time.Millisecond, func() bool {
			got = got[:0]
			for _, f := range []routertest.Family{routertest.IPv4, routertest.IPv6} {
				rs, err := bird.Routes(f)
				if err != nil {
					return false
				}
				for _, r := range rs {
					got = append(got, r.Prefix)
				}
			}
			slices.SortFunc(got, netip.Prefix.Compare)
			return slices.Equal(got, wantList)
		}))
		t.Logf("BIRD holds the %d acknowledged routes", len(got))
	}

	stopWatch()
	<-watchDone
	heardUnacked := 0
	for _, ev := range heard {
		if ev.Actor == "resync" {
			// Only a write that failed yet was durable would need one.
			t.Errorf("the watcher heard a resync event: %+v", ev)
		}
		switch ev.Type {
		case EventAdded, EventExtended:
			if !ackedEntries[keyOf(ev.Blackhole)] {
				heardUnacked++
			}
			watched[ev.Blackhole.Prefix] = true
		case EventRemoved, EventExpired:
			delete(watched, ev.Blackhole.Prefix)
		}
	}
	if heardUnacked > 0 {
		t.Errorf("the watcher heard of %d entries no Add acknowledged", heardUnacked)
	}
	t.Logf("the watcher heard %d events", len(heard))
	if w := sortedPrefixes(watched); !slices.Equal(w, wantList) {
		t.Errorf("the watcher's replay holds %d entries, want %d:\nmissing %v\nextra %v", len(w), len(wantList),
			minus(wantList, w), minus(w, wantList))
	}
}

func sortedPrefixes(set map[netip.Prefix]bool) []netip.Prefix {
	var out []netip.Prefix
	for p, ok := range set {
		if ok {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return out
}

// minus returns the elements of a not in b (both sorted).
func minus(a, b []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range a {
		if _, ok := slices.BinarySearchFunc(b, p, netip.Prefix.Compare); !ok {
			out = append(out, p)
		}
	}
	return out
}
