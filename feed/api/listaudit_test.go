package api

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// TestListAudit: through real gRPC into the real decision path and SQLite:
// operators page through everything newest first with the filters,
// partners are refused, bad requests are INVALID_ARGUMENT.
func TestListAudit(t *testing.T) {
	m, db := newBackendDB(t, testPolicy())
	isp := client("isp-b", RolePartner, "isp-b-token", "203.0.113.0/24")
	ts := startServer(t, Config{Clients: []Client{client("noc", RoleOperator, "noc-token"), isp}}, m, nil)
	ts.SetAuditReader(db)
	cc := dial(t, ts.addr, nil)
	bh, au := rtbhv1.NewBlackholeServiceClient(cc), rtbhv1.NewAuditServiceClient(cc)
	op, partner := withToken(testCtx(t), "noc-token"), withToken(testCtx(t), "isp-b-token")

	start := time.Now()
	for i := range 25 {
		if _, err := bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: fmt.Sprintf("198.51.100.%d", i+1), Reason: fmt.Sprintf("r%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bh.AddBlackhole(partner, &rtbhv1.AddBlackholeRequest{Prefix: "203.0.113.9", Reason: "partner's"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.3", Reason: "cleaned"}); err != nil {
		t.Fatal(err)
	}

	// Everything, 10 a page, newest first, no row twice.
	var all []*rtbhv1.AuditEntry
	tok := ""
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("paging does not end")
		}
		resp, err := au.ListAudit(op, &rtbhv1.ListAuditRequest{PageSize: 10, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, resp.Entries...)
		if tok = resp.NextPageToken; tok == "" {
			break
		}
		if len(resp.Entries) != 10 {
			t.Fatalf("a page before the last has %d rows", len(resp.Entries))
		}
	}
	if len(all) != 27 {
		t.Fatalf("%d rows, want 27", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Id >= all[i-1].Id {
			t.Fatalf("not newest first at %d: %d after %d", i, all[i].Id, all[i-1].Id)
		}
	}
	if e := all[0]; e.Actor != "noc" || e.Action != "remove" || e.Prefix != "198.51.100.3/32" || e.Reason != "cleaned" || e.At.AsTime().Before(start.Add(-time.Second)) {
		t.Fatalf("newest row = %v", e)
	}

	// Filters.
	count := func(req *rtbhv1.ListAuditRequest) int {
		t.Helper()
		resp, err := au.ListAudit(op, req)
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Entries)
	}
	for name, tc := range map[string]struct {
		req  *rtbhv1.ListAuditRequest
		want int
	}{
		"prefix host":   {&rtbhv1.ListAuditRequest{Prefix: "198.51.100.3"}, 2},
		"prefix inside": {&rtbhv1.ListAuditRequest{Prefix: "198.51.100.0/28"}, 16},
		"actor":         {&rtbhv1.ListAuditRequest{Actor: "isp-b"}, 1},
		"since future":  {&rtbhv1.ListAuditRequest{Since: timestamppb.New(time.Now().Add(time.Hour))}, 0},
		"until past":    {&rtbhv1.ListAuditRequest{Until: timestamppb.New(start.Add(-time.Hour))}, 0},
		"window":        {&rtbhv1.ListAuditRequest{Since: timestamppb.New(start.Add(-time.Minute)), Until: timestamppb.New(time.Now().Add(time.Minute))}, 27},
		"page capped":   {&rtbhv1.ListAuditRequest{PageSize: 100000}, 27},
	} {
		if got := count(tc.req); got != tc.want {
			t.Errorf("%s: %d rows, want %d", name, got, tc.want)
		}
	}

	// Refusals.
	_, err := au.ListAudit(partner, &rtbhv1.ListAuditRequest{})
	wantCode(t, err, codes.PermissionDenied)
	_, err = au.ListAudit(testCtx(t), &rtbhv1.ListAuditRequest{})
	wantCode(t, err, codes.Unauthenticated)
	for name, req := range map[string]*rtbhv1.ListAuditRequest{
		"bad prefix":         {Prefix: "198.51.100.300"},
		"host bits":          {Prefix: "198.51.100.7/24"},
		"bad token":          {PageToken: "not-a-token"},
		"until before since": {Since: timestamppb.New(start), Until: timestamppb.New(start.Add(-time.Second))},
	} {
		_, err := au.ListAudit(op, req)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		wantCode(t, err, codes.InvalidArgument)
	}
}
