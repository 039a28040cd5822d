package api

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// TestStoreUnavailable: a write the store cannot make (here: the store is
// closed) answers UNAVAILABLE with the store's reason, for every write
// call, not INTERNAL.
func TestStoreUnavailable(t *testing.T) {
	m, db := newBackendDB(t, testPolicy())
	a := startAPI(t, Config{}, m)
	isp := withToken(testCtx(t), "isp-b-token")
	if _, err := a.bh.AddBlackhole(isp, &rtbhv1.AddBlackholeRequest{Prefix: "203.0.113.9", Reason: "under attack"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"AddBlackhole", func() error {
			_, err := a.bh.AddBlackhole(isp, &rtbhv1.AddBlackholeRequest{Prefix: "203.0.113.10", Reason: "x"})
			return err
		}},
		{"RemoveBlackhole", func() error {
			_, err := a.bh.RemoveBlackhole(isp, &rtbhv1.RemoveBlackholeRequest{Prefix: "203.0.113.9", Reason: "over"})
			return err
		}},
		{"SubmitReports", func() error {
			_, err := a.rp.SubmitReports(isp, &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{{Address: "198.51.100.7"}}})
			return err
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			wantCode(t, err, codes.Unavailable)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "store unavailable: ") || !strings.HasSuffix(msg, ": try again") {
				t.Fatalf("message = %q, want the store's reason", msg)
			}
		})
	}
}
