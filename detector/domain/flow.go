package domain

import "net/netip"

// Flow is one sampled packet as the detector reads it, whatever the
// protocol that carried it (sFlow today; NetFlow or IPFIX would fill the
// same record). Inputs decode into caller-owned Flows in place and hand
// them over in batches; nothing in a Flow points into a datagram buffer.
type Flow struct {
	Agent    netip.Addr // the exporter that sampled the packet
	Src, Dst netip.Addr // invalid (zero) when the sample carried no IP packet

	SamplingRate uint32 // 1 in N packets; never 0 in a decoded flow
	FrameLength  uint32 // original length of the sampled packet/frame in bytes

	Protocol uint8  // IP protocol number (6 = TCP, 17 = UDP)
	TCPFlags uint8  // zero unless Protocol is TCP and the header was present
	SrcPort  uint16 // zero when not TCP/UDP or a non-first fragment
	DstPort  uint16
	Fragment bool // true for a non-first IP fragment (ports unknown)
}
