package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

var hostile = flag.Duration("rtbh.hostile", 60*time.Second,
	"how long TestHostileReports floods rtbhd (0 skips it; e.g. 10s for a short local run)")

var hostileTracked = flag.Int("rtbh.hostile.tracked", 100000,
	"reports.max_tracked_addresses in TestHostileReports (1000000 is the default of the SPEC)")

var trackedAddresses = regexp.MustCompile(`(?m)^rtbh_reports_tracked_addresses (\S+)$`)

// procStatus returns VmRSS and VmHWM (peak) of pid in bytes.
func procStatus(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		t.Fatalf("no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm
}

// Memory under hostile load (SPEC "Safety defaults and limits"): a partner
// at its rate limit (20 calls/s here, twice that attempted, so calls beyond
// it get RESOURCE_EXHAUSTED) sending 1,000-report batches of distinct
// addresses for -rtbh.hostile (60 s) keeps rtbhd's RSS under 500 MB, and
// with reports.max_tracked_addresses at 100,000 (-rtbh.hostile.tracked) the scores kept in memory
// never exceed it. It logs reports accepted per second and the peak RSS.
// -short skips it.
func TestHostileReports(t *testing.T) {
	run := *hostile
	if run <= 0 || testing.Short() {
		t.Skip("skipped by -short or -rtbh.hostile=0")
	}
	const (
		rate     = 20 // partner calls per second (burst 40)
		batch    = 1000
		rssLimit = 500 << 20
	)
	maxTracked := int64(*hostileTracked)
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.LogLevel = "warn"
	cfg.Rate = rate
	cfg.MaxTracked = int(maxTracked)
	d := startDaemon(t, cfg)
	pid := d.cmd.Process.Pid
	partner := dial(t, d.apiAddr(), partnerToken)

	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var (
		next                       atomic.Uint32 // next address: 10.0.0.0 + next
		accepted, calls, exhausted atomic.Int64
		otherErrs                  atomic.Int64
		firstErr                   atomic.Value
		maxSeen                    atomic.Int64 // highest rtbh_reports_tracked_addresses seen
		peakRSS                    atomic.Int64 // highest VmRSS sampled
	)
	sample := func() {
		rss, _ := procStatus(t, pid)
		if rss > peakRSS.Load() {
			peakRSS.Store(rss)
		}
		if m := trackedAddresses.FindStringSubmatch(d.metrics()); m != nil {
			if n, _ := strconv.ParseFloat(m[1], 64); int64(n) > maxSeen.Load() {
				maxSeen.Store(int64(n))
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				sample()
			}
		}
	})
	// Twice the allowed rate is attempted, from 4 connections' worth of
	// concurrency, so the partner is at its limit throughout.
	pace := time.NewTicker(time.Second / (2 * rate))
	defer pace.Stop()
	start := time.Now()
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-pace.C:
				}
				base := next.Add(batch) - batch
				reps := make([]*rtbhv1.Report, batch)
				for i := range reps {
					k := base + uint32(i)
					reps[i] = &rtbhv1.Report{Address: fmt.Sprintf("10.%d.%d.%d", byte(k>>16), byte(k>>8), byte(k)), Kind: "spam"}
				}
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := partner.rep.SubmitReports(cctx, &rtbhv1.SubmitReportsRequest{Reports: reps})
				ccancel()
				calls.Add(1)
				switch {
				case err == nil:
					accepted.Add(int64(resp.Accepted))
				case status.Code(err) == codes.ResourceExhausted:
					exhausted.Add(1)
				default:
					otherErrs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	sample()
	rss, hwm := procStatus(t, pid)
	t.Logf("%s: %d calls, %d refused RESOURCE_EXHAUSTED, %d other errors; %d reports accepted (%.0f/s); "+
		"tracked addresses at most %d (limit %d); RSS now %d MB, peak sampled %d MB, VmHWM %d MB",
		elapsed.Round(time.Millisecond), calls.Load(), exhausted.Load(), otherErrs.Load(), accepted.Load(),
		float64(accepted.Load())/elapsed.Seconds(), maxSeen.Load(), maxTracked, rss>>20, peakRSS.Load()>>20, hwm>>20)

	if n := otherErrs.Load(); n > 0 {
		t.Errorf("%d calls failed other than RESOURCE_EXHAUSTED, first: %v", n, firstErr.Load())
	}
	if exhausted.Load() == 0 {
		t.Errorf("no call was refused RESOURCE_EXHAUSTED: the partner was not at its rate limit")
	}
	// The bucket allows the burst (2 x rate) plus rate per second.
	if okCalls, most := accepted.Load()/batch, int64(2*rate+rate*elapsed.Seconds()+rate); okCalls > most {
		t.Errorf("%d calls accepted in %s, the rate limit allows at most %d", okCalls, elapsed, most)
	}
	if accepted.Load() <= maxTracked {
		t.Errorf("only %d reports accepted: too few to test max_tracked_addresses %d", accepted.Load(), maxTracked)
	}
	if got := maxSeen.Load(); got == 0 || got > maxTracked {
		t.Errorf("rtbh_reports_tracked_addresses reached %d, want 1..%d", got, maxTracked)
	}
	if hwm > rssLimit {
		t.Errorf("rtbhd peak RSS (VmHWM) %d MB, limit 500 MB", hwm>>20)
	}
	d.stop()
}
