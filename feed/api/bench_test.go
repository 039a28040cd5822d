package api

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// BenchmarkSubmitReports measures durable report throughput over loopback
// gRPC: concurrent partner clients, each on its own connection, sending
// batches of 100. One op is one batch; every response means the batch is
// committed to SQLite, and the store's count is checked at the end.
func BenchmarkSubmitReports(b *testing.B) {
	for _, clients := range []int{4, 16} {
		b.Run(fmt.Sprintf("clients=%d/batch=100", clients), func(b *testing.B) {
			b.ReportAllocs()
			benchSubmit(b, clients)
		})
	}
}

func benchSubmit(b *testing.B, clients int) {
	b.Helper()
	m, db := newBackendDB(b, testPolicy())
	p := client("bench", RolePartner, "bench-token", "203.0.113.0/24")
	p.Trust, p.Rate = 0.01, 0 // never reaches the threshold; unlimited rate
	ts := startServer(b, Config{Clients: []Client{p}}, m, nil)
	conns := make([]rtbhv1.ReportServiceClient, clients)
	for i := range conns {
		conns[i] = rtbhv1.NewReportServiceClient(dial(b, ts.addr, nil))
	}
	ctx := withToken(context.Background(), "bench-token")
	var next atomic.Int64
	var accepted atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1) - 1
				if n >= int64(b.N) {
					return
				}
				req := &rtbhv1.SubmitReportsRequest{Reports: make([]*rtbhv1.Report, 100)}
				for i := range req.Reports {
					k := uint32(n*100 + int64(i))
					a := netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})
					req.Reports[i] = &rtbhv1.Report{Address: a.String(), Kind: "spam", Evidence: "bench"}
				}
				resp, err := conns[c].SubmitReports(ctx, req)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				accepted.Add(int64(resp.Accepted))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	if got := accepted.Load(); got != int64(b.N)*100 {
		b.Fatalf("accepted %d of %d reports", got, b.N*100)
	}
	stored, err := db.CountReports(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if int64(stored) != accepted.Load() {
		b.Fatalf("store holds %d reports, %d were acknowledged", stored, accepted.Load())
	}
	b.ReportMetric(float64(accepted.Load())/elapsed.Seconds(), "reports/s")
}

// BenchmarkAddBlackholeLatency sends AddBlackhole at a paced 1,000
// requests/s (each request on its own goroutine, so a slow answer does not
// slow the pace) and reports the latency percentiles. One op is one
// request; each adds a new host route, recorded and announced. The
// "backend" sub-benchmark calls detector.Manager.Add directly at the same
// pace, so the difference is what the gRPC API adds.
func BenchmarkAddBlackholeLatency(b *testing.B) {
	b.Run("grpc", func(b *testing.B) {
		m := benchManager(b)
		op := client("noc", RoleOperator, "noc-token")
		ts := startServer(b, Config{Clients: []Client{op}}, m, nil)
		bh := rtbhv1.NewBlackholeServiceClient(dial(b, ts.addr, nil))
		ctx := withToken(context.Background(), "noc-token")
		if _, err := bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{}); err != nil { // warm up
			b.Fatal(err)
		}
		pacedAdds(b, m, func(a netip.Addr) error {
			_, err := bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: a.String(), Reason: "bench"})
			return err
		})
	})
	b.Run("backend", func(b *testing.B) {
		m := benchManager(b)
		pacedAdds(b, m, func(a netip.Addr) error {
			_, _, err := m.Add(context.Background(), detector.Request{Prefix: netip.PrefixFrom(a, 32), Reason: "bench", Origin: "operator:noc", Actor: "noc"})
			return err
		})
	})
}

func benchManager(b *testing.B) *detector.Manager {
	cfg := testPolicy()
	cfg.Policy.MaxActive = 1 << 20
	return newBackendWith(b, cfg)
}

// pacedAdds calls add b.N times at 1,000 calls/s, each with a new address,
// and reports p50, p99 and max latency.
func pacedAdds(b *testing.B, m *detector.Manager, add func(netip.Addr) error) {
	b.ReportAllocs()
	const interval = time.Millisecond // 1,000 requests/s
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	// Request i is due at start + i ms. A ticker wakes the sender every
	// millisecond, and it sends every request due by then: several at once
	// when it was descheduled, so the average pace holds.
	tick := time.NewTicker(interval)
	defer tick.Stop()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		for time.Since(start) < time.Duration(i)*interval {
			<-tick.C
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := uint32(i)
			a := netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})
			t0 := time.Now()
			err := add(a)
			lat[i] = time.Since(t0)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	if got := len(m.Active()); got != b.N {
		b.Fatalf("%d active after %d adds", got, b.N)
	}
}
