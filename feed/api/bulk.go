package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// Bulk calls and paged listing (SPEC "Bulk and scale").
//
// A batch call is one request against the client's rate (as SubmitReports
// is): the rate limits calls, and what one call may do is bounded by
// detector.MaxBatchItems, the message size (api MaxMessageBytes, 4 MiB),
// max_active and, for partners, their prefixes, each applied per item.

// Page sizes of ListBlackholes.
const (
	DefaultPageSize = 1000
	MaxPageSize     = 10000
)

// rejected is the RejectedItem of a refused item: the code name
// (INVALID_ARGUMENT, as google.rpc.Code spells it) and message the single
// call would have answered.
func rejected(i int, err error) *rtbhv1.RejectedItem {
	c := codes.InvalidArgument
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		c = st.Code()
	} else if k, ok := kindCode(detector.KindOf(err)); ok {
		c = k
	}
	msg := err.Error()
	if st, ok := status.FromError(err); ok {
		msg = st.Message()
	}
	return &rtbhv1.RejectedItem{Index: uint32(i), Code: code.Code(c).String(), Reason: msg}
}

// checkBatchSize refuses a call of more than detector.MaxBatchItems items.
func checkBatchSize(n int) error {
	if n > detector.MaxBatchItems {
		return status.Errorf(codes.InvalidArgument, "%d items in one call, at most %d", n, detector.MaxBatchItems)
	}
	return nil
}

// mergeRejects puts the API's own refusals (malformed items, never sent to
// the backend) and the backend's, mapped back to request indexes, in
// index order.
func mergeRejects(own []*rtbhv1.RejectedItem, back []detector.Refused, index []int) []*rtbhv1.RejectedItem {
	if len(back) == 0 {
		return own
	}
	out := make([]*rtbhv1.RejectedItem, 0, len(own)+len(back))
	j := 0
	for _, r := range back {
		i := index[r.Index]
		for j < len(own) && int(own[j].Index) < i {
			out = append(out, own[j])
			j++
		}
		out = append(out, rejected(i, r.Err))
	}
	return append(out, own[j:]...)
}

func (b *blackholeService) AddBlackholes(ctx context.Context, req *rtbhv1.AddBlackholesRequest) (*rtbhv1.AddBlackholesResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkBatchSize(len(req.GetItems())); err != nil {
		return nil, err
	}
	var (
		own   []*rtbhv1.RejectedItem
		reqs  = make([]detector.Request, 0, len(req.GetItems()))
		index = make([]int, 0, len(req.GetItems())) // reqs[k] is item index[k]
	)
	origin := id.origin()
	for i, it := range req.GetItems() {
		dreq, err := addRequest(id, origin, it)
		if err != nil {
			own = append(own, rejected(i, err))
			continue
		}
		reqs = append(reqs, dreq)
		index = append(index, i)
	}
	acc, ref, err := b.s.backend.AddBatch(ctx, reqs)
	if err != nil {
		return nil, b.s.backendError(ctx, "add blackholes", err)
	}
	resp := &rtbhv1.AddBlackholesResponse{Blackholes: make([]*rtbhv1.Blackhole, len(acc)), Rejected: mergeRejects(own, ref, index)}
	// The messages of the answer in two arrays rather than three
	// allocations per item.
	bs, ts := make([]rtbhv1.Blackhole, len(acc)), make([]timestamppb.Timestamp, 2*len(acc))
	for k, a := range acc {
		resp.Blackholes[k] = blackholeToProtoIn(&bs[k], ts[2*k:2*k+2], a.Blackhole)
	}
	return resp, nil
}

func (b *blackholeService) RemoveBlackholes(ctx context.Context, req *rtbhv1.RemoveBlackholesRequest) (*rtbhv1.RemoveBlackholesResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkBatchSize(len(req.GetPrefixes())); err != nil {
		return nil, err
	}
	var (
		own   []*rtbhv1.RejectedItem
		reqs  = make([]detector.RemoveRequest, 0, len(req.GetPrefixes()))
		index = make([]int, 0, len(req.GetPrefixes()))
	)
	for i, s := range req.GetPrefixes() {
		p, err := domain.ParsePrefix(s)
		if err != nil {
			own = append(own, rejected(i, status.Errorf(codes.InvalidArgument, "prefix: %v", err)))
			continue
		}
		reqs = append(reqs, removeRequest(id, p, "", req.GetReason()))
		index = append(index, i)
	}
	acc, ref, err := b.s.backend.RemoveBatch(ctx, reqs)
	if err != nil {
		return nil, b.s.backendError(ctx, "remove blackholes", err)
	}
	return &rtbhv1.RemoveBlackholesResponse{Removed: uint32(len(acc)), Rejected: mergeRejects(own, ref, index)}, nil
}

func (b *blackholeService) ListBlackholes(ctx context.Context, req *rtbhv1.ListBlackholesRequest) (*rtbhv1.ListBlackholesResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	q := detector.ListQuery{Origin: req.GetOrigin(), Limit: DefaultPageSize}
	if w := req.GetWithin(); w != "" {
		if q.Within, err = domain.ParsePrefix(w); err != nil { // a bare address means its host prefix
			return nil, status.Errorf(codes.InvalidArgument, "within: %v", err)
		}
		if q.Within.Masked() != q.Within {
			return nil, status.Errorf(codes.InvalidArgument, "within: %s has host bits set (did you mean %s?)", q.Within, q.Within.Masked())
		}
	}
	if n := req.GetPageSize(); n > 0 {
		q.Limit = int(min(n, MaxPageSize)) // larger pages are cut to the maximum (AIP-158)
	}
	if t := req.GetPageToken(); t != "" {
		k, err := decodePageToken(t)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "page_token: %v", err)
		}
		q.After = &k
	}
	if id.Role != RoleOperator {
		q.Visible = id.sees
	}
	page, more := b.s.backend.List(q)
	resp := &rtbhv1.ListBlackholesResponse{Blackholes: make([]*rtbhv1.Blackhole, len(page))}
	for i, bh := range page {
		resp.Blackholes[i] = blackholeToProto(bh)
	}
	if more && len(page) > 0 {
		resp.NextPageToken = encodePageToken(detector.KeyOf(page[len(page)-1]))
	}
	return resp, nil
}

// A page token is the last key of the page, so that the next page starts
// after it whatever was added or removed meanwhile (an offset would skip
// or repeat entries): "1" NUL prefix NUL match, base64url.
const pageTokenVersion = "1"

func encodePageToken(k detector.ListKey) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenVersion + "\x00" + k.Prefix.String() + "\x00" + k.Match))
}

var errBadToken = errors.New("malformed (pass next_page_token of the previous page unchanged)")

func decodePageToken(t string) (detector.ListKey, error) {
	raw, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil {
		return detector.ListKey{}, errBadToken
	}
	parts := strings.SplitN(string(raw), "\x00", 3)
	if len(parts) != 3 || parts[0] != pageTokenVersion {
		return detector.ListKey{}, errBadToken
	}
	p, err := netip.ParsePrefix(parts[1])
	if err != nil {
		return detector.ListKey{}, fmt.Errorf("%w: %v", errBadToken, err)
	}
	return detector.ListKey{Prefix: p, Match: parts[2]}, nil
}
