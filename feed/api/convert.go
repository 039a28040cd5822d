package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// backendError maps an error of the decision path to a gRPC status.
// Refusals keep their message; a store write that failed for a reason that
// may pass (disk full, I/O error, lock timeout) is UNAVAILABLE with the
// store's message; anything else is logged and answered with INTERNAL,
// without details.
func (s *Server) backendError(ctx context.Context, op string, err error) error {
	c, refused := kindCode(detector.KindOf(err))
	if !refused {
		if errors.Is(err, domain.ErrStoreUnavailable) {
			s.logger.WarnContext(ctx, "API call refused: store unavailable", "op", op, "err", err)
			return status.Error(codes.Unavailable, err.Error())
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return status.FromContextError(ctxErr).Err()
			}
		}
		s.logger.ErrorContext(ctx, "API call failed in the backend", "op", op, "err", err)
		return status.Error(codes.Internal, "internal error")
	}
	return status.Error(c, err.Error())
}

// kindCode is the gRPC code of a refusal kind; false when k is no refusal.
func kindCode(k detector.Kind) (codes.Code, bool) {
	switch k {
	case detector.KindInvalid:
		return codes.InvalidArgument, true
	case detector.KindPolicy:
		return codes.FailedPrecondition, true
	case detector.KindScope:
		return codes.PermissionDenied, true
	case detector.KindLimit:
		return codes.ResourceExhausted, true
	case detector.KindNotFound:
		return codes.NotFound, true
	}
	return codes.Unknown, false
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// blackholeToProtoIn is blackholeToProto into dst, its two timestamps in
// ts (len 2): a batch's answer allocates them all at once.
func blackholeToProtoIn(dst *rtbhv1.Blackhole, ts []timestamppb.Timestamp, b domain.Blackhole) *rtbhv1.Blackhole {
	dst.Prefix, dst.Origin, dst.Reason, dst.Flowspec = b.Prefix.String(), b.Origin, b.Reason, matchToProto(b.Match)
	if !b.CreatedAt.IsZero() {
		ts[0].Seconds, ts[0].Nanos = b.CreatedAt.Unix(), int32(b.CreatedAt.Nanosecond())
		dst.CreatedAt = &ts[0]
	}
	if !b.ExpiresAt.IsZero() {
		ts[1].Seconds, ts[1].Nanos = b.ExpiresAt.Unix(), int32(b.ExpiresAt.Nanosecond())
		dst.ExpiresAt = &ts[1]
	}
	return dst
}

func blackholeToProto(b domain.Blackhole) *rtbhv1.Blackhole {
	return &rtbhv1.Blackhole{
		Prefix:    b.Prefix.String(),
		Origin:    b.Origin,
		Reason:    b.Reason,
		CreatedAt: timestamp(b.CreatedAt),
		ExpiresAt: timestamp(b.ExpiresAt),
		Flowspec:  matchToProto(b.Match),
	}
}

// matchFromProto returns the canonical match text of a request's
// flowspec field ("" when absent: a route). A malformed match is
// INVALID_ARGUMENT.
func matchFromProto(m *rtbhv1.FlowSpecMatch) (string, error) {
	if m == nil {
		return "", nil
	}
	bad := func(err error) error { return status.Errorf(codes.InvalidArgument, "flowspec: %v", err) }
	proto, err := domain.ParseProtocol(m.GetProtocol())
	if err != nil {
		return "", bad(err)
	}
	var rs []domain.PortRange
	port := func(v uint32) (uint16, error) {
		if v < 1 || v > 65535 {
			return 0, fmt.Errorf("port %d is out of range 1-65535", v)
		}
		return uint16(v), nil
	}
	for _, v := range m.GetDstPorts() {
		p, err := port(v)
		if err != nil {
			return "", bad(err)
		}
		rs = append(rs, domain.PortRange{First: p, Last: p})
	}
	for _, r := range m.GetDstPortRanges() {
		first, err := port(r.GetFirst())
		if err != nil {
			return "", bad(err)
		}
		last, err := port(r.GetLast())
		if err != nil {
			return "", bad(err)
		}
		rs = append(rs, domain.PortRange{First: first, Last: last})
	}
	fm, err := domain.NewFlowMatch(proto, rs)
	if err != nil {
		return "", bad(err)
	}
	return fm.String(), nil
}

// matchToProto is the proto form of a canonical match; nil for a route.
// Single ports go in dst_ports, ranges in dst_port_ranges.
func matchToProto(match string) *rtbhv1.FlowSpecMatch {
	if match == "" {
		return nil
	}
	fm, err := domain.ParseMatch(match)
	if err != nil { // stored matches are canonical; keep the text visible anyway
		return &rtbhv1.FlowSpecMatch{Protocol: match}
	}
	out := &rtbhv1.FlowSpecMatch{Protocol: fm.ProtocolName()}
	for _, r := range fm.Ports {
		if r.First == r.Last {
			out.DstPorts = append(out.DstPorts, uint32(r.First))
		} else {
			out.DstPortRanges = append(out.DstPortRanges, &rtbhv1.PortRange{First: uint32(r.First), Last: uint32(r.Last)})
		}
	}
	return out
}

func eventTypeToProto(t detector.EventType) rtbhv1.EventType {
	switch t {
	case detector.EventAdded:
		return rtbhv1.EventType_EVENT_TYPE_ADDED
	case detector.EventExtended:
		return rtbhv1.EventType_EVENT_TYPE_EXTENDED
	case detector.EventRemoved:
		return rtbhv1.EventType_EVENT_TYPE_REMOVED
	case detector.EventExpired:
		return rtbhv1.EventType_EVENT_TYPE_EXPIRED
	}
	return rtbhv1.EventType_EVENT_TYPE_UNSPECIFIED
}

func evidenceToProto(e domain.Evidence) *rtbhv1.Evidence {
	ports := make([]uint32, len(e.DstPorts))
	for i, p := range e.DstPorts {
		ports[i] = uint32(p)
	}
	examples := make([]string, len(e.Examples))
	for i, a := range e.Examples {
		examples[i] = a.String()
	}
	var window *durationpb.Duration
	if e.Window > 0 {
		window = durationpb.New(e.Window)
	}
	return &rtbhv1.Evidence{
		Rule:                 e.Rule,
		Protocol:             e.Protocol,
		DstPorts:             ports,
		DistinctDestinations: e.DistinctDestinations,
		EstimatedPackets:     e.EstimatedPackets,
		EstimatedConnections: e.EstimatedConnections,
		Window:               window,
		FirstSeen:            timestamp(e.FirstSeen),
		LastSeen:             timestamp(e.LastSeen),
		ExampleDestinations:  examples,
		Action:               e.Action,
		RecordedAt:           timestamp(e.RecordedAt),
	}
}

func reportToProto(r domain.Report) *rtbhv1.ReportRecord {
	return &rtbhv1.ReportRecord{
		Reporter:   r.Reporter,
		Kind:       r.Kind,
		ObservedAt: timestamp(r.ObservedAt),
		Count:      r.Count,
		Evidence:   r.Evidence,
		ReceivedAt: timestamp(r.ReceivedAt),
		Trust:      r.Trust,
	}
}

func serverToProto(s domain.Server) *rtbhv1.Server {
	return &rtbhv1.Server{
		Address:   s.Address.String(),
		Rule:      s.Rule,
		Clients:   s.Clients,
		FirstSeen: timestamp(s.FirstSeen),
		LastSeen:  timestamp(s.LastSeen),
	}
}
