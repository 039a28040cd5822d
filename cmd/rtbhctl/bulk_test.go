package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadPrefixFile(t *testing.T) {
	in := "# a DROP-style list\n" +
		"198.51.100.7\n" +
		"\n" +
		"   198.51.100.8/32   # trailing comment\n" +
		"2001:db8::1\n" +
		"not-a-prefix\n" +
		"198.51.100.9 198.51.100.10\n" +
		"\t# indented comment\n" +
		"198.51.100.300\n" +
		"203.0.113.0/24\r\n"
	lines, bad, err := readPrefixFile(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []fileLine{{2, "198.51.100.7"}, {4, "198.51.100.8/32"}, {5, "2001:db8::1"}, {10, "203.0.113.0/24"}}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Fatalf("lines (-want +got):\n%s", diff)
	}
	var badLines []int
	for _, b := range bad {
		if b.Code != "INVALID_ARGUMENT" || b.Reason == "" {
			t.Fatalf("bad line %+v", b)
		}
		badLines = append(badLines, b.Line)
	}
	if diff := cmp.Diff([]int{6, 7, 9}, badLines); diff != "" {
		t.Fatalf("bad lines (-want +got):\n%s", diff)
	}
	// An empty file, and one of only comments, hold nothing.
	for _, s := range []string{"", "# nothing\n\n  \n"} {
		if l, b, err := readPrefixFile(strings.NewReader(s)); err != nil || len(l)+len(b) != 0 {
			t.Fatalf("%q: %v %v %v", s, l, b, err)
		}
	}
}

func TestBatches(t *testing.T) {
	defer func(n, b int) { maxBatchItems, maxBatchBytes = n, b }(maxBatchItems, maxBatchBytes)
	maxBatchItems, maxBatchBytes = 4, 100
	got := batches(10, func(int) int { return 2 })
	if diff := cmp.Diff([][2]int{{0, 4}, {4, 8}, {8, 10}}, got); diff != "" {
		t.Fatalf("by count (-want +got):\n%s", diff)
	}
	// By size: 40+8 bytes per item, two fit in 100; an item larger than
	// the limit still goes, alone.
	got = batches(5, func(i int) int {
		if i == 2 {
			return 500
		}
		return 40
	})
	if diff := cmp.Diff([][2]int{{0, 2}, {2, 3}, {3, 5}}, got); diff != "" {
		t.Fatalf("by size (-want +got):\n%s", diff)
	}
	if got := batches(0, nil); len(got) != 0 {
		t.Fatalf("no items: %v", got)
	}
}

// listPrefixes runs rtbhctl list --json with args and returns the prefixes.
func listPrefixes(t *testing.T, g []string, args ...string) []string {
	t.Helper()
	out := mustCtl(t, append(append(slices.Clone(g), "list", "--json"), args...)...)
	var resp struct {
		Blackholes []struct{ Prefix, Origin string }
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	var ps []string
	for _, b := range resp.Blackholes {
		ps = append(ps, b.Prefix)
	}
	return ps
}

// add --file and remove --file in several batches against the real API,
// with bad lines and refusals reported by line; list pages through
// everything with --within and --origin.
func TestAddRemoveFileAndListPages(t *testing.T) {
	defer func(n int, p uint32) { maxBatchItems, listPageSize = n, p }(maxBatchItems, listPageSize)
	maxBatchItems, listPageSize = 37, 11 // many batches and pages
	d := startDaemon(t, nil)
	g := []string{"--addr", d.addr, "--token", opToken}
	var file strings.Builder
	file.WriteString("# import\n")
	for i := range 200 {
		fmt.Fprintf(&file, "198.51.100.%d\n", i)
	}
	file.WriteString("bogus\n")               // line 202
	file.WriteString("198.51.0.0/16\n")       // line 203: too short
	file.WriteString("203.0.113.0/24 # ok\n") // line 204
	path := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(path, []byte(file.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := ctl(t, append(g, "add", "--file", path, "--reason", "import", "--ttl", "2h")...)
	if code != exitRefused {
		t.Fatalf("add --file with rejects: exit %d, want 1; stderr %q", code, errs)
	}
	if out != "added 200 of 203 lines, 3 rejected\n" {
		t.Fatalf("summary %q", out)
	}
	for _, want := range []string{
		"line 55: 198.51.100.53: FAILED_PRECONDITION: ", // never_blackhole
		"line 202: bogus: INVALID_ARGUMENT: ",
		"line 203: 198.51.0.0/16: FAILED_PRECONDITION: ",
	} {
		if !strings.Contains(errs, want) {
			t.Fatalf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if i, j := strings.Index(errs, "line 55:"), strings.Index(errs, "line 202:"); i > j {
		t.Fatalf("rejects not in line order:\n%s", errs)
	}
	all := listPrefixes(t, g)
	if len(all) != 200 {
		t.Fatalf("list: %d entries, want 200", len(all))
	}
	if got := listPrefixes(t, g, "--within", "198.51.100.0/25"); len(got) != 127 { // .0-.127 without .53
		t.Fatalf("--within /25: %d entries", len(got))
	}
	if got := listPrefixes(t, g, "--within", "203.0.113.0/24"); !slices.Equal(got, []string{"203.0.113.0/24"}) {
		t.Fatalf("--within 203.0.113.0/24: %v", got)
	}
	if got := listPrefixes(t, g, "--origin", "operator:"); len(got) != 200 {
		t.Fatalf("--origin operator: %d", len(got))
	}
	if got := listPrefixes(t, g, "--origin", "partner:isp-b"); len(got) != 0 {
		t.Fatalf("--origin partner:isp-b: %v", got)
	}
	// The table pages too: a header and 200 rows.
	if out := mustCtl(t, append(g, "list")...); strings.Count(out, "\n") != 201 || !strings.Contains(out, "198.51.100.199/32") {
		t.Fatalf("list table: %d lines", strings.Count(out, "\n"))
	}
	code, _, errs = ctl(t, append(g, "list", "--within", "198.51.100.7/24")...)
	if code != exitRefused || !strings.Contains(errs, "INVALID_ARGUMENT: within:") {
		t.Fatalf("list --within with host bits: exit %d, %q", code, errs)
	}

	// Remove half of them from stdin, with one not active, --json.
	var rm strings.Builder
	for i := range 100 {
		fmt.Fprintf(&rm, "198.51.100.%d\n", i)
	}
	rm.WriteString("192.0.2.77\n")
	defer func(r io.Reader) { stdin = r }(stdin)
	stdin = strings.NewReader(rm.String())
	code, out, errs = ctl(t, append(g, "remove", "--file", "-", "--reason", "cleaned", "--json")...)
	if code != exitRefused {
		t.Fatalf("remove --file -: exit %d; stderr %q", code, errs)
	}
	var sum fileSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("remove --json: %v\n%s", err, out)
	}
	want := fileSummary{Lines: 101, Removed: 99, Rejected: []fileReject{
		{Line: 54, Prefix: "198.51.100.53", Code: "NOT_FOUND", Reason: "198.51.100.53/32 is not blackholed"},
		{Line: 101, Prefix: "192.0.2.77", Code: "NOT_FOUND", Reason: "192.0.2.77/32 is not blackholed"},
	}}
	if diff := cmp.Diff(want, sum); diff != "" {
		t.Fatalf("remove summary (-want +got):\n%s", diff)
	}
	if got := listPrefixes(t, g); len(got) != 101 {
		t.Fatalf("after remove: %d entries, want 101", len(got))
	}
	// A clean file exits 0.
	clean := filepath.Join(t.TempDir(), "clean.txt")
	os.WriteFile(clean, []byte("198.51.100.150\n198.51.100.151\n"), 0o644)
	if out := mustCtl(t, append(g, "remove", "--file", clean)...); out != "removed 2 of 2 lines, 0 rejected\n" {
		t.Fatalf("clean remove: %q", out)
	}
}

func TestFileUsageErrors(t *testing.T) {
	d := startDaemon(t, nil)
	g := []string{"--addr", d.addr, "--token", opToken}
	for name, args := range map[string][]string{
		"file and prefix":        {"add", "--reason", "x", "--file", "f", "198.51.100.7"},
		"neither":                {"remove"},
		"missing file":           {"add", "--reason", "x", "--file", filepath.Join(t.TempDir(), "nope")},
		"file without reason":    {"add", "--file", "-"},
		"remove file and prefix": {"remove", "--file", "f", "198.51.100.7"},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errs := ctl(t, append(g, args...)...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitUsage, errs)
			}
		})
	}
}

// Items with long reasons are split by size under rtbhd's 4 MiB message
// limit; a call that fails anyway stops the import and says how far it got.
func TestAddFileBatchBytes(t *testing.T) {
	defer func(n, b int) { maxBatchItems, maxBatchBytes = n, b }(maxBatchItems, maxBatchBytes)
	d := startDaemon(t, nil) // max_active 1000
	g := []string{"--addr", d.addr, "--token", opToken}
	var file strings.Builder
	for i := range 6000 {
		fmt.Fprintf(&file, "2001:db8:%x::1\n", i)
	}
	path := filepath.Join(t.TempDir(), "long.txt")
	if err := os.WriteFile(path, []byte(file.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	reason := strings.Repeat("r", 1000) // 6,000 items of ~1 KB: 6 MB in all
	code, out, errs := ctl(t, append(g, "add", "--file", path, "--reason", reason)...)
	if code != exitRefused || out != "added 1000 of 6000 lines, 5000 rejected\n" || strings.Contains(errs, "before a call failed") {
		t.Fatalf("split by size: exit %d, %q, stderr %.300q", code, out, errs)
	}
	if !strings.Contains(errs, "RESOURCE_EXHAUSTED: max_active (1000)") {
		t.Fatalf("rejects beyond max_active not reported: %.300q", errs)
	}
	maxBatchItems, maxBatchBytes = 5000, 1<<30 // a 5 MB call: refused by rtbhd
	code, _, errs = ctl(t, append(g, "add", "--file", path, "--reason", reason)...)
	if code != exitRefused || !strings.Contains(errs, "before a call failed") || !strings.Contains(errs, "RESOURCE_EXHAUSTED") {
		t.Fatalf("oversized call: exit %d, stderr %.300q", code, errs)
	}
}
