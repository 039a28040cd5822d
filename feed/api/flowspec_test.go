package api

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

func tcp(ports ...uint32) *rtbhv1.FlowSpecMatch {
	return &rtbhv1.FlowSpecMatch{Protocol: "tcp", DstPorts: ports}
}

// A filter and a route on one prefix are two entries, each added,
// extended, listed and removed by its own (prefix, match); the match is
// canonical whichever way it was given.
func TestFlowSpecEntries(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	op := withToken(testCtx(t), "noc-token")
	add := func(m *rtbhv1.FlowSpecMatch) *rtbhv1.AddBlackholeResponse {
		t.Helper()
		resp, err := a.bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.7", Reason: "zombie", Flowspec: m})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	f := add(tcp(25))
	if f.Existed || !cmp.Equal(f.Blackhole.Flowspec, tcp(25), protocmp.Transform()) {
		t.Fatalf("first filter: %v", f)
	}
	// Given as 587, 465-586, 25 it is tcp/25,465-587: another filter.
	f2 := add(&rtbhv1.FlowSpecMatch{Protocol: "TCP", DstPorts: []uint32{587, 25}, DstPortRanges: []*rtbhv1.PortRange{{First: 465, Last: 586}}})
	want2 := &rtbhv1.FlowSpecMatch{Protocol: "tcp", DstPorts: []uint32{25}, DstPortRanges: []*rtbhv1.PortRange{{First: 465, Last: 587}}}
	if f2.Existed || !cmp.Equal(f2.Blackhole.Flowspec, want2, protocmp.Transform()) {
		t.Fatalf("second filter: %v", f2)
	}
	if r := add(nil); r.Existed || r.Blackhole.Flowspec != nil {
		t.Fatalf("the route on the same prefix: %v", r)
	}
	if again := add(tcp(25)); !again.Existed {
		t.Fatal("adding tcp/25 again made a new entry")
	}
	list, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range list.Blackholes {
		got = append(got, b.Prefix+" "+matchOf(b.Flowspec))
	}
	if diff := cmp.Diff([]string{"198.51.100.7/32 -", "198.51.100.7/32 tcp/25", "198.51.100.7/32 tcp/25,465-587"}, got); diff != "" {
		t.Fatalf("list (-want +got):\n%s", diff)
	}

	// Remove the tcp/25 filter: the route and the other filter stay.
	if _, err := a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.7", Flowspec: tcp(25)}); err != nil {
		t.Fatal(err)
	}
	_, err = a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.7", Flowspec: tcp(25)})
	wantCode(t, err, codes.NotFound)
	_, err = a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.7", Flowspec: &rtbhv1.FlowSpecMatch{Protocol: "udp", DstPorts: []uint32{25}}})
	wantCode(t, err, codes.NotFound)
	list, _ = a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if len(list.Blackholes) != 2 || list.Blackholes[0].Flowspec != nil || list.Blackholes[1].Flowspec == nil {
		t.Fatalf("after removing tcp/25: %v", list.Blackholes)
	}
	// GetOffender shows the route first; once only a filter is left, the filter.
	if _, err := a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.7"}); err != nil {
		t.Fatal(err)
	}
	off, err := a.st.GetOffender(op, &rtbhv1.GetOffenderRequest{Address: "198.51.100.7"})
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(off.Offender.Blackhole.GetFlowspec(), want2, protocmp.Transform()) {
		t.Fatalf("offender's entry: %v", off.Offender.Blackhole)
	}
}

func matchOf(m *rtbhv1.FlowSpecMatch) string {
	if m == nil {
		return "-"
	}
	var b strings.Builder
	b.WriteString(m.Protocol + "/")
	for i, p := range m.DstPorts {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(itoa(p))
	}
	for _, r := range m.DstPortRanges {
		b.WriteString("," + itoa(r.First) + "-" + itoa(r.Last))
	}
	return b.String()
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// Malformed matches are INVALID_ARGUMENT with a message naming the
// problem, and nothing is added; the same policy refusals as for routes
// apply to filters.
func TestFlowSpecRefusals(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	op := withToken(testCtx(t), "noc-token")
	partner := withToken(testCtx(t), "isp-b-token")
	for name, tc := range map[string]struct {
		m    *rtbhv1.FlowSpecMatch
		want string
	}{
		"tcp/0":         {tcp(0), "port 0 is out of range 1-65535"},
		"tcp/70000":     {tcp(70000), "port 70000 is out of range 1-65535"},
		"icmp/25":       {&rtbhv1.FlowSpecMatch{Protocol: "icmp", DstPorts: []uint32{25}}, `protocol "icmp": want tcp or udp`},
		"sctp":          {&rtbhv1.FlowSpecMatch{Protocol: "sctp"}, `protocol "sctp": want tcp or udp`},
		"no protocol":   {&rtbhv1.FlowSpecMatch{DstPorts: []uint32{25}}, "missing protocol"},
		"no ports":      {&rtbhv1.FlowSpecMatch{Protocol: "udp"}, "no destination ports"},
		"reverse range": {&rtbhv1.FlowSpecMatch{Protocol: "udp", DstPortRanges: []*rtbhv1.PortRange{{First: 9, Last: 8}}}, "ends before it starts"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.7", Reason: "x", Flowspec: tc.m})
			wantCode(t, err, codes.InvalidArgument)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tc.want) {
				t.Errorf("message %q does not say %q", msg, tc.want)
			}
			_, err = a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.7", Flowspec: tc.m})
			wantCode(t, err, codes.InvalidArgument)
		})
	}
	for name, tc := range map[string]struct {
		ctxName, prefix string
		want            codes.Code
	}{
		"never_blackhole":  {"op", "198.51.100.53", codes.FailedPrecondition},
		"too short":        {"op", "198.51.0.0/16", codes.FailedPrecondition},
		"partner outside":  {"partner", "198.51.100.7", codes.PermissionDenied},
		"malformed prefix": {"op", "198.51.100.300", codes.InvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := op
			if tc.ctxName == "partner" {
				ctx = partner
			}
			_, err := a.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: tc.prefix, Reason: "x", Flowspec: tcp(25)})
			wantCode(t, err, tc.want)
		})
	}
	list, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if err != nil || len(list.Blackholes) != 0 {
		t.Fatalf("after refusals: %v, %v", list, err)
	}
}

// max_active counts filters and routes together.
func TestFlowSpecMaxActiveCountsBoth(t *testing.T) {
	cfg := testPolicy()
	cfg.Policy.MaxActive = 2
	a := startAPI(t, Config{}, newBackendWith(t, cfg))
	op := withToken(testCtx(t), "noc-token")
	for _, m := range []*rtbhv1.FlowSpecMatch{nil, tcp(25)} {
		if _, err := a.bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.7", Reason: "x", Flowspec: m}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := a.bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.7", Reason: "x", Flowspec: tcp(465)})
	wantCode(t, err, codes.ResourceExhausted)
	_, err = a.bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.8", Reason: "x"})
	wantCode(t, err, codes.ResourceExhausted)
	// Extending an existing filter is not a new entry.
	if _, err := a.bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.7", Reason: "x", Flowspec: tcp(25)}); err != nil {
		t.Fatal(err)
	}
}
