package api

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// apiClients is a running server with the usual cast: an operator "noc",
// partner "isp-b" owning 203.0.113.0/24 and 2001:db8:b::/48, and partner
// "isp-c" with no prefixes.
type apiClients struct {
	ts *testServer
	cc *grpc.ClientConn
	bh rtbhv1.BlackholeServiceClient
	rp rtbhv1.ReportServiceClient
	st rtbhv1.StatusServiceClient
}

func startAPI(t *testing.T, cfg Config, backend Backend) *apiClients {
	t.Helper()
	isp := client("isp-b", RolePartner, "isp-b-token", "203.0.113.0/24", "2001:db8:b::/48")
	isp.Trust = 0.5
	ispC := client("isp-c", RolePartner, "isp-c-token")
	ispC.Trust = 0.5
	cfg.Clients = append(cfg.Clients, client("noc", RoleOperator, "noc-token"), isp, ispC)
	if backend == nil {
		backend = newBackend(t)
	}
	ts := startServer(t, cfg, backend, nil)
	cc := dial(t, ts.addr, nil)
	return &apiClients{ts: ts, cc: cc,
		bh: rtbhv1.NewBlackholeServiceClient(cc),
		rp: rtbhv1.NewReportServiceClient(cc),
		st: rtbhv1.NewStatusServiceClient(cc),
	}
}

func (a *apiClients) add(ctx context.Context, prefix string, ttl time.Duration) (*rtbhv1.AddBlackholeResponse, error) {
	req := &rtbhv1.AddBlackholeRequest{Prefix: prefix, Reason: "test"}
	if ttl != 0 {
		req.Ttl = durationpb.New(ttl)
	}
	return a.bh.AddBlackhole(ctx, req)
}

func TestAddBlackholeRefusals(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	op := withToken(testCtx(t), "noc-token")
	for name, tc := range map[string]struct {
		prefix string
		ttl    *durationpb.Duration
		want   codes.Code
	}{
		"empty prefix":             {"", nil, codes.InvalidArgument},
		"malformed prefix":         {"198.51.100.300", nil, codes.InvalidArgument},
		"garbage":                  {"zombie.example.net", nil, codes.InvalidArgument},
		"host bits set":            {"198.51.100.7/24", nil, codes.InvalidArgument},
		"host bits set v6":         {"2001:db8::1/64", nil, codes.InvalidArgument},
		"ttl zero":                 {"198.51.100.7", durationpb.New(0), codes.InvalidArgument},
		"ttl negative":             {"198.51.100.7", durationpb.New(-time.Second), codes.InvalidArgument},
		"ttl invalid":              {"198.51.100.7", &durationpb.Duration{Seconds: 1, Nanos: -1}, codes.InvalidArgument},
		"too short v4":             {"198.51.0.0/16", nil, codes.FailedPrecondition},
		"too short v6":             {"2001:db8::/48", nil, codes.FailedPrecondition},
		"never_blackhole":          {"198.51.100.53", nil, codes.FailedPrecondition},
		"overlaps never_blackhole": {"198.51.100.0/24", nil, codes.FailedPrecondition},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: tc.prefix, Ttl: tc.ttl, Reason: "test"})
			wantCode(t, err, tc.want)
		})
	}
	list, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if err != nil || len(list.Blackholes) != 0 {
		t.Fatalf("refused adds left entries: %v %v", list, err)
	}
}

func TestAddBlackholeMaxActive(t *testing.T) {
	cfg := testPolicy()
	cfg.Policy.MaxActive = 2
	a := startAPI(t, Config{}, newBackendWith(t, cfg))
	op := withToken(testCtx(t), "noc-token")
	for _, p := range []string{"198.51.100.1", "198.51.100.2"} {
		if _, err := a.add(op, p, 0); err != nil {
			t.Fatal(err)
		}
	}
	_, err := a.add(op, "198.51.100.3", 0)
	wantCode(t, err, codes.ResourceExhausted)
	// Extending an active entry is not a new one.
	if resp, err := a.add(op, "198.51.100.2", 2*time.Hour); err != nil || !resp.Existed {
		t.Fatalf("extend at max_active: %v %v", resp, err)
	}
	if _, err := a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.add(op, "198.51.100.3", 0); err != nil {
		t.Fatalf("add after a removal freed room: %v", err)
	}
}

func TestAddListRemove(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	op := withToken(testCtx(t), "noc-token")

	start := time.Now()
	resp, err := a.add(op, "198.51.100.7", 0)
	if err != nil {
		t.Fatal(err)
	}
	b := resp.Blackhole
	if resp.Existed || b.Prefix != "198.51.100.7/32" || b.Origin != "operator:noc" || b.Reason != "test" {
		t.Fatalf("add = %v", resp)
	}
	if d := b.ExpiresAt.AsTime().Sub(b.CreatedAt.AsTime()); d != time.Hour {
		t.Fatalf("absent ttl gave %v, want the default 1h", d)
	}
	if c := b.CreatedAt.AsTime(); c.Before(start.Add(-time.Second)) || c.After(time.Now().Add(time.Second)) {
		t.Fatalf("created_at %v is not now", c)
	}

	resp, err = a.add(op, "198.51.100.7/32", 2*time.Hour)
	if err != nil || !resp.Existed || resp.Blackhole.ExpiresAt.AsTime().Sub(b.CreatedAt.AsTime()) < 2*time.Hour-time.Second {
		t.Fatalf("extend = %v %v", resp, err)
	}
	resp, err = a.add(op, "198.51.100.7", 10*time.Minute)
	if err != nil || !resp.Existed || resp.Blackhole.ExpiresAt.AsTime().Sub(b.CreatedAt.AsTime()) < 2*time.Hour-time.Second {
		t.Fatalf("a shorter add must keep the later expiry: %v %v", resp, err)
	}
	resp, err = a.add(op, "2001:db8::7", 1000*time.Hour)
	if err != nil || resp.Blackhole.Prefix != "2001:db8::7/128" {
		t.Fatalf("add v6 = %v %v", resp, err)
	}
	if d := resp.Blackhole.ExpiresAt.AsTime().Sub(resp.Blackhole.CreatedAt.AsTime()); d != 168*time.Hour {
		t.Fatalf("ttl 1000h gave %v, want clamped to 168h", d)
	}

	list, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if err != nil || len(list.Blackholes) != 2 || list.Blackholes[0].Prefix != "198.51.100.7/32" || list.Blackholes[1].Prefix != "2001:db8::7/128" {
		t.Fatalf("list = %v %v", list, err)
	}

	if _, err := a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.7", Reason: "cleaned"}); err != nil {
		t.Fatal(err)
	}
	_, err = a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.7"})
	wantCode(t, err, codes.NotFound)
	_, err = a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.8"})
	wantCode(t, err, codes.NotFound)
	_, err = a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.8/24"})
	wantCode(t, err, codes.InvalidArgument)
	list, err = a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if err != nil || len(list.Blackholes) != 1 {
		t.Fatalf("list after remove = %v %v", list, err)
	}
}

func TestPartnerScope(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	ctx := testCtx(t)
	op, isp, ispC := withToken(ctx, "noc-token"), withToken(ctx, "isp-b-token"), withToken(ctx, "isp-c-token")

	resp, err := a.add(isp, "203.0.113.9", 0)
	if err != nil || resp.Blackhole.Origin != "partner:isp-b" {
		t.Fatalf("partner add inside its space: %v %v", resp, err)
	}
	if _, err := a.add(isp, "2001:db8:b::9", 0); err != nil {
		t.Fatalf("partner add inside its v6 space: %v", err)
	}
	for _, p := range []string{"198.51.100.7", "203.0.112.0/23", "203.0.114.1", "2001:db8:c::1"} {
		_, err := a.add(isp, p, 0)
		wantCode(t, err, codes.PermissionDenied)
	}
	// A partner without prefixes may blackhole nothing.
	_, err = a.add(ispC, "203.0.113.10", 0)
	wantCode(t, err, codes.PermissionDenied)

	// Partners remove only their own entries.
	if _, err := a.add(op, "198.51.100.7", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.add(op, "203.0.113.10", 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"198.51.100.7", "203.0.113.10"} {
		_, err := a.bh.RemoveBlackhole(isp, &rtbhv1.RemoveBlackholeRequest{Prefix: p})
		wantCode(t, err, codes.PermissionDenied)
	}
	_, err = a.bh.RemoveBlackhole(ispC, &rtbhv1.RemoveBlackholeRequest{Prefix: "203.0.113.9"})
	wantCode(t, err, codes.PermissionDenied)

	// Partners see only what is inside their prefixes (TestPartnerVisibility).
	list, err := a.bh.ListBlackholes(isp, &rtbhv1.ListBlackholesRequest{})
	if err != nil || len(list.Blackholes) != 3 {
		t.Fatalf("partner list = %v %v", list, err)
	}
	if _, err := a.bh.RemoveBlackhole(isp, &rtbhv1.RemoveBlackholeRequest{Prefix: "203.0.113.9"}); err != nil {
		t.Fatalf("partner removing its own entry: %v", err)
	}
	// The operator may remove anything.
	if _, err := a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "2001:db8:b::9"}); err != nil {
		t.Fatal(err)
	}
}

// recvUntil reads a watch stream until it has seen n messages.
func recvN(t *testing.T, s rtbhv1.BlackholeService_WatchBlackholesClient, n int) []*rtbhv1.WatchBlackholesResponse {
	t.Helper()
	var out []*rtbhv1.WatchBlackholesResponse
	for len(out) < n {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("watch Recv after %d messages: %v", len(out), err)
		}
		out = append(out, m)
	}
	return out
}

func TestWatch(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	ctx := testCtx(t)
	op := withToken(ctx, "noc-token")
	for _, p := range []string{"198.51.100.9", "198.51.100.8"} {
		if _, err := a.add(op, p, 0); err != nil {
			t.Fatal(err)
		}
	}
	s, err := a.bh.WatchBlackholes(op, &rtbhv1.WatchBlackholesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := recvN(t, s, 3)
	if got[0].Type != rtbhv1.EventType_EVENT_TYPE_SNAPSHOT || got[0].Blackhole.Prefix != "198.51.100.8/32" ||
		got[1].Type != rtbhv1.EventType_EVENT_TYPE_SNAPSHOT || got[1].Blackhole.Prefix != "198.51.100.9/32" ||
		got[2].Type != rtbhv1.EventType_EVENT_TYPE_SNAPSHOT_END || got[2].Blackhole != nil {
		t.Fatalf("snapshot = %v", got)
	}

	if _, err := a.add(op, "198.51.100.7", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.add(op, "198.51.100.7", 3*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.7"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.add(op, "198.51.100.6", time.Second); err != nil {
		t.Fatal(err)
	}
	got = recvN(t, s, 5)
	want := []struct {
		typ    rtbhv1.EventType
		prefix string
	}{
		{rtbhv1.EventType_EVENT_TYPE_ADDED, "198.51.100.7/32"},
		{rtbhv1.EventType_EVENT_TYPE_EXTENDED, "198.51.100.7/32"},
		{rtbhv1.EventType_EVENT_TYPE_REMOVED, "198.51.100.7/32"},
		{rtbhv1.EventType_EVENT_TYPE_ADDED, "198.51.100.6/32"},
		{rtbhv1.EventType_EVENT_TYPE_EXPIRED, "198.51.100.6/32"},
	}
	for i, w := range want {
		if got[i].Type != w.typ || got[i].Blackhole.GetPrefix() != w.prefix {
			t.Fatalf("event %d = %v, want %v %s", i, got[i], w.typ, w.prefix)
		}
	}
	if got[0].Actor != "noc" || got[0].Blackhole.Origin != "operator:noc" {
		t.Fatalf("added event = %v, want actor noc", got[0])
	}
}

func TestWatchStreamLimit(t *testing.T) {
	a := startAPI(t, Config{MaxWatchStreamsPerClient: 2}, nil)
	ctx := testCtx(t)
	open := func(token string) (rtbhv1.BlackholeService_WatchBlackholesClient, context.CancelFunc, error) {
		sctx, cancel := context.WithCancel(withToken(ctx, token))
		s, err := a.bh.WatchBlackholes(sctx, &rtbhv1.WatchBlackholesRequest{})
		if err != nil {
			cancel()
			return nil, nil, err
		}
		m, err := s.Recv() // SNAPSHOT_END of an empty set, or the refusal
		if err != nil {
			cancel()
			return nil, nil, err
		}
		if m.Type != rtbhv1.EventType_EVENT_TYPE_SNAPSHOT_END {
			t.Fatalf("first message %v", m)
		}
		return s, cancel, nil
	}
	_, cancel1, err := open("isp-b-token")
	if err != nil {
		t.Fatal(err)
	}
	_, cancel2, err := open("isp-b-token")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel2()
	_, _, err = open("isp-b-token")
	wantCode(t, err, codes.ResourceExhausted)
	// The limit is per client.
	_, cancelOp, err := open("noc-token")
	if err != nil {
		t.Fatalf("another client's watch: %v", err)
	}
	defer cancelOp()

	// Closing a stream frees its slot (the server notices the cancel
	// asynchronously: retry for a bounded time).
	cancel1()
	testkit.WaitFor(t, 5*time.Second, "the slot to be freed after the client closed its stream", func() bool {
		_, c, err := open("isp-b-token")
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted)
			return false
		}
		c()
		return true
	})
}

func TestWatchEndsOnShutdown(t *testing.T) {
	backend := newBackend(t)
	s, err := New(Config{Listen: "127.0.0.1:0", Clients: []Client{client("noc", RoleOperator, "noc-token")}}, backend, nil, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	bh := rtbhv1.NewBlackholeServiceClient(dial(t, s.Addr().String(), nil))
	w, err := bh.WatchBlackholes(withToken(testCtx(t), "noc-token"), &rtbhv1.WatchBlackholesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvN(t, w, 1)
	start := time.Now()
	cancel()
	_, err = w.Recv()
	wantCode(t, err, codes.Unavailable)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown with an open watch took %v", d)
	}
	if _, err := w.Recv(); err == io.EOF {
		t.Fatal("stream ended cleanly after shutdown")
	}
}

func TestAddConcurrentClients(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	op := withToken(testCtx(t), "noc-token")
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			for i := range 25 {
				if _, err := a.add(op, fmt.Sprintf("203.0.113.%d", w*25+i), 0); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	list, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if err != nil || len(list.Blackholes) != 200 {
		t.Fatalf("list has %d entries (%v), want 200", len(list.GetBlackholes()), err)
	}
}
