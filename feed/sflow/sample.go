package sflow

import "net/netip"

// Sample is one decoded flow sample: the sampled packet's addresses and
// ports plus the sampling context the agent reported. Decoders fill a
// caller-owned Sample in place; nothing in it points into the datagram
// buffer, so a Sample stays valid after the buffer is reused.
type Sample struct {
	Agent      netip.Addr // agent address from the datagram header
	SubAgentID uint32
	Sequence   uint32 // flow sample sequence number

	SourceIDType  uint8  // 0 = ifIndex, 1 = smonVlanDataSource, 2 = entPhysicalEntry
	SourceIDIndex uint32 // the data source index
	InputIf       uint32 // input ifIndex (0 = unknown)
	OutputIf      uint32 // output ifIndex; 0x3FFFFFFF = unknown, high bit set = format/discard flags as sent

	SamplingRate uint32 // 1 in N packets; never 0 in a decoded sample
	SamplePool   uint32 // total packets that could have been sampled
	Drops        uint32 // samples dropped for lack of resources

	FrameLength uint32 // original length of the sampled packet/frame in bytes

	Src, Dst netip.Addr // invalid (zero) when the sample carried no IP packet
	Protocol uint8      // IP protocol number (6 = TCP, 17 = UDP)
	SrcPort  uint16     // zero when not TCP/UDP or a non-first fragment
	DstPort  uint16
	TCPFlags uint8 // zero unless Protocol is TCP and the header was present
	Fragment bool  // true for a non-first IP fragment (ports unknown)
}

// Sink receives decoded samples in batches. The slice and its samples are
// owned by the caller and reused after HandleSamples returns: a Sink must
// copy what it keeps. HandleSamples is called from one goroutine per
// listener socket.
type Sink interface {
	HandleSamples(samples []Sample)
}
