package api

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// countingNeighbors is a NeighborLister that counts its calls, so tests
// can tell that a refused call never reached the handler.
type countingNeighbors struct{ calls atomic.Int64 }

func (c *countingNeighbors) list(context.Context) ([]Neighbor, error) {
	c.calls.Add(1)
	return []Neighbor{{Address: "192.0.2.2", ASN: 64500, Role: "border", State: "established", RoutesSent: 3, StateSince: time.Unix(1700000000, 0), Port: 179}}, nil
}

func TestNewRefusesPlaintextOffLoopback(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:50051", ":50051", "192.0.2.1:50051", "[::]:50051", "rtbh.example.net:50051"} {
		t.Run(listen, func(t *testing.T) {
			_, err := New(Config{Listen: listen}, newBackend(t), nil, testLogger(t), nil)
			if err == nil || !strings.Contains(err.Error(), "api.listen") || !strings.Contains(err.Error(), "plaintext") {
				t.Fatalf("New(%q) = %v, want a plaintext refusal naming api.listen", listen, err)
			}
		})
	}
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0", "127.0.0.53:0"} {
		s, err := New(Config{Listen: listen}, newBackend(t), nil, testLogger(t), nil)
		if err != nil {
			t.Errorf("New(%q) = %v, want loopback plaintext accepted", listen, err)
			continue
		}
		s.Close() // never served: its call workers end here
		s.Close() // and a second Close is harmless
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	ca := newTestCA(t, "ca")
	cert, key, caFile := serverFiles(t, ca, ca)
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"cert without key":   {Config{Listen: "0.0.0.0:0", TLSCert: cert}, "api.tls.key"},
		"client_ca no tls":   {Config{Listen: "127.0.0.1:0", ClientCA: caFile}, "api.tls.client_ca"},
		"missing cert file":  {Config{Listen: "0.0.0.0:0", TLSCert: cert + ".missing", TLSKey: key}, "api.tls.cert"},
		"ca not pem":         {Config{Listen: "0.0.0.0:0", TLSCert: cert, TLSKey: key, ClientCA: key}, "no PEM certificate"},
		"duplicate client":   {Config{Listen: "127.0.0.1:0", Clients: []Client{client("a", RoleOperator, "x"), client("a", RolePartner, "y")}}, "duplicate"},
		"unknown role":       {Config{Listen: "127.0.0.1:0", Clients: []Client{client("a", "admin", "x")}}, "api.clients[0].role"},
		"bad listen address": {Config{Listen: "127.0.0.1"}, "api.listen"},
		"too many streams":   {Config{Listen: "127.0.0.1:0", MaxConcurrentStreams: 1 << 20}, "api.max_concurrent_streams: 1048576 is above 65536"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(tc.cfg, newBackend(t), nil, testLogger(t), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestTokenAuth(t *testing.T) {
	nb := &countingNeighbors{}
	ts := startServer(t, Config{Clients: []Client{client("noc", RoleOperator, "s3cret"), client("other", RoleOperator, "other-token")}}, newBackend(t), nb.list)
	st := rtbhv1.NewStatusServiceClient(dial(t, ts.addr, nil))
	ctx := testCtx(t)

	for name, tc := range map[string]struct {
		ctx  context.Context
		want codes.Code
	}{
		"no credentials": {ctx, codes.Unauthenticated},
		"wrong token":    {withToken(ctx, "s3cret-but-not-quite"), codes.Unauthenticated},
		"empty token":    {withToken(ctx, ""), codes.Unauthenticated},
		"basic scheme":   {metadataCtx(ctx, "authorization", "Basic bm9jOnMzY3JldA=="), codes.Unauthenticated},
		"good token":     {withToken(ctx, "s3cret"), codes.OK},
		"two tokens":     {withToken(withToken(ctx, "s3cret"), "other-token"), codes.Unauthenticated},
		"other token":    {withToken(ctx, "other-token"), codes.OK},
	} {
		t.Run(name, func(t *testing.T) {
			before := nb.calls.Load()
			resp, err := st.ListNeighbors(tc.ctx, &rtbhv1.ListNeighborsRequest{})
			wantCode(t, err, tc.want)
			reached := nb.calls.Load() - before
			if tc.want == codes.OK {
				if len(resp.GetNeighbors()) != 1 || resp.Neighbors[0].Address != "192.0.2.2" || resp.Neighbors[0].Port != 179 {
					t.Fatalf("neighbors = %v", resp.GetNeighbors())
				}
			} else if reached != 0 {
				t.Fatalf("refused call reached the handler")
			}
		})
	}
}

func TestMTLS(t *testing.T) {
	serverCA := newTestCA(t, "server-ca")
	clientCA := newTestCA(t, "client-ca")
	otherCA := newTestCA(t, "other-ca")
	cert, key, caFile := serverFiles(t, serverCA, clientCA)
	nb := &countingNeighbors{}
	ts := startServer(t, Config{
		Listen: "127.0.0.1:0", TLSCert: cert, TLSKey: key, ClientCA: caFile,
		Clients: []Client{
			{Name: "noc-by-san", Role: RoleOperator, CertName: "noc.example.net"},
			{Name: "noc-by-cn", Role: RoleOperator, CertName: "noc-cn"},
			client("tokenonly", RoleOperator, "tok"),
			{Name: "partner", Role: RolePartner, CertName: "partner.example.org"},
		},
	}, newBackend(t), nb.list)

	bySAN := clientCA.keyPair(t, leafOpts{cn: "ignored", dns: []string{"noc.example.net"}})
	byCN := clientCA.keyPair(t, leafOpts{cn: "noc-cn"})
	unknown := clientCA.keyPair(t, leafOpts{cn: "stranger", dns: []string{"stranger.example.net"}})
	foreign := otherCA.keyPair(t, leafOpts{cn: "noc-cn", dns: []string{"noc.example.net"}})
	expired := clientCA.keyPair(t, leafOpts{cn: "noc-cn", dns: []string{"noc.example.net"}, notAfter: time.Now().Add(-time.Hour)})
	partner := clientCA.keyPair(t, leafOpts{cn: "partner.example.org"})
	cnWithOtherSAN := clientCA.keyPair(t, leafOpts{cn: "noc-cn", dns: []string{"stranger.example.net"}})

	ctx := testCtx(t)
	for name, tc := range map[string]struct {
		cert  *tlsCertificate
		token string
		want  codes.Code
	}{
		"cert named by DNS SAN":         {&bySAN, "", codes.OK},
		"cert named by CN":              {&byCN, "", codes.OK},
		"token over TLS, no cert":       {nil, "tok", codes.OK},
		"no cert, no token":             {nil, "", codes.Unauthenticated},
		"cert of no client":             {&unknown, "", codes.Unauthenticated},
		"CN of a client, SANs of none":  {&cnWithOtherSAN, "", codes.Unauthenticated},
		"good cert but wrong token":     {&bySAN, "wrong", codes.Unauthenticated},
		"cert from another CA":          {&foreign, "", codes.Unavailable},
		"expired cert":                  {&expired, "", codes.Unavailable},
		"partner cert, operator method": {&partner, "", codes.PermissionDenied},
	} {
		t.Run(name, func(t *testing.T) {
			st := rtbhv1.NewStatusServiceClient(dial(t, ts.addr, tlsCreds(serverCA, tc.cert)))
			cctx := ctx
			if tc.token != "" {
				cctx = withToken(ctx, tc.token)
			}
			before := nb.calls.Load()
			_, err := st.ListNeighbors(cctx, &rtbhv1.ListNeighborsRequest{})
			wantCode(t, err, tc.want)
			if reached := nb.calls.Load() - before; (reached == 1) != (tc.want == codes.OK) {
				t.Fatalf("handler reached %d times, want reached=%v", reached, tc.want == codes.OK)
			}
		})
	}

	t.Run("plaintext client to TLS server", func(t *testing.T) {
		st := rtbhv1.NewStatusServiceClient(dial(t, ts.addr, nil))
		_, err := st.ListNeighbors(withToken(ctx, "tok"), &rtbhv1.ListNeighborsRequest{})
		wantCode(t, err, codes.Unavailable)
	})
}

func TestRoles(t *testing.T) {
	nb := &countingNeighbors{}
	ts := startServer(t, Config{Clients: []Client{
		client("noc", RoleOperator, "op"),
		client("isp-b", RolePartner, "pt", "203.0.113.0/24"),
	}}, newBackend(t), nb.list)
	cc := dial(t, ts.addr, nil)
	st := rtbhv1.NewStatusServiceClient(cc)
	ctx := withToken(testCtx(t), "pt")

	_, err := st.ListNeighbors(ctx, &rtbhv1.ListNeighborsRequest{})
	wantCode(t, err, codes.PermissionDenied)
	_, err = st.GetOffender(ctx, &rtbhv1.GetOffenderRequest{Address: "198.51.100.7"})
	wantCode(t, err, codes.PermissionDenied)
	_, err = st.ListOffenders(ctx, &rtbhv1.ListOffendersRequest{})
	wantCode(t, err, codes.PermissionDenied)
	if nb.calls.Load() != 0 {
		t.Fatal("partner reached an operator-only handler")
	}
	if _, err := st.ListNeighbors(withToken(testCtx(t), "op"), &rtbhv1.ListNeighborsRequest{}); err != nil {
		t.Fatalf("operator ListNeighbors: %v", err)
	}

	// Every method of the API has an entry in the role table.
	for _, sd := range []string{"rtbh.v1.BlackholeService", "rtbh.v1.ReportService", "rtbh.v1.StatusService", "rtbh.v1.AuditService"} {
		info := ts.grpc.GetServiceInfo()[sd]
		for _, m := range info.Methods {
			if _, ok := roleTable["/"+sd+"/"+m.Name]; !ok {
				t.Errorf("method %s/%s has no role entry", sd, m.Name)
			}
		}
	}
}

func TestRateLimit(t *testing.T) {
	nb := &countingNeighbors{}
	slow := client("slow", RoleOperator, "slow")
	slow.Rate = 5 // burst 10
	fast := client("fast", RoleOperator, "fast")
	fast.Rate = 1000
	ts := startServer(t, Config{Clients: []Client{slow, fast}}, newBackend(t), nb.list)
	st := rtbhv1.NewStatusServiceClient(dial(t, ts.addr, nil))
	ctx := testCtx(t)

	var ok, exhausted int
	start := time.Now()
	for range 30 {
		_, err := st.ListNeighbors(withToken(ctx, "slow"), &rtbhv1.ListNeighborsRequest{})
		switch {
		case err == nil:
			ok++
		default:
			wantCode(t, err, codes.ResourceExhausted)
			exhausted++
		}
	}
	// 30 calls in well under a second: the burst of 10 plus what refills.
	maxOK := 10 + int(time.Since(start).Seconds()*5) + 1
	if ok < 10 || ok > maxOK || exhausted == 0 {
		t.Fatalf("slow client: %d ok, %d exhausted in %v; want 10..%d ok and some exhausted", ok, exhausted, time.Since(start), maxOK)
	}
	// Another client has its own bucket.
	for range 20 {
		if _, err := st.ListNeighbors(withToken(ctx, "fast"), &rtbhv1.ListNeighborsRequest{}); err != nil {
			t.Fatalf("fast client: %v", err)
		}
	}
	// The bucket refills at the configured rate: at 5/s the next token is
	// less than 200 ms away. Ask until a call passes (a refused call takes
	// no token).
	refill := time.Now()
	testkit.WaitFor(t, 2*time.Second, "the slow client's bucket to refill", func() bool {
		_, err := st.ListNeighbors(withToken(ctx, "slow"), &rtbhv1.ListNeighborsRequest{})
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted)
			exhausted++
		}
		return err == nil
	})
	if d := time.Since(refill); d > time.Second {
		t.Errorf("slow client got its next token after %s, want within about 200 ms at 5/s", d)
	}
	if got := testutil.ToFloat64(ts.metrics.requests.WithLabelValues("ListNeighbors", "ResourceExhausted")); int(got) != exhausted {
		t.Fatalf("rtbh_api_requests_total{ResourceExhausted} = %v, want %d", got, exhausted)
	}
}

func TestPublicServicesWithoutCredentials(t *testing.T) {
	ts := startServer(t, Config{Clients: []Client{client("noc", RoleOperator, "op")}}, newBackend(t), nil)
	cc := dial(t, ts.addr, nil)
	ctx := testCtx(t)

	hc := healthpb.NewHealthClient(cc)
	for _, svc := range []string{"", "rtbh.v1.BlackholeService", "rtbh.v1.ReportService", "rtbh.v1.StatusService"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q: %v %v", svc, resp, err)
		}
	}

	rc, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"rtbh.v1.BlackholeService", "rtbh.v1.ReportService", "rtbh.v1.StatusService", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	rc.CloseSend()

	// The rtbh.v1 services do require credentials.
	_, err = rtbhv1.NewBlackholeServiceClient(cc).ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{})
	wantCode(t, err, codes.Unauthenticated)
}

func TestOversizedMessage(t *testing.T) {
	ts := startServer(t, Config{MaxMessageBytes: 64 << 10, Clients: []Client{client("noc", RoleOperator, "op")}}, newBackend(t), nil)
	rc := rtbhv1.NewReportServiceClient(dial(t, ts.addr, nil))
	_, err := rc.SubmitReports(withToken(testCtx(t), "op"), &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{
		{Address: "198.51.100.7", Evidence: strings.Repeat("x", 100<<10)},
	}})
	wantCode(t, err, codes.ResourceExhausted)
}

func TestOversizedBatch(t *testing.T) {
	ts := startServer(t, Config{MaxReportsPerBatch: 10, Clients: []Client{client("noc", RoleOperator, "op")}}, newBackend(t), nil)
	rc := rtbhv1.NewReportServiceClient(dial(t, ts.addr, nil))
	req := &rtbhv1.SubmitReportsRequest{}
	for i := range 11 {
		req.Reports = append(req.Reports, &rtbhv1.Report{Address: fmt.Sprintf("198.51.100.%d", i)})
	}
	_, err := rc.SubmitReports(withToken(testCtx(t), "op"), req)
	wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(err.Error(), "11 reports") || !strings.Contains(err.Error(), "limit of 10") {
		t.Fatalf("message does not explain the cap: %v", err)
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	boom := func(context.Context) ([]Neighbor, error) { panic("neighbor table on fire") }
	ts := startServer(t, Config{Clients: []Client{client("noc", RoleOperator, "op")}}, newBackend(t), boom)
	st := rtbhv1.NewStatusServiceClient(dial(t, ts.addr, nil))
	_, err := st.ListNeighbors(withToken(testCtx(t), "op"), &rtbhv1.ListNeighborsRequest{})
	wantCode(t, err, codes.Internal)
	if strings.Contains(err.Error(), "fire") {
		t.Fatalf("panic value leaked to the client: %v", err)
	}
	// The server is still up.
	_, err = st.ListNeighbors(withToken(testCtx(t), "op"), &rtbhv1.ListNeighborsRequest{})
	wantCode(t, err, codes.Internal)
}

func TestNeighborErrorIsInternal(t *testing.T) {
	failing := func(context.Context) ([]Neighbor, error) { return nil, fmt.Errorf("asking gobgp: %w", errTest) }
	ts := startServer(t, Config{Clients: []Client{client("noc", RoleOperator, "op")}}, newBackend(t), failing)
	st := rtbhv1.NewStatusServiceClient(dial(t, ts.addr, nil))
	_, err := st.ListNeighbors(withToken(testCtx(t), "op"), &rtbhv1.ListNeighborsRequest{})
	wantCode(t, err, codes.Internal)
	if strings.Contains(err.Error(), "gobgp") {
		t.Fatalf("internal detail leaked: %v", err)
	}
}

func TestSetClients(t *testing.T) {
	nb := &countingNeighbors{}
	ts := startServer(t, Config{Clients: []Client{client("noc", RoleOperator, "old")}}, newBackend(t), nb.list)
	st := rtbhv1.NewStatusServiceClient(dial(t, ts.addr, nil))
	ctx := testCtx(t)
	if _, err := st.ListNeighbors(withToken(ctx, "old"), &rtbhv1.ListNeighborsRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := ts.SetClients([]Client{client("noc", RoleOperator, "new")}); err != nil {
		t.Fatal(err)
	}
	_, err := st.ListNeighbors(withToken(ctx, "old"), &rtbhv1.ListNeighborsRequest{})
	wantCode(t, err, codes.Unauthenticated)
	if _, err := st.ListNeighbors(withToken(ctx, "new"), &rtbhv1.ListNeighborsRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := ts.SetClients([]Client{client("a", RoleOperator, "x"), client("a", RoleOperator, "y")}); err == nil {
		t.Fatal("SetClients accepted duplicate names")
	}
	if _, err := st.ListNeighbors(withToken(ctx, "new"), &rtbhv1.ListNeighborsRequest{}); err != nil {
		t.Fatalf("a refused reload changed the clients: %v", err)
	}
}

func TestMetricsCountCodes(t *testing.T) {
	nb := &countingNeighbors{}
	ts := startServer(t, Config{Clients: []Client{client("noc", RoleOperator, "op")}}, newBackend(t), nb.list)
	st := rtbhv1.NewStatusServiceClient(dial(t, ts.addr, nil))
	ctx := testCtx(t)
	st.ListNeighbors(withToken(ctx, "op"), &rtbhv1.ListNeighborsRequest{})
	st.ListNeighbors(withToken(ctx, "op"), &rtbhv1.ListNeighborsRequest{})
	st.ListNeighbors(ctx, &rtbhv1.ListNeighborsRequest{})
	for code, want := range map[string]float64{"OK": 2, "Unauthenticated": 1} {
		if got := testutil.ToFloat64(ts.metrics.requests.WithLabelValues("ListNeighbors", code)); got != want {
			t.Errorf("rtbh_api_requests_total{method=ListNeighbors,code=%s} = %v, want %v", code, got, want)
		}
	}
	n, err := testutil.GatherAndCount(ts.reg, "rtbh_api_requests_total")
	if err != nil || n != 2 {
		t.Fatalf("registry has %d series (%v), want 2", n, err)
	}
}
