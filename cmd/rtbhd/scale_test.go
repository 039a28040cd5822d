package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

var (
	scale       = flag.Int("rtbh.scale", 0, "run TestScale with this many blackholes (e.g. 100000)")
	scaleStrict = flag.Bool("rtbh.scale.strict", false, "fail TestScale when a direction takes more than 20 s (else only report it)")
)

// startWithGoBGPPeer starts an in-process GoBGP peer (AS 64501) at peer
// and rtbhd (cfg, BGP on speaker) with it as a border neighbor, and waits
// for the session.
func startWithGoBGPPeer(t *testing.T, cfg daemonConfig, speaker, peerAddr netip.Addr) (*daemon, *routertest.GoBGP) {
	t.Helper()
	peer := routertest.StartGoBGP(t, routertest.GoBGPConfig{LocalAddr: peerAddr, LocalASN: 64501,
		PeerAddr: speaker, PeerASN: 64500})
	cfg.BGPAddr = speaker.String()
	cfg.BGPPort = testkit.FreePort(t, speaker)
	cfg.Neighbors = fmt.Sprintf(`    - address: %s
      asn: 64501
      role: border
      port: %d
      communities: ["65535:666"]`, peerAddr, peer.Port())
	d := startDaemon(t, cfg)
	testkit.WaitFor(t, 20*time.Second, "session to the GoBGP peer", peer.Established)
	return d, peer
}

// vmHWM returns the peak resident set size of pid in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestScale pushes N blackholes through the gRPC API of a real rtbhd to an
// in-process GoBGP peer, then removes them all, and reports how long each
// direction took and rtbhd's peak RSS. Targets for N = 100,000 on the
// 2-core reference machine: <= 20 s each way, RSS <= 500 MB.
//
//	go test -run TestScale -v ./cmd/rtbhd -rtbh.scale=100000 [-rtbh.scale.strict]
func TestScale(t *testing.T) {
	n := *scale
	if n == 0 {
		t.Skip("scale test: run with -rtbh.scale=100000")
	}
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.MaxActive = n + 1000
	cfg.LogLevel = "warn" // a log line per call would measure the log, not rtbhd
	d, peer := startWithGoBGPPeer(t, cfg, netip.MustParseAddr("127.0.33.1"), netip.MustParseAddr("127.0.33.2"))

	prefixes := make([]string, n)
	for i := range n {
		prefixes[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
	}
	const workers = 64
	run := func(what string, call func(c clients, p string) error, wantCount int) time.Duration {
		conns := make([]clients, 4)
		for i := range conns {
			conns[i] = dial(t, d.apiAddr(), testToken)
		}
		var (
			next   atomic.Int64
			failed atomic.Int64
			wg     sync.WaitGroup
		)
		start := time.Now()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := conns[w%len(conns)]
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					if err := call(c, prefixes[i]); err != nil {
						if failed.Add(1) < 5 {
							t.Errorf("%s %s: %v", what, prefixes[i], err)
						}
					}
				}
			}()
		}
		wg.Wait()
		acked := time.Since(start)
		var got int
		testkit.WaitFor(t, 120*time.Second, fmt.Sprintf("%d routes on the peer", wantCount), func() bool {
			got, _ = peer.Count()
			return got == wantCount
		})
		took := time.Since(start)
		t.Logf("%d %s: all acknowledged in %s, peer holds %d routes after %s (%.0f/s)",
			n, what, acked.Round(time.Millisecond), got, took.Round(time.Millisecond), float64(n)/took.Seconds())
		return took
	}
	ctx := context.Background()
	if prof := os.Getenv("RTBH_SCALE_PROFILE"); prof != "" {
		go func() {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=10", cfg.MetricsPort))
			if err != nil {
				t.Log(err)
				return
			}
			defer resp.Body.Close()
			f, _ := os.Create(prof)
			io.Copy(f, resp.Body)
			f.Close()
		}()
	}
	up := run("adds", func(c clients, p string) error {
		_, err := c.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: p, Reason: "scale"})
		return err
	}, n)
	down := run("removals", func(c clients, p string) error {
		_, err := c.bh.RemoveBlackhole(ctx, &rtbhv1.RemoveBlackholeRequest{Prefix: p, Reason: "scale"})
		return err
	}, 0)
	rss := vmHWM(t, d.cmd.Process.Pid)
	t.Logf("rtbhd peak RSS (VmHWM): %d MB", rss>>20)
	if n >= 100000 {
		if up > 20*time.Second || down > 20*time.Second {
			// Wall time on a shared 2-core box: a failure only with
			// -rtbh.scale.strict, so that a noisy neighbour cannot fail CI.
			report := t.Logf
			if *scaleStrict {
				report = t.Errorf
			}
			report("TARGET MISSED: adds took %s, removals %s: target is <= 20 s each way", up, down)
		}
		if rss > 500<<20 {
			t.Errorf("rtbhd peak RSS %d MB, target <= 500 MB", rss>>20)
		}
	}
	d.stop()
}

var trackedSources = regexp.MustCompile(`(?m)^rtbh_detector_tracked_sources (\S+)$`)

var sources = flag.Int("rtbh.sources", 0, "run TestManySources with this many distinct sFlow sources (e.g. 1000000)")

// TestManySources sends one tcp/25 sample from each of N distinct
// subscriber addresses to a real rtbhd and reports its peak RSS with all of
// them tracked. Target for N = 1,000,000 (PERFORMANCE.md): RSS <= 500 MB.
//
//	go test -run TestManySources -v ./cmd/rtbhd -rtbh.sources=1000000
func TestManySources(t *testing.T) {
	n := *sources
	if n == 0 {
		t.Skip("run with -rtbh.sources=1000000")
	}
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.LogLevel = "warn"
	cfg.Subscribers = `"10.0.0.0/8"`
	d := startDaemon(t, cfg)
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", cfg.SFlowPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream := sflowtest.NewStream(netip.MustParseAddr("192.0.2.11"), 1024)
	pkts := make([]sflowtest.Packet, 7)
	// 64 datagrams a millisecond tick, ~64k datagrams/s: within the socket
	// buffer.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for i := 0; i < n; i += len(pkts) {
		for j := range pkts {
			k := i + j
			pkts[j] = sflowtest.Packet{Src: netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)}),
				Dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(k)}), Protocol: sflowtest.ProtoTCP,
				SrcPort: 40000, DstPort: 25, TCPFlags: sflowtest.TCPSyn}
		}
		if _, err := conn.Write(stream.Datagram(pkts...)); err != nil {
			t.Fatal(err)
		}
		if (i/7)%64 == 63 {
			<-tick.C
		}
	}
	var tracked float64
	testkit.WaitFor(t, 30*time.Second, "rtbhd to track the sources", func() bool {
		m := trackedSources.FindStringSubmatch(d.metrics())
		if m != nil {
			tracked, _ = strconv.ParseFloat(m[1], 64)
		}
		return tracked >= float64(n)*0.99
	})
	rss := vmHWM(t, d.cmd.Process.Pid)
	t.Logf("%d sources sent in %s; rtbhd tracks %.0f; peak RSS (VmHWM) %d MB", n, time.Since(start).Round(time.Millisecond), tracked, rss>>20)
	if n >= 1000000 && rss > 500<<20 {
		t.Errorf("rtbhd peak RSS %d MB with %d sources, target <= 500 MB", rss>>20, n)
	}
	d.stop()
}
