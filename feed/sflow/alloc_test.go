package sflow_test

import (
	"testing"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

// TestDecodeNoAllocs proves Decode and DecodeFlows allocate nothing per
// datagram or per sample once the agent is known, for every table
// datagram and for the mixed 7-sample benchmark datagrams.
func TestDecodeNoAllocs(t *testing.T) {
	var dgrams [][]byte
	for _, tc := range decodeCases() {
		var b sflowtest.Builder
		tc.build(&b)
		dgrams = append(dgrams, append([]byte(nil), b.Bytes()...))
	}
	dgrams = append(dgrams, benchDatagrams(16, 7)...)
	var d sflow.Decoder
	out := make([]sflow.Sample, 16)
	for _, dg := range dgrams { // first sight of each agent allocates its state
		if _, err := d.Decode(dg, out); err != nil {
			t.Fatal(err)
		}
	}
	samples := 0
	allocs := testing.AllocsPerRun(100, func() {
		samples = 0
		for _, dg := range dgrams {
			n, err := d.Decode(dg, out)
			if err != nil {
				t.Fatal(err)
			}
			samples += n
		}
	})
	if samples < 100 {
		t.Fatalf("only %d samples decoded per run", samples)
	}
	if allocs != 0 {
		t.Errorf("%v allocs per %d datagrams (%d samples), want 0", allocs, len(dgrams), samples)
	}
	// DecodeFlows, the Collector's path, once its scratch has grown.
	flows := make([]domain.Flow, 16)
	for _, dg := range dgrams {
		if _, err := d.DecodeFlows(dg, flows); err != nil {
			t.Fatal(err)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() {
		for _, dg := range dgrams {
			if _, err := d.DecodeFlows(dg, flows); err != nil {
				t.Fatal(err)
			}
		}
	}); allocs != 0 {
		t.Errorf("DecodeFlows: %v allocs per %d datagrams, want 0", allocs, len(dgrams))
	}
	// Rejected datagrams do not allocate either.
	bad := append([]byte(nil), dgrams[0]...)
	bad[len(bad)-1] = 0
	bad = bad[:len(bad)-4]
	if allocs := testing.AllocsPerRun(100, func() {
		if _, err := d.Decode(bad, out); err == nil {
			t.Fatal("truncated datagram accepted")
		}
	}); allocs != 0 {
		t.Errorf("%v allocs per rejected datagram, want 0", allocs)
	}
}
