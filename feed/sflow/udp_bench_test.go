package sflow_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/sflow"
)

// countingSink counts samples and touches each one, as a detector would,
// and notes when the last batch came.
type countingSink struct {
	samples atomic.Uint64
	last    atomic.Int64 // time.Now().UnixNano() of the last batch
	ports   uint64
}

func (s *countingSink) HandleFlows(b []domain.Flow) {
	for i := range b {
		s.ports += uint64(b[i].DstPort)
	}
	s.samples.Add(uint64(len(b)))
	s.last.Store(time.Now().UnixNano())
}

// BenchmarkCollectorUDP sends b.N datagrams of 7 mixed samples over
// loopback UDP (sendmmsg, in the same process) to a running Collector and
// reports received samples per second and loss. rate=0 sends as fast as
// the sender can; otherwise datagrams per second are paced.
func BenchmarkCollectorUDP(b *testing.B) {
	dgrams := benchDatagrams(256, 7)
	bufs := make([][][]byte, len(dgrams))
	for i, d := range dgrams {
		bufs[i] = [][]byte{d}
	}
	for _, tc := range []struct {
		rate int
		xnet bool
	}{{20000, false}, {50000, false}, {0, false}, {0, true}} {
		name := fmt.Sprintf("rate=%d", tc.rate)
		if tc.xnet {
			name += "/xnet"
		}
		rate := tc.rate
		b.Run(name, func(b *testing.B) {
			sink := &countingSink{}
			c, err := sflow.NewCollector(sflow.Config{Listen: "127.0.0.1:0", ReceiveBuffer: 16 << 20}, sink, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			if tc.xnet {
				sflow.UseXnetReader(c)
			}
			if err := c.Listen(); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					b.Error(err)
				}
			}()

			conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.Addr()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			pc := ipv4.NewPacketConn(conn)
			const burst = 32
			msgs := make([]ipv4.Message, burst)
			// With a rate, a burst leaves when the schedule says (sent/rate
			// after the start): a ticker wakes the sender every millisecond,
			// and it then sends every burst that is due, several when it fell
			// behind, so the average pace holds.
			var tick <-chan time.Time
			if rate > 0 {
				t := time.NewTicker(time.Millisecond)
				defer t.Stop()
				tick = t.C
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			sent := 0
			for sent < b.N {
				if rate > 0 && time.Since(start) < time.Duration(sent)*time.Second/time.Duration(rate) {
					<-tick
					continue
				}
				k := min(burst, b.N-sent)
				for j := range msgs[:k] {
					msgs[j].Buffers = bufs[(sent+j)%len(dgrams)]
				}
				for off := 0; off < k; {
					n, err := pc.WriteBatch(msgs[off:k], 0)
					if err != nil {
						b.Fatalf("sending: %v", err)
					}
					off += n
				}
				sent += k
			}
			// Wait for the receiver to drain: until every sample is in, or
			// none has come for 200 ms (loss), at most 2 s. The run ends
			// at the last sample's arrival, which the poll does not blur.
			want := uint64(sent) * 7
			last, lastChange := sink.samples.Load(), time.Now()
			testkit.Poll(2*time.Second, func() bool {
				if s := sink.samples.Load(); s != last {
					last, lastChange = s, time.Now()
				}
				return last >= want || time.Since(lastChange) >= 200*time.Millisecond
			})
			elapsed := time.Since(start)
			if end := time.Unix(0, sink.last.Load()); end.After(start) {
				elapsed = end.Sub(start)
			}
			b.StopTimer()
			got := sink.samples.Load()
			st := c.Stats()
			b.ReportMetric(float64(got)/elapsed.Seconds(), "samples/s")
			b.ReportMetric(100*float64(want-got)/float64(want), "loss%")
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(want), "ns/sample")
			if st.Batches > 0 {
				b.ReportMetric(float64(st.Datagrams)/float64(st.Batches), "datagrams/read")
			}
		})
	}
}
