package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// wantStatus fails the test unless err is exactly code c with message msg.
func wantStatus(t testing.TB, err error, c codes.Code, msg string) {
	t.Helper()
	s := status.Convert(err)
	if s.Code() != c || s.Message() != msg {
		t.Fatalf("got %v %q, want %v %q", s.Code(), s.Message(), c, msg)
	}
}

// An operator who adds or extends a partner's entry takes it over: the
// response and the list show origin operator:noc, the audit log says so,
// and the partner's remove is refused PERMISSION_DENIED.
func TestOperatorTakesOverPartnerEntry(t *testing.T) {
	m, db := newBackendDB(t, testPolicy())
	a := startAPI(t, Config{}, m)
	ctx := testCtx(t)
	op, isp := withToken(ctx, "noc-token"), withToken(ctx, "isp-b-token")

	if resp, err := a.add(isp, "203.0.113.9", 2*time.Hour); err != nil || resp.Blackhole.Origin != "partner:isp-b" {
		t.Fatalf("partner add = %v, %v", resp, err)
	}
	// The operator's TTL is shorter: the expiry stays, the entry is taken over.
	resp, err := a.add(op, "203.0.113.9", time.Hour)
	if err != nil || !resp.Existed || resp.Blackhole.Origin != "operator:noc" {
		t.Fatalf("operator re-add = %v, %v; want existed, origin operator:noc", resp, err)
	}
	_, err = a.bh.RemoveBlackhole(isp, &rtbhv1.RemoveBlackholeRequest{Prefix: "203.0.113.9", Reason: "over"})
	wantStatus(t, err, codes.PermissionDenied, "203.0.113.9/32 belongs to operator:noc, not to you")

	list, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if err != nil || len(list.Blackholes) != 1 || list.Blackholes[0].Origin != "operator:noc" {
		t.Fatalf("list = %v, %v", list, err)
	}
	rows, err := db.AuditLog(context.Background(), "203.0.113.9/32", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[1].Actor != "noc" || rows[1].Origin != "operator:noc" ||
		!strings.HasSuffix(rows[1].Detail, "; taken over from partner:isp-b") {
		t.Fatalf("audit = %+v, want a second row by noc saying it was taken over from partner:isp-b", rows)
	}
	if _, err := a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "203.0.113.9"}); err != nil {
		t.Fatalf("operator removing its entry: %v", err)
	}
}
