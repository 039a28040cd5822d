package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var listScale = flag.Int("rtbh.listscale", 0, "run TestListScale with this many blackholes (e.g. 200000)")

// TestListScale imports N prefixes into the real rtbhd with `rtbhctl add
// --file` (256 of them 100.64.0.0/24, the rest 10.0.0.0/8 host routes),
// then checks that `rtbhctl list` pages through all N (table and --json)
// and that `list --within 100.64.0.0/24` returns exactly those 256.
//
//	go test -count=1 -run TestListScale -v ./cmd/rtbhd -rtbh.listscale=200000
func TestListScale(t *testing.T) {
	n := *listScale
	if n == 0 {
		t.Skip("run with -rtbh.listscale=200000")
	}
	if n < 1000 {
		t.Fatal("-rtbh.listscale: at least 1000")
	}
	dir := t.TempDir()
	cfg := newDaemonConfig(t, dir)
	cfg.LogLevel = "info"
	cfg.MaxActive = n
	d := startDaemon(t, cfg)
	var file strings.Builder
	want := map[string]bool{}
	for i := range 256 {
		p := netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}).String()
		fmt.Fprintln(&file, p)
		want[p+"/32"] = true
	}
	for i := range n - 256 {
		fmt.Fprintln(&file, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	path := filepath.Join(dir, "import.txt")
	if err := os.WriteFile(path, []byte(file.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctl := func(args ...string) (string, time.Duration) {
		t.Helper()
		start := time.Now()
		cmd := exec.Command(rtbhctlBin, append([]string{"--addr", d.apiAddr(), "--token", testToken}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("rtbhctl %v: %v\n%s", args, err, stderr.String())
		}
		return string(out), time.Since(start)
	}
	// RTBH_LISTSCALE_PROFILE=FILE: a 5 s CPU profile of rtbhd during the import.
	profiled := make(chan struct{})
	if prof := os.Getenv("RTBH_LISTSCALE_PROFILE"); prof != "" {
		go func() {
			defer close(profiled)
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=5", cfg.MetricsPort))
			if err != nil {
				t.Log(err)
				return
			}
			defer resp.Body.Close()
			if f, err := os.Create(prof); err == nil {
				io.Copy(f, resp.Body)
				f.Close()
			}
		}()
	} else {
		close(profiled)
	}
	out, took := ctl("add", "--file", path, "--reason", "list scale")
	<-profiled
	if want := fmt.Sprintf("added %d of %d lines, 0 rejected\n", n, n); out != want {
		t.Fatalf("add --file: %q, want %q", out, want)
	}
	t.Logf("rtbhctl add --file: %d prefixes in %s", n, took.Round(time.Millisecond))

	out, took = ctl("list", "--json")
	var resp struct{ Blackholes []struct{ Prefix string } }
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("list --json: %v", err)
	}
	seen := make(map[string]bool, n)
	for _, b := range resp.Blackholes {
		seen[b.Prefix] = true
	}
	if len(resp.Blackholes) != n || len(seen) != n {
		t.Fatalf("list --json: %d entries (%d distinct), want %d", len(resp.Blackholes), len(seen), n)
	}
	t.Logf("rtbhctl list --json: %d entries in %s", n, took.Round(time.Millisecond))
	out, took = ctl("list")
	if lines := strings.Count(out, "\n"); lines != n+1 {
		t.Fatalf("list: %d lines, want a header and %d entries", lines, n)
	}
	t.Logf("rtbhctl list: %d rows in %s", n, took.Round(time.Millisecond))

	out, took = ctl("list", "--json", "--within", "100.64.0.0/24")
	resp.Blackholes = nil
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("list --within --json: %v", err)
	}
	got := map[string]bool{}
	for _, b := range resp.Blackholes {
		got[b.Prefix] = true
	}
	if len(resp.Blackholes) != 256 || len(got) != 256 {
		t.Fatalf("list --within 100.64.0.0/24: %d entries, want 256", len(resp.Blackholes))
	}
	for p := range want {
		if !got[p] {
			t.Fatalf("list --within 100.64.0.0/24 lacks %s", p)
		}
	}
	t.Logf("rtbhctl list --within 100.64.0.0/24: 256 entries in %s", took.Round(time.Millisecond))
	d.stop()
}
