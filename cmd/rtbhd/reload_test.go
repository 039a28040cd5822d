package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// A reload is all or nothing: one whose bgp part Speaker.Reconfigure
// refuses (graceful_restart_time needs a restart) changes nothing else —
// not the policy's never_blackhole, not the API's clients. The same file
// without that change then applies entirely.
func TestReloadAllOrNothing(t *testing.T) {
	ctx := context.Background()
	d := startDaemon(t, newDaemonConfig(t, t.TempDir()))
	op := dial(t, d.apiAddr(), testToken)
	oldPartner := dial(t, d.apiAddr(), partnerToken)
	const newToken = "partner-new-token"
	cfg := d.cfg
	cfg.Partner = sha(newToken)

	reload := func(grTime string, logLine string) {
		t.Helper()
		writeConfig(t, d.cfgPath, cfg, `"198.51.100.53", "198.51.100.31"`)
		if grTime != "" {
			data, err := os.ReadFile(d.cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			port := fmt.Sprintf("  listen_port: %d\n", cfg.BGPPort)
			data = []byte(strings.Replace(string(data), port, port+"  graceful_restart_time: "+grTime+"\n", 1))
			if err := os.WriteFile(d.cfgPath, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		before := strings.Count(d.logs(), logLine)
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, 5*time.Second, "the reload's "+logLine+" log line", func() bool {
			return strings.Count(d.logs(), logLine) > before
		})
	}

	reload("60s", "config reload refused")
	if !strings.Contains(d.logs(), "graceful_restart_time") {
		t.Fatalf("the refusal does not name graceful_restart_time:\n%s", d.logs())
	}
	if _, err := op.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.31", Reason: "old policy"}); err != nil {
		t.Fatalf("after a refused reload, an add the old policy allows: %v (the new never_blackhole applied)", err)
	}
	if _, err := oldPartner.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{}); err != nil {
		t.Fatalf("after a refused reload, the old partner token: %v (the new clients applied)", err)
	}

	reload("", "config reloaded")
	testkit.WaitFor(t, 5*time.Second, "the new never_blackhole to withdraw 198.51.100.31", func() bool {
		l, err := op.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{})
		return err == nil && len(l.Blackholes) == 0
	})
	_, err := op.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.31", Reason: "new policy"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("after the good reload, add of a never_blackhole address: %v, want FAILED_PRECONDITION", err)
	}
	if _, err := oldPartner.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("after the good reload, the old partner token: %v, want UNAUTHENTICATED", err)
	}
	if _, err := dial(t, d.apiAddr(), newToken).bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{}); err != nil {
		t.Fatalf("after the good reload, the new partner token: %v", err)
	}
	d.stop()
}
