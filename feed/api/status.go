package api

import (
	"context"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// Bounds of ListOffenders' limit.
const (
	defaultOffendersLimit = 100
	maxOffendersLimit     = 10000
)

type statusService struct {
	rtbhv1.UnimplementedStatusServiceServer
	s *Server
}

func (st *statusService) ListNeighbors(ctx context.Context, _ *rtbhv1.ListNeighborsRequest) (*rtbhv1.ListNeighborsResponse, error) {
	resp := &rtbhv1.ListNeighborsResponse{}
	if st.s.neighbors == nil {
		return resp, nil
	}
	ns, err := st.s.neighbors(ctx)
	if err != nil {
		return nil, st.s.backendError(ctx, "list neighbors", err)
	}
	resp.Neighbors = make([]*rtbhv1.Neighbor, len(ns))
	for i, n := range ns {
		resp.Neighbors[i] = &rtbhv1.Neighbor{
			Address:      n.Address,
			Asn:          n.ASN,
			Role:         n.Role,
			State:        n.State,
			RoutesSent:   n.RoutesSent,
			StateSince:   timestamp(n.StateSince),
			Port:         uint32(n.Port),
			Flowspec:     n.FlowSpec,
			FlowspecSent: n.FlowSpecSent,
		}
	}
	return resp, nil
}

func (st *statusService) GetOffender(ctx context.Context, req *rtbhv1.GetOffenderRequest) (*rtbhv1.GetOffenderResponse, error) {
	off, bh, err := st.s.offender(ctx, req.GetAddress())
	if err != nil {
		return nil, err
	}
	addr := off.Address
	o := &rtbhv1.Offender{
		Address:  addr.String(),
		Score:    off.Score,
		Offenses: uint32(max(off.Offenses, 0)),
		Evidence: make([]*rtbhv1.Evidence, len(off.Evidence)),
		Reports:  make([]*rtbhv1.ReportRecord, len(off.Reports)),
	}
	for i, e := range off.Evidence {
		o.Evidence[i] = evidenceToProto(e)
	}
	for i, r := range off.Reports {
		o.Reports[i] = reportToProto(r)
	}
	for _, p := range off.ScoreParts {
		o.ScoreParts = append(o.ScoreParts, &rtbhv1.ScorePart{Reporter: p.Reporter, Trust: p.Trust, ObservedAt: timestamp(p.ObservedAt)})
	}
	for _, s := range off.Servers {
		o.Servers = append(o.Servers, serverToProto(s))
	}
	if bh != nil {
		o.Blackhole = blackholeToProto(*bh)
	}
	return &rtbhv1.GetOffenderResponse{Offender: o}, nil
}

func (st *statusService) ListOffenders(ctx context.Context, req *rtbhv1.ListOffendersRequest) (*rtbhv1.ListOffendersResponse, error) {
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = defaultOffendersLimit
	case limit > maxOffendersLimit:
		limit = maxOffendersLimit
	}
	if req.GetServers() {
		servers, err := st.s.backend.Servers(ctx)
		if err != nil {
			return nil, st.s.backendError(ctx, "list servers", err)
		}
		resp := &rtbhv1.ListOffendersResponse{}
		for _, s := range servers[:min(len(servers), limit)] {
			resp.Servers = append(resp.Servers, serverToProto(s))
		}
		return resp, nil
	}
	evs, err := st.s.backend.Offenders(ctx, req.GetShadowOnly(), limit)
	if err != nil {
		return nil, st.s.backendError(ctx, "list offenders", err)
	}
	resp := &rtbhv1.ListOffendersResponse{Offenders: make([]*rtbhv1.OffenderSummary, len(evs))}
	for i, e := range evs {
		resp.Offenders[i] = &rtbhv1.OffenderSummary{
			Address:              e.Address.String(),
			Rule:                 e.Rule,
			Action:               e.Action,
			DistinctDestinations: e.DistinctDestinations,
			EstimatedPackets:     e.EstimatedPackets,
			RecordedAt:           timestamp(e.RecordedAt),
		}
	}
	return resp, nil
}
