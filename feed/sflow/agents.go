package sflow

import (
	"net/netip"
	"slices"
)

// Limits on per-agent state, so spoofed agent addresses cannot grow the
// decoder without bound. Agents past the limit are decoded but not tracked.
const (
	maxAgents          = 4096
	maxSourcesPerAgent = 64
	// A datagram whose sequence number is at most reorderWindow behind the
	// last one is a late (reordered or duplicated) datagram; further back
	// means the agent restarted.
	reorderWindow = 256
	// An uptime that moves back by more than this (ms) means a restart.
	uptimeSlack = 60_000
)

// Decoder decodes sFlow v5 datagrams and tracks every agent's sequence
// numbers (lost datagrams, restarts) and its flow samples' sample_pool and
// drops. A Decoder is not safe for concurrent use: use one per reader
// goroutine. The zero value is ready to use.
type Decoder struct {
	agents    map[agentKey]*agentState
	untracked uint64
	errors    [numReasons]uint64

	// newAgent, if set, is called once per newly tracked agent; its result
	// receives the number of datagrams lost whenever a gap is seen, and
	// the agent's sampling rate whenever it changes.
	newAgent func(agent netip.Addr, subAgentID uint32) agentMetrics

	infos []SampleInfo // DecodeFlows' scratch: the samples' sFlow details
}

type lossCounter interface {
	Add(float64)
}

type rateGauge interface {
	Set(float64)
}

// agentMetrics are an agent's metrics the decoder updates.
type agentMetrics struct {
	lost lossCounter
	rate rateGauge
}

type agentKey struct {
	addr netip.Addr
	sub  uint32
}

type agentState struct {
	AgentStats
	uptime  uint32
	sources []sourceState
	agentMetrics
}

type sourceState struct {
	id    uint32 // type<<24 | index
	seq   uint32
	pool  uint32
	drops uint32
}

// AgentStats is what the decoder knows about one agent (address and
// sub-agent id).
type AgentStats struct {
	Agent      netip.Addr
	SubAgentID uint32
	Datagrams  uint64 // valid datagrams decoded
	Sequence   uint32 // last datagram sequence number
	Lost       uint64 // datagrams missing from the sequence
	Late       uint64 // reordered or duplicated datagrams
	Restarts   uint64 // sequence or uptime resets
	Samples    uint64 // flow samples decoded
	// SamplesLost counts flow samples missing from the per-source flow
	// sample sequences (mostly inside lost datagrams).
	SamplesLost uint64
	// Pool is the sum of sample_pool increments: packets that passed the
	// sampled data sources while we were listening.
	Pool uint64
	// Drops is the sum of drops increments: samples the agent itself
	// dropped for lack of resources.
	Drops uint64
	// SamplingRate is the sampling rate (1 in N) of the agent's latest
	// flow sample.
	SamplingRate uint32
}

// Agents returns a snapshot of the tracked agents, sorted by address and
// sub-agent id. It allocates; it is meant for tests and status pages.
func (d *Decoder) Agents() []AgentStats {
	out := make([]AgentStats, 0, len(d.agents))
	for _, a := range d.agents {
		out = append(out, a.AgentStats)
	}
	slices.SortFunc(out, func(a, b AgentStats) int {
		if c := a.Agent.Compare(b.Agent); c != 0 {
			return c
		}
		return int(int64(a.SubAgentID) - int64(b.SubAgentID))
	})
	return out
}

// Errors returns how many datagrams Decode rejected for reason r.
func (d *Decoder) Errors(r Reason) uint64 {
	if r >= numReasons {
		return 0
	}
	return d.errors[r]
}

// Untracked returns how many valid datagrams came from agents beyond the
// tracking limit.
func (d *Decoder) Untracked() uint64 { return d.untracked }

// account updates the agent's state with one valid datagram.
func (d *Decoder) account(h DatagramHeader, samples *output, n int) {
	k := agentKey{h.Agent, h.SubAgentID}
	a := d.agents[k]
	if a == nil {
		if len(d.agents) >= maxAgents {
			d.untracked++
			return
		}
		if d.agents == nil {
			d.agents = make(map[agentKey]*agentState)
		}
		a = &agentState{AgentStats: AgentStats{Agent: h.Agent, SubAgentID: h.SubAgentID, Sequence: h.Sequence}}
		a.uptime = h.Uptime
		if d.newAgent != nil {
			a.agentMetrics = d.newAgent(h.Agent, h.SubAgentID)
		}
		d.agents[k] = a
		a.Datagrams = 1
		a.trackSamples(samples, n)
		return
	}
	a.Datagrams++
	restart := false
	delta := h.Sequence - a.Sequence // modulo 2^32
	uptimeBack := h.Uptime < a.uptime && a.uptime-h.Uptime > uptimeSlack
	switch {
	case uptimeBack:
		restart = true
	case delta == 0 || delta > 1<<31 && -delta <= reorderWindow:
		// Duplicate or reordered: already counted as lost when the gap
		// opened; the samples are still good.
		a.Late++
		a.trackSamples(samples, n)
		return
	case delta > 1<<31:
		restart = true
	default:
		if lost := delta - 1; lost > 0 {
			a.Lost += uint64(lost)
			if a.lost != nil {
				a.lost.Add(float64(lost))
			}
		}
	}
	a.Sequence = h.Sequence
	a.uptime = h.Uptime
	if restart {
		a.Restarts++
		a.sources = a.sources[:0]
	}
	a.trackSamples(samples, n)
}

// trackSamples follows each data source's flow sample sequence, sample
// pool and drops counters.
func (a *agentState) trackSamples(samples *output, n int) {
	a.Samples += uint64(n)
	for i := range n {
		if f, _ := samples.at(i); f.SamplingRate != a.SamplingRate {
			a.SamplingRate = f.SamplingRate
			if a.rate != nil {
				a.rate.Set(float64(f.SamplingRate))
			}
		}
		s := samples.info(i)
		id := uint32(s.SourceIDType)<<24 | s.SourceIDIndex&0xffffff
		var src *sourceState
		for j := range a.sources {
			if a.sources[j].id == id {
				src = &a.sources[j]
				break
			}
		}
		if src == nil {
			if len(a.sources) == maxSourcesPerAgent {
				continue
			}
			a.sources = append(a.sources, sourceState{id: id, seq: s.Sequence, pool: s.SamplePool, drops: s.Drops})
			continue
		}
		delta := s.Sequence - src.seq
		if delta == 0 || delta > 1<<31 && -delta <= reorderWindow {
			continue // late or duplicated sample
		}
		if delta > 1<<31 { // the source's counters started over
			*src = sourceState{id: id, seq: s.Sequence, pool: s.SamplePool, drops: s.Drops}
			continue
		}
		a.SamplesLost += uint64(delta - 1)
		a.Pool += uint64(s.SamplePool - src.pool)
		a.Drops += uint64(s.Drops - src.drops)
		src.seq, src.pool, src.drops = s.Sequence, s.SamplePool, s.Drops
	}
}
