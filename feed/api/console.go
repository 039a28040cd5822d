package api

// This file is the API for in-process front ends (the web console, package
// feed/web): the same authentication, role table, rate limits, scopes and
// decision path as the gRPC methods, without gRPC. Every method answers
// with the gRPC status error the matching RPC would.

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// Caller is an authenticated API client.
type Caller struct{ id *identity }

// Authenticate finds the client whose bearer token this is (as the gRPC
// API does for "authorization: Bearer <token>"); UNAUTHENTICATED if none.
func (s *Server) Authenticate(token string) (*Caller, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, status.Error(codes.Unauthenticated, "no token")
	}
	id := s.clients.current.Load().byToken(token)
	if id == nil {
		return nil, status.Error(codes.Unauthenticated, "unknown token")
	}
	return &Caller{id: id}, nil
}

// Name is the client's configured name (the audit log's actor).
func (c *Caller) Name() string { return c.id.Name }

// Role is RoleOperator or RolePartner.
func (c *Caller) Role() string { return c.id.Role }

// Origin is the origin of the blackholes it adds (operator:<name>, partner:<name>).
func (c *Caller) Origin() string { return c.id.origin() }

// Prefixes is a partner's space (nil for operators).
func (c *Caller) Prefixes() []netip.Prefix {
	if c.id.Role == RoleOperator {
		return nil
	}
	return c.id.Prefixes
}

// Revoked is closed when a config reload removes the client or changes its
// credentials, role or prefixes: its sessions must end.
func (c *Caller) Revoked() <-chan struct{} { return c.id.revoked() }

// Sees reports whether the client may see b (ListBlackholes, WatchBlackholes).
func (c *Caller) Sees(b domain.Blackhole) bool { return c.id.sees(b) }

// SeesEvent reports whether the client's watch gets ev.
func (c *Caller) SeesEvent(ev detector.Event) bool { return c.id.seesEvent(ev) }

// May reports whether the client's role may call the gRPC method fullMethod
// (rtbhv1.*_FullMethodName): nil, or PERMISSION_DENIED.
func (c *Caller) May(fullMethod string) error {
	for _, r := range roleTable[fullMethod] {
		if r == c.id.Role {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "client %q (role %s) may not call %s", c.id.Name, c.id.Role, shortMethod(fullMethod))
}

// Begin checks what the interceptors check for a gRPC call of fullMethod:
// the client is still configured (else UNAUTHENTICATED), its role may call
// the method (PERMISSION_DENIED), it is within its rate
// (RESOURCE_EXHAUSTED). Front ends that answer a call from their own view
// of the data call it first.
func (c *Caller) Begin(fullMethod string) error { return c.begin(fullMethod) }

func (c *Caller) begin(fullMethod string) error {
	select {
	case <-c.id.revoked():
		return status.Error(codes.Unauthenticated, c.id.revokedWhy())
	default:
	}
	if err := c.May(fullMethod); err != nil {
		return err
	}
	if !c.id.rt.limiter.Allow() {
		return status.Errorf(codes.ResourceExhausted, "client %q is over its rate of %g requests/s", c.id.Name, c.id.Rate)
	}
	return nil
}

// Add is AddBlackhole: hasTTL false means the policy's default TTL; match
// "" adds a blackhole route, a FlowSpec match ("tcp/25") a filter.
func (s *Server) Add(ctx context.Context, c *Caller, prefix, match string, ttl time.Duration, hasTTL bool, reason string) (domain.Blackhole, detector.Change, error) {
	if err := c.begin(rtbhv1.BlackholeService_AddBlackhole_FullMethodName); err != nil {
		return domain.Blackhole{}, 0, err
	}
	return s.add(ctx, c.id, prefix, match, ttl, hasTTL, reason)
}

// Remove is RemoveBlackhole: match "" removes the route, a FlowSpec match
// the filter.
func (s *Server) Remove(ctx context.Context, c *Caller, prefix, match, reason string) error {
	if err := c.begin(rtbhv1.BlackholeService_RemoveBlackhole_FullMethodName); err != nil {
		return err
	}
	return s.remove(ctx, c.id, prefix, match, reason)
}

// Offender is GetOffender.
func (s *Server) Offender(ctx context.Context, c *Caller, address string) (domain.Offender, *domain.Blackhole, error) {
	if err := c.begin(rtbhv1.StatusService_GetOffender_FullMethodName); err != nil {
		return domain.Offender{}, nil, err
	}
	return s.offender(ctx, address)
}

// Offenders is ListOffenders (limit 0 = the default 100, at most 10,000).
func (s *Server) Offenders(ctx context.Context, c *Caller, shadowOnly bool, limit int) ([]domain.Evidence, error) {
	if err := c.begin(rtbhv1.StatusService_ListOffenders_FullMethodName); err != nil {
		return nil, err
	}
	evs, err := s.backend.Offenders(ctx, shadowOnly, offendersLimit(limit))
	if err != nil {
		return nil, s.backendError(ctx, "list offenders", err)
	}
	return evs, nil
}

// Neighbors is ListNeighbors.
func (s *Server) Neighbors(ctx context.Context, c *Caller) ([]Neighbor, error) {
	if err := c.begin(rtbhv1.StatusService_ListNeighbors_FullMethodName); err != nil {
		return nil, err
	}
	if s.neighbors == nil {
		return nil, nil
	}
	ns, err := s.neighbors(ctx)
	if err != nil {
		return nil, s.backendError(ctx, "list neighbors", err)
	}
	return ns, nil
}

// Audit is ListAudit: one page of q (Limit 0 = the default page size) and
// the next page's token ("" on the last page; EncodeAuditPageToken).
func (s *Server) Audit(ctx context.Context, c *Caller, q domain.AuditQuery) ([]domain.AuditEntry, string, error) {
	if err := c.begin(rtbhv1.AuditService_ListAudit_FullMethodName); err != nil {
		return nil, "", err
	}
	switch {
	case q.Limit <= 0:
		q.Limit = DefaultAuditPageSize
	case q.Limit > MaxAuditPageSize:
		q.Limit = MaxAuditPageSize
	}
	return s.listAudit(ctx, q)
}

// add and remove are the bodies of AddBlackhole and RemoveBlackhole,
// shared by the gRPC methods and the console.
func (s *Server) add(ctx context.Context, id *identity, prefix, match string, ttl time.Duration, hasTTL bool, reason string) (domain.Blackhole, detector.Change, error) {
	dreq, err := newAddRequest(id, id.origin(), prefix, match, ttl, hasTTL, reason)
	if err != nil {
		return domain.Blackhole{}, 0, err
	}
	bh, change, err := s.backend.Add(ctx, dreq)
	if err != nil {
		return domain.Blackhole{}, 0, s.backendError(ctx, "add blackhole", err)
	}
	return bh, change, nil
}

func (s *Server) remove(ctx context.Context, id *identity, prefix, match, reason string) error {
	p, err := domain.ParsePrefix(prefix)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "prefix: %v", err)
	}
	if match, err = canonicalMatch(match); err != nil {
		return err
	}
	if _, err := s.backend.Remove(ctx, removeRequest(id, p, match, reason)); err != nil {
		return s.backendError(ctx, "remove blackhole", err)
	}
	return nil
}

// offender is GetOffender's body.
func (s *Server) offender(ctx context.Context, address string) (domain.Offender, *domain.Blackhole, error) {
	p, err := domain.ParsePrefix(address)
	if err != nil {
		return domain.Offender{}, nil, status.Errorf(codes.InvalidArgument, "address: %v", err)
	}
	if !p.IsSingleIP() {
		return domain.Offender{}, nil, status.Errorf(codes.InvalidArgument, "address: %s is a prefix, not one address", p)
	}
	addr := p.Addr()
	off, bh, err := s.backend.Offender(ctx, addr)
	if err != nil {
		return domain.Offender{}, nil, s.backendError(ctx, "get offender", err)
	}
	if len(off.Evidence) == 0 && len(off.Reports) == 0 && off.Offenses == 0 && bh == nil && len(off.Servers) == 0 && len(off.ScoreParts) == 0 {
		return domain.Offender{}, nil, status.Errorf(codes.NotFound, "nothing recorded about %s", addr)
	}
	off.Address = addr
	return off, bh, nil
}

func offendersLimit(limit int) int {
	switch {
	case limit <= 0:
		return defaultOffendersLimit
	case limit > maxOffendersLimit:
		return maxOffendersLimit
	}
	return limit
}

// canonicalMatch checks a FlowSpec match given as text ("" = a route):
// INVALID_ARGUMENT when malformed.
func canonicalMatch(m string) (string, error) {
	if m == "" {
		return "", nil
	}
	c, err := domain.CanonicalMatch(m)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "flowspec: %v", err)
	}
	return c, nil
}
