package fanout

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

const benchBatch = 256 // flows per HandleFlows call, about 36 datagrams

func subscriber(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func subscriber6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 4: byte(i >> 16), 5: byte(i >> 8), 6: byte(i), 15: 1})
}

// runBench feeds samples in batches, b.N samples in all, the clock moving
// 10 ms per batch.
func runBench(b *testing.B, e *Engine, samples []domain.Flow, start time.Time) {
	b.Helper()
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	now := start
	off := 0
	for done := 0; done < b.N; {
		n := min(benchBatch, b.N-done, len(samples)-off)
		e.HandleFlowsAt(samples[off:off+n], now)
		done += n
		off += n
		if off == len(samples) {
			off = 0
		}
		now = now.Add(10 * time.Millisecond)
	}
	b.StopTimer()
	// The machine is shared: process CPU time per sample is steadier than
	// wall time when other work competes for the cores.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/sample")
	b.ReportMetric(float64(e.Stats().Tracked), "tracked")
}

// cpuTime returns the process's user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// warm creates the state of every source in samples.
func warm(e *Engine, samples []domain.Flow, at time.Time) {
	for off := 0; off < len(samples); off += benchBatch {
		e.HandleFlowsAt(samples[off:min(off+benchBatch, len(samples))], at)
	}
}

func benchEngine(b *testing.B) *Engine {
	cfg := Config{
		SubscriberPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")},
		NeverBlackhole:     []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")},
		Window:             10 * time.Minute,
		Rules:              []Rule{SMTPFanout()},
	}
	e, err := New(cfg, func(Firing) {}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkUpdate measures the detector per sample.
//
//   - tracked-100k: every sample is tcp/25 from one of 100,000 tracked
//     subscribers, each talking to its smarthost (random order: the state
//     is not in cache, as in production).
//   - tracked-100k-v6: the same with IPv6 sources.
//   - fanout-1k: 1,000 sources each spamming random destinations (exact
//     set and sketch path).
//   - mixed-100k: 90% of samples match no rule (web, DNS, submission),
//     10% are the tracked tcp/25 samples.
//   - nomatch: no sample matches a rule.
func BenchmarkUpdate(b *testing.B) {
	const sources = 100_000
	smarthost := netip.MustParseAddr("192.0.2.25")
	rng := rand.New(rand.NewPCG(7, 7))
	perm := func(n int) []int { return rng.Perm(n) }

	b.Run("tracked-100k", func(b *testing.B) {
		e := benchEngine(b)
		var samples []domain.Flow
		for r := 0; r < 4; r++ {
			for _, i := range perm(sources) {
				samples = append(samples, smtp(subscriber(i), smarthost, 256))
			}
		}
		warm(e, samples[:sources], t0)
		runBench(b, e, samples, t0.Add(time.Second))
	})
	b.Run("tracked-100k-v6", func(b *testing.B) {
		e := benchEngine(b)
		var samples []domain.Flow
		for r := 0; r < 4; r++ {
			for _, i := range perm(sources) {
				samples = append(samples, smtp(subscriber6(i), netip.MustParseAddr("2001:db8:ffff::25"), 256))
			}
		}
		warm(e, samples[:sources], t0)
		runBench(b, e, samples, t0.Add(time.Second))
	})
	b.Run("fanout-1k", func(b *testing.B) {
		e := benchEngine(b)
		e.c.rules[0].MinDestinations = 1 << 30
		e.c.rules[0].minDest = 1 << 30
		e.c.rules[0].halfDest = 1 << 30 // observe only: no partial evidence either
		var samples []domain.Flow
		for r := 0; r < 400; r++ {
			for _, i := range perm(1000) {
				samples = append(samples, smtp(subscriber(i), nthDst(int(rng.Uint32()>>8)), 256))
			}
		}
		warm(e, samples, t0)
		runBench(b, e, samples, t0.Add(time.Second))
	})
	b.Run("mixed-100k", func(b *testing.B) {
		e := benchEngine(b)
		var samples []domain.Flow
		for r := 0; r < 4; r++ {
			for _, i := range perm(sources) {
				s := smtp(subscriber(i), smarthost, 256)
				switch x := rng.IntN(10); {
				case x < 6:
					s.DstPort = 443
					s.Dst = nthDst(rng.IntN(5000))
				case x < 8:
					s.Protocol, s.DstPort, s.TCPFlags = 17, 53, 0
					s.Dst = netip.MustParseAddr("192.0.2.53")
				case x < 9:
					s.DstPort = 587
				}
				samples = append(samples, s)
			}
		}
		warm(e, samples, t0)
		runBench(b, e, samples, t0.Add(time.Second))
	})
	b.Run("nomatch", func(b *testing.B) {
		e := benchEngine(b)
		var samples []domain.Flow
		for _, i := range perm(sources) {
			s := smtp(subscriber(i), nthDst(i), 256)
			s.DstPort = 443
			samples = append(samples, s)
		}
		runBench(b, e, samples, t0)
	})
}

// populate tracks n IPv4 subscribers (with one, two or three
// destinations each, like subscribers using a smarthost) and returns the
// engine.
func populate(tb testing.TB, n int) *Engine {
	cfg := Config{
		SubscriberPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Window:             10 * time.Minute,
		MaxTrackedSources:  n,
		Rules:              []Rule{SMTPFanout()},
	}
	e, err := New(cfg, func(Firing) {}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	batch := make([]domain.Flow, 0, benchBatch)
	for i := 0; i < n; i++ {
		for d := 0; d <= i%3; d++ {
			batch = append(batch, smtp(subscriber(i), nthDst(d), 256))
		}
		if len(batch) >= benchBatch-3 {
			e.HandleFlowsAt(batch, t0)
			batch = batch[:0]
		}
	}
	e.HandleFlowsAt(batch, t0)
	return e
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMemory1M checks the heap cost of 1,000,000 tracked sources against
// the 300 MB target.
func TestMemory1M(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~250 MB; skipped with -short")
	}
	before := heapAlloc()
	e := populate(t, 1_000_000)
	after := heapAlloc()
	st := e.Stats()
	if st.Tracked != 1_000_000 {
		t.Fatalf("tracked %d", st.Tracked)
	}
	mb := float64(after-before) / (1 << 20)
	t.Logf("1,000,000 tracked sources: heap %.1f MiB (%.0f bytes per source)", mb, float64(after-before)/1e6)
	if mb > 300 {
		t.Errorf("heap %.1f MiB for 1M tracked sources, want <= 300", mb)
	}
	runtime.KeepAlive(e)
}

// BenchmarkMemory1M reports the heap for 1,000,000 tracked sources
// (HeapAlloc after GC) as MiB/1M-sources.
func BenchmarkMemory1M(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		before := heapAlloc()
		e := populate(b, 1_000_000)
		after := heapAlloc()
		b.ReportMetric(float64(after-before)/(1<<20), "MiB/1M-sources")
		runtime.KeepAlive(e)
	}
}
