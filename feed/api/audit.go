package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// AuditReader reads the audit log: the store (SQLite, PostgreSQL)
// implements it.
type AuditReader interface {
	// ListAudit returns the rows q selects, newest first, at most q.Limit.
	ListAudit(ctx context.Context, q domain.AuditQuery) ([]domain.AuditEntry, error)
}

// Bounds of ListAudit's page_size (SPEC.md).
const (
	DefaultAuditPageSize = 1000
	MaxAuditPageSize     = 10000
)

// SetAuditReader gives the server the audit log it answers ListAudit
// from. Call it before Serve; without one ListAudit answers UNAVAILABLE.
func (s *Server) SetAuditReader(r AuditReader) {
	s.mu.Lock()
	s.audit = r
	s.mu.Unlock()
}

type auditService struct {
	rtbhv1.UnimplementedAuditServiceServer
	s *Server
}

func (a *auditService) ListAudit(ctx context.Context, req *rtbhv1.ListAuditRequest) (*rtbhv1.ListAuditResponse, error) {
	q, err := auditQuery(req)
	if err != nil {
		return nil, err
	}
	rows, next, err := a.s.listAudit(ctx, q)
	if err != nil {
		return nil, err
	}
	resp := &rtbhv1.ListAuditResponse{Entries: make([]*rtbhv1.AuditEntry, len(rows)), NextPageToken: next}
	for i, r := range rows {
		resp.Entries[i] = &rtbhv1.AuditEntry{Id: r.ID, At: timestamp(r.At), Actor: r.Actor, Action: r.Action,
			Prefix: r.Prefix, Origin: r.Origin, Reason: r.Reason, Detail: r.Detail, Instance: r.Instance}
	}
	return resp, nil
}

// auditQuery checks a ListAudit request and turns it into a query.
func auditQuery(req *rtbhv1.ListAuditRequest) (domain.AuditQuery, error) {
	var q domain.AuditQuery
	if p := strings.TrimSpace(req.GetPrefix()); p != "" {
		pfx, err := domain.ParsePrefix(p)
		if err != nil {
			return q, status.Errorf(codes.InvalidArgument, "prefix: %v", err)
		}
		q.Prefix = pfx
	}
	q.Actor = req.GetActor()
	if ts := req.GetSince(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return q, status.Errorf(codes.InvalidArgument, "since: %v", err)
		}
		q.Since = ts.AsTime()
	}
	if ts := req.GetUntil(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return q, status.Errorf(codes.InvalidArgument, "until: %v", err)
		}
		q.Until = ts.AsTime()
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		return q, status.Errorf(codes.InvalidArgument, "until (%s) is not after since (%s)", q.Until.Format("2006-01-02T15:04:05Z07:00"), q.Since.Format("2006-01-02T15:04:05Z07:00"))
	}
	switch n := int(req.GetPageSize()); {
	case n == 0:
		q.Limit = DefaultAuditPageSize
	case n > MaxAuditPageSize:
		q.Limit = MaxAuditPageSize
	default:
		q.Limit = n
	}
	if tok := req.GetPageToken(); tok != "" {
		id, err := DecodeAuditPageToken(tok)
		if err != nil {
			return q, status.Error(codes.InvalidArgument, err.Error())
		}
		q.BeforeID = id
	}
	return q, nil
}

// listAudit reads one page of q and returns the next page's token ("" on
// the last page).
func (s *Server) listAudit(ctx context.Context, q domain.AuditQuery) ([]domain.AuditEntry, string, error) {
	s.mu.Lock()
	audit := s.audit
	s.mu.Unlock()
	if audit == nil {
		return nil, "", status.Error(codes.Unavailable, "the audit log is not available on this server")
	}
	limit := q.Limit
	q.Limit = limit + 1 // one more tells whether a next page exists
	rows, err := audit.ListAudit(ctx, q)
	if err != nil {
		return nil, "", s.backendError(ctx, "list audit", err)
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = EncodeAuditPageToken(rows[len(rows)-1].ID)
	}
	return rows, next, nil
}

const auditTokenPrefix = "audit1:"

// EncodeAuditPageToken is the opaque page token that continues after the
// row with this id.
func EncodeAuditPageToken(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(auditTokenPrefix + strconv.FormatInt(id, 10)))
}

// DecodeAuditPageToken reads a token of EncodeAuditPageToken.
func DecodeAuditPageToken(tok string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		if rest, ok := strings.CutPrefix(string(b), auditTokenPrefix); ok {
			if id, err := strconv.ParseInt(rest, 10, 64); err == nil && id > 0 {
				return id, nil
			}
		}
	}
	return 0, fmt.Errorf("page_token: %q is not a token this server issued", tok)
}
