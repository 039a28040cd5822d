package api

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// wantStatus fails the test unless err is exactly code c with message msg.
func wantStatus(t testing.TB, err error, c codes.Code, msg string) {
	t.Helper()
	s := status.Convert(err)
	if s.Code() != c || s.Message() != msg {
		t.Fatalf("got %v %q, want %v %q", s.Code(), s.Message(), c, msg)
	}
}

// An operator who adds or extends a partner's entry takes it over: the
// response and the list show origin operator:noc, the audit log says so,
// and the partner's remove is refused PERMISSION_DENIED.
func TestOperatorTakesOverPartnerEntry(t *testing.T) {
	m, db := newBackendDB(t, testPolicy())
	a := startAPI(t, Config{}, m)
	ctx := testCtx(t)
	op, isp := withToken(ctx, "noc-token"), withToken(ctx, "isp-b-token")

	if resp, err := a.add(isp, "203.0.113.9", 2*time.Hour); err != nil || resp.Blackhole.Origin != "partner:isp-b" {
		t.Fatalf("partner add = %v, %v", resp, err)
	}
	// The operator's TTL is shorter: the expiry stays, the entry is taken over.
	resp, err := a.add(op, "203.0.113.9", time.Hour)
	if err != nil || !resp.Existed || resp.Blackhole.Origin != "operator:noc" {
		t.Fatalf("operator re-add = %v, %v; want existed, origin operator:noc", resp, err)
	}
	_, err = a.bh.RemoveBlackhole(isp, &rtbhv1.RemoveBlackholeRequest{Prefix: "203.0.113.9", Reason: "over"})
	wantStatus(t, err, codes.PermissionDenied, "203.0.113.9/32 belongs to operator:noc, not to you")

	list, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{})
	if err != nil || len(list.Blackholes) != 1 || list.Blackholes[0].Origin != "operator:noc" {
		t.Fatalf("list = %v, %v", list, err)
	}
	rows, err := db.AuditLog(context.Background(), "203.0.113.9/32", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[1].Actor != "noc" || rows[1].Origin != "operator:noc" ||
		!strings.HasSuffix(rows[1].Detail, "; taken over from partner:isp-b") {
		t.Fatalf("audit = %+v, want a second row by noc saying it was taken over from partner:isp-b", rows)
	}
	if _, err := a.bh.RemoveBlackhole(op, &rtbhv1.RemoveBlackholeRequest{Prefix: "203.0.113.9"}); err != nil {
		t.Fatalf("operator removing its entry: %v", err)
	}
}

// prefixesOf lists the prefixes of bs, in order.
func prefixesOf[T interface{ GetPrefix() string }](bs []T) []string {
	out := []string{}
	for _, b := range bs {
		out = append(out, b.GetPrefix())
	}
	return out
}

// Partners see (List and Watch) only entries inside their prefixes or of
// origin partner:<self>; operators see everything.
func TestPartnerVisibility(t *testing.T) {
	a := startAPI(t, Config{}, nil)
	ctx := testCtx(t)
	op, isp, ispC := withToken(ctx, "noc-token"), withToken(ctx, "isp-b-token"), withToken(ctx, "isp-c-token")
	for _, c := range []struct {
		ctx    context.Context
		prefix string
	}{
		{op, "198.51.100.7"},    // the ISP's own zombie: not isp-b's business
		{op, "203.0.113.10"},    // inside isp-b's prefixes, added by the operator
		{isp, "203.0.113.9"},    // isp-b's own
		{isp, "203.0.113.200"},  // isp-b's own, outside its prefixes after the reload below
		{op, "2001:db8:b::7"},   // inside isp-b's v6 prefix
		{op, "2001:db8:c::/64"}, // outside
	} {
		if _, err := a.add(c.ctx, c.prefix, 0); err != nil {
			t.Fatalf("add %s: %v", c.prefix, err)
		}
	}
	// isp-b keeps only 203.0.113.0/25 and its v6 space.
	isp2 := client("isp-b", RolePartner, "isp-b-token", "203.0.113.0/25", "2001:db8:b::/48")
	if err := a.ts.SetClients([]Client{client("noc", RoleOperator, "noc-token"), isp2, client("isp-c", RolePartner, "isp-c-token")}); err != nil {
		t.Fatal(err)
	}

	list := func(ctx context.Context) []string {
		t.Helper()
		resp, err := a.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return prefixesOf(resp.Blackholes)
	}
	all := []string{"198.51.100.7/32", "203.0.113.9/32", "203.0.113.10/32", "203.0.113.200/32", "2001:db8:b::7/128", "2001:db8:c::/64"}
	ispView := []string{"203.0.113.9/32", "203.0.113.10/32", "203.0.113.200/32", "2001:db8:b::7/128"}
	for name, tc := range map[string]struct {
		ctx  context.Context
		want []string
	}{
		"operator":             {op, all},
		"partner":              {isp, ispView},
		"partner, no prefixes": {ispC, []string{}},
	} {
		t.Run("list "+name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, list(tc.ctx)); diff != "" {
				t.Fatalf("ListBlackholes (-want +got):\n%s", diff)
			}
		})
	}

	watch := func(ctx context.Context, snapshot int) rtbhv1.BlackholeService_WatchBlackholesClient {
		t.Helper()
		w, err := a.bh.WatchBlackholes(ctx, &rtbhv1.WatchBlackholesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		msgs := recvN(t, w, snapshot+1)
		if last := msgs[snapshot]; last.Type != rtbhv1.EventType_EVENT_TYPE_SNAPSHOT_END {
			t.Fatalf("message %d = %v, want SNAPSHOT_END", snapshot, last)
		}
		return w
	}
	var snap []*rtbhv1.Blackhole
	wOp := watch(op, len(all))
	wISP, err := a.bh.WatchBlackholes(isp, &rtbhv1.WatchBlackholesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range recvN(t, wISP, len(ispView)+1)[:len(ispView)] {
		snap = append(snap, m.Blackhole)
	}
	if diff := cmp.Diff(ispView, prefixesOf(snap)); diff != "" {
		t.Fatalf("partner's snapshot (-want +got):\n%s", diff)
	}
	watch(ispC, 0) // a partner without prefixes: an empty snapshot

	// Invisible changes between visible ones: the partner's next message
	// after the first visible change is the second, so the ones between
	// were not sent.
	steps := []struct {
		ctx    context.Context
		prefix string
		remove bool
	}{
		{op, "203.0.113.11", false},   // visible to isp-b
		{op, "198.51.100.8", false},   // not
		{op, "198.51.100.8", true},    // not
		{op, "198.51.100.7", true},    // not
		{isp, "203.0.113.12", false},  // visible
		{op, "203.0.113.200", false},  // isp-b's own, taken over: visible (the change that takes it away)
		{op, "203.0.113.200", true},   // now the operator's, outside isp-b's prefixes: not
		{op, "2001:db8:b::7", true},   // visible
		{ispC, "198.51.100.9", false}, // refused: nothing happens
	}
	for _, s := range steps {
		var err error
		if s.remove {
			_, err = a.bh.RemoveBlackhole(s.ctx, &rtbhv1.RemoveBlackholeRequest{Prefix: s.prefix})
		} else {
			_, err = a.add(s.ctx, s.prefix, 0)
		}
		if s.ctx == ispC {
			wantStatus(t, err, codes.PermissionDenied, "198.51.100.9/32 is outside your prefixes")
		} else if err != nil {
			t.Fatalf("%s %v: %v", s.prefix, s.remove, err)
		}
	}
	type event struct{ Type, Prefix, Origin string }
	events := func(w rtbhv1.BlackholeService_WatchBlackholesClient, n int) []event {
		t.Helper()
		var out []event
		for _, m := range recvN(t, w, n) {
			out = append(out, event{m.Type.String(), m.Blackhole.GetPrefix(), m.Blackhole.GetOrigin()})
		}
		return out
	}
	wantISP := []event{
		{"EVENT_TYPE_ADDED", "203.0.113.11/32", "operator:noc"},
		{"EVENT_TYPE_ADDED", "203.0.113.12/32", "partner:isp-b"},
		{"EVENT_TYPE_EXTENDED", "203.0.113.200/32", "operator:noc"},
		{"EVENT_TYPE_REMOVED", "2001:db8:b::7/128", "operator:noc"},
	}
	if diff := cmp.Diff(wantISP, events(wISP, len(wantISP))); diff != "" {
		t.Fatalf("partner's events (-want +got):\n%s", diff)
	}
	if got := events(wOp, 8); len(got) != 8 || got[7] != (event{"EVENT_TYPE_REMOVED", "2001:db8:b::7/128", "operator:noc"}) {
		t.Fatalf("operator's events = %v, want all 8 changes", got)
	}
}

// A client removed or changed by a reload loses its open watch streams
// within 1 s (UNAUTHENTICATED); the streams of clients the reload leaves
// as they were (or changes only in trust and rate) stay open.
func TestReloadEndsStreamsOfChangedClients(t *testing.T) {
	partner := func(name, token string, prefixes ...string) Client {
		return client(name, RolePartner, token, prefixes...)
	}
	before := []Client{
		client("noc", RoleOperator, "noc-token"),
		partner("keep", "keep-token", "203.0.113.0/24"),
		partner("gone", "gone-token", "203.0.113.0/24"),
		partner("token", "token-old", "203.0.113.0/24"),
		partner("role", "role-token", "203.0.113.0/24"),
		partner("prefixes", "prefixes-token", "203.0.113.0/24"),
	}
	ts := startServer(t, Config{Clients: before}, newBackend(t), nil)
	bh := rtbhv1.NewBlackholeServiceClient(dial(t, ts.addr, nil))
	ctx := testCtx(t)

	streams := map[string]rtbhv1.BlackholeService_WatchBlackholesClient{}
	for _, c := range before {
		token := c.Name + "-token"
		if c.Name == "token" {
			token = "token-old"
		}
		w, err := bh.WatchBlackholes(withToken(ctx, token), &rtbhv1.WatchBlackholesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if m := recvN(t, w, 1)[0]; m.Type != rtbhv1.EventType_EVENT_TYPE_SNAPSHOT_END {
			t.Fatalf("%s: first message %v", c.Name, m)
		}
		streams[c.Name] = w
	}

	keep := partner("keep", "keep-token", "203.0.113.0/24")
	keep.Trust, keep.Rate = 0.9, 5
	role := client("role", RoleOperator, "role-token")
	after := []Client{
		client("noc", RoleOperator, "noc-token"),
		keep,
		partner("token", "token-new", "203.0.113.0/24"),
		role,
		partner("prefixes", "prefixes-token", "203.0.113.0/25"),
	}
	type result struct {
		name string
		err  error
		took time.Duration
	}
	revoked := map[string]string{
		"gone":     `client "gone" was removed by a config reload`,
		"token":    `client "token" was changed by a config reload: reconnect`,
		"role":     `client "role" was changed by a config reload: reconnect`,
		"prefixes": `client "prefixes" was changed by a config reload: reconnect`,
	}
	results := make(chan result, len(revoked))
	start := time.Now()
	for name := range revoked {
		go func() {
			_, err := streams[name].Recv()
			results <- result{name, err, time.Since(start)}
		}()
	}
	if err := ts.SetClients(after); err != nil {
		t.Fatal(err)
	}
	for range revoked {
		r := <-results // each Recv ends: by the revocation, or the test's deadline
		wantStatus(t, r.err, codes.Unauthenticated, revoked[r.name])
		if r.took > time.Second {
			t.Errorf("%s's stream ended %v after the reload, want within 1 s", r.name, r.took)
		}
	}

	// The unchanged streams are still open: they get the next change.
	op := withToken(ctx, "noc-token")
	if _, err := bh.AddBlackhole(op, &rtbhv1.AddBlackholeRequest{Prefix: "203.0.113.9", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"noc", "keep"} {
		if m := recvN(t, streams[name], 1)[0]; m.Type != rtbhv1.EventType_EVENT_TYPE_ADDED || m.Blackhole.Prefix != "203.0.113.9/32" {
			t.Fatalf("%s's stream after the reload got %v, want the ADDED event", name, m)
		}
	}
	// A second reload that changes a client the first one kept ends the
	// stream it opened before both.
	keep.Prefixes = nil
	if err := ts.SetClients([]Client{client("noc", RoleOperator, "noc-token"), keep}); err != nil {
		t.Fatal(err)
	}
	_, err := streams["keep"].Recv()
	wantStatus(t, err, codes.Unauthenticated, `client "keep" was changed by a config reload: reconnect`)
	if err := ts.SetClients(after); err != nil {
		t.Fatal(err)
	}

	// The old token is refused; the new one opens a stream.
	w, err := bh.WatchBlackholes(withToken(ctx, "token-old"), &rtbhv1.WatchBlackholesRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	wantStatus(t, err, codes.Unauthenticated, "unknown bearer token")
	w, err = bh.WatchBlackholes(withToken(ctx, "token-new"), &rtbhv1.WatchBlackholesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := recvN(t, w, 2); got[0].Blackhole.GetPrefix() != "203.0.113.9/32" || got[1].Type != rtbhv1.EventType_EVENT_TYPE_SNAPSHOT_END {
		t.Fatalf("new token's snapshot = %v", got)
	}
}

// rawCodec sends []byte messages as they are (already encoded) and
// everything else as protobuf, so that a test can send a large request
// without the client allocating its encoding during the measurement.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }
func (rawCodec) Name() string                       { return "proto" }

// An rtbh.v1 call without valid credentials is refused UNAUTHENTICATED by
// the tap handle, before its message is read: a 4 MiB AddBlackhole costs
// the server no 4 MiB of reading and decoding. Measured as the bytes the
// process allocates during the call (the client sends pre-encoded bytes
// and so allocates next to nothing itself), against an authenticated call
// of the same size, which the server does decode (and then refuses).
func TestUnauthenticatedLargeRequestRefusedBeforeDecoding(t *testing.T) {
	nb := &countingNeighbors{}
	ts := startServer(t, Config{Clients: []Client{client("noc", RoleOperator, "op")}}, newBackend(t), nb.list)
	cc := dial(t, ts.addr, nil)
	ctx := testCtx(t)

	// Just under api.max_message_bytes (4 MiB), so that it would be read.
	req, err := proto.Marshal(&rtbhv1.AddBlackholeRequest{Prefix: "x", Reason: strings.Repeat("z", DefaultMaxMessageBytes-64)})
	if err != nil {
		t.Fatal(err)
	}
	if len(req) > DefaultMaxMessageBytes || len(req) < DefaultMaxMessageBytes-128 {
		t.Fatalf("request of %d bytes, want just under %d", len(req), DefaultMaxMessageBytes)
	}
	call := func(ctx context.Context) (allocated uint64, err error) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err = cc.Invoke(ctx, rtbhv1.BlackholeService_AddBlackhole_FullMethodName, req, &rtbhv1.AddBlackholeResponse{}, grpc.ForceCodec(rawCodec{}))
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc, err
	}
	const noCreds = `no credentials: send "authorization: Bearer <token>" or a client certificate`
	_, err = call(ctx) // warms up the connection
	wantStatus(t, err, codes.Unauthenticated, noCreds)

	decoded, err := call(withToken(ctx, "op"))
	wantStatus(t, err, codes.InvalidArgument, `prefix: "x" is not an address or prefix`)
	if decoded < DefaultMaxMessageBytes {
		t.Fatalf("an authenticated 4 MiB call allocated %d bytes: the measurement cannot see decoding", decoded)
	}
	for name, tc := range map[string]struct {
		ctx context.Context
		msg string
	}{
		"no credentials": {ctx, noCreds},
		"unknown token":  {withToken(ctx, "guess"), "unknown bearer token"},
		"basic scheme":   {metadataCtx(ctx, "authorization", "Basic bm9jOm9w"), "Request unauthenticated with bearer"},
	} {
		t.Run(name, func(t *testing.T) {
			refused, err := call(tc.ctx)
			wantStatus(t, err, codes.Unauthenticated, tc.msg)
			if refused > 1<<20 {
				t.Fatalf("refusing an unauthenticated 4 MiB call allocated %d bytes (an authenticated one: %d), want < 1 MiB: it was read", refused, decoded)
			}
			t.Logf("allocated %d bytes refusing it, %d decoding an authenticated one", refused, decoded)
		})
	}
	// Refusals in the tap are counted like the others.
	if got := testutil.ToFloat64(ts.metrics.requests.WithLabelValues("AddBlackhole", "Unauthenticated")); got != 4 {
		t.Fatalf("rtbh_api_requests_total{AddBlackhole,Unauthenticated} = %v, want 4", got)
	}
	// Health and reflection stay open; credentials still work.
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without credentials: %v", err)
	}
	if _, err := rtbhv1.NewStatusServiceClient(cc).ListNeighbors(withToken(ctx, "op"), &rtbhv1.ListNeighborsRequest{}); err != nil {
		t.Fatal(err)
	}
}

// api.max_concurrent_streams caps the calls open at once on one
// connection (default 256): a further call waits for one to end.
func TestMaxConcurrentStreams(t *testing.T) {
	if got := (&Config{}); true {
		got.applyDefaults()
		if got.MaxConcurrentStreams != 256 {
			t.Fatalf("default MaxConcurrentStreams = %d, want 256", got.MaxConcurrentStreams)
		}
	}
	a := startAPI(t, Config{MaxConcurrentStreams: 2}, nil)
	ctx := testCtx(t)
	op := withToken(ctx, "noc-token")
	var cancels []context.CancelFunc
	for range 2 {
		wctx, cancel := context.WithCancel(op)
		cancels = append(cancels, cancel)
		w, err := a.bh.WatchBlackholes(wctx, &rtbhv1.WatchBlackholesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		recvN(t, w, 1)
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	short, cancel := context.WithTimeout(op, 300*time.Millisecond)
	defer cancel()
	_, err := a.bh.ListBlackholes(short, &rtbhv1.ListBlackholesRequest{})
	wantCode(t, err, codes.DeadlineExceeded)
	// A second connection has its own streams.
	if _, err := rtbhv1.NewBlackholeServiceClient(dial(t, a.ts.addr, nil)).ListBlackholes(op, &rtbhv1.ListBlackholesRequest{}); err != nil {
		t.Fatalf("call on another connection: %v", err)
	}
	cancels[0]()
	if _, err := a.bh.ListBlackholes(op, &rtbhv1.ListBlackholesRequest{}); err != nil {
		t.Fatalf("call after a stream ended: %v", err)
	}
}

// 100 open watch streams cost well under 50 MB: a watcher allocates no
// event buffer up front (detector's watch queue grows only as far as its
// reader falls behind). Measured as the live heap of the whole process
// (server and clients) before and after opening them, with every stream
// past its snapshot and live (it received a later event).
func TestWatchStreamsMemory(t *testing.T) {
	const streams, conns = 100, 4
	a := startAPI(t, Config{MaxWatchStreamsPerClient: streams}, nil)
	ctx := testCtx(t)
	op := withToken(ctx, "noc-token")
	for i := range 10 {
		if _, err := a.add(op, fmt.Sprintf("198.51.100.%d", i+1), 0); err != nil {
			t.Fatal(err)
		}
	}
	clients := make([]rtbhv1.BlackholeServiceClient, conns)
	for i := range clients {
		clients[i] = rtbhv1.NewBlackholeServiceClient(dial(t, a.ts.addr, nil))
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	open := make([]rtbhv1.BlackholeService_WatchBlackholesClient, streams)
	for i := range open {
		w, err := clients[i%conns].WatchBlackholes(op, &rtbhv1.WatchBlackholesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if last := recvN(t, w, 11)[10]; last.Type != rtbhv1.EventType_EVENT_TYPE_SNAPSHOT_END {
			t.Fatalf("stream %d: message 11 = %v, want SNAPSHOT_END", i, last)
		}
		open[i] = w
	}
	if _, err := a.add(op, "198.51.100.99", 0); err != nil {
		t.Fatal(err)
	}
	for i, w := range open {
		if m := recvN(t, w, 1)[0]; m.Blackhole.GetPrefix() != "198.51.100.99/32" {
			t.Fatalf("stream %d got %v, want the ADDED event", i, m)
		}
	}
	after := heap()
	growth := int64(after) - int64(before)
	t.Logf("%d watch streams: heap %d -> %d bytes (%+d, %d per stream)", streams, before, after, growth, growth/streams)
	if growth > 50<<20 {
		t.Fatalf("%d open watch streams grew the heap by %d MB, want < 50 MB", streams, growth>>20)
	}
	if got := testutil.ToFloat64(a.ts.metrics.watchers); got != streams {
		t.Fatalf("rtbh_api_watch_streams = %v, want %d", got, streams)
	}
}
