package api

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// TestAuditNamesClient: what a partner does is in the audit log under its
// client name (the backend writes it; the API must hand over the name).
func TestAuditNamesClient(t *testing.T) {
	m, db := newBackendDB(t, testPolicy())
	a := startAPI(t, Config{}, m)
	isp := withToken(testCtx(t), "isp-b-token")
	if _, err := a.bh.AddBlackhole(isp, &rtbhv1.AddBlackholeRequest{Prefix: "203.0.113.9", Reason: "under attack"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.bh.RemoveBlackhole(isp, &rtbhv1.RemoveBlackholeRequest{Prefix: "203.0.113.9", Reason: "over"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.rp.SubmitReports(isp, &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{{Address: "198.51.100.7"}}}); err != nil {
		t.Fatal(err)
	}
	rows, err := db.AuditLog(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.Actor+" "+r.Action+" "+r.Prefix+" "+r.Reason)
	}
	want := []string{"isp-b add 203.0.113.9/32 under attack", "isp-b remove", "isp-b report 198.51.100.7/32"}
	if len(got) != 3 {
		t.Fatalf("audit = %q", got)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Fatalf("audit row %d = %q, want prefix %q", i, got[i], w)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCallsAreLogged: the logging interceptor writes one line per call
// with the method, code and authenticated client.
func TestCallsAreLogged(t *testing.T) {
	var buf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(Config{Listen: "127.0.0.1:0", Clients: []Client{client("noc", RoleOperator, "op")}}, newBackend(t), nil, logger, nil)
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

	bh := rtbhv1.NewBlackholeServiceClient(dial(t, s.Addr().String(), nil))
	if _, err := bh.ListBlackholes(withToken(testCtx(t), "op"), &rtbhv1.ListBlackholesRequest{}); err != nil {
		t.Fatal(err)
	}
	bh.ListBlackholes(withToken(testCtx(t), "nope"), &rtbhv1.ListBlackholesRequest{})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	out := buf.String()
	var ok, refused string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "finished call") && strings.Contains(l, "grpc.method=ListBlackholes") {
			if strings.Contains(l, "grpc.code=OK") {
				ok = l
			} else if strings.Contains(l, "grpc.code=Unauthenticated") {
				refused = l
			}
		}
	}
	if !strings.Contains(ok, "client=noc") || !strings.Contains(ok, "level=DEBUG") {
		t.Fatalf("no OK call line naming the client in:\n%s", out)
	}
	if refused == "" || !strings.Contains(refused, "level=WARN") || strings.Contains(refused, "nope") {
		t.Fatalf("no refused call line (or it shows the token) in:\n%s", out)
	}
}
