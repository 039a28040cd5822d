package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/api"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
	"github.com/rtbh/rtbh/store"
)

const (
	opToken      = "noc-secret"
	partnerToken = "isp-b-secret"
)

// daemon is the real server side of rtbhd, started in the test process:
// SQLite in a temporary directory, an embedded GoBGP speaker with one
// passive neighbor, the decision path, and the gRPC API on 127.0.0.1:0.
type daemon struct {
	addr    string
	manager *detector.Manager
}

type tlsFiles struct{ serverCert, serverKey, clientCA, ca, clientCert, clientKey string }

func startDaemon(t *testing.T, tf *tlsFiles) *daemon {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	db, err := store.Open(filepath.Join(t.TempDir(), "rtbhd.db"), logger)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := bgp.New(bgp.Config{
		ASN:       64500,
		RouterID:  netip.MustParseAddr("192.0.2.254"),
		NextHopV4: netip.MustParseAddr("192.0.2.1"),
		NextHopV6: netip.MustParseAddr("100::1"),
		Neighbors: []bgp.Neighbor{{Address: netip.MustParseAddr("127.0.0.2"), ASN: 64500, Role: bgp.RoleBorder, Port: 1179, Passive: true}},
	}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := detector.NewManager(detector.Config{
		Policy: detector.Policy{
			OwnPrefixes:    []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
			NeverBlackhole: domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("198.51.100.53/32")}),
			MaxActive:      1000, DefaultTTL: time.Hour, MaxTTL: 168 * time.Hour,
			MinPrefixLenV4: 24, MinPrefixLenV6: 64,
		},
		Reports: detector.ReportPolicy{Window: 24 * time.Hour, Threshold: 1.0, TTL: 6 * time.Hour},
	}, db, sp, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	neighbors := func(ctx context.Context) ([]api.Neighbor, error) {
		ns, err := sp.Neighbors(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]api.Neighbor, len(ns))
		for i, n := range ns {
			out[i] = api.Neighbor{Address: n.Address.String(), ASN: n.ASN, Role: string(n.Role), State: n.State,
				RoutesSent: uint64(n.RoutesSent), StateSince: n.StateSince, Port: n.Port}
		}
		return out, nil
	}
	cfg := api.Config{Listen: "127.0.0.1:0", Clients: []api.Client{
		{Name: "noc", Role: api.RoleOperator, TokenSHA256: sha256.Sum256([]byte(opToken)), HasToken: true, CertName: "noc.example.net"},
		{Name: "isp-b", Role: api.RolePartner, TokenSHA256: sha256.Sum256([]byte(partnerToken)), HasToken: true,
			Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Trust: 0.5},
	}}
	if tf != nil {
		cfg.TLSCert, cfg.TLSKey, cfg.ClientCA = tf.serverCert, tf.serverKey, tf.clientCA
	}
	srv, err := api.New(cfg, m, neighbors, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetAuditReader(db)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); m.Run(ctx) }()
	go func() { defer wg.Done(); srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		sp.Close()
		db.Close()
	})
	return &daemon{addr: srv.Addr().String(), manager: m}
}

// ctl runs rtbhctl in-process and returns its exit status and output.
func ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := ctl(t, args...)
	if code != 0 {
		t.Fatalf("rtbhctl %v: exit %d, stderr %q", args, code, errs)
	}
	return out
}

func TestUsageErrors(t *testing.T) {
	d := startDaemon(t, nil)
	for name, args := range map[string][]string{
		"no command":           {},
		"unknown command":      {"frobnicate"},
		"unknown flag":         {"list", "--bogus"},
		"add without reason":   {"--addr", d.addr, "--token", opToken, "add", "198.51.100.7"},
		"add without prefix":   {"--addr", d.addr, "add", "--reason", "x"},
		"add two prefixes":     {"--addr", d.addr, "add", "--reason", "x", "198.51.100.7", "198.51.100.8"},
		"bad ttl":              {"--addr", d.addr, "add", "--ttl", "forever", "--reason", "x", "198.51.100.7"},
		"list with argument":   {"--addr", d.addr, "list", "extra"},
		"offender no address":  {"--addr", d.addr, "offender"},
		"count not a number":   {"--addr", d.addr, "report", "--count", "many", "198.51.100.7"},
		"key without cert":     {"--addr", d.addr, "--key", "k.pem", "list"},
		"missing ca file":      {"--addr", d.addr, "--ca", filepath.Join(t.TempDir(), "none.pem"), "list"},
		"tls key without cert": {"--addr", d.addr, "--tls", "--key", "k.pem", "list"},
		"flag without value":   {"--addr", d.addr, "add", "198.51.100.7", "--reason"},
		"flag before command":  {"--addr", d.addr, "--reason", "x", "add", "198.51.100.7"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errs := ctl(t, args...)
			if code != 2 || out != "" || !strings.Contains(errs, "usage: rtbhctl") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 2 with usage on stderr", code, out, errs)
			}
		})
	}
	if active := d.manager.Active(); len(active) != 0 {
		t.Fatalf("a usage error reached the server: %v", active)
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"add", "--help"}, {"add", "198.51.100.7", "-h"}, {"list", "-help"}} {
		if code, out, _ := ctl(t, args...); code != 0 || !strings.Contains(out, "usage: rtbhctl") {
			t.Fatalf("rtbhctl %v: exit %d, stdout %q", args, code, out)
		}
	}
}

func TestAddListRemove(t *testing.T) {
	d := startDaemon(t, nil)
	g := []string{"--addr", d.addr, "--token", opToken}

	out := mustCtl(t, append(g, "add", "--ttl", "2h", "--reason", "zombie: smtp fan-out", "198.51.100.7")...)
	if !strings.HasPrefix(out, "added 198.51.100.7/32: origin operator:noc, expires ") || !strings.Contains(out, "(in 2h0m0s)") {
		t.Fatalf("add output %q", out)
	}
	// Flags after the arguments, global flags after the command.
	out = mustCtl(t, "add", "198.51.100.8", "--reason", "trojan", "--addr", d.addr, "--token", opToken)
	if !strings.Contains(out, "added 198.51.100.8/32") || !strings.Contains(out, "(in 1h0m0s)") {
		t.Fatalf("add output %q", out)
	}
	out = mustCtl(t, append(g, "add", "198.51.100.7", "--ttl=3h", "--reason", "again")...)
	if !strings.HasPrefix(out, "already active, now 198.51.100.7/32") || !strings.Contains(out, "(in 3h0m0s)") {
		t.Fatalf("extend output %q", out)
	}

	out = mustCtl(t, "list", "--addr", d.addr, "--token", opToken)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("list output %q", out)
	}
	header := strings.Fields(lines[0])
	if strings.Join(header, " ") != "PREFIX FLOWSPEC ORIGIN CREATED EXPIRES TTL REASON" {
		t.Fatalf("header %q", lines[0])
	}
	f := strings.Fields(lines[1])
	if f[0] != "198.51.100.7/32" || f[1] != "-" || f[2] != "operator:noc" || f[5] != "3h0m0s" || strings.Join(f[6:], " ") != "zombie: smtp fan-out" {
		t.Fatalf("row %q", lines[1])
	}
	for _, ts := range f[3:5] {
		if _, err := time.Parse(time.RFC3339, ts); err != nil {
			t.Fatalf("time %q is not RFC 3339: %v", ts, err)
		}
	}
	// Columns are aligned: every row's ORIGIN starts where the header's does.
	col := strings.Index(lines[0], "ORIGIN")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "operator:noc") {
			t.Fatalf("misaligned row %q", l)
		}
	}

	out = mustCtl(t, append(g, "remove", "--reason", "cleaned", "198.51.100.7")...)
	if out != "removed 198.51.100.7\n" {
		t.Fatalf("remove output %q", out)
	}
	code, out, errs := ctl(t, append(g, "remove", "198.51.100.7")...)
	if code != 1 || out != "" || !strings.HasPrefix(errs, "rtbhctl: NOT_FOUND: ") {
		t.Fatalf("second remove: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if n := len(d.manager.Active()); n != 1 {
		t.Fatalf("%d active, want 1", n)
	}
}

func TestRefusals(t *testing.T) {
	d := startDaemon(t, nil)
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no token":        {[]string{"list"}, "rtbhctl: UNAUTHENTICATED: "},
		"wrong token":     {[]string{"--token", "guess", "list"}, "rtbhctl: UNAUTHENTICATED: "},
		"host bits":       {[]string{"--token", opToken, "add", "--reason", "x", "198.51.100.7/24"}, "rtbhctl: INVALID_ARGUMENT: "},
		"ttl zero":        {[]string{"--token", opToken, "add", "--ttl", "0s", "--reason", "x", "198.51.100.7"}, "rtbhctl: INVALID_ARGUMENT: "},
		"never_blackhole": {[]string{"--token", opToken, "add", "--reason", "x", "198.51.100.53"}, "rtbhctl: FAILED_PRECONDITION: "},
		"partner outside": {[]string{"--token", partnerToken, "add", "--reason", "x", "198.51.100.7"}, "rtbhctl: PERMISSION_DENIED: "},
		"partner status":  {[]string{"--token", partnerToken, "neighbors"}, "rtbhctl: PERMISSION_DENIED: "},
		"bad report":      {[]string{"--token", opToken, "report", "not-an-address"}, "rtbhctl: INVALID_ARGUMENT: report rejected: "},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errs := ctl(t, append([]string{"--addr", d.addr}, tc.args...)...)
			if code != 1 || out != "" || !strings.HasPrefix(errs, tc.want) || strings.Count(errs, "\n") != 1 {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and %q", code, out, errs, tc.want)
			}
		})
	}
	t.Run("server down", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		code, _, errs := ctl(t, "--addr", addr, "--token", opToken, "--timeout", "5s", "list")
		if code != 1 || !strings.HasPrefix(errs, "rtbhctl: UNAVAILABLE: ") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})
}

func TestRTBHTokenEnv(t *testing.T) {
	d := startDaemon(t, nil)
	t.Setenv("RTBH_TOKEN", partnerToken)
	out := mustCtl(t, "--addr", d.addr, "add", "--reason", "attacked", "203.0.113.9")
	if !strings.Contains(out, "origin partner:isp-b") {
		t.Fatalf("RTBH_TOKEN not used: %q", out)
	}
	// --token wins over the environment.
	out = mustCtl(t, "--addr", d.addr, "--token", opToken, "add", "--reason", "zombie", "198.51.100.7")
	if !strings.Contains(out, "origin operator:noc") {
		t.Fatalf("--token did not override RTBH_TOKEN: %q", out)
	}
	// The token never shows in the usage text.
	_, _, errs := ctl(t, "bogus")
	if strings.Contains(errs, partnerToken) {
		t.Fatal("usage text shows $RTBH_TOKEN")
	}
}

func TestJSONOutput(t *testing.T) {
	d := startDaemon(t, nil)
	g := []string{"--addr", d.addr, "--token", opToken, "--json"}

	var add rtbhv1.AddBlackholeResponse
	if err := protojson.Unmarshal([]byte(mustCtl(t, append(g, "add", "--reason", "zombie", "198.51.100.7")...)), &add); err != nil {
		t.Fatal(err)
	}
	if add.Blackhole.Prefix != "198.51.100.7/32" || add.Existed || add.Blackhole.ExpiresAt.AsTime().Sub(add.Blackhole.CreatedAt.AsTime()) != time.Hour {
		t.Fatalf("add JSON %v", &add)
	}
	var list rtbhv1.ListBlackholesResponse
	if err := protojson.Unmarshal([]byte(mustCtl(t, append(g, "list")...)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Blackholes) != 1 || list.Blackholes[0].Origin != "operator:noc" {
		t.Fatalf("list JSON %v", &list)
	}
	// Plain JSON too: the documented field names, stable indentation.
	var raw map[string]any
	listOut := mustCtl(t, append(g, "list")...)
	if !strings.HasPrefix(listOut, "{\n  \"blackholes\": [\n") || strings.Contains(listOut, ":  ") {
		t.Fatalf("list JSON is not normalised:\n%s", listOut)
	}
	if err := json.Unmarshal([]byte(listOut), &raw); err != nil {
		t.Fatal(err)
	}
	bhs, _ := raw["blackholes"].([]any)
	if len(bhs) != 1 || bhs[0].(map[string]any)["expiresAt"] == nil {
		t.Fatalf("list JSON %v", raw)
	}
	var nb rtbhv1.ListNeighborsResponse
	if err := protojson.Unmarshal([]byte(mustCtl(t, append(g, "neighbors")...)), &nb); err != nil {
		t.Fatal(err)
	}
	if len(nb.Neighbors) != 1 || nb.Neighbors[0].Address != "127.0.0.2" || nb.Neighbors[0].Asn != 64500 || nb.Neighbors[0].Role != "border" {
		t.Fatalf("neighbors JSON %v", &nb)
	}
	var rep rtbhv1.SubmitReportsResponse
	if err := protojson.Unmarshal([]byte(mustCtl(t, append(g, "report", "--evidence", "spamtrap", "198.51.100.99")...)), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != 1 {
		t.Fatalf("report JSON %v", &rep)
	}
	var off rtbhv1.GetOffenderResponse
	if err := protojson.Unmarshal([]byte(mustCtl(t, append(g, "offender", "198.51.100.99")...)), &off); err != nil {
		t.Fatal(err)
	}
	if len(off.Offender.Reports) != 1 || off.Offender.Reports[0].Evidence != "spamtrap" || off.Offender.Score != 1 {
		t.Fatalf("offender JSON %v", &off)
	}
	if out := mustCtl(t, append(g, "remove", "198.51.100.7")...); strings.TrimSpace(out) != "{}" {
		t.Fatalf("remove JSON %q", out)
	}
}

func TestNeighborsReportOffender(t *testing.T) {
	d := startDaemon(t, nil)
	g := []string{"--addr", d.addr, "--token", opToken}

	out := mustCtl(t, append(g, "neighbors")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "ADDRESS PORT ASN ROLE STATE SINCE ROUTES FLOWSPEC" {
		t.Fatalf("neighbors output %q", out)
	}
	f := strings.Fields(lines[1])
	if f[0] != "127.0.0.2" || f[1] != "1179" || f[2] != "64500" || f[3] != "border" || f[6] != "0" || f[7] != "-" {
		t.Fatalf("neighbor row %q", lines[1])
	}

	// Partner report, then operator report: 0.5 + 1.0 crosses the threshold.
	out = mustCtl(t, "--addr", d.addr, "--token", partnerToken, "report", "198.51.100.44", "--kind", "spam", "--count", "7", "--evidence", "Received: from [198.51.100.44]\nSubject: pills")
	if out != "report on 198.51.100.44 accepted\n" {
		t.Fatalf("report output %q", out)
	}
	mustCtl(t, append(g, "report", "--kind", "worm", "198.51.100.44")...)

	out = mustCtl(t, append(g, "offender", "198.51.100.44")...)
	for _, want := range []string{"address            198.51.100.44", "report score       1.5", "blackhole          198.51.100.44/32, origin reports",
		"reports (2):", "isp-b", "0.5", "Received: from [198.51.100.44] Subject: pills", "noc", "worm"} {
		if !strings.Contains(out, want) {
			t.Fatalf("offender output lacks %q:\n%s", want, out)
		}
	}
	code, _, errs := ctl(t, append(g, "offender", "198.51.100.45")...)
	if code != 1 || !strings.HasPrefix(errs, "rtbhctl: NOT_FOUND: ") {
		t.Fatalf("offender of nothing: exit %d %q", code, errs)
	}

	// Detector catches, shadow and not.
	ctx := context.Background()
	det := domain.Evidence{Rule: "smtp-fanout", Action: "blackhole", Protocol: "tcp", DstPorts: []uint16{25},
		Address: netip.MustParseAddr("198.51.100.60"), DistinctDestinations: 31, EstimatedPackets: 4096, Window: 10 * time.Minute}
	if _, err := d.manager.Detected(ctx, det, time.Hour); err != nil {
		t.Fatal(err)
	}
	det.Rule, det.Action, det.Address = "smtp-fanout-10", "log", netip.MustParseAddr("198.51.100.61")
	if _, err := d.manager.Detected(ctx, det, time.Hour); err != nil {
		t.Fatal(err)
	}
	out = mustCtl(t, append(g, "offenders")...)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(out, "198.51.100.60") || !strings.Contains(out, "198.51.100.61") {
		t.Fatalf("offenders output %q", out)
	}
	out = mustCtl(t, append(g, "offenders", "--shadow")...)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "198.51.100.61") || !strings.Contains(lines[1], "smtp-fanout-10") || !strings.Contains(lines[1], "log") {
		t.Fatalf("offenders --shadow output %q", out)
	}
	out = mustCtl(t, append(g, "offender", "198.51.100.60")...)
	if !strings.Contains(out, "evidence (1):") || !strings.Contains(out, "smtp-fanout") || !strings.Contains(out, "10m0s") || !strings.Contains(out, "detector offenses  1") {
		t.Fatalf("offender with evidence:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls buf until it contains want, for at most 10 s.
func waitFor(t *testing.T, buf *syncBuffer, want string) {
	t.Helper()
	if !testkit.Poll(10*time.Second, func() bool { return strings.Contains(buf.String(), want) }) {
		t.Fatalf("output never contained %q:\n%s", want, buf.String())
	}
}

func TestWatch(t *testing.T) {
	d := startDaemon(t, nil)
	g := []string{"--addr", d.addr, "--token", opToken}
	mustCtl(t, append(g, "add", "--reason", "before", "198.51.100.5")...)

	for _, jsonOut := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errb syncBuffer
		args := append([]string{"watch"}, g...)
		if jsonOut {
			args = append(args, "--json")
		}
		done := make(chan int, 1)
		go func() { done <- runContext(ctx, args, &out, &errb) }()
		if jsonOut {
			waitFor(t, &out, "EVENT_TYPE_SNAPSHOT_END")
		} else {
			waitFor(t, &out, "-- 1 active; watching for changes --")
		}
		mustCtl(t, append(g, "add", "--reason", "during", "198.51.100.6")...)
		mustCtl(t, append(g, "remove", "198.51.100.6")...)
		if jsonOut {
			waitFor(t, &out, "EVENT_TYPE_REMOVED")
		} else {
			waitFor(t, &out, "removed")
		}
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("watch exit %d, stderr %q", code, errb.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not end on cancel")
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if jsonOut {
			want := []rtbhv1.EventType{rtbhv1.EventType_EVENT_TYPE_SNAPSHOT, rtbhv1.EventType_EVENT_TYPE_SNAPSHOT_END,
				rtbhv1.EventType_EVENT_TYPE_ADDED, rtbhv1.EventType_EVENT_TYPE_REMOVED}
			if len(lines) != len(want) {
				t.Fatalf("watch --json lines:\n%s", out.String())
			}
			for i, l := range lines {
				var ev rtbhv1.WatchBlackholesResponse
				if err := protojson.Unmarshal([]byte(l), &ev); err != nil {
					t.Fatalf("line %d %q: %v", i, l, err)
				}
				if ev.Type != want[i] {
					t.Fatalf("line %d type %v, want %v", i, ev.Type, want[i])
				}
			}
			continue
		}
		// header, active, end-of-snapshot marker, added, removed
		if len(lines) != 5 || !strings.HasPrefix(lines[0], "TIME") {
			t.Fatalf("watch lines:\n%s", out.String())
		}
		for i, want := range map[int][]string{1: {"active", "198.51.100.5/32", "before"}, 3: {"added", "198.51.100.6/32", "noc", "during"}, 4: {"removed", "198.51.100.6/32"}} {
			for _, w := range want {
				if !strings.Contains(lines[i], w) {
					t.Fatalf("line %d %q lacks %q", i, lines[i], w)
				}
			}
		}
	}
}

func TestTLS(t *testing.T) {
	tf := writeTLS(t)
	d := startDaemon(t, tf)
	// mTLS: the certificate names the operator, no token.
	out := mustCtl(t, "--addr", d.addr, "--ca", tf.ca, "--cert", tf.clientCert, "--key", tf.clientKey, "add", "--reason", "mtls", "198.51.100.7")
	if !strings.Contains(out, "origin operator:noc") {
		t.Fatalf("add over mTLS %q", out)
	}
	// TLS with a token.
	mustCtl(t, "--addr", d.addr, "--ca", tf.ca, "--token", opToken, "list")
	// Plaintext to a TLS server fails as a refused request.
	code, _, errs := ctl(t, "--addr", d.addr, "--token", opToken, "--timeout", "5s", "list")
	if code != 1 || !strings.HasPrefix(errs, "rtbhctl: UNAVAILABLE: ") {
		t.Fatalf("plaintext to TLS: exit %d %q", code, errs)
	}
}

// binDir holds the rtbhctl binary built by binary, for the whole run.
var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binError error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary builds rtbhctl once per test run and returns a function that runs
// it as a process with env added to the environment.
func binary(t *testing.T) func(env []string, args ...string) (int, string, string) {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binError = os.MkdirTemp("", "rtbhctl-test-"); binError != nil {
			return
		}
		binPath = filepath.Join(binDir, "rtbhctl")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			binError = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binError != nil {
		t.Fatal(binError)
	}
	return func(env []string, args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(binPath, args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out.String(), errb.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, out.String(), errb.String()
	}
}

// TestBinary builds rtbhctl and runs it as a process.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	d := startDaemon(t, nil)
	runBin := binary(t)
	if code, out, errs := runBin([]string{"RTBH_TOKEN=" + opToken}, "add", "198.51.100.7", "--addr", d.addr, "--reason", "binary"); code != 0 || !strings.Contains(out, "added 198.51.100.7/32") {
		t.Fatalf("add: exit %d %q %q", code, out, errs)
	}
	if code, out, _ := runBin([]string{"RTBH_TOKEN=" + opToken}, "--addr", d.addr, "list"); code != 0 || !strings.Contains(out, "198.51.100.7/32") {
		t.Fatalf("list: exit %d %q", code, out)
	}
	if code, _, errs := runBin(nil, "--addr", d.addr, "list"); code != 1 || !strings.HasPrefix(errs, "rtbhctl: UNAUTHENTICATED: ") {
		t.Fatalf("no token: exit %d %q", code, errs)
	}
	if code, _, errs := runBin(nil, "add"); code != 2 || !strings.Contains(errs, "usage: rtbhctl add") {
		t.Fatalf("usage: exit %d %q", code, errs)
	}
}

// writeTLS makes a server CA and a client CA, a server certificate for
// 127.0.0.1 and a client certificate named noc.example.net.
func writeTLS(t *testing.T) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		p := filepath.Join(dir, name+".pem")
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
		return cert, key, p
	}
	leaf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, tmpl *x509.Certificate) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
		tmpl.Subject = pkix.Name{CommonName: name}
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		c, k := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		os.WriteFile(c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
		os.WriteFile(k, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
		return c, k
	}
	sca, skey, scaFile := newCA("server-ca")
	cca, ckey, ccaFile := newCA("client-ca")
	tf := &tlsFiles{ca: scaFile, clientCA: ccaFile}
	tf.serverCert, tf.serverKey = leaf(sca, skey, "rtbhd", &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	tf.clientCert, tf.clientKey = leaf(cca, ckey, "noc-client", &x509.Certificate{DNSNames: []string{"noc.example.net"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return tf
}

// TestPlaintextTokenRefused: a token is never sent in plaintext to a
// non-loopback address. The refusal is a usage error (exit 2) decided
// before any connection: the addresses below (TEST-NET, documentation
// prefixes, reserved names) are never contacted. Were they dialled, the
// request would fail with UNAVAILABLE (exit 1) or hang until the 1 h
// --timeout, not answer exit 2 at once.
func TestPlaintextTokenRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		env  string // $RTBH_TOKEN
		args []string
		from string
	}{
		"ipv4":                 {args: []string{"--addr", "192.0.2.1:50051", "--token", opToken, "list"}, from: "--token"},
		"no port":              {args: []string{"--addr", "203.0.113.1", "--token", opToken, "neighbors"}, from: "--token"},
		"ipv6":                 {args: []string{"--addr", "[2001:db8::1]:50051", "--token", opToken, "list"}, from: "--token"},
		"name":                 {args: []string{"--addr", "rtbhd.example.net:50051", "--token", opToken, "list"}, from: "--token"},
		"looks like loopback":  {args: []string{"--addr", "127.0.0.1.example.net:50051", "--token", opToken, "list"}, from: "--token"},
		"dns url":              {args: []string{"--addr", "dns:///192.0.2.1:50051", "--token", opToken, "list"}, from: "--token"},
		"token from env":       {env: opToken, args: []string{"--addr", "192.0.2.1:50051", "list"}, from: "$RTBH_TOKEN"},
		"flags after argument": {args: []string{"add", "198.51.100.7", "--reason", "x", "--token", opToken, "--addr", "192.0.2.1:50051"}, from: "--token"},
		"watch":                {args: []string{"watch", "--addr=192.0.2.1:50051", "--token=" + opToken}, from: "--token"},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("RTBH_TOKEN", tc.env)
			}
			args := append([]string{"--timeout", "1h"}, tc.args...)
			done := make(chan struct{})
			var code int
			var out, errs string
			go func() { defer close(done); code, out, errs = ctl(t, args...) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("rtbhctl did not return at once: it is trying to connect")
			}
			first, _, _ := strings.Cut(errs, "\n")
			if code != 2 || out != "" || !strings.HasPrefix(first, "rtbhctl: refusing to send the token ("+tc.from+") in plaintext to ") ||
				!strings.Contains(first, "not a loopback address") || !strings.Contains(first, "--tls") || !strings.Contains(first, "--ca FILE") ||
				!strings.Contains(errs, "usage: rtbhctl") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2, the refusal naming --tls and --ca, and usage", code, out, errs)
			}
			if strings.Contains(errs, opToken) {
				t.Fatalf("the refusal shows the token: %q", errs)
			}
		})
	}
}

// TestPlaintextLoopback: plaintext with a token stays allowed to loopback
// addresses, however they are spelled.
func TestPlaintextLoopback(t *testing.T) {
	d := startDaemon(t, nil)
	_, port, _ := net.SplitHostPort(d.addr)
	for _, addr := range []string{d.addr, "localhost:" + port, "dns:///127.0.0.1:" + port, "passthrough:///127.0.0.1:" + port} {
		if out := mustCtl(t, "--addr", addr, "--token", opToken, "list"); !strings.HasPrefix(out, "PREFIX") {
			t.Fatalf("--addr %s: list output %q", addr, out)
		}
	}
	// Without a token there is nothing to protect: no refusal (the
	// server, not rtbhctl, then says UNAUTHENTICATED).
	if code, _, errs := ctl(t, "--addr", d.addr, "list"); code != 1 || !strings.HasPrefix(errs, "rtbhctl: UNAUTHENTICATED: ") {
		t.Fatalf("no token: exit %d %q", code, errs)
	}
}

func TestIsLoopbackTarget(t *testing.T) {
	for target, want := range map[string]bool{
		"127.0.0.1:50051":                         true,
		"127.3.4.5:50051":                         true,
		"127.0.0.1":                               true,
		"[::1]:50051":                             true,
		"::1":                                     true,
		"[::1]":                                   true,
		"[::ffff:127.0.0.1]:50051":                true,
		"localhost:50051":                         true,
		"LocalHost:50051":                         true,
		"localhost":                               true,
		"dns:///localhost:50051":                  true,
		"dns://8.8.8.8/127.0.0.1:50051":           true,
		"passthrough:///[::1]:50051":              true,
		"unix:///run/rtbhd.sock":                  true,
		"unix:rtbhd.sock":                         true,
		"192.0.2.1:50051":                         false,
		"203.0.113.1":                             false,
		"128.0.0.1:50051":                         false,
		"0.0.0.0:50051":                           false,
		"[::]:50051":                              false,
		"[2001:db8::1]:50051":                     false,
		"[::2]:50051":                             false,
		"rtbhd.example.net:50051":                 false,
		"localhost.example.net:50051":             false,
		"127.0.0.1.example.net:50051":             false,
		"dns:///192.0.2.1:50051":                  false,
		"dns://127.0.0.1/rtbhd.example.net:50051": false,
		"": false,
	} {
		if got := isLoopbackTarget(target); got != want {
			t.Errorf("isLoopbackTarget(%q) = %v, want %v", target, got, want)
		}
	}
}

// TestBearerToken: the token travels as per-RPC credentials, which gRPC
// itself refuses to put on a connection without transport security
// when they require it (as they do for non-loopback targets).
func TestBearerToken(t *testing.T) {
	md, err := bearerToken{token: "s3cret"}.GetRequestMetadata(context.Background())
	if err != nil || len(md) != 1 || md["authorization"] != "Bearer s3cret" {
		t.Fatalf("metadata %v, %v", md, err)
	}
	d := startDaemon(t, nil)
	if _, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearerToken{token: opToken, requireTLS: true})); err == nil {
		t.Fatal("grpc accepted credentials that require transport security on a plaintext connection")
	}
	conn, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearerToken{token: opToken}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rtbhv1.NewStatusServiceClient(conn).ListNeighbors(ctx, &rtbhv1.ListNeighborsRequest{}); err != nil {
		t.Fatalf("operator call with the bearer credentials: %v", err)
	}
}

// TestFlagPlacement: flags before the command, between it and its
// arguments, after the arguments; --flag=value; the single-dash long form
// of earlier versions; values that start with "-"; "--" ends the flags.
func TestFlagPlacement(t *testing.T) {
	d := startDaemon(t, nil)
	for _, args := range [][]string{
		{"--addr", d.addr, "--token", opToken, "add", "--reason", "before", "198.51.100.1"},
		{"add", "--addr", d.addr, "--reason", "between", "--token", opToken, "198.51.100.2"},
		{"add", "198.51.100.3", "--reason", "after", "--addr", d.addr, "--token", opToken},
		{"add", "--addr=" + d.addr, "198.51.100.4", "--token=" + opToken, "--reason=equals", "--ttl=2h"},
		{"-addr", d.addr, "add", "-token", opToken, "198.51.100.5", "-reason", "single dash", "-ttl=2h"},
		{"--addr", d.addr, "--token", opToken, "add", "198.51.100.6", "--reason", "-starts with a dash"},
		{"--addr", d.addr, "--token", opToken, "add", "-reason", "-dash too", "198.51.100.8"},
		{"--addr", d.addr, "--token", opToken, "add", "--reason", "dashdash", "--", "198.51.100.9"},
	} {
		if out := mustCtl(t, args...); !strings.HasPrefix(out, "added 198.51.100.") {
			t.Fatalf("rtbhctl %q: %q", args, out)
		}
	}
	out := mustCtl(t, "list", "--json", "--addr", d.addr, "--token", opToken)
	var list rtbhv1.ListBlackholesResponse
	if err := protojson.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	ttls := map[string]time.Duration{}
	for _, b := range list.Blackholes {
		reasons[b.Prefix] = b.Reason
		ttls[b.Prefix] = b.ExpiresAt.AsTime().Sub(b.CreatedAt.AsTime())
	}
	for prefix, want := range map[string]string{
		"198.51.100.1/32": "before", "198.51.100.2/32": "between", "198.51.100.3/32": "after", "198.51.100.4/32": "equals",
		"198.51.100.5/32": "single dash", "198.51.100.6/32": "-starts with a dash", "198.51.100.8/32": "-dash too", "198.51.100.9/32": "dashdash",
	} {
		if reasons[prefix] != want {
			t.Errorf("%s: reason %q, want %q", prefix, reasons[prefix], want)
		}
	}
	if ttls["198.51.100.4/32"] != 2*time.Hour || ttls["198.51.100.5/32"] != 2*time.Hour || ttls["198.51.100.1/32"] != time.Hour {
		t.Errorf("TTLs %v", ttls)
	}
	// After "--" a flag-looking word is an argument: here a second prefix.
	code, _, errs := ctl(t, "--addr", d.addr, "--token", opToken, "add", "--reason", "x", "--", "198.51.100.10", "--json")
	if code != 2 || !strings.Contains(errs, "add takes 1 argument(s), got 2") {
		t.Fatalf("after --: exit %d %q", code, errs)
	}
}

// TestTLSFlag: --tls verifies rtbhd against the system roots; --ca
// replaces them with one CA file.
func TestTLSFlag(t *testing.T) {
	tf := writeTLS(t)
	d := startDaemon(t, tf)
	// The test CA is not among the machine's roots: the handshake fails.
	code, _, errs := ctl(t, "--addr", d.addr, "--tls", "--token", opToken, "--timeout", "5s", "list")
	if code != 1 || !strings.HasPrefix(errs, "rtbhctl: UNAVAILABLE: ") || !strings.Contains(errs, "certificate") {
		t.Fatalf("--tls with a private CA: exit %d %q", code, errs)
	}
	// --ca wins over the system roots, with or without --tls.
	mustCtl(t, "list", "--tls", "--ca", tf.ca, "--addr", d.addr, "--token", opToken)

	if testing.Short() {
		t.Skip("builds the binary")
	}
	// The system roots come from $SSL_CERT_FILE in a fresh process (they
	// are loaded once per process, so not in this one).
	runBin := binary(t)
	env := []string{"SSL_CERT_FILE=" + tf.ca, "SSL_CERT_DIR=" + t.TempDir()}
	if code, out, errs := runBin(env, "--tls", "--addr", d.addr, "--token", opToken, "add", "--reason", "tls", "198.51.100.7"); code != 0 || !strings.Contains(out, "origin operator:noc") {
		t.Fatalf("--tls with the CA among the system roots: exit %d %q %q", code, out, errs)
	}
	if code, out, errs := runBin(env, "list", "--tls", "--addr", d.addr, "--cert", tf.clientCert, "--key", tf.clientKey); code != 0 || !strings.Contains(out, "198.51.100.7/32") {
		t.Fatalf("--tls with a client certificate: exit %d %q %q", code, out, errs)
	}
	// Without the CA among them, the same call is refused by the handshake.
	if code, _, errs := runBin([]string{"SSL_CERT_FILE=" + filepath.Join(t.TempDir(), "none.pem"), "SSL_CERT_DIR=" + t.TempDir()},
		"--tls", "--addr", d.addr, "--token", opToken, "--timeout", "5s", "list"); code != 1 || !strings.HasPrefix(errs, "rtbhctl: UNAVAILABLE: ") {
		t.Fatalf("--tls without the CA: exit %d %q", code, errs)
	}
}
