package sflow

import (
	"encoding/binary"
	"net/netip"

	"github.com/rtbh/rtbh/detector/domain"
)

// Reason says why a datagram was rejected. It implements error so Decode
// can return it without allocating.
type Reason uint8

// Reasons a datagram is rejected. Every rejected datagram is dropped whole.
const (
	ReasonNone                Reason = iota
	ReasonTruncatedHeader            // shorter than the datagram header
	ReasonVersion                    // not sFlow version 5
	ReasonAgentAddressType           // agent address type neither IPv4 (1) nor IPv6 (2)
	ReasonSampleCount                // num_samples larger than the datagram can hold
	ReasonTruncatedSample            // a sample header or body runs past the datagram
	ReasonTruncatedFlowSample        // a flow sample shorter than its fixed fields
	ReasonSamplingRateZero           // a flow sample with sampling_rate 0
	ReasonRecordCount                // num_records larger than the sample can hold
	ReasonTruncatedRecord            // a flow record runs past its sample
	ReasonRecordLength               // a known flow record shorter than its fixed fields
	ReasonHeaderLength               // sampled_header header_length runs past its record
	ReasonTruncatedDatagram          // the datagram did not fit the receive buffer
	ReasonOutputFull                 // more flow samples than the output slice holds

	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone:                "none",
	ReasonTruncatedHeader:     "truncated_header",
	ReasonVersion:             "version",
	ReasonAgentAddressType:    "agent_address_type",
	ReasonSampleCount:         "sample_count",
	ReasonTruncatedSample:     "truncated_sample",
	ReasonTruncatedFlowSample: "truncated_flow_sample",
	ReasonSamplingRateZero:    "sampling_rate_zero",
	ReasonRecordCount:         "record_count",
	ReasonTruncatedRecord:     "truncated_record",
	ReasonRecordLength:        "record_length",
	ReasonHeaderLength:        "header_length",
	ReasonTruncatedDatagram:   "truncated_datagram",
	ReasonOutputFull:          "output_full",
}

// String returns the reason as used in the metric label.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Error implements error.
func (r Reason) Error() string { return "malformed sFlow datagram: " + r.String() }

// Reasons lists every rejection reason (not ReasonNone), for metrics.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := ReasonNone + 1; r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

const (
	datagramHeaderMin = 8  // version + agent address type
	sampleHeaderLen   = 8  // format + length
	flowFixedLen      = 32 // flow_sample fields up to num_records
	expFlowFixedLen   = 44 // expanded_flow_sample fields up to num_records
	recordHeaderLen   = 8
	sampledHeaderLen  = 16 // protocol, frame_length, stripped, header_length
	sampledIPv4Len    = 32
	sampledIPv6Len    = 56

	// MinFlowSampleLen is the smallest encoded flow sample (8-byte sample
	// header + 32 fixed bytes, no records).
	MinFlowSampleLen = sampleHeaderLen + flowFixedLen
)

// MaxSamples returns the most flow samples a datagram of size bytes can
// declare and Decode accept: an output slice this long never fills.
func MaxSamples(size int) int {
	const minHeader = 28 // IPv4 agent
	if size < minHeader {
		return 0
	}
	return (size - minHeader) / MinFlowSampleLen
}

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// Decode decodes one sFlow v5 datagram into out, one Sample per flow
// sample (flow_sample and expanded_flow_sample); counter samples and
// unknown samples and records are skipped by their length. It returns
// the number of samples written. A malformed datagram yields (0, r) with
// r a Reason; nothing of it is kept and the agent's sequence state is not
// touched. Decode never allocates, except the first time it sees an agent
// (to track it), and never reads outside datagram. The Samples hold no
// references into datagram.
func (d *Decoder) Decode(datagram []byte, out []Sample) (int, error) {
	o := output{samples: out}
	n, hdr, r := decode(datagram, &o)
	if r != ReasonNone {
		d.errors[r]++
		return 0, r
	}
	d.account(hdr, &o, n)
	return n, nil
}

// DecodeFlows is Decode for a consumer of flows only, such as the
// Collector: it fills out's domain.Flows in place and keeps the rest of
// each sample (SampleInfo) in the Decoder, for the agent's accounting,
// until the next call. Besides what Decode allocates, the Decoder grows
// that scratch space when a datagram may declare more samples than any
// before (one per sample header its size holds, at most len(out)), so
// that it fails, if it does, for the same Reason as in Decode.
func (d *Decoder) DecodeFlows(datagram []byte, out []domain.Flow) (int, error) {
	if need := min(len(out), len(datagram)/sampleHeaderLen); len(d.infos) < need {
		d.infos = make([]SampleInfo, need)
	}
	o := output{flows: out[:min(len(out), len(d.infos))], infos: d.infos}
	n, hdr, r := decode(datagram, &o)
	if r != ReasonNone {
		d.errors[r]++
		return 0, r
	}
	d.account(hdr, &o, n)
	return n, nil
}

// output is where decode writes: whole Samples (Decode), or flows with
// their SampleInfo alongside in the Decoder's scratch (DecodeFlows).
type output struct {
	samples []Sample
	flows   []domain.Flow
	infos   []SampleInfo // at least as long as flows
}

func (o *output) len() int {
	if o.samples != nil {
		return len(o.samples)
	}
	return len(o.flows)
}

func (o *output) at(i int) (*domain.Flow, *SampleInfo) {
	if o.samples != nil {
		s := &o.samples[i]
		return &s.Flow, &s.SampleInfo
	}
	return &o.flows[i], &o.infos[i]
}

func (o *output) info(i int) *SampleInfo {
	if o.samples != nil {
		return &o.samples[i].SampleInfo
	}
	return &o.infos[i]
}

// DatagramHeader is the header of an sFlow v5 datagram.
type DatagramHeader struct {
	Agent      netip.Addr
	SubAgentID uint32
	Sequence   uint32
	Uptime     uint32 // milliseconds since the agent started
	NumSamples uint32
}

func decode(b []byte, out *output) (int, DatagramHeader, Reason) {
	var h DatagramHeader
	if len(b) < datagramHeaderMin {
		return 0, h, ReasonTruncatedHeader
	}
	if be32(b) != 5 {
		return 0, h, ReasonVersion
	}
	off := 8
	switch be32(b[4:]) {
	case 1:
		if len(b) < off+4+16 {
			return 0, h, ReasonTruncatedHeader
		}
		h.Agent = netip.AddrFrom4([4]byte(b[off : off+4]))
		off += 4
	case 2:
		if len(b) < off+16+16 {
			return 0, h, ReasonTruncatedHeader
		}
		h.Agent = netip.AddrFrom16([16]byte(b[off : off+16]))
		off += 16
	default:
		return 0, h, ReasonAgentAddressType
	}
	h.SubAgentID = be32(b[off:])
	h.Sequence = be32(b[off+4:])
	h.Uptime = be32(b[off+8:])
	h.NumSamples = be32(b[off+12:])
	off += 16
	if uint64(h.NumSamples) > uint64((len(b)-off)/sampleHeaderLen) {
		return 0, h, ReasonSampleCount
	}
	n := 0
	for range h.NumSamples {
		if len(b)-off < sampleHeaderLen {
			return 0, h, ReasonTruncatedSample
		}
		format := be32(b[off:])
		length := be32(b[off+4:])
		off += sampleHeaderLen
		if uint64(length) > uint64(len(b)-off) {
			return 0, h, ReasonTruncatedSample
		}
		body := b[off : off+int(length)]
		off += int(length)
		if format != 1 && format != 3 { // counters, enterprise formats: skip
			continue
		}
		if n >= out.len() {
			return 0, h, ReasonOutputFull
		}
		f, m := out.at(n)
		if r := decodeFlowSample(body, format == 3, f, m); r != ReasonNone {
			return 0, h, r
		}
		f.Agent = h.Agent
		m.SubAgentID = h.SubAgentID
		n++
	}
	return n, h, ReasonNone
}

func decodeFlowSample(b []byte, expanded bool, s *domain.Flow, m *SampleInfo) Reason {
	var off int
	if expanded {
		if len(b) < expFlowFixedLen {
			return ReasonTruncatedFlowSample
		}
		*s = domain.Flow{SamplingRate: be32(b[12:])}
		*m = SampleInfo{
			Sequence:      be32(b),
			SourceIDType:  uint8(be32(b[4:])),
			SourceIDIndex: be32(b[8:]),
			SamplePool:    be32(b[16:]),
			Drops:         be32(b[20:]),
			InputIf:       be32(b[28:]),
			OutputIf:      be32(b[32:])<<30 | be32(b[36:])&0x3fffffff,
		}
		off = expFlowFixedLen
	} else {
		if len(b) < flowFixedLen {
			return ReasonTruncatedFlowSample
		}
		src := be32(b[4:])
		*s = domain.Flow{SamplingRate: be32(b[8:])}
		*m = SampleInfo{
			Sequence:      be32(b),
			SourceIDType:  uint8(src >> 24),
			SourceIDIndex: src & 0xffffff,
			SamplePool:    be32(b[12:]),
			Drops:         be32(b[16:]),
			InputIf:       be32(b[20:]),
			OutputIf:      be32(b[24:]),
		}
		off = flowFixedLen
	}
	if s.SamplingRate == 0 {
		return ReasonSamplingRateZero
	}
	nrec := be32(b[off-4:])
	if uint64(nrec) > uint64((len(b)-off)/recordHeaderLen) {
		return ReasonRecordCount
	}
	fromHeader := false
	for range nrec {
		if len(b)-off < recordHeaderLen {
			return ReasonTruncatedRecord
		}
		format := be32(b[off:])
		length := be32(b[off+4:])
		off += recordHeaderLen
		if uint64(length) > uint64(len(b)-off) {
			return ReasonTruncatedRecord
		}
		rec := b[off : off+int(length)]
		off += int(length)
		switch format {
		case 1: // sampled_header
			if len(rec) < sampledHeaderLen {
				return ReasonRecordLength
			}
			hl := be32(rec[12:])
			if uint64(hl) > uint64(len(rec)-sampledHeaderLen) {
				return ReasonHeaderLength
			}
			if fromHeader {
				continue // keep the first packet header
			}
			s.FrameLength = be32(rec[4:])
			hdr := rec[sampledHeaderLen : sampledHeaderLen+int(hl)]
			switch be32(rec) {
			case 1:
				parseEthernet(hdr, s)
			case 11:
				parseIPv4(hdr, s)
			case 12:
				parseIPv6(hdr, s)
			}
			fromHeader = s.Src.IsValid()
		case 3: // sampled_ipv4
			if len(rec) < sampledIPv4Len {
				return ReasonRecordLength
			}
			if fromHeader || s.Src.IsValid() {
				continue
			}
			if s.FrameLength == 0 {
				s.FrameLength = be32(rec)
			}
			s.Protocol = uint8(be32(rec[4:]))
			s.Src = netip.AddrFrom4([4]byte(rec[8:12]))
			s.Dst = netip.AddrFrom4([4]byte(rec[12:16]))
			sampledPorts(rec[16:], s)
		case 4: // sampled_ipv6
			if len(rec) < sampledIPv6Len {
				return ReasonRecordLength
			}
			if fromHeader || s.Src.IsValid() {
				continue
			}
			if s.FrameLength == 0 {
				s.FrameLength = be32(rec)
			}
			s.Protocol = uint8(be32(rec[4:]))
			s.Src = netip.AddrFrom16([16]byte(rec[8:24]))
			s.Dst = netip.AddrFrom16([16]byte(rec[24:40]))
			sampledPorts(rec[40:], s)
		}
	}
	return ReasonNone
}

// sampledPorts fills ports and flags from the src_port, dst_port,
// tcp_flags words of a sampled_ipv4/ipv6 record.
func sampledPorts(b []byte, s *domain.Flow) {
	if s.Protocol != protoTCP && s.Protocol != protoUDP {
		return
	}
	s.SrcPort = uint16(be32(b))
	s.DstPort = uint16(be32(b[4:]))
	if s.Protocol == protoTCP {
		s.TCPFlags = uint8(be32(b[8:]))
	}
}

const (
	protoTCP = 6
	protoUDP = 17

	maxTags      = 8  // VLAN tags followed before giving up
	maxLabels    = 16 // MPLS labels followed before giving up
	maxExtHeader = 16 // IPv6 extension headers followed before giving up
)

// parseEthernet fills s from an Ethernet frame that may be cut anywhere.
// A frame too short to reach the IP addresses leaves them invalid.
func parseEthernet(b []byte, s *domain.Flow) {
	if len(b) < 14 {
		return
	}
	et := be16(b[12:])
	off := 14
	for range maxTags {
		if et != 0x8100 && et != 0x88a8 && et != 0x9100 {
			break
		}
		if len(b)-off < 4 {
			return
		}
		et = be16(b[off+2:])
		off += 4
	}
	switch et {
	case 0x0800:
		parseIPv4(b[off:], s)
	case 0x86dd:
		parseIPv6(b[off:], s)
	case 0x8847, 0x8848:
		for i := 0; ; i++ {
			if i == maxLabels || len(b)-off < 4 {
				return
			}
			bos := b[off+2]&1 != 0
			off += 4
			if bos {
				break
			}
		}
		if off >= len(b) {
			return
		}
		switch b[off] >> 4 {
		case 4:
			parseIPv4(b[off:], s)
		case 6:
			parseIPv6(b[off:], s)
		}
	}
}

func parseIPv4(b []byte, s *domain.Flow) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	ihl := int(b[0]&0x0f) * 4
	s.Protocol = b[9]
	s.Src = netip.AddrFrom4([4]byte(b[12:16]))
	s.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	if be16(b[6:])&0x1fff != 0 {
		s.Fragment = true
		return
	}
	if ihl < 20 || ihl > len(b) {
		return
	}
	parseL4(b[ihl:], s)
}

func parseIPv6(b []byte, s *domain.Flow) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return
	}
	s.Src = netip.AddrFrom16([16]byte(b[8:24]))
	s.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	off := 40
	for range maxExtHeader {
		switch next {
		case 0, 43, 60, 135, 139, 140: // hop-by-hop, routing, dest opts, mobility, HIP, shim6
			if len(b)-off < 2 {
				s.Protocol = next
				return
			}
			next, off = b[off], off+(int(b[off+1])+1)*8
		case 51: // AH: length in 4-byte units, minus 2
			if len(b)-off < 2 {
				s.Protocol = next
				return
			}
			next, off = b[off], off+(int(b[off+1])+2)*4
		case 44: // fragment
			if len(b)-off < 8 {
				s.Protocol = next
				return
			}
			fragOff := be16(b[off+2:]) >> 3
			next, off = b[off], off+8
			if fragOff != 0 {
				s.Protocol = next
				s.Fragment = true
				return
			}
		default:
			s.Protocol = next
			if off <= len(b) {
				parseL4(b[off:], s)
			}
			return
		}
		if off > len(b) {
			s.Protocol = next
			return
		}
	}
	s.Protocol = next
}

func parseL4(b []byte, s *domain.Flow) {
	switch s.Protocol {
	case protoTCP:
		if len(b) >= 4 {
			s.SrcPort = be16(b)
			s.DstPort = be16(b[2:])
		}
		if len(b) >= 14 {
			s.TCPFlags = b[13]
		}
	case protoUDP:
		if len(b) >= 4 {
			s.SrcPort = be16(b)
			s.DstPort = be16(b[2:])
		}
	}
}
