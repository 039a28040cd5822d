package sflow_test

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

var (
	agent4 = netip.MustParseAddr("192.0.2.11")
	agent6 = netip.MustParseAddr("2001:db8::11")
	src4   = netip.MustParseAddr("198.51.100.7")
	dst4   = netip.MustParseAddr("203.0.113.25")
	src6   = netip.MustParseAddr("2001:db8:1::7")
	dst6   = netip.MustParseAddr("2001:db8:2::25")
)

var baseFS = sflowtest.FlowSample{
	Sequence: 10, SourceIDIndex: 7, SamplingRate: 1000, SamplePool: 50000, Drops: 3,
	InputIf: 7, OutputIf: 0x3fffffff,
}

func tcp4() sflowtest.Packet {
	return sflowtest.Packet{Src: src4, Dst: dst4, Protocol: sflowtest.ProtoTCP, SrcPort: 40001, DstPort: 25, TCPFlags: sflowtest.TCPSyn, PayloadLen: 100}
}

func udp6() sflowtest.Packet {
	return sflowtest.Packet{Src: src6, Dst: dst6, Protocol: sflowtest.ProtoUDP, SrcPort: 5353, DstPort: 53, PayloadLen: 200}
}

// want is the Sample expected for packet p inside baseFS from agent4.
func want(p sflowtest.Packet, frameLen uint32) sflow.Sample {
	s := sflow.Sample{
		Flow: domain.Flow{
			Agent: agent4, SamplingRate: 1000, FrameLength: frameLen,
			Src: p.Src, Dst: p.Dst, Protocol: p.Protocol,
		},
		SampleInfo: sflow.SampleInfo{
			SubAgentID: 1, Sequence: 10, SourceIDIndex: 7, InputIf: 7, OutputIf: 0x3fffffff,
			SamplePool: 50000, Drops: 3,
		},
	}
	if p.FragmentOffset != 0 {
		s.Fragment = true
		return s
	}
	if p.Protocol == sflowtest.ProtoTCP || p.Protocol == sflowtest.ProtoUDP {
		s.SrcPort, s.DstPort = p.SrcPort, p.DstPort
	}
	if p.Protocol == sflowtest.ProtoTCP {
		s.TCPFlags = p.TCPFlags
	}
	return s
}

func ethLen(p sflowtest.Packet) uint32 { return uint32(p.FrameLen() + 4) }

type decodeCase struct {
	name  string
	build func(b *sflowtest.Builder)
	want  []sflow.Sample
}

func begin(b *sflowtest.Builder) {
	b.Begin(sflowtest.Header{Agent: agent4, SubAgentID: 1, Sequence: 100, Uptime: 5000})
}

func ethCase(name string, p sflowtest.Packet) decodeCase {
	return decodeCase{name, func(b *sflowtest.Builder) {
		begin(b)
		b.AddPacketSample(baseFS, p, 128)
	}, []sflow.Sample{want(p, ethLen(p))}}
}

func decodeCases() []decodeCase {
	vlan := tcp4()
	vlan.VLANs = []uint16{100}
	qinq := udp6()
	qinq.VLANs, qinq.VLANTPIDs = []uint16{10, 20}, []uint16{sflowtest.TPID8021AD, sflowtest.TPID8021Q}
	q9100 := tcp4()
	q9100.VLANs, q9100.VLANTPIDs = []uint16{30, 40}, []uint16{sflowtest.TPIDQinQ}
	mpls4 := tcp4()
	mpls4.MPLS = []uint32{16, 17, 18}
	mpls6 := udp6()
	mpls6.MPLS = []uint32{100}
	mplsVLAN := udp6()
	mplsVLAN.VLANs, mplsVLAN.MPLS = []uint16{5}, []uint32{1, 2}
	ext6 := udp6()
	ext6.Protocol = sflowtest.ProtoTCP
	ext6.TCPFlags = sflowtest.TCPSyn | sflowtest.TCPAck
	ext6.IPv6Ext = []uint8{0, 43, 60}
	frag4 := tcp4()
	frag4.FragmentOffset = 185
	first4 := tcp4()
	first4.MoreFragments = true
	frag6 := udp6()
	frag6.FragmentOffset = 100
	frag6.MoreFragments = true
	first6 := udp6()
	first6.MoreFragments = true
	first6.IPv6Ext = []uint8{0}
	icmp := tcp4()
	icmp.Protocol = sflowtest.ProtoICMP
	icmp6 := udp6()
	icmp6.Protocol = sflowtest.ProtoICMPv6

	cases := []decodeCase{
		ethCase("ethernet ipv4 tcp", tcp4()),
		ethCase("ethernet ipv6 udp", udp6()),
		ethCase("802.1q ipv4", vlan),
		ethCase("qinq 88a8 ipv6", qinq),
		ethCase("qinq 9100 ipv4", q9100),
		ethCase("mpls stack ipv4", mpls4),
		ethCase("mpls ipv6", mpls6),
		ethCase("vlan mpls ipv6", mplsVLAN),
		ethCase("ipv6 extension headers", ext6),
		ethCase("ipv4 non-first fragment", frag4),
		ethCase("ipv4 first fragment", first4),
		ethCase("ipv6 non-first fragment", frag6),
		ethCase("ipv6 first fragment", first6),
		ethCase("icmp", icmp),
		ethCase("icmpv6", icmp6),
		{"raw ipv4", func(b *sflowtest.Builder) {
			begin(b)
			b.BeginFlowSample(baseFS)
			b.AddRawIPHeader(tcp4(), 128)
		}, []sflow.Sample{want(tcp4(), 140)}},
		{"raw ipv6", func(b *sflowtest.Builder) {
			begin(b)
			b.BeginFlowSample(baseFS)
			b.AddRawIPHeader(udp6(), 128)
		}, []sflow.Sample{want(udp6(), 40+8+200)}},
		{"sampled_ipv4", func(b *sflowtest.Builder) {
			begin(b)
			b.BeginFlowSample(baseFS)
			b.AddSampledIP(tcp4())
		}, []sflow.Sample{want(tcp4(), 140)}},
		{"sampled_ipv6", func(b *sflowtest.Builder) {
			begin(b)
			b.BeginFlowSample(baseFS)
			b.AddSampledIP(udp6())
		}, []sflow.Sample{want(udp6(), 248)}},
		{"header wins over sampled_ipv4", func(b *sflowtest.Builder) {
			begin(b)
			b.BeginFlowSample(baseFS)
			b.AddExtendedSwitch(1, 2)
			b.AddEthernetHeader(udp6(), 128)
			b.AddSampledIP(tcp4())
		}, []sflow.Sample{want(udp6(), ethLen(udp6()))}},
		{"sampled_ipv4 after non-ip header", func(b *sflowtest.Builder) {
			begin(b)
			b.BeginFlowSample(baseFS)
			arp := make([]byte, 42)
			binary.BigEndian.PutUint16(arp[12:], 0x0806)
			b.AddSampledHeader(sflowtest.HeaderEthernet, 64, 4, arp)
			b.AddSampledIP(tcp4())
		}, []sflow.Sample{func() sflow.Sample { s := want(tcp4(), 64); return s }()}},
		{"non-ip frame", func(b *sflowtest.Builder) {
			begin(b)
			b.BeginFlowSample(baseFS)
			arp := make([]byte, 42)
			binary.BigEndian.PutUint16(arp[12:], 0x0806)
			b.AddSampledHeader(sflowtest.HeaderEthernet, 64, 4, arp)
		}, []sflow.Sample{func() sflow.Sample {
			s := want(sflowtest.Packet{}, 64)
			s.Src, s.Dst = netip.Addr{}, netip.Addr{}
			return s
		}()}},
		{"expanded flow sample", func(b *sflowtest.Builder) {
			begin(b)
			fs := baseFS
			fs.Expanded = true
			fs.SourceIDType = 1
			fs.SourceIDIndex = 0x01020304 // beyond 24 bits: only expanded form carries it
			fs.OutputIf = 0x80000002      // discard format bits
			b.AddPacketSample(fs, tcp4(), 128)
		}, []sflow.Sample{func() sflow.Sample {
			s := want(tcp4(), ethLen(tcp4()))
			s.SourceIDType, s.SourceIDIndex, s.OutputIf = 1, 0x01020304, 0x80000002
			return s
		}()}},
		{"counters and unknown samples skipped", func(b *sflowtest.Builder) {
			begin(b)
			b.AddCounterSample(false, 1, 7)
			b.AddPacketSample(baseFS, tcp4(), 128)
			b.AddCounterSample(true, 2, 7)
			b.AddRawSample(4<<12|1, []byte{1, 2, 3, 4, 5, 6, 7, 8}) // enterprise 4, format 1
			b.BeginFlowSample(baseFS)
			b.AddRecord(1001, make([]byte, 16))
			b.AddRecord(2<<12|9, []byte{1, 2, 3})
			b.AddEthernetHeader(udp6(), 128)
			b.EndFlowSample()
		}, []sflow.Sample{want(tcp4(), ethLen(tcp4())), want(udp6(), ethLen(udp6()))}},
		{"header cut inside ipv6 extension headers", func(b *sflowtest.Builder) {
			begin(b)
			p := udp6()
			p.IPv6Ext = []uint8{0, 60, 60, 60, 60}
			b.AddPacketSample(baseFS, p, 14+40+8*3)
		}, []sflow.Sample{func() sflow.Sample {
			p := udp6()
			p.IPv6Ext = []uint8{0, 60, 60, 60, 60}
			s := want(p, ethLen(p))
			s.Protocol, s.SrcPort, s.DstPort = 60, 0, 0
			return s
		}()}},
		{"header cut before ports", func(b *sflowtest.Builder) {
			begin(b)
			b.AddPacketSample(baseFS, tcp4(), 14+20+2)
		}, []sflow.Sample{func() sflow.Sample {
			s := want(tcp4(), ethLen(tcp4()))
			s.SrcPort, s.DstPort, s.TCPFlags = 0, 0, 0
			return s
		}()}},
		{"header cut before addresses", func(b *sflowtest.Builder) {
			begin(b)
			b.AddPacketSample(baseFS, tcp4(), 14+10)
		}, []sflow.Sample{func() sflow.Sample {
			s := want(sflowtest.Packet{}, ethLen(tcp4()))
			s.Src, s.Dst = netip.Addr{}, netip.Addr{}
			return s
		}()}},
		{"no samples", func(b *sflowtest.Builder) { begin(b) }, nil},
	}
	// An IPv6 agent and seven samples, as a busy router sends.
	cases = append(cases, decodeCase{"ipv6 agent seven samples", func(b *sflowtest.Builder) {
		b.Begin(sflowtest.Header{Agent: agent6, SubAgentID: 1, Sequence: 100})
		for i := range 7 {
			p := tcp4()
			if i%2 == 1 {
				p = udp6()
			}
			b.AddPacketSample(baseFS, p, 128)
		}
	}, func() []sflow.Sample {
		var ss []sflow.Sample
		for i := range 7 {
			p := tcp4()
			if i%2 == 1 {
				p = udp6()
			}
			s := want(p, ethLen(p))
			s.Agent = agent6
			ss = append(ss, s)
		}
		return ss
	}()})
	return cases
}

func TestDecode(t *testing.T) {
	for _, tc := range decodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			var b sflowtest.Builder
			tc.build(&b)
			dgram := b.Bytes()
			var d sflow.Decoder
			out := make([]sflow.Sample, 16)
			n, err := d.Decode(dgram, out)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(tc.want) == 0 && n == 0 {
				return
			}
			if diff := cmp.Diff(tc.want, out[:n], addrCmp); diff != "" {
				t.Errorf("samples (-want +got):\n%s", diff)
			}
			// DecodeFlows yields the same flows and the same accounting.
			var df sflow.Decoder
			flows := make([]domain.Flow, 16)
			nf, err := df.DecodeFlows(dgram, flows)
			if err != nil || nf != n {
				t.Fatalf("DecodeFlows = %d, %v; Decode gave %d", nf, err, n)
			}
			var wantFlows []domain.Flow
			for _, s := range tc.want {
				wantFlows = append(wantFlows, s.Flow)
			}
			if diff := cmp.Diff(wantFlows, flows[:nf], addrCmp); diff != "" {
				t.Errorf("DecodeFlows (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(d.Agents(), df.Agents(), addrCmp); diff != "" {
				t.Errorf("agents after DecodeFlows (-Decode +DecodeFlows):\n%s", diff)
			}
		})
	}
}

// TestDecodeTruncated cuts every table datagram at every length: each cut
// must be rejected (every sFlow structure declares its length), and
// nothing may panic.
func TestDecodeTruncated(t *testing.T) {
	for _, tc := range decodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			var b sflowtest.Builder
			tc.build(&b)
			full := b.Bytes()
			var d sflow.Decoder
			out := make([]sflow.Sample, 16)
			for l := range len(full) {
				cut := append([]byte(nil), full[:l]...) // exact capacity: reads past it panic
				n, err := d.Decode(cut, out)
				var r sflow.Reason
				if err == nil || n != 0 || !errors.As(err, &r) {
					t.Fatalf("cut at %d of %d: n=%d err=%v, want a Reason", l, len(full), n, err)
				}
			}
		})
	}
}

// Offsets in a datagram with an IPv4 agent whose first sample is a
// compact flow sample with a sampled_header as first record.
const (
	offNumSamples = 24
	offSampleLen  = 32
	offRate       = 44
	offNumRecords = 64
	offRecord     = 68
	offRecordLen  = 72
	offHeaderLen  = 88
)

func TestDecodeMalformed(t *testing.T) {
	ethDgram := func() []byte {
		var b sflowtest.Builder
		begin(&b)
		b.AddPacketSample(baseFS, tcp4(), 128)
		return append([]byte(nil), b.Bytes()...)
	}
	recDgram := func(add func(b *sflowtest.Builder)) []byte {
		var b sflowtest.Builder
		begin(&b)
		b.BeginFlowSample(baseFS)
		add(&b)
		return append([]byte(nil), b.Bytes()...)
	}
	put := func(b []byte, off int, v uint32) []byte {
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	tests := []struct {
		name  string
		dgram []byte
		out   int
		want  sflow.Reason
	}{
		{"empty", nil, 8, sflow.ReasonTruncatedHeader},
		{"version 4", put(ethDgram(), 0, 4), 8, sflow.ReasonVersion},
		{"agent type 0", put(ethDgram(), 4, 0), 8, sflow.ReasonAgentAddressType},
		{"agent type 3", put(ethDgram(), 4, 3), 8, sflow.ReasonAgentAddressType},
		{"ipv6 agent type on ipv4 header", put(ethDgram()[:30], 4, 2), 8, sflow.ReasonTruncatedHeader},
		{"num_samples huge", put(ethDgram(), offNumSamples, 0xffffffff), 8, sflow.ReasonSampleCount},
		{"num_samples one too many", put(ethDgram(), offNumSamples, 2), 8, sflow.ReasonTruncatedSample},
		{"sample length past end", put(ethDgram(), offSampleLen, 1000), 8, sflow.ReasonTruncatedSample},
		{"sample length huge", put(ethDgram(), offSampleLen, 0xfffffff0), 8, sflow.ReasonTruncatedSample},
		{"flow sample shorter than fixed fields", func() []byte {
			d := put(ethDgram(), offSampleLen, 20)
			return d
		}(), 8, sflow.ReasonTruncatedFlowSample},
		{"sampling rate zero", put(ethDgram(), offRate, 0), 8, sflow.ReasonSamplingRateZero},
		{"num_records huge", put(ethDgram(), offNumRecords, 1<<30), 8, sflow.ReasonRecordCount},
		{"num_records one too many", put(ethDgram(), offNumRecords, 2), 8, sflow.ReasonTruncatedRecord},
		{"record length past sample", put(ethDgram(), offRecordLen, 4000), 8, sflow.ReasonTruncatedRecord},
		{"record length huge", put(ethDgram(), offRecordLen, 0xfffffffc), 8, sflow.ReasonTruncatedRecord},
		{"sampled_header shorter than fixed fields", recDgram(func(b *sflowtest.Builder) {
			b.AddRecord(sflowtest.RecordSampledHeader, make([]byte, 12))
		}), 8, sflow.ReasonRecordLength},
		{"header_length past record", put(ethDgram(), offHeaderLen, 129), 8, sflow.ReasonHeaderLength},
		{"header_length huge", put(ethDgram(), offHeaderLen, 0xffffffff), 8, sflow.ReasonHeaderLength},
		{"sampled_ipv4 short", recDgram(func(b *sflowtest.Builder) {
			b.AddRecord(sflowtest.RecordSampledIPv4, make([]byte, 28))
		}), 8, sflow.ReasonRecordLength},
		{"sampled_ipv6 short", recDgram(func(b *sflowtest.Builder) {
			b.AddRecord(sflowtest.RecordSampledIPv6, make([]byte, 52))
		}), 8, sflow.ReasonRecordLength},
		{"expanded flow sample short", func() []byte {
			var b sflowtest.Builder
			begin(&b)
			b.AddRawSample(sflowtest.FormatExpandedFlowSample, make([]byte, 40))
			return b.Bytes()
		}(), 8, sflow.ReasonTruncatedFlowSample},
		{"expanded sampling rate zero", func() []byte {
			var b sflowtest.Builder
			begin(&b)
			fs := baseFS
			fs.Expanded = true
			fs.SamplingRate = 0
			b.AddPacketSample(fs, tcp4(), 128)
			return b.Bytes()
		}(), 8, sflow.ReasonSamplingRateZero},
		{"sampling rate zero in second sample", func() []byte {
			var b sflowtest.Builder
			begin(&b)
			b.AddPacketSample(baseFS, tcp4(), 128)
			fs := baseFS
			fs.SamplingRate = 0
			b.AddPacketSample(fs, tcp4(), 128)
			return b.Bytes()
		}(), 8, sflow.ReasonSamplingRateZero},
		{"output full", ethDgram(), 0, sflow.ReasonOutputFull},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d sflow.Decoder
			out := make([]sflow.Sample, tc.out)
			n, err := d.Decode(tc.dgram, out)
			if n != 0 || err != tc.want {
				t.Fatalf("Decode = %d, %v; want 0, %v", n, err, tc.want)
			}
			if n, err := d.DecodeFlows(tc.dgram, make([]domain.Flow, tc.out)); n != 0 || err != tc.want {
				t.Fatalf("DecodeFlows = %d, %v; want 0, %v", n, err, tc.want)
			}
			if got := d.Errors(tc.want); got != 2 {
				t.Errorf("Errors(%v) = %d after Decode and DecodeFlows, want 2", tc.want, got)
			}
			if len(d.Agents()) != 0 {
				t.Errorf("a rejected datagram created agent state")
			}
		})
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range sflow.Reasons() {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("reason %d has bad or duplicate name %q", r, s)
		}
		seen[s] = true
	}
}
