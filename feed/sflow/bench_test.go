package sflow_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	gfsflow "github.com/netsampler/goflow2/v2/decoders/sflow"
	"github.com/netsampler/goflow2/v2/producer"
	protoproducer "github.com/netsampler/goflow2/v2/producer/proto"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

// mixedPacket returns the i-th packet of a mix of Ethernet IPv4/IPv6,
// TCP/UDP, with and without 802.1Q tags, large enough for a 112-byte
// sampled header.
func mixedPacket(i int) sflowtest.Packet {
	p := sflowtest.Packet{
		Src:        netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
		Dst:        netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}),
		Protocol:   sflowtest.ProtoTCP,
		SrcPort:    uint16(1024 + i),
		DstPort:    25,
		TCPFlags:   sflowtest.TCPSyn,
		PayloadLen: 1200,
	}
	if i%4 >= 2 {
		p.Src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		p.Dst = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 14: byte(i >> 8), 15: byte(i)})
	}
	if i%3 == 1 {
		p.Protocol, p.DstPort = sflowtest.ProtoUDP, 53
	}
	if i%2 == 1 {
		p.VLANs = []uint16{uint16(100 + i%10)}
	}
	return p
}

// benchDatagrams builds count datagrams of perDatagram samples each.
func benchDatagrams(count, perDatagram int) [][]byte {
	s := sflowtest.NewStream(netip.MustParseAddr("192.0.2.11"), 1000)
	s.MaxHeader = 112
	var dgrams [][]byte
	pkts := make([]sflowtest.Packet, perDatagram)
	k := 0
	for range count {
		for j := range pkts {
			pkts[j] = mixedPacket(k)
			k++
		}
		dgrams = append(dgrams, append([]byte(nil), s.Datagram(pkts...)...))
	}
	return dgrams
}

func reportPerSample(b *testing.B, perDatagram int) {
	samples := float64(b.N) * float64(perDatagram)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/samples, "ns/sample")
}

// BenchmarkDecode compares this decoder with goflow2 v2.2.6 (decoder and
// protobuf producer, what goflow2 runs per datagram) on the same
// datagrams.
func BenchmarkDecode(b *testing.B) {
	for _, per := range []int{1, 7} {
		dgrams := benchDatagrams(256, per)
		b.Run(fmt.Sprintf("rtbh/samples=%d", per), func(b *testing.B) {
			var d sflow.Decoder
			out := make([]sflow.Sample, per)
			b.ReportAllocs()
			b.SetBytes(int64(len(dgrams[0])))
			for i := 0; b.Loop(); i++ {
				n, err := d.Decode(dgrams[i%len(dgrams)], out)
				if err != nil || n != per {
					b.Fatalf("Decode = %d, %v", n, err)
				}
			}
			reportPerSample(b, per)
		})
		b.Run(fmt.Sprintf("rtbh-flows/samples=%d", per), func(b *testing.B) {
			var d sflow.Decoder
			out := make([]domain.Flow, per)
			b.ReportAllocs()
			b.SetBytes(int64(len(dgrams[0])))
			for i := 0; b.Loop(); i++ {
				n, err := d.DecodeFlows(dgrams[i%len(dgrams)], out)
				if err != nil || n != per {
					b.Fatalf("DecodeFlows = %d, %v", n, err)
				}
			}
			reportPerSample(b, per)
		})
		b.Run(fmt.Sprintf("goflow2/samples=%d", per), func(b *testing.B) {
			cfg, err := (&protoproducer.ProducerConfig{}).Compile()
			if err != nil {
				b.Fatal(err)
			}
			prod, err := protoproducer.CreateProtoProducer(cfg, protoproducer.CreateSamplingSystem)
			if err != nil {
				b.Fatal(err)
			}
			args := producer.ProduceArgs{
				Src:            netip.MustParseAddrPort("192.0.2.11:6343"),
				SamplerAddress: netip.MustParseAddr("192.0.2.11"),
				TimeReceived:   time.Now(),
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(dgrams[0])))
			for i := 0; b.Loop(); i++ {
				var pkt gfsflow.Packet
				if err := gfsflow.DecodeMessageVersion(bytes.NewBuffer(dgrams[i%len(dgrams)]), &pkt); err != nil {
					b.Fatal(err)
				}
				msgs, err := prod.Produce(&pkt, &args)
				if err != nil || len(msgs) != per {
					b.Fatalf("Produce = %d, %v", len(msgs), err)
				}
				prod.Commit(msgs)
			}
			reportPerSample(b, per)
		})
	}
}
