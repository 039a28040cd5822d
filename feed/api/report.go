package api

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rtbh/rtbh/detector"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

type reportService struct {
	rtbhv1.UnimplementedReportServiceServer
	s *Server
}

func (r *reportService) SubmitReports(ctx context.Context, req *rtbhv1.SubmitReportsRequest) (*rtbhv1.SubmitReportsResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	n, limit := len(req.GetReports()), r.s.cfg.MaxReportsPerBatch
	if n > limit {
		return nil, status.Errorf(codes.InvalidArgument, "batch of %d reports is over the limit of %d per request: split it", n, limit)
	}
	who := detector.Reporter{Name: id.Name, Trust: detector.OperatorTrust, Operator: id.Role == RoleOperator}
	if id.Role == RolePartner {
		who.Trust = id.Trust
	}
	resp := &rtbhv1.SubmitReportsResponse{}
	reports := make([]detector.Report, 0, n)
	index := make([]int, 0, n) // index[i] = position in the request of reports[i]
	for i, pr := range req.GetReports() {
		rep := detector.Report{Address: pr.GetAddress(), Kind: pr.GetKind(), Count: pr.GetCount(), Evidence: pr.GetEvidence()}
		if ts := pr.GetObservedAt(); ts != nil {
			if err := ts.CheckValid(); err != nil {
				resp.Rejected = append(resp.Rejected, &rtbhv1.RejectedReport{Index: uint32(i), Reason: fmt.Sprintf("observed_at: %v", err)})
				continue
			}
			rep.ObservedAt = ts.AsTime()
		}
		reports = append(reports, rep)
		index = append(index, i)
	}
	if len(reports) > 0 {
		accepted, rejected, err := r.s.backend.SubmitReports(ctx, who, reports)
		if err != nil {
			return nil, r.s.backendError(ctx, "submit reports", err)
		}
		resp.Accepted = uint32(accepted)
		for _, rj := range rejected {
			i := rj.Index
			if i >= 0 && i < len(index) {
				i = index[i]
			}
			resp.Rejected = append(resp.Rejected, &rtbhv1.RejectedReport{Index: uint32(i), Reason: rj.Reason})
		}
	}
	sortRejected(resp.Rejected)
	return resp, nil
}

// sortRejected orders rejections by index (the API's own and the
// backend's are merged).
func sortRejected(rs []*rtbhv1.RejectedReport) {
	slices.SortStableFunc(rs, func(a, b *rtbhv1.RejectedReport) int { return cmp.Compare(a.Index, b.Index) })
}
