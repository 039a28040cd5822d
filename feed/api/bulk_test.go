package api

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtbh/rtbh/detector"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// item is what one add or removal came to: the accepted prefix, or the
// refusal's code name and message.
type item struct {
	Index  int
	Prefix string
	Code   string
	Reason string
}

// mixedAdds are adds that pass and fail for every reason the single call
// refuses, for an operator and for partner isp-b (203.0.113.0/24).
func mixedAdds() []*rtbhv1.AddBlackholeRequest {
	add := func(p string, ttl *durationpb.Duration, reason string) *rtbhv1.AddBlackholeRequest {
		return &rtbhv1.AddBlackholeRequest{Prefix: p, Ttl: ttl, Reason: reason}
	}
	return []*rtbhv1.AddBlackholeRequest{
		add("203.0.113.1", nil, "ok"),
		add("", nil, "empty"),
		add("zombie.example.net", nil, "garbage"),
		add("203.0.113.7/24", nil, "host bits"),
		add("203.0.113.2", durationpb.New(0), "ttl 0"),
		add("203.0.113.3", &durationpb.Duration{Seconds: 1, Nanos: -1}, "bad ttl"),
		add("198.51.0.0/16", nil, "too short"),
		add("198.51.100.53", nil, "never_blackhole"),
		add("198.51.100.9", nil, "outside a partner's scope"),
		add("203.0.113.4", durationpb.New(2*time.Hour), strings.Repeat("x", detector.MaxReasonBytes+1)),
		add("203.0.113.1", durationpb.New(3*time.Hour), "again, extends"),
		add("2001:db8:b::5", nil, "v6"),
		add("203.0.113.5", nil, "third new entry: max_active is 3"),
		add("203.0.113.6", nil, "beyond max_active"),
	}
}

func singleAdds(t *testing.T, a *apiClients, ctx context.Context, reqs []*rtbhv1.AddBlackholeRequest) []item {
	var out []item
	for i, r := range reqs {
		resp, err := a.bh.AddBlackhole(ctx, r)
		if err != nil {
			st := status.Convert(err)
			out = append(out, item{Index: i, Code: code.Code(st.Code()).String(), Reason: st.Message()})
			continue
		}
		out = append(out, item{Index: i, Prefix: resp.Blackhole.Prefix})
	}
	return out
}

func batchItems(acc []string, accIdx []int, rej []*rtbhv1.RejectedItem) []item {
	var out []item
	for k, p := range acc {
		out = append(out, item{Index: accIdx[k], Prefix: p})
	}
	for _, r := range rej {
		out = append(out, item{Index: int(r.Index), Code: r.Code, Reason: r.Reason})
	}
	slices.SortFunc(out, func(a, b item) int { return a.Index - b.Index })
	return out
}

// AddBlackholes refuses each item with the code and message AddBlackhole
// would answer, and accepts the rest — for an operator and for a partner.
func TestAddBlackholesSameAsAddBlackhole(t *testing.T) {
	for _, who := range []string{"noc-token", "isp-b-token"} {
		t.Run(who, func(t *testing.T) {
			cfg := testPolicy()
			cfg.Policy.MaxActive = 3
			batch := startAPI(t, Config{}, newBackendWith(t, cfg))
			single := startAPI(t, Config{}, newBackendWith(t, cfg))
			ctx := withToken(testCtx(t), who)
			reqs := mixedAdds()
			want := singleAdds(t, single, ctx, reqs)
			resp, err := batch.bh.AddBlackholes(ctx, &rtbhv1.AddBlackholesRequest{Items: reqs})
			if err != nil {
				t.Fatal(err)
			}
			// Accepted entries come in request order; their indexes are
			// the ones not rejected.
			rejected := map[int]bool{}
			for _, r := range resp.Rejected {
				rejected[int(r.Index)] = true
			}
			var accIdx []int
			for i := range reqs {
				if !rejected[i] {
					accIdx = append(accIdx, i)
				}
			}
			var acc []string
			for _, b := range resp.Blackholes {
				acc = append(acc, b.Prefix)
			}
			if len(acc) != len(accIdx) {
				t.Fatalf("%d accepted entries for %d items not rejected", len(acc), len(accIdx))
			}
			for i := 1; i < len(resp.Rejected); i++ {
				if resp.Rejected[i].Index <= resp.Rejected[i-1].Index {
					t.Fatalf("rejected items not in index order: %v", resp.Rejected)
				}
			}
			got := batchItems(acc, accIdx, resp.Rejected)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("AddBlackholes differs from AddBlackhole (-single +batch):\n%s", diff)
			}
			bl, err := batch.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			sl, err := single.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(bl.Blackholes) != 3 || len(sl.Blackholes) != 3 {
				t.Fatalf("batch lists %d, single %d; want 3 each (max_active)", len(bl.Blackholes), len(sl.Blackholes))
			}
			for i := range bl.Blackholes {
				if b, s := bl.Blackholes[i], sl.Blackholes[i]; b.Prefix != s.Prefix || b.Origin != s.Origin {
					t.Fatalf("entry %d: batch %v, single %v", i, b, s)
				}
			}
		})
	}
}

func TestBatchLimitsAndRoles(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	op := withToken(testCtx(t), "noc-token")
	big := make([]*rtbhv1.AddBlackholeRequest, detector.MaxBatchItems+1)
	for i := range big {
		big[i] = &rtbhv1.AddBlackholeRequest{Prefix: "203.0.113.1"}
	}
	_, err := a.bh.AddBlackholes(op, &rtbhv1.AddBlackholesRequest{Items: big})
	wantCode(t, err, codes.InvalidArgument)
	_, err = a.bh.RemoveBlackholes(op, &rtbhv1.RemoveBlackholesRequest{Prefixes: make([]string, detector.MaxBatchItems+1)})
	wantCode(t, err, codes.InvalidArgument)
	_, err = a.bh.AddBlackholes(testCtx(t), &rtbhv1.AddBlackholesRequest{Items: big[:1]})
	wantCode(t, err, codes.Unauthenticated)
	// An empty batch is a no-op, not an error.
	if resp, err := a.bh.AddBlackholes(op, &rtbhv1.AddBlackholesRequest{}); err != nil || len(resp.Blackholes)+len(resp.Rejected) != 0 {
		t.Fatalf("empty batch: %v, %v", resp, err)
	}
	// 10,000 items is allowed, and committed.
	full := make([]*rtbhv1.AddBlackholeRequest, detector.MaxBatchItems)
	for i := range full {
		full[i] = &rtbhv1.AddBlackholeRequest{Prefix: fmt.Sprintf("2001:db8:1::%x", i+1), Reason: "bulk"}
	}
	resp, err := a.bh.AddBlackholes(op, &rtbhv1.AddBlackholesRequest{Items: full})
	if err != nil || len(resp.Blackholes) != detector.MaxBatchItems || len(resp.Rejected) != 0 {
		t.Fatalf("10,000 items: %d accepted, %d rejected, %v", len(resp.GetBlackholes()), len(resp.GetRejected()), err)
	}
}

func TestRemoveBlackholesPerItem(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	op := withToken(testCtx(t), "noc-token")
	isp := withToken(testCtx(t), "isp-b-token")
	for _, p := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
		if _, err := a.bh.AddBlackhole(isp, &rtbhv1.AddBlackholeRequest{Prefix: p}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: "203.0.113.9"}); err != nil {
		t.Fatal(err)
	}
	resp, err := a.bh.RemoveBlackholes(isp, &rtbhv1.RemoveBlackholesRequest{Reason: "cleaned", Prefixes: []string{
		"203.0.113.1", "bogus", "203.0.113.9", "198.51.100.1", "203.0.113.1", "203.0.113.3", "203.0.113.77",
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range resp.Rejected {
		got = append(got, fmt.Sprintf("%d %s", r.Index, r.Code))
	}
	want := []string{"1 INVALID_ARGUMENT", "2 PERMISSION_DENIED", "3 PERMISSION_DENIED", "4 NOT_FOUND", "6 NOT_FOUND"}
	if diff := cmp.Diff(want, got); diff != "" || resp.Removed != 2 {
		t.Fatalf("removed %d; rejected (-want +got):\n%s", resp.Removed, diff)
	}
	l, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, b := range l.Blackholes {
		left = append(left, b.Prefix)
	}
	if diff := cmp.Diff([]string{"203.0.113.2/32", "203.0.113.9/32"}, left); diff != "" {
		t.Fatalf("left (-want +got):\n%s", diff)
	}
}

// listAll pages through ListBlackholes.
func listAll(t *testing.T, a *apiClients, ctx context.Context, req *rtbhv1.ListBlackholesRequest) (prefixes []string, pages int) {
	t.Helper()
	for {
		resp, err := a.bh.ListBlackholes(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if ps := req.GetPageSize(); ps > 0 && len(resp.Blackholes) > int(ps) {
			t.Fatalf("page of %d, page_size %d", len(resp.Blackholes), ps)
		}
		for _, b := range resp.Blackholes {
			prefixes = append(prefixes, b.Prefix)
		}
		if resp.NextPageToken == "" {
			return prefixes, pages
		}
		if pages > 10000 {
			t.Fatal("paging does not end")
		}
		req.PageToken = resp.NextPageToken
	}
}

func TestListBlackholesPaged(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	op := withToken(testCtx(t), "noc-token")
	isp := withToken(testCtx(t), "isp-b-token")
	// 250 operator entries in 198.51.100.0/24 and 203.0.113.0/24 (+ a /24
	// covering the latter), 50 of partner isp-b's.
	var items []*rtbhv1.AddBlackholeRequest
	for i := range 200 {
		if i == 53 {
			continue // never_blackhole
		}
		items = append(items, &rtbhv1.AddBlackholeRequest{Prefix: fmt.Sprintf("198.51.100.%d", i)})
	}
	for i := range 50 {
		items = append(items, &rtbhv1.AddBlackholeRequest{Prefix: fmt.Sprintf("203.0.113.%d", 100+i)})
	}
	items = append(items, &rtbhv1.AddBlackholeRequest{Prefix: "203.0.113.0/24"})
	if r, err := a.bh.AddBlackholes(op, &rtbhv1.AddBlackholesRequest{Items: items}); err != nil || len(r.Rejected) != 0 {
		t.Fatalf("operator batch: %v, %v", r.GetRejected(), err)
	}
	var mine []*rtbhv1.AddBlackholeRequest
	for i := range 50 {
		mine = append(mine, &rtbhv1.AddBlackholeRequest{Prefix: fmt.Sprintf("203.0.113.%d", i)})
	}
	if r, err := a.bh.AddBlackholes(isp, &rtbhv1.AddBlackholesRequest{Items: mine}); err != nil || len(r.Rejected) != 0 {
		t.Fatalf("partner batch: %v, %v", r.GetRejected(), err)
	}
	all, pages := listAll(t, a, op, &rtbhv1.ListBlackholesRequest{})
	if len(all) != 199+50+1+50 || pages != 1 {
		t.Fatalf("default page: %d entries in %d pages", len(all), pages)
	}
	for _, size := range []uint32{1, 7, 100} {
		got, pages := listAll(t, a, op, &rtbhv1.ListBlackholesRequest{PageSize: size})
		if diff := cmp.Diff(all, got); diff != "" {
			t.Fatalf("page size %d (-one page +paged):\n%s", size, diff)
		}
		if want := (len(all) + int(size) - 1) / int(size); pages != want {
			t.Fatalf("page size %d: %d pages, want %d", size, pages, want)
		}
	}
	count := func(ctx context.Context, req *rtbhv1.ListBlackholesRequest) int {
		got, _ := listAll(t, a, ctx, req)
		return len(got)
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		req  *rtbhv1.ListBlackholesRequest
		want int
	}{
		{"within /24", op, &rtbhv1.ListBlackholesRequest{Within: "198.51.100.0/24", PageSize: 30}, 199},
		{"within 203.0.113.0/24 has its /24 too", op, &rtbhv1.ListBlackholesRequest{Within: "203.0.113.0/24", PageSize: 30}, 101},
		{"within a /25", op, &rtbhv1.ListBlackholesRequest{Within: "203.0.113.0/25"}, 50 + 28},
		{"within a bare address", op, &rtbhv1.ListBlackholesRequest{Within: "198.51.100.7"}, 1},
		{"origin exact", op, &rtbhv1.ListBlackholesRequest{Origin: "partner:isp-b", PageSize: 9}, 50},
		{"origin prefix", op, &rtbhv1.ListBlackholesRequest{Origin: "operator:"}, 250},
		{"origin nothing", op, &rtbhv1.ListBlackholesRequest{Origin: "detector:"}, 0},
		// A partner sees the entries inside its prefixes (203.0.113.0/24's,
		// the /24 itself included) and its own, nothing else.
		{"partner sees its space", isp, &rtbhv1.ListBlackholesRequest{PageSize: 13}, 101},
		{"partner within another's space", isp, &rtbhv1.ListBlackholesRequest{Within: "198.51.100.0/24"}, 0},
		{"partner by origin", isp, &rtbhv1.ListBlackholesRequest{Origin: "operator:", PageSize: 10}, 51},
		{"partner without prefixes", withToken(testCtx(t), "isp-c-token"), &rtbhv1.ListBlackholesRequest{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := count(tc.ctx, tc.req); got != tc.want {
				t.Fatalf("%d entries, want %d", got, tc.want)
			}
		})
	}
	for _, req := range []*rtbhv1.ListBlackholesRequest{
		{PageToken: "not a token"},
		{PageToken: "AAAA"},
		{Within: "198.51.100.7/24"},
		{Within: "nonsense"},
	} {
		_, err := a.bh.ListBlackholes(op, req)
		wantCode(t, err, codes.InvalidArgument)
	}
	// A page size above the maximum is cut to it.
	resp, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{PageSize: MaxPageSize + 1})
	if err != nil || len(resp.Blackholes) != len(all) || resp.NextPageToken != "" {
		t.Fatalf("page_size %d: %d entries, token %q, %v", MaxPageSize+1, len(resp.GetBlackholes()), resp.GetNextPageToken(), err)
	}
}
