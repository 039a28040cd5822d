package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

func TestSubmitReportsPartialBatch(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	ctx := testCtx(t)
	isp := withToken(ctx, "isp-b-token")
	observed := time.Now().Add(-time.Hour).Truncate(time.Second)
	resp, err := a.rp.SubmitReports(isp, &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{
		{Address: "198.51.100.7", Kind: "spam", ObservedAt: timestamppb.New(observed), Count: 12, Evidence: "Received: from [198.51.100.7]"}, // 0 ok
		{Address: "not-an-address"}, // 1 bad address
		{Address: "198.51.100.8"},   // 2 ok, defaults
		{Address: "198.51.100.9", ObservedAt: &timestamppb.Timestamp{Seconds: -1e15}}, // 3 bad timestamp
		{Address: ""},                           // 4 missing address
		{Address: "198.51.100.0/24"},            // 5 a prefix
		{Address: "2001:db8::25", Kind: "worm"}, // 6 ok
		{Address: "198.51.100.10", ObservedAt: timestamppb.New(time.Now().Add(24 * time.Hour))}, // 7 future
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 3 {
		t.Fatalf("accepted = %d, want 3 (%v)", resp.Accepted, resp)
	}
	var idx []uint32
	for _, r := range resp.Rejected {
		idx = append(idx, r.Index)
		if r.Reason == "" {
			t.Errorf("rejection %d has no reason", r.Index)
		}
	}
	if fmt.Sprint(idx) != "[1 3 4 5 7]" {
		t.Fatalf("rejected indices = %v, want [1 3 4 5 7] (%v)", idx, resp.Rejected)
	}
	if !strings.Contains(resp.Rejected[1].Reason, "observed_at") || !strings.Contains(resp.Rejected[2].Reason, "required") {
		t.Fatalf("reasons do not say what is wrong: %v", resp.Rejected)
	}

	// The accepted reports are stored, with the partner's name and trust.
	off, err := a.st.GetOffender(withToken(ctx, "noc-token"), &rtbhv1.GetOffenderRequest{Address: "198.51.100.7"})
	if err != nil {
		t.Fatal(err)
	}
	if len(off.Offender.Reports) != 1 {
		t.Fatalf("reports = %v", off.Offender.Reports)
	}
	r := off.Offender.Reports[0]
	if r.Reporter != "isp-b" || r.Trust != 0.5 || r.Kind != "spam" || r.Count != 12 || !r.ObservedAt.AsTime().Equal(observed) || r.Evidence != "Received: from [198.51.100.7]" {
		t.Fatalf("stored report = %v", r)
	}
	if off.Offender.Score != 0.5 || off.Offender.Blackhole != nil {
		t.Fatalf("score %v blackhole %v, want 0.5 and none", off.Offender.Score, off.Offender.Blackhole)
	}
	off, err = a.st.GetOffender(withToken(ctx, "noc-token"), &rtbhv1.GetOffenderRequest{Address: "198.51.100.8"})
	if err != nil || off.Offender.Reports[0].Kind != "spam" || off.Offender.Reports[0].Count != 1 {
		t.Fatalf("defaults not applied: %v %v", off, err)
	}
}

func TestSubmitReportsBatchCap(t *testing.T) {
	a := startAPI(t, Config{MaxReportsPerBatch: 50}, nil)
	isp := withToken(testCtx(t), "isp-b-token")
	req := &rtbhv1.SubmitReportsRequest{}
	for i := range 50 {
		req.Reports = append(req.Reports, &rtbhv1.Report{Address: fmt.Sprintf("198.51.100.%d", i+1)})
	}
	resp, err := a.rp.SubmitReports(isp, req)
	if err != nil || resp.Accepted != 50 {
		t.Fatalf("batch at the cap: %v %v", resp, err)
	}
	req.Reports = append(req.Reports, &rtbhv1.Report{Address: "198.51.100.200"})
	_, err = a.rp.SubmitReports(isp, req)
	wantCode(t, err, codes.InvalidArgument)
	off, err := a.st.GetOffender(withToken(testCtx(t), "noc-token"), &rtbhv1.GetOffenderRequest{Address: "198.51.100.1"})
	if err != nil || len(off.Offender.Reports) != 1 {
		t.Fatalf("a refused batch stored reports: %v %v", off, err)
	}
}

func TestReportFusionThroughAPI(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	ctx := testCtx(t)
	op := withToken(ctx, "noc-token")
	report := func(token, addr string, age time.Duration) {
		t.Helper()
		r := &rtbhv1.Report{Address: addr}
		if age > 0 {
			r.ObservedAt = timestamppb.New(time.Now().Add(-age))
		}
		resp, err := a.rp.SubmitReports(withToken(ctx, token), &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{r}})
		if err != nil || resp.Accepted != 1 {
			t.Fatalf("report %s by %s: %v %v", addr, token, resp, err)
		}
	}
	active := func(prefix string) *rtbhv1.Blackhole {
		t.Helper()
		list, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range list.Blackholes {
			if b.Prefix == prefix {
				return b
			}
		}
		return nil
	}

	// One partner (trust 0.5) twice: 0.5, not 1.0.
	report("isp-b-token", "198.51.100.20", 0)
	report("isp-b-token", "198.51.100.20", 0)
	if b := active("198.51.100.20/32"); b != nil {
		t.Fatalf("one partner reporting twice crossed the threshold: %v", b)
	}
	// A report older than reports.window (24h) does not count.
	report("isp-c-token", "198.51.100.20", 25*time.Hour)
	if b := active("198.51.100.20/32"); b != nil {
		t.Fatalf("a report older than the window counted: %v", b)
	}
	// A second partner: 0.5 + 0.5 = 1.0.
	report("isp-c-token", "198.51.100.20", 0)
	b := active("198.51.100.20/32")
	if b == nil || b.Origin != "reports" {
		t.Fatalf("two partners did not blackhole the address: %v", b)
	}
	if d := b.ExpiresAt.AsTime().Sub(b.CreatedAt.AsTime()); d != 6*time.Hour {
		t.Fatalf("reports blackhole ttl %v, want reports.ttl 6h", d)
	}
	// An operator's report counts 1.0 on its own.
	report("noc-token", "198.51.100.21", 0)
	if b := active("198.51.100.21/32"); b == nil {
		t.Fatal("an operator report did not blackhole the address")
	}
}
