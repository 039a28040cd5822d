package store

import (
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// BenchmarkSubmitAll commits one batch of 10,000 new blackholes (one audit
// row each, as detector.AddBatch writes them), then the batch that ends
// them, on a real SQLite file: the store's share of `rtbhctl add --file`
// and `remove --file`. ns/op and allocs/op are per batch of 10,000.
//
//	go test -run XXX -bench SubmitAll -benchmem ./store
func BenchmarkSubmitAll(b *testing.B) {
	const n = 10000
	db, err := Open(filepath.Join(b.TempDir(), "bench.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	batch := func(op domain.BlackholeOp) []*domain.Write {
		ws := make([]*domain.Write, n)
		for i := range ws {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
			bh := domain.Blackhole{Prefix: p, Origin: "operator:noc", Reason: "import", CreatedAt: at, ExpiresAt: at.Add(time.Hour)}
			a := domain.AuditEntry{Actor: "noc", Action: "add", Prefix: p.String(), Origin: bh.Origin, Reason: "import", Detail: "expires_at " + bh.ExpiresAt.Format(time.RFC3339)}
			w := &domain.Write{Op: op, Blackhole: bh, At: at, Audit: []domain.AuditEntry{a}}
			if op == domain.BlackholeEnd {
				w.EndReason = "removed"
				w.Audit[0].Action = "remove"
			}
			ws[i] = w
		}
		return ws
	}
	b.Run("insert", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			ws, end := batch(domain.BlackholeInsert), batch(domain.BlackholeEnd)
			b.StartTimer()
			if err := db.SubmitAll(ws)(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := db.SubmitAll(end)(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("end", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			ws, end := batch(domain.BlackholeInsert), batch(domain.BlackholeEnd)
			if err := db.SubmitAll(ws)(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := db.SubmitAll(end)(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCommit commits single writes (a new blackhole and its audit
// row), 20 in flight as 20 concurrent AddBlackhole calls make them: the
// store's share of a single add, group commits included. Per write.
func BenchmarkCommit(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "bench.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	var next atomic.Uint32
	b.SetParallelism(10) // 20 goroutines on 2 cores
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
			bh := domain.Blackhole{Prefix: p, Origin: "operator:noc", Reason: "single", CreatedAt: at, ExpiresAt: at.Add(time.Hour)}
			w := &domain.Write{Op: domain.BlackholeInsert, Blackhole: bh, At: at,
				Audit: []domain.AuditEntry{{Actor: "noc", Action: "add", Prefix: p.String(), Origin: bh.Origin, Reason: "single"}}}
			if err := db.Commit(w); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// reportCPU reports the process's CPU time (user + system) per op, from
// now until the returned function is called: unlike ns/op, it does not
// count the time spent waiting for fsync.
func reportCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0 := cpu()
	return func() { b.ReportMetric(float64((cpu()-c0).Nanoseconds())/float64(b.N), "cpu-ns/op") }
}
