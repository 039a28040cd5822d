package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// The SPEC's safety limits through the real rtbhd: protected
// infrastructure is FAILED_PRECONDITION naming why, a reason over 1,024
// bytes is INVALID_ARGUMENT, and a reload that protects an active entry
// withdraws it.
func TestSafetyLimits(t *testing.T) {
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.Neighbors = `    - address: 127.0.0.2
      asn: 64501
      role: border
      passive: true`
	d := startDaemon(t, cfg)
	c := dial(t, d.apiAddr(), testToken)
	ctx := context.Background()
	want := func(what string, err error, code codes.Code, msg string) {
		t.Helper()
		if st := status.Convert(err); st.Code() != code || st.Message() != msg {
			t.Errorf("%s: %v %q, want %v %q", what, st.Code(), st.Message(), code, msg)
		}
	}
	add := func(prefix, reason string) error {
		_, err := c.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: prefix, Reason: reason})
		return err
	}

	want("add of the neighbor", add("127.0.0.2", "test"), codes.FailedPrecondition, "protected: BGP neighbor 127.0.0.2")
	want("add of the router id", add("192.0.2.254", "test"), codes.FailedPrecondition, "protected: BGP router id 192.0.2.254")
	want("add of the IPv6 next hop", add("100::1", "test"), codes.FailedPrecondition, "protected: IPv6 next hop 100::1")
	want("add of the listen address", add("127.0.0.1", "test"), codes.FailedPrecondition, "protected: bgp.listen_address 127.0.0.1")

	want("add with a 1,025-byte reason", add("198.51.100.9", strings.Repeat("x", 1025)), codes.InvalidArgument,
		"reason: 1025 bytes, at most 1024")
	if err := add("198.51.100.9", strings.Repeat("x", 1024)); err != nil {
		t.Fatalf("add with a 1,024-byte reason: %v", err)
	}
	_, err := c.bh.RemoveBlackhole(ctx, &rtbhv1.RemoveBlackholeRequest{Prefix: "198.51.100.9", Reason: strings.Repeat("x", 1025)})
	want("remove with a 1,025-byte reason", err, codes.InvalidArgument, "reason: 1025 bytes, at most 1024")

	// 198.51.100.9 becomes a BGP neighbor: the reload withdraws its
	// blackhole, which nobody may add again.
	cfg.Neighbors += `
    - address: 198.51.100.9
      asn: 64501
      role: border
      passive: true`
	writeConfig(t, d.cfgPath, cfg, "")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the reload to withdraw 198.51.100.9/32", func() bool {
		l, err := c.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{})
		return err == nil && len(l.Blackholes) == 0
	})
	want("add of the new neighbor", add("198.51.100.9", "test"), codes.FailedPrecondition, "protected: BGP neighbor 198.51.100.9")
	d.stop()
}

// sflow.agents: [] accepts only loopback agents, so rtbhd --check (and the
// daemon) refuse a file that listens for sFlow beyond loopback without
// naming its agents; the SPEC's default sflow.listen is 0.0.0.0:6343.
func TestCheckSFlowAgentsRequired(t *testing.T) {
	dir := t.TempDir()
	required := "bgp:\n  asn: 64500\n  router_id: 192.0.2.254\n  neighbors: []\n"
	for _, tc := range []struct {
		name, sflow string
		errLine     string // "" = valid
	}{
		{"only the required keys", "", "sflow.agents: required when sflow.listen is not a loopback address"},
		{"agents []", "sflow:\n  listen: 0.0.0.0:6343\n  agents: []\n",
			"sflow.agents: line 7: required when sflow.listen is not a loopback address"},
		{"agents listed", "sflow:\n  agents: [192.0.2.11]\n", ""},
		{"loopback", "sflow:\n  listen: 127.0.0.1:6343\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(required+tc.sflow), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(rtbhdBin, "--config", path, "--check")
			cmd.Dir = dir // store.path rtbhd.db is relative
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if tc.errLine == "" {
				if err != nil {
					t.Fatalf("--check: %v\n%s", err, stderr.String())
				}
				return
			}
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("--check: err = %v, want exit 1", err)
			}
			if want := path + ": " + tc.errLine + "\n"; stderr.String() != want {
				t.Fatalf("--check printed %q, want %q", stderr.String(), want)
			}
		})
	}
}
