package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector"
)

// TestAudit: rtbhctl audit pages through the whole log (more rows than a
// page), newest first, with the filters; partners are refused (exit 1);
// bad flags are usage errors (exit 2).
func TestAudit(t *testing.T) {
	d := startDaemon(t, nil)
	g := []string{"--addr", d.addr, "--token", opToken}
	ctx := t.Context()
	const n = 700 // 700 adds + 700 removes = 1,400 rows: two pages
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 250)}), 32)
		if i == 53 { // never_blackhole
			p = netip.MustParsePrefix("198.51.100.254/32")
		}
		if i >= 250 {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, byte(i / 250), byte(i % 250)}), 32)
		}
		if _, _, err := d.manager.Add(ctx, detector.Request{Prefix: p, Reason: fmt.Sprintf("r%d", i), Origin: "operator:noc", Actor: "noc"}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.manager.Remove(ctx, detector.RemoveRequest{Prefix: p, Reason: "done", Actor: "cleaner"}); err != nil {
			t.Fatal(err)
		}
	}
	var doc struct {
		Entries []struct {
			ID     string `json:"id"`
			Actor  string `json:"actor"`
			Action string `json:"action"`
			Prefix string `json:"prefix"`
		} `json:"entries"`
		NextPageToken string `json:"nextPageToken"`
	}
	if err := json.Unmarshal([]byte(mustCtl(t, append(g, "audit", "--json")...)), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Entries) != 2*n || doc.NextPageToken != "" {
		t.Fatalf("%d rows (token %q), want %d", len(doc.Entries), doc.NextPageToken, 2*n)
	}
	if e := doc.Entries[0]; e.Actor != "cleaner" || e.Action != "remove" || e.Prefix != "203.0.2.199/32" {
		t.Fatalf("newest row %+v", e)
	}
	seen := map[string]bool{}
	for _, e := range doc.Entries {
		if seen[e.ID] {
			t.Fatalf("row %s twice", e.ID)
		}
		seen[e.ID] = true
	}

	out := mustCtl(t, append(g, "audit", "--prefix", "198.51.100.7", "--since", "1h")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "cleaner") || !strings.Contains(lines[2], "noc") {
		t.Fatalf("audit --prefix output:\n%s", out)
	}
	out = mustCtl(t, append(g, "audit", "--actor", "noc", "--prefix", "203.0.0.0/16", "--json")...)
	doc.Entries = nil
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Entries) != n-250 {
		t.Fatalf("--actor noc --prefix 203.0.0.0/16: %d rows, %v", len(doc.Entries), err)
	}
	out = mustCtl(t, append(g, "audit", "--until", time.Now().Add(-time.Hour).Format(time.RFC3339))...)
	if !strings.HasPrefix(out, "ID ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("--until an hour ago: %q, want only the header", out)
	}
	out = mustCtl(t, append(g, "audit", "--limit", "5")...)
	if c := strings.Count(out, "\n"); c != 6 {
		t.Fatalf("--limit 5: %d lines", c)
	}

	code, _, errs := ctl(t, "--addr", d.addr, "--token", partnerToken, "audit")
	if code != 1 || !strings.Contains(errs, "PERMISSION_DENIED") {
		t.Fatalf("partner: exit %d, stderr %q", code, errs)
	}
	for _, args := range [][]string{{"audit", "--since", "yesterday"}, {"audit", "--until", "-1h"}, {"audit", "--limit", "-1"}} {
		code, _, errs := ctl(t, append(g, args...)...)
		if code != 2 || !strings.Contains(errs, "--") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	code, _, errs = ctl(t, append(g, "audit", "--prefix", "198.51.100.7/24")...)
	if code != 1 || !strings.Contains(errs, "INVALID_ARGUMENT") {
		t.Fatalf("bad prefix: exit %d, stderr %q", code, errs)
	}
}
