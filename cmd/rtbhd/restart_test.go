package main

// Restarts keep protection (SPEC.md, "Safety defaults and limits"): a
// router that kept rtbhd's routes as stale through graceful restart never
// holds fewer of them at any moment of a SIGTERM or a kill -9 restart.

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

var restartRoutes = flag.Int("rtbh.restart.routes", 0,
	"run TestRestartKeepsProtectionAtScale with this many blackholes (e.g. 20000)")

// TestRestartKeepsProtection: 2,000 blackholes (one in five IPv6) on a real
// BIRD with graceful restart, rtbhd restarted by SIGTERM and by kill -9;
// BIRD's table, sampled every few milliseconds from before the stop until
// after the restart's End-of-RIB, never holds fewer than the full set.
func TestRestartKeepsProtection(t *testing.T) {
	restartKeepsProtection(t, 2000, netip.MustParseAddr("127.0.36.1"), netip.MustParseAddr("127.0.36.2"))
}

// TestRestartKeepsProtectionAtScale is the same with the 20,000
// blackholes (or as many as -rtbh.restart.routes says):
//
//	go test -count=1 -run '^TestRestartKeepsProtectionAtScale$' -v ./cmd/rtbhd -rtbh.restart.routes=20000
func TestRestartKeepsProtectionAtScale(t *testing.T) {
	if *restartRoutes == 0 {
		t.Skip("run with -rtbh.restart.routes=20000")
	}
	restartKeepsProtection(t, *restartRoutes, netip.MustParseAddr("127.0.37.1"), netip.MustParseAddr("127.0.37.2"))
}

func restartKeepsProtection(t *testing.T, n int, speaker, birdAddr netip.Addr) {
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.MaxActive = n + 1000
	cfg.LogLevel = "info"
	d, bird := startWithRestartingBIRD(t, cfg, speaker, birdAddr)

	set := make([]string, n)
	for i := range set {
		if i%5 == 4 {
			set[i] = fmt.Sprintf("2001:db8:%x::%x", i>>16, i&0xffff)
		} else {
			set[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
		}
	}
	start := time.Now()
	addAll(t, d, set)
	bird.WaitRouteCount(t, n, 2*time.Minute)
	t.Logf("%d blackholes on BIRD %s after the first add", n, time.Since(start).Round(time.Millisecond))

	want := n
	for i, restart := range []struct {
		name string
		stop func(*daemon)
	}{
		{"SIGTERM", func(d *daemon) {
			d.stop()
			// No Cease: BIRD keeps the routes as stale (it would flush
			// them at once on a NOTIFICATION).
			if !testkit.Poll(5*time.Second, bird.GracefulRestartActive) {
				t.Fatal("after SIGTERM BIRD is not in graceful restart: a Cease was sent?")
			}
		}},
		{"kill -9", func(d *daemon) {
			d.kill9()
			// No NOTIFICATION either (the kernel closes the socket): BIRD
			// keeps the routes as stale for the restart time rtbhd
			// advertised, 120 s (bgp.graceful_restart_time), less BIRD's
			// jitter of up to a quarter.
			var left time.Duration
			testkit.WaitFor(t, 5*time.Second, "BIRD's restart timer after kill -9", func() bool {
				l, ok, err := bird.RestartTimer()
				left = l
				return err == nil && ok
			})
			if left < 85*time.Second || left > 120*time.Second {
				t.Errorf("after kill -9 BIRD keeps the stale routes %s more, want 90..120 s (restart time 120 s)", left)
			}
		}},
	} {
		w := bird.WatchCount(t, 5*time.Millisecond, 5*time.Minute, want)
		stopped := time.Now()
		restart.stop(d)
		down := time.Since(stopped)
		d = startDaemon(t, d.cfg)
		healthy := time.Since(stopped)
		bird.WaitEstablished(30 * time.Second)
		up := time.Since(stopped)
		caps, err := bird.NeighborGracefulRestart()
		if err != nil {
			t.Fatal(err)
		}
		if !caps.Recovery || !slices.Equal(caps.Preserved, []string{"ipv4", "ipv6"}) {
			t.Errorf("%s: BIRD saw graceful restart %+v, want restart recovery (R bit) and ipv4 and ipv6 preserved (F bits)",
				restart.name, caps)
		}
		// BIRD ends its graceful restart of a family at our End-of-RIB for
		// it ("Neighbor graceful restart active" goes once both came) and
		// then deletes the stale routes rtbhd did not send again.
		testkit.WaitFor(t, time.Minute, "End-of-RIB for both families on BIRD", func() bool {
			return bird.Established() && !bird.GracefulRestartActive()
		})
		synced := time.Since(stopped)
		// A blackhole added now reaches BIRD too, and nothing else changed.
		marker := fmt.Sprintf("198.51.100.%d", 200+i)
		ctl(t, d, "add", "--ttl", "1h", "--reason", "after the "+restart.name+" restart", marker)
		want++
		bird.WaitRouteCount(t, want, time.Minute)
		t.Logf("%s: rtbhd stopped in %s, healthy again at +%s, session up at +%s, End-of-RIB on BIRD at +%s, a new blackhole by +%s",
			restart.name, down.Round(time.Millisecond), healthy.Round(time.Millisecond), up.Round(time.Millisecond),
			synced.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
		routertest.CheckNeverBelow(t, restart.name+" restart", w.Stop(), want-1, stopped)
	}
	d.stop()
}

// addAll adds every address as a blackhole through the API, 64 calls in
// flight.
func addAll(t *testing.T, d *daemon, addrs []string) {
	t.Helper()
	conns := make([]clients, 4)
	for i := range conns {
		conns[i] = dial(t, d.apiAddr(), testToken)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[w%len(conns)]
			for {
				i := int(next.Add(1)) - 1
				if i >= len(addrs) {
					return
				}
				if _, err := c.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: addrs[i], Reason: "restart"}); err != nil {
					if failed.Add(1) <= 5 {
						t.Errorf("adding %s: %v", addrs[i], err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d adds failed", failed.Load())
	}
}

// startWithRestartingBIRD starts rtbhd on speaker with one border
// neighbor: a real BIRD on birdAddr with graceful restart, which waits for
// rtbhd to connect (when rtbhd is back is then up to rtbhd, not to BIRD's
// connect-retry timer). It returns once the session is up.
func startWithRestartingBIRD(t *testing.T, cfg daemonConfig, speaker, birdAddr netip.Addr) (*daemon, *routertest.BIRD) {
	t.Helper()
	cfg.BGPAddr = speaker.String()
	cfg.BGPPort = testkit.FreePort(t, speaker)
	bird := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: birdAddr, LocalASN: 64501, PeerAddr: speaker,
		PeerPort: cfg.BGPPort, PeerASN: 64500, GracefulRestart: true, Passive: true})
	cfg.Neighbors = fmt.Sprintf(`    - address: %s
      asn: 64501
      role: border
      port: %d
      communities: ["65535:666"]`, birdAddr, bird.Port())
	d := startDaemon(t, cfg)
	bird.WaitEstablished(20 * time.Second)
	return d, bird
}
