package sflowtest_test

import (
	"net/netip"
	"testing"

	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

func streamPackets() []sflowtest.Packet {
	pkts := make([]sflowtest.Packet, 7)
	for i := range pkts {
		pkts[i] = sflowtest.Packet{
			Src: netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), Dst: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}),
			Protocol: sflowtest.ProtoTCP, SrcPort: uint16(40000 + i), DstPort: 25, TCPFlags: sflowtest.TCPSyn, PayloadLen: 500,
		}
		if i%2 == 1 {
			pkts[i].Src = netip.MustParseAddr("2001:db8::7")
			pkts[i].Protocol = sflowtest.ProtoUDP
			pkts[i].Dst = netip.MustParseAddr("2001:db8::25")
			pkts[i].VLANs = []uint16{42}
		}
	}
	return pkts
}

// TestStream checks what the stream generates with the decoder: sequence
// numbers, sampling rate, pool, and that generation does not allocate.
func TestStream(t *testing.T) {
	s := sflowtest.NewStream(netip.MustParseAddr("192.0.2.1"), 100)
	pkts := streamPackets()
	var d sflow.Decoder
	out := make([]sflow.Sample, 8)
	for i := range 10 {
		n, err := d.Decode(s.Datagram(pkts...), out)
		if err != nil || n != 7 {
			t.Fatalf("datagram %d: Decode = %d, %v", i, n, err)
		}
		for j, smp := range out[:n] {
			p := pkts[j]
			if smp.Src != p.Src || smp.Dst != p.Dst || smp.DstPort != p.DstPort || smp.SamplingRate != 100 ||
				smp.Sequence != uint32(i*7+j+1) || smp.SamplePool != uint32(100*(i*7+j+1)) {
				t.Fatalf("datagram %d sample %d = %+v", i, j, smp)
			}
		}
	}
	a := d.Agents()
	if len(a) != 1 || a[0].Sequence != 10 || a[0].Lost != 0 || a[0].SamplesLost != 0 || a[0].Pool != 100*69 {
		t.Fatalf("agent stats %+v", a)
	}
	if allocs := testing.AllocsPerRun(100, func() { s.Datagram(pkts...) }); allocs != 0 {
		t.Errorf("Stream.Datagram: %v allocs, want 0", allocs)
	}
}

// BenchmarkStream measures how fast tests can generate samples.
func BenchmarkStream(b *testing.B) {
	s := sflowtest.NewStream(netip.MustParseAddr("192.0.2.1"), 100)
	s.MaxHeader = 112
	pkts := streamPackets()
	b.ReportAllocs()
	for b.Loop() {
		s.Datagram(pkts...)
	}
	b.ReportMetric(float64(b.N*len(pkts))/b.Elapsed().Seconds(), "samples/s")
}
