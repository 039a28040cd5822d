package sflow

import "github.com/rtbh/rtbh/detector/domain"

// Sample is one decoded flow sample: the flow record the detector reads
// and the sFlow context the agent reported with it. Decode fills a
// caller-owned Sample in place; nothing in it points into the datagram
// buffer, so a Sample stays valid after the buffer is reused.
type Sample struct {
	domain.Flow
	SampleInfo
}

// SampleInfo is what an sFlow flow sample says beyond the flow itself.
type SampleInfo struct {
	SubAgentID uint32
	Sequence   uint32 // flow sample sequence number

	SourceIDType  uint8  // 0 = ifIndex, 1 = smonVlanDataSource, 2 = entPhysicalEntry
	SourceIDIndex uint32 // the data source index
	InputIf       uint32 // input ifIndex (0 = unknown)
	OutputIf      uint32 // output ifIndex; 0x3FFFFFFF = unknown, high bit set = format/discard flags as sent

	SamplePool uint32 // total packets that could have been sampled
	Drops      uint32 // samples dropped for lack of resources
}

// Sink receives decoded flows in batches. The slice and its flows are
// owned by the caller and reused after HandleFlows returns: a Sink must
// copy what it keeps. HandleFlows is called from one goroutine per
// listener socket. The detector's engine is one; the Sink names only the
// neutral domain.Flow, so another flow input can feed the same Sink.
type Sink interface {
	HandleFlows(flows []domain.Flow)
}
