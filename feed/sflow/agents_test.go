package sflow_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

// dgram is one datagram of a sequence-tracking scenario.
type dgram struct {
	seq, uptime uint32
	sub         uint32
	// flow samples: sequence, pool, drops (one source)
	samples [][3]uint32
}

func buildDgram(d dgram) []byte {
	var b sflowtest.Builder
	b.Begin(sflowtest.Header{Agent: agent4, SubAgentID: d.sub, Sequence: d.seq, Uptime: d.uptime})
	for _, s := range d.samples {
		b.AddPacketSample(sflowtest.FlowSample{Sequence: s[0], SourceIDIndex: 3, SamplingRate: 10, SamplePool: s[1], Drops: s[2], InputIf: 3}, tcp4(), 64)
	}
	return append([]byte(nil), b.Bytes()...)
}

func TestAgentTracking(t *testing.T) {
	tests := []struct {
		name   string
		dgrams []dgram
		want   []sflow.AgentStats
	}{
		{"in order", []dgram{{seq: 1, uptime: 1000}, {seq: 2, uptime: 2000}, {seq: 3, uptime: 3000}},
			[]sflow.AgentStats{{Datagrams: 3, Sequence: 3}}},
		{"gap", []dgram{{seq: 1}, {seq: 2}, {seq: 6}, {seq: 7}},
			[]sflow.AgentStats{{Datagrams: 4, Sequence: 7, Lost: 3}}},
		{"reordered and duplicated", []dgram{{seq: 7}, {seq: 10}, {seq: 8}, {seq: 10}, {seq: 11}},
			[]sflow.AgentStats{{Datagrams: 5, Sequence: 11, Lost: 2, Late: 2}}},
		{"sequence wraps", []dgram{{seq: 0xfffffffe}, {seq: 0xffffffff}, {seq: 0}, {seq: 2}},
			[]sflow.AgentStats{{Datagrams: 4, Sequence: 2, Lost: 1}}},
		{"restart by uptime", []dgram{{seq: 500, uptime: 900_000}, {seq: 501, uptime: 901_000}, {seq: 1, uptime: 500}, {seq: 2, uptime: 1500}},
			[]sflow.AgentStats{{Datagrams: 4, Sequence: 2, Restarts: 1}}},
		{"restart by sequence, uptime always 0", []dgram{{seq: 1000}, {seq: 1001}, {seq: 1}, {seq: 3}},
			[]sflow.AgentStats{{Datagrams: 4, Sequence: 3, Restarts: 1, Lost: 1}}},
		{"sub-agents tracked apart", []dgram{{seq: 1, sub: 0}, {seq: 50, sub: 1}, {seq: 2, sub: 0}, {seq: 51, sub: 1}},
			[]sflow.AgentStats{{Datagrams: 2, Sequence: 2}, {SubAgentID: 1, Datagrams: 2, Sequence: 51}}},
		{"sample pool, drops and lost samples", []dgram{
			{seq: 1, samples: [][3]uint32{{1, 10, 0}, {2, 20, 0}}},
			{seq: 2, samples: [][3]uint32{{3, 30, 1}, {6, 60, 4}}}, // samples 4 and 5 lost, 4 agent drops
			{seq: 3, samples: [][3]uint32{{7, 70, 4}}},
		}, []sflow.AgentStats{{Datagrams: 3, Sequence: 3, Samples: 5, SamplesLost: 2, Pool: 60, Drops: 4, SamplingRate: 10}}},
		{"source counters restart with agent", []dgram{
			{seq: 900, uptime: 100_000, samples: [][3]uint32{{5000, 50000, 9}}},
			{seq: 1, uptime: 10, samples: [][3]uint32{{1, 10, 0}}},
			{seq: 2, uptime: 20, samples: [][3]uint32{{2, 20, 0}}},
		}, []sflow.AgentStats{{Datagrams: 3, Sequence: 2, Restarts: 1, Samples: 3, Pool: 10, SamplingRate: 10}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d sflow.Decoder
			out := make([]sflow.Sample, 8)
			for _, dg := range tc.dgrams {
				if _, err := d.Decode(buildDgram(dg), out); err != nil {
					t.Fatal(err)
				}
			}
			for i := range tc.want {
				tc.want[i].Agent = agent4
			}
			if diff := cmp.Diff(tc.want, d.Agents(), addrCmp); diff != "" {
				t.Errorf("Agents (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAgentLimit checks that spoofed agent addresses cannot grow the
// decoder's state without bound.
func TestAgentLimit(t *testing.T) {
	var d sflow.Decoder
	var b sflowtest.Builder
	out := make([]sflow.Sample, 1)
	for i := range 5000 {
		b.Begin(sflowtest.Header{Agent: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Sequence: 1})
		if _, err := d.Decode(b.Bytes(), out); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(d.Agents()); got != 4096 {
		t.Errorf("%d agents tracked, want the limit 4096", got)
	}
	if got := d.Untracked(); got != 5000-4096 {
		t.Errorf("Untracked() = %d", got)
	}
}
