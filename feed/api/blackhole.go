package api

import (
	"context"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

type blackholeService struct {
	rtbhv1.UnimplementedBlackholeServiceServer
	s *Server
}

// caller returns the authenticated client. The auth interceptor guarantees
// one for every rtbh.v1 method; its absence is a wiring bug.
func caller(ctx context.Context) (*identity, error) {
	id, ok := identityFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no credentials")
	}
	return id, nil
}

// scope is the space the caller may act on: nil (unrestricted) for
// operators, the configured prefixes for partners — never nil for them, so
// a partner without prefixes may act on nothing.
// scope is what the caller may blackhole: nil (anything) for operators, the
// partner's prefixes otherwise.
func (id *identity) scope() *domain.PrefixSet {
	if id.Role == RoleOperator {
		return nil
	}
	return id.prefixSet
}

func (id *identity) origin() string { return domain.ClientOrigin(id.Role, id.Name) }

// sees reports whether the caller may see b in List and Watch: operators
// see everything, partners only entries inside their prefixes or of their
// own origin (SPEC.md) — not the rest of the ISP's blackholes.
func (id *identity) sees(b domain.Blackhole) bool {
	return id.Role == RoleOperator || id.prefixSet.ContainsPrefix(b.Prefix) || b.Origin == id.origin()
}

// seesEvent is sees for a change: a partner also sees the change that
// takes its own entry away from it (an operator taking it over), so that
// its view does not keep an entry it can no longer see the end of.
func (id *identity) seesEvent(ev detector.Event) bool {
	return id.sees(ev.Blackhole) || (ev.TakenOverFrom != "" && ev.TakenOverFrom == id.origin())
}

func (b *blackholeService) AddBlackhole(ctx context.Context, req *rtbhv1.AddBlackholeRequest) (*rtbhv1.AddBlackholeResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	dreq, err := addRequest(id, id.origin(), req)
	if err != nil {
		return nil, err
	}
	bh, change, err := b.s.backend.Add(ctx, dreq)
	if err != nil {
		return nil, b.s.backendError(ctx, "add blackhole", err)
	}
	return &rtbhv1.AddBlackholeResponse{Blackhole: blackholeToProto(bh), Existed: change != detector.Added}, nil
}

// addRequest turns one add (AddBlackhole, an item of AddBlackholes) of id
// into the decision path's request; a malformed prefix, match or ttl is
// refused here with INVALID_ARGUMENT. origin is id.origin(), which a batch
// computes once.
func addRequest(id *identity, origin string, req *rtbhv1.AddBlackholeRequest) (detector.Request, error) {
	match, err := matchFromProto(req.GetFlowspec())
	if err != nil {
		return detector.Request{}, err
	}
	var ttl time.Duration
	hasTTL := req.Ttl != nil // absent = policy default
	if hasTTL {
		if err := req.Ttl.CheckValid(); err != nil {
			return detector.Request{}, status.Errorf(codes.InvalidArgument, "ttl: %v", err)
		}
		ttl = req.Ttl.AsDuration()
	}
	return newAddRequest(id, origin, req.GetPrefix(), match, ttl, hasTTL, req.GetReason())
}

// newAddRequest is the decision path's request for an add by id, from any
// front end (gRPC, the web console). match "" is a route, else a FlowSpec
// match in text ("tcp/25"). An explicit ttl <= 0 is refused by the backend
// (HasTTL). origin is id.origin().
func newAddRequest(id *identity, origin, prefix, match string, ttl time.Duration, hasTTL bool, reason string) (detector.Request, error) {
	p, err := domain.ParsePrefix(prefix)
	if err != nil {
		return detector.Request{}, status.Errorf(codes.InvalidArgument, "prefix: %v", err)
	}
	if match, err = canonicalMatch(match); err != nil {
		return detector.Request{}, err
	}
	return detector.Request{Prefix: p, Match: match, Reason: reason, Origin: origin, Actor: id.Name,
		Scope: id.scope(), TTL: ttl, HasTTL: hasTTL}, nil
}

func (b *blackholeService) RemoveBlackhole(ctx context.Context, req *rtbhv1.RemoveBlackholeRequest) (*rtbhv1.RemoveBlackholeResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	match, err := matchFromProto(req.GetFlowspec())
	if err != nil {
		return nil, err
	}
	if err := b.s.remove(ctx, id, req.GetPrefix(), match, req.GetReason()); err != nil {
		return nil, err
	}
	return &rtbhv1.RemoveBlackholeResponse{}, nil
}

// removeRequest is one removal (RemoveBlackhole, an item of
// RemoveBlackholes, the web console's) of (p, match) by id; match is
// canonical ("" = the route).
func removeRequest(id *identity, p netip.Prefix, match, reason string) detector.RemoveRequest {
	rreq := detector.RemoveRequest{
		Prefix: p,
		Match:  match,
		Reason: reason,
		Actor:  id.Name,
		Scope:  id.scope(),
	}
	if id.Role == RolePartner {
		rreq.Owner = id.origin() // partners remove only their own entries
	}
	return rreq
}

func (b *blackholeService) WatchBlackholes(_ *rtbhv1.WatchBlackholesRequest, stream grpc.ServerStreamingServer[rtbhv1.WatchBlackholesResponse]) error {
	id, err := caller(stream.Context())
	if err != nil {
		return err
	}
	limit := int32(b.s.cfg.MaxWatchStreamsPerClient)
	if n := id.rt.watches.Add(1); n > limit {
		id.rt.watches.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "client %q already has %d watch streams open (limit %d)", id.Name, n-1, limit)
	}
	defer id.rt.watches.Add(-1)
	b.s.metrics.watchers.Inc()
	defer b.s.metrics.watchers.Dec()

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	snapshot, events := b.s.backend.Watch(ctx)
	for _, bh := range snapshot {
		if !id.sees(bh) {
			continue
		}
		select {
		case <-id.revoked():
			return status.Error(codes.Unauthenticated, id.revokedWhy())
		default:
		}
		if err := stream.Send(&rtbhv1.WatchBlackholesResponse{Type: rtbhv1.EventType_EVENT_TYPE_SNAPSHOT, Blackhole: blackholeToProto(bh)}); err != nil {
			return err
		}
	}
	if err := stream.Send(&rtbhv1.WatchBlackholesResponse{Type: rtbhv1.EventType_EVENT_TYPE_SNAPSHOT_END}); err != nil {
		return err
	}
	for {
		select {
		case <-b.s.stopping:
			return status.Error(codes.Unavailable, "server shutting down, reconnect")
		case <-id.revoked():
			return status.Error(codes.Unauthenticated, id.revokedWhy())
		case ev, ok := <-events:
			if !ok {
				if err := ctx.Err(); err != nil {
					return status.FromContextError(err).Err()
				}
				return status.Error(codes.Unavailable, "watcher too slow, reconnect")
			}
			if !id.seesEvent(ev) {
				continue
			}
			msg := &rtbhv1.WatchBlackholesResponse{
				Type:      eventTypeToProto(ev.Type),
				Blackhole: blackholeToProto(ev.Blackhole),
				Actor:     ev.Actor,
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
	}
}
