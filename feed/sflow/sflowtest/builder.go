package sflowtest

import (
	"encoding/binary"
	"net/netip"
)

// sFlow v5 structure formats (enterprise 0).
const (
	FormatFlowSample            = 1
	FormatCounterSample         = 2
	FormatExpandedFlowSample    = 3
	FormatExpandedCounterSample = 4

	RecordSampledHeader  = 1
	RecordSampledEther   = 2
	RecordSampledIPv4    = 3
	RecordSampledIPv6    = 4
	RecordExtendedSwitch = 1001
	RecordExtendedRouter = 1002

	HeaderEthernet = 1
	HeaderIPv4     = 11
	HeaderIPv6     = 12
)

// Header is the sFlow v5 datagram header.
type Header struct {
	Agent      netip.Addr // IPv4 or IPv6 agent address
	SubAgentID uint32
	Sequence   uint32
	Uptime     uint32 // milliseconds
}

// FlowSample holds the fixed fields of a flow_sample or, with Expanded,
// an expanded_flow_sample.
type FlowSample struct {
	Expanded      bool
	Sequence      uint32
	SourceIDType  uint8
	SourceIDIndex uint32
	SamplingRate  uint32
	SamplePool    uint32
	Drops         uint32
	InputIf       uint32
	OutputIf      uint32 // sent as is (compact form: format in the top 2 bits)
}

// Builder assembles one sFlow v5 datagram at a time in a reusable buffer.
// Usage: Begin, then samples (BeginFlowSample, records, EndFlowSample; or
// the one-call AddPacketSample), then Bytes. A Builder allocates only while
// its buffers grow, so it can generate millions of samples per second.
type Builder struct {
	buf        []byte
	scratch    []byte
	numSamples uint32
	sampleAt   int // offset of the open flow sample's length field, -1 if none
	recordsAt  int // offset of the open flow sample's num_records field
	numRecords uint32
	numAt      int // offset of num_samples
}

// Begin starts a new datagram, discarding the previous one.
func (b *Builder) Begin(h Header) {
	b.buf = b.buf[:0]
	b.numSamples = 0
	b.sampleAt = -1
	b.u32(5)
	if h.Agent.Is4() || h.Agent.Is4In6() {
		a := h.Agent.Unmap().As4()
		b.u32(1)
		b.buf = append(b.buf, a[:]...)
	} else {
		a := h.Agent.As16()
		b.u32(2)
		b.buf = append(b.buf, a[:]...)
	}
	b.u32(h.SubAgentID)
	b.u32(h.Sequence)
	b.u32(h.Uptime)
	b.numAt = len(b.buf)
	b.u32(0)
}

// Bytes finishes the datagram and returns it. The slice is valid until
// the next Begin.
func (b *Builder) Bytes() []byte {
	if b.sampleAt >= 0 {
		b.EndFlowSample()
	}
	binary.BigEndian.PutUint32(b.buf[b.numAt:], b.numSamples)
	return b.buf
}

// Len is the current length of the datagram in bytes.
func (b *Builder) Len() int { return len(b.buf) }

// NumSamples is the number of samples added since Begin.
func (b *Builder) NumSamples() int { return int(b.numSamples) }

func (b *Builder) u32(v uint32) { b.buf = binary.BigEndian.AppendUint32(b.buf, v) }

// BeginFlowSample opens a flow sample; add its records, then EndFlowSample.
func (b *Builder) BeginFlowSample(fs FlowSample) {
	if b.sampleAt >= 0 {
		b.EndFlowSample()
	}
	if fs.Expanded {
		b.u32(FormatExpandedFlowSample)
	} else {
		b.u32(FormatFlowSample)
	}
	b.sampleAt = len(b.buf)
	b.u32(0)
	b.u32(fs.Sequence)
	if fs.Expanded {
		b.u32(uint32(fs.SourceIDType))
		b.u32(fs.SourceIDIndex)
	} else {
		b.u32(uint32(fs.SourceIDType)<<24 | fs.SourceIDIndex&0xffffff)
	}
	b.u32(fs.SamplingRate)
	b.u32(fs.SamplePool)
	b.u32(fs.Drops)
	if fs.Expanded {
		b.u32(0)
		b.u32(fs.InputIf)
		b.u32(fs.OutputIf >> 30)
		b.u32(fs.OutputIf & 0x3fffffff)
	} else {
		b.u32(fs.InputIf)
		b.u32(fs.OutputIf)
	}
	b.recordsAt = len(b.buf)
	b.numRecords = 0
	b.u32(0)
}

// EndFlowSample closes the open flow sample, filling in its lengths.
func (b *Builder) EndFlowSample() {
	if b.sampleAt < 0 {
		return
	}
	binary.BigEndian.PutUint32(b.buf[b.sampleAt:], uint32(len(b.buf)-b.sampleAt-4))
	binary.BigEndian.PutUint32(b.buf[b.recordsAt:], b.numRecords)
	b.sampleAt = -1
	b.numSamples++
}

// AddRecord appends a flow record with raw XDR data (padded to 4 bytes)
// to the open flow sample.
func (b *Builder) AddRecord(format uint32, data []byte) {
	b.u32(format)
	b.u32(uint32(pad4(len(data))))
	b.buf = append(b.buf, data...)
	for range pad4(len(data)) - len(data) {
		b.buf = append(b.buf, 0)
	}
	b.numRecords++
}

// AddExtendedSwitch appends an extended_switch record (as pmacct sends).
func (b *Builder) AddExtendedSwitch(srcVLAN, dstVLAN uint32) {
	b.u32(RecordExtendedSwitch)
	b.u32(16)
	b.u32(srcVLAN)
	b.u32(0)
	b.u32(dstVLAN)
	b.u32(0)
	b.numRecords++
}

// AddSampledHeader appends a sampled_header record.
func (b *Builder) AddSampledHeader(protocol, frameLength, stripped uint32, header []byte) {
	b.u32(RecordSampledHeader)
	b.u32(uint32(16 + pad4(len(header))))
	b.u32(protocol)
	b.u32(frameLength)
	b.u32(stripped)
	b.u32(uint32(len(header)))
	b.buf = append(b.buf, header...)
	for range pad4(len(header)) - len(header) {
		b.buf = append(b.buf, 0)
	}
	b.numRecords++
}

// AddSampledIP appends a sampled_ipv4 or sampled_ipv6 record for p.
func (b *Builder) AddSampledIP(p Packet) {
	if p.is6() {
		b.u32(RecordSampledIPv6)
		b.u32(56)
	} else {
		b.u32(RecordSampledIPv4)
		b.u32(32)
	}
	b.u32(uint32(p.IPLen()))
	b.u32(uint32(p.Protocol))
	if p.is6() {
		s, d := p.Src.As16(), p.Dst.As16()
		b.buf = append(b.buf, s[:]...)
		b.buf = append(b.buf, d[:]...)
	} else {
		s, d := p.Src.Unmap().As4(), p.Dst.Unmap().As4()
		b.buf = append(b.buf, s[:]...)
		b.buf = append(b.buf, d[:]...)
	}
	b.u32(uint32(p.SrcPort))
	b.u32(uint32(p.DstPort))
	b.u32(uint32(p.TCPFlags))
	b.u32(0) // tos / priority
	b.numRecords++
}

// AddPacketSample appends a complete flow sample whose only record is a
// sampled_header of p as an Ethernet frame, cut to at most maxHeader
// bytes (128 when 0).
func (b *Builder) AddPacketSample(fs FlowSample, p Packet, maxHeader int) {
	b.BeginFlowSample(fs)
	b.AddEthernetHeader(p, maxHeader)
	b.EndFlowSample()
}

// AddEthernetHeader appends a sampled_header record holding p as an
// Ethernet frame, cut to at most maxHeader bytes (128 when 0).
func (b *Builder) AddEthernetHeader(p Packet, maxHeader int) {
	if maxHeader <= 0 {
		maxHeader = 128
	}
	b.scratch = AppendEthernet(b.scratch[:0], p)
	h := b.scratch
	if len(h) > maxHeader {
		h = h[:maxHeader]
	}
	// frame_length includes the 4-byte FCS, stripped reports it removed.
	b.AddSampledHeader(HeaderEthernet, uint32(len(b.scratch)+4), 4, h)
}

// AddRawIPHeader appends a sampled_header record holding p as a bare IP
// packet (header_protocol 11 or 12), cut to at most maxHeader bytes.
func (b *Builder) AddRawIPHeader(p Packet, maxHeader int) {
	if maxHeader <= 0 {
		maxHeader = 128
	}
	b.scratch = AppendIP(b.scratch[:0], p)
	h := b.scratch
	if len(h) > maxHeader {
		h = h[:maxHeader]
	}
	proto := uint32(HeaderIPv4)
	if p.is6() {
		proto = HeaderIPv6
	}
	b.AddSampledHeader(proto, uint32(len(b.scratch)), 0, h)
}

// AddCounterSample appends a counter_sample (or expanded) with one
// generic if_counters record, which collectors must skip.
func (b *Builder) AddCounterSample(expanded bool, seq, ifIndex uint32) {
	if b.sampleAt >= 0 {
		b.EndFlowSample()
	}
	at := len(b.buf)
	if expanded {
		b.u32(FormatExpandedCounterSample)
	} else {
		b.u32(FormatCounterSample)
	}
	b.u32(0)
	b.u32(seq)
	if expanded {
		b.u32(0)
		b.u32(ifIndex)
	} else {
		b.u32(ifIndex)
	}
	b.u32(1)  // one record
	b.u32(1)  // generic interface counters
	b.u32(88) // its length
	b.u32(ifIndex)
	b.u32(6)                                                  // ifType ethernetCsmacd
	b.buf = append(b.buf, 0, 0, 0, 0, 0x3b, 0x9a, 0xca, 0x00) // ifSpeed 1G
	b.u32(1)                                                  // ifDirection
	b.u32(3)                                                  // ifStatus up/up
	for range 17 {                                            // counters
		b.u32(7)
	}
	binary.BigEndian.PutUint32(b.buf[at+4:], uint32(len(b.buf)-at-8))
	b.numSamples++
}

// AddRawSample appends a sample with any format and raw body.
func (b *Builder) AddRawSample(format uint32, body []byte) {
	if b.sampleAt >= 0 {
		b.EndFlowSample()
	}
	b.u32(format)
	b.u32(uint32(len(body)))
	b.buf = append(b.buf, body...)
	b.numSamples++
}

func pad4(n int) int { return (n + 3) &^ 3 }

// Stream generates a realistic sFlow stream from one agent: consecutive
// datagram sequence numbers, per-source flow sample sequence numbers and a
// growing sample pool. Not safe for concurrent use.
type Stream struct {
	Agent        netip.Addr
	SubAgentID   uint32
	SamplingRate uint32 // default 1 when 0
	InputIf      uint32
	OutputIf     uint32
	MaxHeader    int  // sampled header bytes, default 128
	Expanded     bool // use expanded_flow_sample

	seq    uint32 // last datagram sequence
	fseq   uint32 // last flow sample sequence
	pool   uint32
	uptime uint32
	b      Builder
}

// NewStream returns a Stream from agent with the given sampling rate.
func NewStream(agent netip.Addr, samplingRate uint32) *Stream {
	return &Stream{Agent: agent, SamplingRate: samplingRate, InputIf: 1, OutputIf: 2}
}

// Sequence returns the sequence number of the last datagram built.
func (s *Stream) Sequence() uint32 { return s.seq }

// SetSequence sets the sequence number of the last datagram built (the
// next datagram gets seq+1); use it to simulate loss or agent restarts.
func (s *Stream) SetSequence(seq uint32) { s.seq = seq }

// Datagram builds the next datagram with one flow sample per packet and
// returns it; it is valid until the next call.
func (s *Stream) Datagram(pkts ...Packet) []byte {
	rate := s.SamplingRate
	if rate == 0 {
		rate = 1
	}
	s.seq++
	s.uptime += 10
	s.b.Begin(Header{Agent: s.Agent, SubAgentID: s.SubAgentID, Sequence: s.seq, Uptime: s.uptime})
	for i := range pkts {
		s.fseq++
		s.pool += rate
		s.b.AddPacketSample(FlowSample{
			Expanded:      s.Expanded,
			Sequence:      s.fseq,
			SourceIDIndex: s.InputIf,
			SamplingRate:  rate,
			SamplePool:    s.pool,
			InputIf:       s.InputIf,
			OutputIf:      s.OutputIf,
		}, pkts[i], s.MaxHeader)
	}
	return s.b.Bytes()
}
