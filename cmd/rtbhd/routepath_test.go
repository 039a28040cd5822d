package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

var (
	routePath       = flag.Int("rtbh.routepath", 0, "run TestRoutePathCPU with this many routes (e.g. 100000)")
	routePathStrict = flag.Bool("rtbh.routepath.strict", false, "fail TestRoutePathCPU when a target is missed (else only report it)")
)

// cpuWatch is a process's CPU time and the wall clock from a start.
type cpuWatch struct {
	pid  int
	cpu0 time.Duration
	t0   time.Time
}

func startWatch(t *testing.T, pid int) cpuWatch {
	t.Helper()
	c, err := routertest.ProcessCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	return cpuWatch{pid: pid, cpu0: c, t0: time.Now()}
}

// stop returns the CPU used and the wall time since the start.
func (w cpuWatch) stop(t *testing.T) (cpu, wall time.Duration) {
	t.Helper()
	c, err := routertest.ProcessCPU(w.pid)
	if err != nil {
		t.Fatal(err)
	}
	return c - w.cpu0, time.Since(w.t0)
}

// waitBIRD waits until BIRD holds exactly n routes from the speaker,
// polling its channel counters every 10 ms.
func waitBIRD(t *testing.T, bird *routertest.BIRD, n int, timeout time.Duration) {
	t.Helper()
	rc, err := bird.RouteCounter()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got int
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if got, err = rc.Count(); err == nil && got == n {
			return
		}
		<-tick.C
	}
	t.Fatalf("BIRD holds %d routes (err %v), want %d", got, err, n)
}

type routeFigure struct {
	name      string
	cpu, wall time.Duration
	n         int
}

func (f routeFigure) perRoute() float64 { return float64(f.cpu.Microseconds()) / float64(f.n) }

// TestRoutePathCPU measures the route path as PERFORMANCE.md defines it,
// in one run against one real BIRD border router: first a bare embedded
// GoBGP v3 speaker (its own process, one AddPath/DeletePath per route,
// nothing stored) announces and withdraws N host routes; then the real
// rtbhd gets the same N routes through gRPC — single AddBlackhole calls
// from a load loop (20 in flight on 4 connections, in this test process),
// then single RemoveBlackhole calls — and then through `rtbhctl add
// --file` and `remove --file`. Each figure is the process's own CPU time
// (/proc/PID/stat: user + system) from the first call until BIRD holds
// them all (or none), divided by N; the load client's CPU is not counted.
// Targets: rtbhd <= 1.5x the bare speaker's CPU per route each way, and the
// file import and removal within 1.5x the bare speaker's wall time.
//
//	go test -count=1 -run TestRoutePathCPU -v -timeout 20m ./cmd/rtbhd -rtbh.routepath=100000 [-rtbh.routepath.strict]
func TestRoutePathCPU(t *testing.T) {
	n := *routePath
	if n == 0 {
		t.Skip("route path benchmark: run with -rtbh.routepath=100000")
	}
	speaker, birdAddr := netip.MustParseAddr("127.0.40.1"), netip.MustParseAddr("127.0.40.2")
	speakerPort := testkit.FreePort(t, speaker)
	bird := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: birdAddr, LocalASN: 64501,
		PeerAddr: speaker, PeerPort: speakerPort, PeerASN: 64500})
	timeout := time.Duration(n/100+60) * time.Second

	// The yardstick.
	bare := routertest.StartBareSpeaker(t, routertest.BareConfig{LocalAddr: speaker, LocalASN: 64500,
		PeerAddr: birdAddr, PeerPort: bird.Port(), PeerASN: 64501})
	testkit.WaitFor(t, 30*time.Second, "the bare speaker's session", func() bool { return bare.Established() && bird.Established() })
	var figs []routeFigure
	w := startWatch(t, bare.Pid())
	bare.Add(0, n)
	waitBIRD(t, bird, n, timeout)
	cpu, wall := w.stop(t)
	bareAdd := routeFigure{"bare GoBGP adds (AddPath each)", cpu, wall, n}
	w = startWatch(t, bare.Pid())
	bare.Delete(0, n)
	waitBIRD(t, bird, 0, timeout)
	cpu, wall = w.stop(t)
	bareDel := routeFigure{"bare GoBGP removes (DeletePath each)", cpu, wall, n}
	figs = append(figs, bareAdd, bareDel)
	bare.Stop()
	testkit.WaitFor(t, 30*time.Second, "BIRD to see the bare speaker go", func() bool { return !bird.Established() })

	// rtbhd, same address, same BIRD.
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.LogLevel = "info" // the default
	cfg.MaxActive = n + 1000
	cfg.BGPAddr, cfg.BGPPort = speaker.String(), speakerPort
	cfg.Neighbors = fmt.Sprintf(`    - address: %s
      asn: 64501
      role: border
      port: %d
      communities: ["65535:666"]`, birdAddr, bird.Port())
	d := startDaemon(t, cfg)
	pid := d.cmd.Process.Pid
	testkit.WaitFor(t, 30*time.Second, "rtbhd's session to BIRD", bird.Established)
	prefixes := make([]string, n)
	for i := range n {
		prefixes[i] = routertest.BarePrefix(i).Addr().String()
	}
	ctx := context.Background()
	load := func(call func(c clients, p string) error) {
		conns := make([]clients, 4)
		for i := range conns {
			conns[i] = dial(t, d.apiAddr(), testToken)
		}
		var (
			next   atomic.Int64
			failed atomic.Int64
			wg     sync.WaitGroup
		)
		for k := range 20 {
			wg.Go(func() {
				c := conns[k%len(conns)]
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					if err := call(c, prefixes[i]); err != nil && failed.Add(1) < 5 {
						t.Errorf("%s: %v", prefixes[i], err)
					}
				}
			})
		}
		wg.Wait()
	}
	// The floor of a single call: the standard health check, no store, no
	// route, at the same concurrency.
	w = startWatch(t, pid)
	load(func(c clients, _ string) error {
		_, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
	cpu, wall = w.stop(t)
	floor := routeFigure{"rtbhd health Check (gRPC floor)", cpu, wall, n}

	// RTBH_ROUTEPATH_PROFILE=DIR: a 5 s CPU profile of rtbhd at the start
	// of each rtbhd phase, in DIR/<phase>.pprof.
	profile := func(name string) func() {
		dir := os.Getenv("RTBH_ROUTEPATH_PROFILE")
		if dir == "" {
			return func() {}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=5", cfg.MetricsPort))
			if err != nil {
				t.Log(err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(dir, name+".pprof"))
			if err != nil {
				t.Log(err)
				return
			}
			io.Copy(f, resp.Body)
			f.Close()
		}()
		return func() { <-done }
	}
	w = startWatch(t, pid)
	prof := profile("add")
	load(func(c clients, p string) error {
		_, err := c.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: p, Reason: "route path"})
		return err
	})
	waitBIRD(t, bird, n, timeout)
	cpu, wall = w.stop(t)
	figs = append(figs, routeFigure{"rtbhd AddBlackhole (20 in flight)", cpu, wall, n})
	prof()
	w = startWatch(t, pid)
	prof = profile("remove")
	load(func(c clients, p string) error {
		_, err := c.bh.RemoveBlackhole(ctx, &rtbhv1.RemoveBlackholeRequest{Prefix: p, Reason: "route path"})
		return err
	})
	waitBIRD(t, bird, 0, timeout)
	cpu, wall = w.stop(t)
	figs = append(figs, routeFigure{"rtbhd RemoveBlackhole (20 in flight)", cpu, wall, n})
	prof()

	// The import: rtbhctl add --file, then remove --file.
	file := filepath.Join(t.TempDir(), "import.txt")
	if err := os.WriteFile(file, []byte("# route path import\n"+strings.Join(prefixes, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctl := func(args ...string) {
		cmd := exec.Command(rtbhctlBin, append([]string{"--addr", d.apiAddr(), "--token", testToken}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("rtbhctl %v: %v\n%s", args, err, out)
		}
	}
	w = startWatch(t, pid)
	prof = profile("addfile")
	ctl("add", "--file", file, "--reason", "import")
	waitBIRD(t, bird, n, timeout)
	cpu, wall = w.stop(t)
	fileAdd := routeFigure{"rtbhd via rtbhctl add --file", cpu, wall, n}
	prof()
	w = startWatch(t, pid)
	prof = profile("removefile")
	ctl("remove", "--file", file, "--reason", "import")
	waitBIRD(t, bird, 0, timeout)
	cpu, wall = w.stop(t)
	fileDel := routeFigure{"rtbhd via rtbhctl remove --file", cpu, wall, n}
	prof()
	figs = append(figs, fileAdd, fileDel)

	var report strings.Builder
	fmt.Fprintf(&report, "%d routes to BIRD %s, CPU of the program per route until BIRD holds them all (or none):\n", n, birdAddr)
	fmt.Fprintf(&report, "  %-40s %10s %12s %10s %12s\n", "", "CPU", "µs CPU/route", "x bare", "wall")
	for i, f := range figs {
		anchor := bareAdd
		if i%2 == 1 {
			anchor = bareDel
		}
		fmt.Fprintf(&report, "  %-40s %10s %12.1f %10.2f %12s (%.2fx bare wall)\n", f.name, f.cpu.Round(time.Millisecond), f.perRoute(),
			f.perRoute()/anchor.perRoute(), f.wall.Round(time.Millisecond), f.wall.Seconds()/anchor.wall.Seconds())
	}
	fmt.Fprintf(&report, "  %-40s %10s %12.1f %10.2f %12s (per call, no route)\n", floor.name, floor.cpu.Round(time.Millisecond), floor.perRoute(),
		floor.perRoute()/bareAdd.perRoute(), floor.wall.Round(time.Millisecond))
	t.Log(report.String())
	miss := t.Logf
	if *routePathStrict {
		miss = t.Errorf
	}
	for i, f := range figs[2:] {
		anchor := bareAdd
		if i%2 == 1 {
			anchor = bareDel
		}
		if r := f.perRoute() / anchor.perRoute(); r > 1.5 {
			miss("TARGET MISSED: %s: %.2fx the bare speaker's CPU per route (target <= 1.5x)", f.name, r)
		}
	}
	for _, p := range [][2]routeFigure{{fileAdd, bareAdd}, {fileDel, bareDel}} {
		if r := p[0].wall.Seconds() / p[1].wall.Seconds(); r > 1.5 {
			miss("TARGET MISSED: %s took %.2fx the bare speaker's wall time (target <= 1.5x)", p[0].name, r)
		}
	}
	d.stop()
}
