package routertest

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// BIRDPath is the BIRD 2 daemon; birdc must be next to it on PATH.
var BIRDPath = "/usr/sbin/bird"

// BIRDConfig describes a BIRD 2 border router with one BGP session to the
// speaker under test.
type BIRDConfig struct {
	LocalAddr netip.Addr // BIRD's address (and router ID when IPv4)
	LocalASN  uint32
	// ListenPort is BIRD's BGP port (it listens on LocalAddr only: strict bind);
	// 0 = a free port is picked (see BIRD.Port).
	ListenPort int
	PeerAddr   netip.Addr // the speaker
	PeerPort   int        // the speaker's port; 0 = 179
	PeerASN    uint32     // == LocalASN for iBGP
	// Passive makes BIRD wait for the speaker to connect.
	Passive         bool
	GracefulRestart bool
	Password        string
	// DiscardV4 and DiscardV6 are installed as static blackhole routes so
	// routes with these next hops resolve to blackhole (defaults 192.0.2.1
	// and 100::1, RFC 5635 / RFC 6666).
	DiscardV4, DiscardV6 netip.Addr
	// FlowSpec adds flow4 and flow6 channels (RFC 8955/8956) to the
	// session, importing into the tables FlowTable4 and FlowTable6.
	FlowSpec bool
	// Extra is appended to the protocol bgp block.
	Extra string
	// Config, when set, is BIRD's whole configuration instead of the one
	// made from the fields above (e.g. a shipped snippet); its BGP protocol
	// must be named ProtocolName. LocalAddr and ListenPort must still
	// match it.
	Config string
	// More is appended to the configuration after it (e.g. a second
	// protocol bgp towards another speaker).
	More string
}

// BIRD is a running BIRD 2.
type BIRD struct {
	t    testing.TB
	cfg  BIRDConfig
	dir  string
	ctl  string
	proc *process
}

// ProtocolName is the name of BIRD's BGP protocol towards the speaker.
const ProtocolName = "rtbh"

// StartBIRD starts BIRD 2 with cfg; it is stopped when the test ends.
func StartBIRD(t testing.TB, cfg BIRDConfig) *BIRD {
	t.Helper()
	requireBinary(t, BIRDPath, "bird2")
	if cfg.ListenPort == 0 {
		cfg.ListenPort = testkit.FreePort(t, cfg.LocalAddr)
	}
	if cfg.PeerPort == 0 {
		cfg.PeerPort = 179
	}
	if !cfg.DiscardV4.IsValid() {
		cfg.DiscardV4 = netip.MustParseAddr("192.0.2.1")
	}
	if !cfg.DiscardV6.IsValid() {
		cfg.DiscardV6 = netip.MustParseAddr("100::1")
	}
	dir := shortTempDir(t, "bird")
	b := &BIRD{t: t, cfg: cfg, dir: dir, ctl: filepath.Join(dir, "ctl")}
	conf := filepath.Join(dir, "bird.conf")
	text := cfg.Config
	if text == "" {
		text = b.config()
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatalf("writing BIRD config: %v", err)
	}
	logPath := filepath.Join(dir, "bird.log")
	dumpOnFailure(t, "BIRD", conf, logPath)
	b.proc = startProcess(t, "bird", logPath, BIRDPath, "-f", "-c", conf, "-s", b.ctl, "-P", filepath.Join(dir, "bird.pid"))
	t.Cleanup(b.Stop)
	if !testkit.Poll(10*time.Second, func() bool {
		_, err := b.Birdc("show status")
		return err == nil || !b.proc.running()
	}) || !b.proc.running() {
		t.Fatalf("BIRD did not start (see its log below)")
	}
	return b
}

func (b *BIRD) config() string {
	c := b.cfg
	routerID := c.LocalAddr
	if !routerID.Is4() {
		routerID = netip.MustParseAddr("192.0.2.254")
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "router id %s;\n", routerID)
	fmt.Fprintf(&sb, "log %q all;\n", filepath.Join(b.dir, "bird.log"))
	sb.WriteString("protocol device {}\n")
	fmt.Fprintf(&sb, "protocol static discard4 { ipv4; route %s/32 blackhole; }\n", c.DiscardV4)
	fmt.Fprintf(&sb, "protocol static discard6 { ipv6; route %s/128 blackhole; }\n", c.DiscardV6)
	if c.FlowSpec {
		fmt.Fprintf(&sb, "flow4 table %s;\nflow6 table %s;\n", FlowTable4, FlowTable6)
	}
	fmt.Fprintf(&sb, "protocol bgp %s {\n", ProtocolName)
	fmt.Fprintf(&sb, "  local %s port %d as %d;\n", c.LocalAddr, c.ListenPort, c.LocalASN)
	fmt.Fprintf(&sb, "  neighbor %s port %d as %d;\n", c.PeerAddr, c.PeerPort, c.PeerASN)
	if c.LocalASN != c.PeerASN {
		sb.WriteString("  multihop;\n")
	}
	if c.Passive {
		sb.WriteString("  passive on;\n")
	}
	if c.GracefulRestart {
		sb.WriteString("  graceful restart on;\n")
	}
	if c.Password != "" {
		fmt.Fprintf(&sb, "  password %q;\n", c.Password)
	}
	// strict bind: listen on LocalAddr only, so that parallel tests on other
	// loopback addresses cannot collide on the port.
	sb.WriteString("  strict bind on;\n  connect delay time 1;\n  error wait time 1, 5;\n")
	sb.WriteString("  ipv4 { import all; export none; igp table master4; };\n")
	sb.WriteString("  ipv6 { import all; export none; igp table master6; };\n")
	if c.FlowSpec {
		fmt.Fprintf(&sb, "  flow4 { table %s; import all; export none; };\n", FlowTable4)
		fmt.Fprintf(&sb, "  flow6 { table %s; import all; export none; };\n", FlowTable6)
	}
	sb.WriteString(c.Extra)
	sb.WriteString("}\n")
	sb.WriteString(c.More)
	return sb.String()
}

// Port is the port BIRD listens on.
func (b *BIRD) Port() int { return b.cfg.ListenPort }

// Dir is BIRD's temporary directory (config, log, control socket).
func (b *BIRD) Dir() string { return b.dir }

// Birdc runs one birdc command and returns its output.
func (b *BIRD) Birdc(cmd string) (string, error) {
	out, err := run(10*time.Second, "birdc", "-s", b.ctl, cmd)
	if err != nil {
		return out, err
	}
	return out, nil
}

// Running reports whether the BIRD process is alive.
func (b *BIRD) Running() bool { return b.proc.running() }

// Stop stops BIRD (idempotent).
func (b *BIRD) Stop() { b.proc.stop() }

// State returns the BGP state of the session ("Established", "Active",
// "Connect", ...), "" when it cannot be read.
func (b *BIRD) State() string {
	out, err := b.Birdc("show protocols all " + ProtocolName)
	if err != nil {
		return ""
	}
	if m := regexp.MustCompile(`(?m)^\s+BGP state:\s+(\S+)`).FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

// Established reports whether the session to the speaker is established.
func (b *BIRD) Established() bool { return b.State() == "Established" }

// GracefulRestartActive reports whether BIRD is holding the speaker's
// routes through a graceful restart: the session is down and BIRD says
// "Neighbor graceful restart active". BIRD decides this the moment it sees
// the session go: without graceful restart (not negotiated, or a Cease
// received) it flushes the routes instead and never reports it, so once
// this is true the routes stay, as stale, until the restart time the
// speaker announced runs out or the speaker is back.
func (b *BIRD) GracefulRestartActive() bool {
	out, err := b.Birdc("show protocols all " + ProtocolName)
	return err == nil && strings.Contains(out, "Neighbor graceful restart active")
}

// WaitEstablished fails the test if the session is not established within
// timeout.
func (b *BIRD) WaitEstablished(timeout time.Duration) {
	b.t.Helper()
	testkit.WaitFor(b.t, timeout, "BIRD session established", b.Established)
}

// Routes returns the BGP routes BIRD holds for a family (best paths from
// the speaker's session only), sorted by prefix.
func (b *BIRD) Routes(f Family) ([]Route, error) {
	table := "master4"
	if f == IPv6 {
		table = "master6"
	}
	out, err := b.Birdc("show route all table " + table + " protocol " + ProtocolName)
	if err != nil {
		return nil, fmt.Errorf("reading BIRD routes: %w", err)
	}
	return parseBIRDRoutes(out)
}

// Route returns the route BIRD holds for exactly prefix p.
func (b *BIRD) Route(p netip.Prefix) (Route, bool, error) {
	table := "master4"
	if p.Addr().Is6() {
		table = "master6"
	}
	out, err := b.Birdc(fmt.Sprintf("show route %s all table %s protocol %s", p, table, ProtocolName))
	if strings.Contains(out, "Network not found") {
		return Route{}, false, nil // birdc exits 1
	}
	if err != nil {
		return Route{}, false, fmt.Errorf("reading BIRD route %s: %w", p, err)
	}
	rs, err := parseBIRDRoutes(out)
	if err != nil {
		return Route{}, false, err
	}
	for _, r := range rs {
		if r.Prefix == p {
			return r, true, nil
		}
	}
	return Route{}, false, nil
}

// Count returns the number of routes from the speaker in a family, fast
// (for thousands of routes).
func (b *BIRD) Count(f Family) (int, error) {
	table := "master4"
	if f == IPv6 {
		table = "master6"
	}
	out, err := b.Birdc("show route count table " + table + " protocol " + ProtocolName)
	if err != nil {
		return 0, err
	}
	var n int
	m := regexp.MustCompile(`(\d+) of \d+ routes`).FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unexpected birdc output: %q", out)
	}
	fmt.Sscan(m[1], &n)
	return n, nil
}

// WaitRoute waits until BIRD holds p and ok(route) is true (ok may be nil)
// and returns the route; it fails the test after timeout.
func (b *BIRD) WaitRoute(p netip.Prefix, timeout time.Duration, ok func(Route) bool) Route {
	b.t.Helper()
	var last Route
	var found bool
	if !testkit.Poll(timeout, func() bool {
		r, f, err := b.Route(p)
		last, found = r, f
		return err == nil && f && (ok == nil || ok(r))
	}) {
		if found {
			b.t.Fatalf("BIRD route %s did not reach the expected state within %s; last seen:\n%s", p, timeout, last.Raw)
		}
		b.t.Fatalf("BIRD did not get route %s within %s", p, timeout)
	}
	return last
}

// WaitNoRoute waits until BIRD no longer holds p; it fails the test after
// timeout.
func (b *BIRD) WaitNoRoute(p netip.Prefix, timeout time.Duration) {
	b.t.Helper()
	if !testkit.Poll(timeout, func() bool {
		_, f, err := b.Route(p)
		return err == nil && !f
	}) {
		b.t.Fatalf("BIRD still holds route %s after %s", p, timeout)
	}
}

var (
	birdCommunity = regexp.MustCompile(`\((\d+),\s*(\d+)\)`)
	birdLarge     = regexp.MustCompile(`\((\d+),\s*(\d+),\s*(\d+)\)`)
)

// parseBIRDRoutes parses `birdc show route all` output. Only the best
// (starred) path of each prefix is kept; lines of other paths are skipped.
func parseBIRDRoutes(out string) ([]Route, error) {
	var routes []Route
	var cur *Route
	var curPrefix netip.Prefix
	var raw strings.Builder
	flush := func() {
		if cur != nil {
			cur.Raw = raw.String()
			slices.Sort(cur.Communities)
			slices.Sort(cur.LargeCommunities)
			routes = append(routes, *cur)
		}
		cur = nil
		raw.Reset()
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	skipping := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "BIRD ") || strings.HasPrefix(line, "Table ") || strings.TrimSpace(line) == "":
			flush()
			skipping = false
			continue
		case !strings.HasPrefix(line, "\t") && strings.Contains(line, "["):
			// A route line: "PREFIX  TYPE [proto time from ...] * (100/?) [AS64500i]"
			// or, for another path of the same prefix, "   TYPE [proto ...]".
			flush()
			fields := strings.Fields(line)
			if !strings.HasPrefix(line, " ") {
				p, err := netip.ParsePrefix(fields[0])
				if err != nil {
					return nil, fmt.Errorf("parsing BIRD route line %q: %w", line, err)
				}
				curPrefix = p
				fields = fields[1:]
			}
			if !strings.Contains(line, "] * ") && !strings.HasSuffix(line, "] *") {
				skipping = true
				continue
			}
			skipping = false
			cur = &Route{Prefix: curPrefix}
			if len(fields) > 0 && fields[0] == "blackhole" {
				cur.Blackhole = true
			}
			raw.WriteString(line + "\n")
			continue
		}
		if skipping || cur == nil {
			continue
		}
		raw.WriteString(line + "\n")
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "BGP.origin":
			cur.Origin = val
		case "BGP.as_path":
			cur.ASPath = val
		case "BGP.next_hop":
			if f := strings.Fields(val); len(f) > 0 {
				cur.NextHop, _ = netip.ParseAddr(f[0])
			}
		case "BGP.community":
			for _, m := range birdCommunity.FindAllStringSubmatch(val, -1) {
				cur.Communities = append(cur.Communities, m[1]+":"+m[2])
			}
		case "BGP.large_community":
			for _, m := range birdLarge.FindAllStringSubmatch(val, -1) {
				cur.LargeCommunities = append(cur.LargeCommunities, m[1]+":"+m[2]+":"+m[3])
			}
		}
	}
	flush()
	return routes, sc.Err()
}
