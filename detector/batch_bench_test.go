package detector

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/store"
)

// BenchmarkBatch adds 10,000 host routes in one AddBatch and removes them
// in one RemoveBatch, on a real SQLite file and a real (unpeered) GoBGP
// speaker: the decision path's share of `rtbhctl add --file`. ns/op and
// allocs/op are per batch of 10,000 (the speaker's AddPath runs beside,
// in the route queue's goroutine, and is waited for outside the timer).
//
//	go test -run XXX -bench Batch -benchmem ./detector
func BenchmarkBatch(b *testing.B) {
	const n = MaxBatchItems
	db, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), quiet)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	sp, err := bgp.New(bgp.Config{ASN: 64500, RouterID: netip.MustParseAddr("192.0.2.254"),
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1")}, quiet, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := sp.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	pol := Policy{OwnPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, MaxActive: n + 1,
		DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour, MinPrefixLenV4: 32, MinPrefixLenV6: 128}
	m, err := NewManager(Config{Policy: pol, Reports: ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour}}, db, sp, quiet, nil)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	adds := make([]Request, n)
	removes := make([]RemoveRequest, n)
	for i := range adds {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 7, byte(i >> 8), byte(i)}), 32)
		adds[i] = Request{Prefix: p, Origin: "operator:noc", Actor: "noc", Reason: "import"}
		removes[i] = RemoveRequest{Prefix: p, Actor: "noc", Reason: "import"}
	}
	settle := func(b *testing.B, want int) { // the route queue done, outside the timer
		testkit.WaitFor(b, 60*time.Second, "the speaker's routes", func() bool { return len(sp.Announced()) == want })
	}
	run := func(b *testing.B, timeAdd bool) {
		b.ReportAllocs()
		for b.Loop() {
			if !timeAdd {
				b.StopTimer()
			}
			if acc, _, err := m.AddBatch(ctx, adds); err != nil || len(acc) != n {
				b.Fatalf("AddBatch: %d accepted, %v", len(acc), err)
			}
			b.StopTimer()
			settle(b, n)
			if timeAdd {
				b.StopTimer()
			} else {
				b.StartTimer()
			}
			if acc, _, err := m.RemoveBatch(ctx, removes); err != nil || len(acc) != n {
				b.Fatalf("RemoveBatch: %d accepted, %v", len(acc), err)
			}
			b.StopTimer()
			settle(b, 0)
			b.StartTimer()
		}
	}
	b.Run("add", func(b *testing.B) { run(b, true) })
	b.Run("remove", func(b *testing.B) { run(b, false) })
}
