package main

import (
	"strings"
	"testing"
)

// rtbhctl add/remove --flowspec: a filter beside the route on the same
// prefix, listed with its match; malformed matches are usage errors (exit
// 2, nothing sent); removing a filter that is not there is NOT_FOUND.
func TestFlowSpecCommands(t *testing.T) {
	d := startDaemon(t, nil)
	g := []string{"--addr", d.addr, "--token", opToken}
	out := mustCtl(t, append(g, "add", "--flowspec", "tcp/25", "--reason", "zombie smtp", "198.51.100.7")...)
	if !strings.HasPrefix(out, "added 198.51.100.7/32 flowspec tcp/25: origin operator:noc") {
		t.Fatalf("add output %q", out)
	}
	mustCtl(t, append(g, "add", "--reason", "route", "198.51.100.7")...)
	out = mustCtl(t, append(g, "add", "--flowspec", "tcp/587,25,465-586", "--reason", "all submission", "198.51.100.7")...)
	if !strings.HasPrefix(out, "added 198.51.100.7/32 flowspec tcp/25,465-587:") {
		t.Fatalf("add output %q", out)
	}
	out = mustCtl(t, append(g, "add", "--flowspec", "tcp/25", "--reason", "again", "198.51.100.7")...)
	if !strings.HasPrefix(out, "already active, now 198.51.100.7/32 flowspec tcp/25:") {
		t.Fatalf("re-add output %q", out)
	}

	lines := strings.Split(strings.TrimSpace(mustCtl(t, append(g, "list")...)), "\n")
	var rows []string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		rows = append(rows, f[0]+" "+f[1])
	}
	if got := strings.Join(rows, "; "); got != "198.51.100.7/32 -; 198.51.100.7/32 tcp/25; 198.51.100.7/32 tcp/25,465-587" {
		t.Fatalf("list rows %q", got)
	}

	for _, bad := range []struct{ match, want string }{
		{"tcp/0", "port 0 is out of range 1-65535"},
		{"tcp/70000", "port 70000 is out of range 1-65535"},
		{"icmp/25", `protocol "icmp": want tcp or udp`},
		{"sctp", `protocol "sctp": want tcp or udp`},
	} {
		for _, cmd := range [][]string{{"add", "--reason", "x"}, {"remove"}} {
			args := append(append(append([]string{}, g...), cmd...), "--flowspec", bad.match, "198.51.100.8")
			code, out, errs := ctl(t, args...)
			if code != 2 || out != "" || !strings.Contains(errs, "--flowspec: ") || !strings.Contains(errs, bad.want) {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 saying %q", args, code, out, errs, bad.want)
			}
		}
	}
	if n := len(d.manager.Active()); n != 3 {
		t.Fatalf("%d active after malformed requests, want 3", n)
	}

	out = mustCtl(t, append(g, "remove", "--flowspec", "tcp/25", "198.51.100.7")...)
	if out != "removed 198.51.100.7 flowspec tcp/25\n" {
		t.Fatalf("remove output %q", out)
	}
	code, _, errs := ctl(t, append(g, "remove", "--flowspec", "tcp/25", "198.51.100.7")...)
	if code != 1 || !strings.HasPrefix(errs, "rtbhctl: NOT_FOUND: ") || !strings.Contains(errs, "flowspec filter tcp/25") {
		t.Fatalf("second remove: exit %d, stderr %q", code, errs)
	}
	mustCtl(t, append(g, "remove", "198.51.100.7")...)
	out = mustCtl(t, append(g, "offender", "198.51.100.7")...)
	if !strings.Contains(out, "flowspec filter") || !strings.Contains(out, "198.51.100.7/32 flowspec tcp/25,465-587, origin operator:noc") {
		t.Fatalf("offender output %q", out)
	}
}
