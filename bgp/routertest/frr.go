package routertest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// FRRBgpdPath is FRR's bgpd; vtysh must be on PATH.
var FRRBgpdPath = "/usr/lib/frr/bgpd"

// FRRConfig describes an FRR bgpd (run without zebra) with one BGP session
// to the speaker under test, e.g. a peer ISP.
type FRRConfig struct {
	LocalAddr netip.Addr // bgpd's address (-l) and router ID when IPv4
	LocalASN  uint32
	// ListenPort is bgpd's BGP port; 0 = bgpd does not listen and
	// connects out to the speaker.
	ListenPort int
	PeerAddr   netip.Addr // the speaker
	PeerPort   int        // the speaker's port; 0 = 179
	PeerASN    uint32
	Password   string
	// GracefulRestart enables graceful restart (helper) towards the speaker.
	GracefulRestart bool
	// FlowSpec activates the speaker in address-family ipv4 flowspec and
	// ipv6 flowspec (bgpd without zebra receives and shows the filters).
	FlowSpec bool
	// Extra lines are appended inside "router bgp".
	Extra string
}

// FRR is a running bgpd.
type FRR struct {
	t    testing.TB
	cfg  FRRConfig
	dir  string
	proc *process
}

// StartFRR starts bgpd with cfg; it is stopped when the test ends.
func StartFRR(t testing.TB, cfg FRRConfig) *FRR {
	t.Helper()
	requireBinary(t, FRRBgpdPath, "frr")
	if cfg.PeerPort == 0 {
		cfg.PeerPort = 179
	}
	dir := shortTempDir(t, "frr")
	f := &FRR{t: t, cfg: cfg, dir: dir}
	conf := filepath.Join(dir, "bgpd.conf")
	if err := os.WriteFile(conf, []byte(f.config()), 0o644); err != nil {
		t.Fatalf("writing FRR config: %v", err)
	}
	// bgpd drops privileges to frr: its directory must belong to frr.
	if u, err := user.Lookup("frr"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, conf} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatalf("chown %s to frr: %v", p, err)
			}
		}
	}
	logPath := filepath.Join(dir, "bgpd.log")
	dumpOnFailure(t, "FRR", conf, logPath, filepath.Join(dir, "bgpd.out"))
	f.proc = startProcess(t, "bgpd", filepath.Join(dir, "bgpd.out"), FRRBgpdPath,
		"-f", conf, "-Z", "-p", strconv.Itoa(cfg.ListenPort), "-l", cfg.LocalAddr.String(),
		"-i", filepath.Join(dir, "bgpd.pid"), "--vty_socket", dir)
	t.Cleanup(f.Stop)
	if !testkit.Poll(15*time.Second, func() bool {
		_, err := f.Vtysh("show bgp summary")
		return err == nil || !f.proc.running()
	}) || !f.proc.running() {
		t.Fatalf("FRR bgpd did not start (see its log below)")
	}
	return f
}

func (f *FRR) config() string {
	c := f.cfg
	var sb strings.Builder
	fmt.Fprintf(&sb, "log file %s debugging\n", filepath.Join(f.dir, "bgpd.log"))
	fmt.Fprintf(&sb, "router bgp %d\n", c.LocalASN)
	if c.LocalAddr.Is4() {
		fmt.Fprintf(&sb, " bgp router-id %s\n", c.LocalAddr)
	} else {
		sb.WriteString(" bgp router-id 192.0.2.253\n")
	}
	sb.WriteString(" no bgp ebgp-requires-policy\n")
	if c.GracefulRestart {
		sb.WriteString(" bgp graceful-restart\n")
	}
	n := c.PeerAddr.String()
	fmt.Fprintf(&sb, " neighbor %s remote-as %d\n", n, c.PeerASN)
	fmt.Fprintf(&sb, " neighbor %s port %d\n", n, c.PeerPort)
	fmt.Fprintf(&sb, " neighbor %s update-source %s\n", n, c.LocalAddr)
	fmt.Fprintf(&sb, " neighbor %s timers connect 1\n", n)
	if c.LocalASN != c.PeerASN {
		fmt.Fprintf(&sb, " neighbor %s ebgp-multihop 2\n", n)
		fmt.Fprintf(&sb, " neighbor %s disable-connected-check\n", n)
	}
	if c.Password != "" {
		fmt.Fprintf(&sb, " neighbor %s password %s\n", n, c.Password)
	}
	sb.WriteString(c.Extra)
	sb.WriteString(" address-family ipv6 unicast\n")
	fmt.Fprintf(&sb, "  neighbor %s activate\n", n)
	sb.WriteString(" exit-address-family\n")
	if c.FlowSpec {
		for _, af := range []string{"ipv4", "ipv6"} {
			fmt.Fprintf(&sb, " address-family %s flowspec\n  neighbor %s activate\n exit-address-family\n", af, n)
		}
	}
	return sb.String()
}

// Dir is bgpd's temporary directory (config, logs, vty socket).
func (f *FRR) Dir() string { return f.dir }

// Vtysh runs one vtysh command against this bgpd.
func (f *FRR) Vtysh(cmd string) (string, error) {
	return run(10*time.Second, "vtysh", "--vty_socket", f.dir, "-d", "bgpd", "-c", cmd)
}

// Running reports whether bgpd is alive.
func (f *FRR) Running() bool { return f.proc.running() }

// Stop stops bgpd (idempotent).
func (f *FRR) Stop() { f.proc.stop() }

// State returns the session's BGP state ("Established", "Active", ...).
func (f *FRR) State() string {
	out, err := f.Vtysh("show bgp neighbors " + f.cfg.PeerAddr.String() + " json")
	if err != nil {
		return ""
	}
	var m map[string]struct {
		BGPState string `json:"bgpState"`
	}
	if json.Unmarshal([]byte(out), &m) != nil {
		return ""
	}
	return m[f.cfg.PeerAddr.String()].BGPState
}

// Established reports whether the session to the speaker is established.
func (f *FRR) Established() bool { return f.State() == "Established" }

// WaitEstablished fails the test if the session is not established within
// timeout.
func (f *FRR) WaitEstablished(timeout time.Duration) {
	f.t.Helper()
	testkit.WaitFor(f.t, timeout, "FRR session established", f.Established)
}

type frrPath struct {
	ASPath struct {
		String string `json:"string"`
	} `json:"aspath"`
	Origin    string `json:"origin"`
	Community struct {
		String string `json:"string"`
	} `json:"community"`
	LargeCommunity struct {
		String string `json:"string"`
	} `json:"largeCommunity"`
	Nexthops []struct {
		IP string `json:"ip"`
	} `json:"nexthops"`
	Stale    bool `json:"stale"`
	Bestpath struct {
		Overall bool `json:"overall"`
	} `json:"bestpath"`
}

// Route returns the route bgpd holds for exactly prefix p.
func (f *FRR) Route(p netip.Prefix) (Route, bool, error) {
	afi := "ipv4"
	if p.Addr().Is6() {
		afi = "ipv6"
	}
	out, err := f.Vtysh(fmt.Sprintf("show bgp %s unicast %s json", afi, p))
	if err != nil {
		return Route{}, false, fmt.Errorf("reading FRR route %s: %w", p, err)
	}
	var res struct {
		Prefix string    `json:"prefix"`
		Paths  []frrPath `json:"paths"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return Route{}, false, fmt.Errorf("parsing FRR output %q: %w", out, err)
	}
	if res.Prefix != p.String() || len(res.Paths) == 0 {
		return Route{}, false, nil // FRR answers with the covering route or {}
	}
	best := res.Paths[0]
	for _, fp := range res.Paths {
		if fp.Bestpath.Overall {
			best = fp
		}
	}
	r := Route{Prefix: p, Origin: best.Origin, ASPath: best.ASPath.String, Stale: best.Stale, Raw: out}
	if len(best.Nexthops) > 0 {
		r.NextHop, _ = netip.ParseAddr(best.Nexthops[0].IP)
	}
	for _, c := range strings.Fields(best.Community.String) {
		if v, ok := wellKnown[strings.ToLower(c)]; ok {
			c = v
		}
		r.Communities = append(r.Communities, c)
	}
	r.LargeCommunities = strings.Fields(best.LargeCommunity.String)
	slices.Sort(r.Communities)
	slices.Sort(r.LargeCommunities)
	return r, true, nil
}

// Count returns the number of prefixes bgpd holds in a family.
func (f *FRR) Count(fam Family) (int, error) {
	afi := "ipv4"
	if fam == IPv6 {
		afi = "ipv6"
	}
	out, err := f.Vtysh("show bgp " + afi + " unicast summary json")
	if err != nil {
		return 0, err
	}
	var res struct {
		Peers map[string]struct {
			PfxRcd int `json:"pfxRcd"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return 0, fmt.Errorf("parsing FRR summary %q: %w", out, err)
	}
	return res.Peers[f.cfg.PeerAddr.String()].PfxRcd, nil
}

// WaitRoute waits until bgpd holds p and ok(route) is true (ok may be nil)
// and returns the route; it fails the test after timeout.
func (f *FRR) WaitRoute(p netip.Prefix, timeout time.Duration, ok func(Route) bool) Route {
	f.t.Helper()
	var last Route
	var found bool
	if !testkit.Poll(timeout, func() bool {
		r, fnd, err := f.Route(p)
		last, found = r, fnd
		return err == nil && fnd && (ok == nil || ok(r))
	}) {
		if found {
			f.t.Fatalf("FRR route %s did not reach the expected state within %s; last seen:\n%s", p, timeout, last.Raw)
		}
		f.t.Fatalf("FRR did not get route %s within %s", p, timeout)
	}
	return last
}

// WaitNoRoute waits until bgpd no longer holds p; it fails the test after
// timeout.
func (f *FRR) WaitNoRoute(p netip.Prefix, timeout time.Duration) {
	f.t.Helper()
	if !testkit.Poll(timeout, func() bool {
		_, fnd, err := f.Route(p)
		return err == nil && !fnd
	}) {
		f.t.Fatalf("FRR still holds route %s after %s", p, timeout)
	}
}
