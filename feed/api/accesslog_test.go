package api

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// Above debug, ordinary calls are not logged (the access log is at debug)
// but refusals of credentials and server faults still are, with method,
// code and client.
func TestAccessLogAboveDebug(t *testing.T) {
	var buf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := New(Config{Listen: "127.0.0.1:0", Clients: []Client{client("noc", RoleOperator, "op"),
		client("isp", RolePartner, "isp", "203.0.113.0/24")}}, newBackend(t), nil, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer cancel()
	cc := dial(t, s.Addr().String(), nil)
	bh := rtbhv1.NewBlackholeServiceClient(cc)
	st := rtbhv1.NewStatusServiceClient(cc)
	for range 3 {
		if _, err := bh.AddBlackhole(withToken(testCtx(t), "op"), &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.7"}); err != nil {
			t.Fatal(err)
		}
	}
	bh.AddBlackhole(withToken(testCtx(t), "op"), &rtbhv1.AddBlackholeRequest{Prefix: "bogus"}) // INVALID_ARGUMENT: debug
	bh.ListBlackholes(withToken(testCtx(t), "nope"), &rtbhv1.ListBlackholesRequest{})
	st.ListNeighbors(withToken(testCtx(t), "isp"), &rtbhv1.ListNeighborsRequest{}) // a partner may not
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, "finished call") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("want 2 call lines (the two refusals), got:\n%s", strings.Join(lines, "\n"))
	}
	if l := lines[0]; !strings.Contains(l, "level=WARN") || !strings.Contains(l, "grpc.method=ListBlackholes") ||
		!strings.Contains(l, "grpc.code=Unauthenticated") || strings.Contains(l, "nope") {
		t.Fatalf("unauthenticated call line: %s", l)
	}
	if l := lines[1]; !strings.Contains(l, "grpc.method=ListNeighbors") || !strings.Contains(l, "grpc.code=PermissionDenied") ||
		!strings.Contains(l, "client=isp") || !strings.Contains(l, "grpc.service=rtbh.v1.StatusService") {
		t.Fatalf("permission denied line: %s", l)
	}
}
