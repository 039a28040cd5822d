package bgp

import (
	"context"
	"flag"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

var scaleRoutes = flag.Int("bgp.scale", 0, "run TestScale with this many /32 routes (e.g. 100000)")
var scalePeers = flag.Int("bgp.scale-peers", 1, "receiving GoBGP peers in TestScale")
var scaleBatch = flag.Int("bgp.scale-batch", 1000, "prefixes per Announce/Withdraw call in TestScale")

// TestScale pushes -bgp.scale IPv4 /32s to in-process GoBGP peers and
// withdraws them again, reporting the seconds each way (until the last peer
// holds all routes / none). Run:
//
//	go test ./bgp -run TestScale -v -bgp.scale=100000
func TestScale(t *testing.T) {
	n := *scaleRoutes
	if n <= 0 {
		t.Skip("scale test: pass -bgp.scale=100000 to run")
	}
	ctx := context.Background()
	me := testAddr(t)
	var rs []*receiver
	var nbrs []Neighbor
	for range *scalePeers {
		r := startReceiver(t, 64501, me, 64500, receiverOpts{})
		rs = append(rs, r)
		nbrs = append(nbrs, r.neighbor(RoleBorder))
		nbrs[len(nbrs)-1].Communities = []string{"65535:666"}
	}
	s := newTestSpeaker(t, me, Config{Neighbors: nbrs, DefaultMaxRoutes: n, GracefulRestart: true})
	for _, r := range rs {
		waitEstablished(t, s, r.addr)
	}
	prefixes := make([]netip.Prefix, n)
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := range prefixes {
		a := base
		a[1], a[2], a[3] = byte(i>>16), byte(i>>8), byte(i)
		prefixes[i] = netip.PrefixFrom(netip.AddrFrom4(a), 32)
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	allHave := func(want int) func() bool {
		// Counting walks the peers' tables, in this process whose CPU time
		// is reported: count at most five times a second.
		return testkit.AtMostEvery(200*time.Millisecond, func() bool {
			for _, r := range rs {
				if r.count(t) != want {
					return false
				}
			}
			return true
		})
	}
	var ms runtime.MemStats
	start, cpu0 := time.Now(), cpu()
	batch := max(*scaleBatch, 1)
	for i := 0; i < n; i += batch {
		if err := s.Announce(ctx, prefixes[i:min(i+batch, n)]); err != nil {
			t.Fatal(err)
		}
	}
	queued := time.Since(start)
	testkit.WaitFor(t, 120*time.Second, "all routes on the peers", allHave(n))
	up := time.Since(start)
	runtime.ReadMemStats(&ms)
	t.Logf("batches of %d", batch)
	t.Logf("announce %d routes to %d peer(s): %.2fs (Announce returned after %.2fs), CPU %.2fs (speaker+peers), heap %d MB",
		n, len(rs), up.Seconds(), queued.Seconds(), (cpu() - cpu0).Seconds(), ms.HeapAlloc>>20)

	start, cpu0 = time.Now(), cpu()
	for i := 0; i < n; i += batch {
		if err := s.Withdraw(ctx, prefixes[i:min(i+batch, n)]); err != nil {
			t.Fatal(err)
		}
	}
	queued = time.Since(start)
	testkit.WaitFor(t, 120*time.Second, "all routes withdrawn on the peers", allHave(0))
	t.Logf("withdraw %d routes from %d peer(s): %.2fs (Withdraw returned after %.2fs), CPU %.2fs (speaker+peers)",
		n, len(rs), time.Since(start).Seconds(), queued.Seconds(), (cpu() - cpu0).Seconds())
}
