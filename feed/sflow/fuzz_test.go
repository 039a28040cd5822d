package sflow_test

import (
	"encoding/binary"
	"testing"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

// FuzzDecode feeds whole datagrams to the decoder. Properties: no panic,
// no read outside the datagram (the input has exact capacity), at most
// as many samples as the datagram declares (and fits), every decoded
// sample sane, and a rejected datagram leaves no agent state.
// Seeds: testdata/fuzz/FuzzDecode plus every table test datagram.
func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases() {
		var b sflowtest.Builder
		tc.build(&b)
		f.Add(append([]byte(nil), b.Bytes()...))
	}
	for _, d := range benchDatagrams(4, 7) {
		f.Add(d)
	}
	out := make([]sflow.Sample, sflow.MaxSamples(65535))
	flows := make([]domain.Flow, sflow.MaxSamples(65535))
	f.Fuzz(func(t *testing.T, data []byte) {
		data = data[:len(data):len(data)]
		var d sflow.Decoder
		n, err := d.Decode(data, out)
		// DecodeFlows agrees with Decode on the same datagram.
		var df sflow.Decoder
		if nf, errf := df.DecodeFlows(data, flows); nf != n || errf != err {
			t.Fatalf("DecodeFlows = %d, %v; Decode = %d, %v", nf, errf, n, err)
		}
		for i := range n {
			if flows[i] != out[i].Flow {
				t.Fatalf("flow %d: DecodeFlows %+v, Decode %+v", i, flows[i], out[i].Flow)
			}
		}
		if err != nil {
			if _, ok := err.(sflow.Reason); !ok {
				t.Fatalf("error %T is not a Reason", err)
			}
			if n != 0 {
				t.Fatalf("n = %d with error %v", n, err)
			}
			if len(d.Agents()) != 0 {
				t.Fatal("rejected datagram created agent state")
			}
			return
		}
		if len(data) < 28 {
			t.Fatalf("accepted %d-byte datagram", len(data))
		}
		declared := binary.BigEndian.Uint32(data[24:])
		if binary.BigEndian.Uint32(data[4:]) == 2 {
			declared = binary.BigEndian.Uint32(data[36:])
		}
		if uint64(n) > uint64(declared) || n > sflow.MaxSamples(len(data)) {
			t.Fatalf("decoded %d samples, datagram declares %d, %d bytes", n, declared, len(data))
		}
		for i := range out[:n] {
			s := &out[i]
			switch {
			case s.SamplingRate == 0:
				t.Fatalf("sample %d: sampling rate 0", i)
			case !s.Agent.IsValid():
				t.Fatalf("sample %d: no agent", i)
			case s.Src.IsValid() != s.Dst.IsValid() || s.Src.IsValid() && s.Src.Is4() != s.Dst.Is4():
				t.Fatalf("sample %d: src %v dst %v", i, s.Src, s.Dst)
			case !s.Src.IsValid() && (s.Protocol != 0 || s.SrcPort != 0 || s.DstPort != 0 || s.Fragment):
				t.Fatalf("sample %d: L4 fields without addresses: %+v", i, *s)
			case s.Fragment && (s.SrcPort != 0 || s.DstPort != 0):
				t.Fatalf("sample %d: fragment with ports", i)
			case s.Protocol != 6 && s.Protocol != 17 && (s.SrcPort != 0 || s.DstPort != 0):
				t.Fatalf("sample %d: ports for protocol %d", i, s.Protocol)
			case s.Protocol != 6 && s.TCPFlags != 0:
				t.Fatalf("sample %d: TCP flags for protocol %d", i, s.Protocol)
			}
		}
		if agents := d.Agents(); len(agents) != 1 || agents[0].Samples != uint64(n) {
			t.Fatalf("agent state %+v after %d samples", agents, n)
		}
	})
}
