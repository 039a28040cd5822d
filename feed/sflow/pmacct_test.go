package sflow_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

type flowKey struct {
	src, dst         netip.Addr
	proto            uint8
	srcPort, dstPort uint16
}

// interopPackets is a mix of IPv4 and IPv6, TCP and UDP, with and
// without VLAN tags, each packet a distinct flow.
func interopPackets(n int) []sflowtest.Packet {
	pkts := make([]sflowtest.Packet, n)
	for i := range pkts {
		p := sflowtest.Packet{
			Src:        netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}),
			Dst:        netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}),
			Protocol:   sflowtest.ProtoTCP,
			SrcPort:    uint16(30000 + i),
			DstPort:    []uint16{25, 587, 80, 443}[i%4],
			TCPFlags:   sflowtest.TCPSyn,
			PayloadLen: 40 + i%900,
		}
		if i%3 == 1 {
			p.Protocol, p.DstPort, p.TCPFlags = sflowtest.ProtoUDP, []uint16{53, 123, 5060}[i%3], 0
		}
		if i%2 == 1 {
			p.Src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 14: byte(i >> 8), 15: byte(i)})
			p.Dst = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 2, 15: byte(i)})
		}
		if i%5 == 2 {
			p.VLANs = []uint16{uint16(10 + i%7)}
		}
		pkts[i] = p
	}
	return pkts
}

// TestPmacctInterop replays a pcap through pmacct's sfprobe plugin, a
// real sFlow v5 exporter, into the collector over loopback and checks
// that every packet comes out as a sample with the right flow fields and
// sampling context.
func TestPmacctInterop(t *testing.T) {
	for _, rate := range []int{1, 4} {
		t.Run(fmt.Sprintf("rate=%d", rate), func(t *testing.T) {
			const n = 600
			pkts := interopPackets(n)
			pcap := filepath.Join(t.TempDir(), "traffic.pcap")
			if err := sflowtest.WritePmacctPcap(pcap, pkts); err != nil {
				t.Fatal(err)
			}
			want := map[flowKey]int{}
			for _, p := range pkts {
				want[flowKey{p.Src, p.Dst, p.Protocol, p.SrcPort, p.DstPort}]++
			}
			sink := &recordingSink{}
			c, _ := startCollector(t, sflow.Config{
				Listen: "127.0.0.1:0",
				Agents: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			}, sink)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("collector: %+v, %d samples, agents %+v", c.Stats(), len(sink.get()), c.Agents())
				}
			})
			sflowtest.RunPmacct(t, pcap, c.Addr(), rate)
			// Every packet is sampled at rate 1; at rate 4, pmacct
			// samples one in 4 on average.
			minWant := n / rate
			if rate > 1 {
				minWant = n / rate / 2
			}
			// sfprobe exports in pcap order, over one socket: once a sample of
			// the trailer is in, every sample of the test packets is too, and
			// anything beyond the expected count as well.
			testkit.WaitFor(t, 5*time.Second, "samples up to the trailer", func() bool {
				real, trailer := 0, false
				for _, s := range sink.get() {
					if s.Src != sflowtest.TrailerSrc {
						real++
					} else {
						trailer = true
					}
				}
				return real >= minWant && trailer
			})
			var got []domain.Flow
			for _, s := range sink.get() {
				if s.Src != sflowtest.TrailerSrc {
					got = append(got, s)
				}
			}
			if rate == 1 && len(got) != n {
				t.Fatalf("got %d samples, want %d", len(got), n)
			}
			if rate > 1 && (len(got) < n/rate/2 || len(got) > 2*n/rate) {
				t.Fatalf("got %d samples of %d packets at 1 in %d", len(got), n, rate)
			}
			seen := map[flowKey]int{}
			for i, s := range got {
				k := flowKey{s.Src, s.Dst, s.Protocol, s.SrcPort, s.DstPort}
				seen[k]++
				if want[k] == 0 || seen[k] > want[k] {
					t.Errorf("sample %d: flow %+v not in the pcap", i, k)
				}
				if s.SamplingRate != uint32(rate) || s.Agent != netip.MustParseAddr("192.0.2.11") {
					t.Errorf("sample %d: rate %d agent %v; want %d, 192.0.2.11",
						i, s.SamplingRate, s.Agent, rate)
				}
				if s.Protocol == sflowtest.ProtoTCP && s.TCPFlags != sflowtest.TCPSyn {
					t.Errorf("sample %d: TCP flags %#x", i, s.TCPFlags)
				}
				if s.FrameLength < 60 {
					t.Errorf("sample %d: frame length %d", i, s.FrameLength)
				}
			}
			st := c.Stats()
			if st.Malformed != 0 || st.Denied != 0 {
				t.Errorf("Stats = %+v: pmacct datagrams rejected", st)
			}
			agents := c.Agents()
			if len(agents) != 1 || agents[0].Lost != 0 || agents[0].Restarts != 0 {
				t.Errorf("Agents = %+v, want one agent without loss", agents)
			}
			t.Logf("%d packets -> %d samples in %d datagrams", n, len(got), st.Datagrams)
		})
	}
}
