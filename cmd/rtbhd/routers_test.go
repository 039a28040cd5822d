package main

// End-to-end with real routers: rtbhd as a process, BIRD 2 as a border
// router and FRR bgpd as a peer ISP, all on loopback.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

var (
	speakerAddr = netip.MustParseAddr("127.0.30.1")
	birdAddr    = netip.MustParseAddr("127.0.30.2")
	frrAddr     = netip.MustParseAddr("127.0.30.3")
)

// routerSetup starts rtbhd from cfg (BGP on speaker; BIRD as border
// neighbor, optionally FRR as peer) and the routers, and waits for the
// sessions.
func routerSetup(t *testing.T, cfg daemonConfig, withFRR bool, speaker netip.Addr, bird, frr netip.Addr) (*daemon, *routertest.BIRD, *routertest.FRR) {
	t.Helper()
	cfg.BGPAddr = speaker.String()
	cfg.BGPPort = testkit.FreePort(t, speaker)
	cfg.Neighbors = fmt.Sprintf(`    - address: %s
      asn: 64501
      role: border
      passive: true
      communities: ["65535:666"]
      large_communities: ["64500:666:0"]`, bird)
	if withFRR {
		cfg.Neighbors += fmt.Sprintf(`
    - address: %s
      asn: 64502
      role: peer
      passive: true
      communities: ["64502:666"]`, frr)
	}
	d := startDaemon(t, cfg)
	b := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: bird, LocalASN: 64501, PeerAddr: speaker,
		PeerPort: cfg.BGPPort, PeerASN: 64500, GracefulRestart: true})
	b.WaitEstablished(20 * time.Second)
	var f *routertest.FRR
	if withFRR {
		f = routertest.StartFRR(t, routertest.FRRConfig{LocalAddr: frr, LocalASN: 64502, PeerAddr: speaker,
			PeerPort: cfg.BGPPort, PeerASN: 64500})
		f.WaitEstablished(20 * time.Second)
	}
	return d, b, f
}

func ctl(t *testing.T, d *daemon, args ...string) string {
	t.Helper()
	out, errOut, code := rtbhctl(t, d, args...)
	if code != 0 {
		t.Fatalf("rtbhctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// within fails the test when more than max passed since start.
func within(t *testing.T, what string, start time.Time, max time.Duration) {
	t.Helper()
	took := time.Since(start)
	t.Logf("%s: %s", what, took.Round(time.Millisecond))
	if took > max {
		t.Errorf("%s took %s, want <= %s", what, took.Round(time.Millisecond), max)
	}
}

func TestRoutersEndToEnd(t *testing.T) {
	d, bird, frr := routerSetup(t, newDaemonConfig(t, t.TempDir()), true, speakerAddr, birdAddr, frrAddr)
	own := netip.MustParsePrefix("198.51.100.7/32")
	foreign := netip.MustParsePrefix("203.0.113.9/32")
	v6 := netip.MustParsePrefix("2001:db8::7/128")

	// An own-space /32: BIRD gets it tagged and resolved to blackhole, FRR
	// (a peer ISP) gets it with its own community.
	start := time.Now()
	ctl(t, d, "add", "--ttl", "1h", "--reason", "zombie", "198.51.100.7")
	r := bird.WaitRoute(own, 5*time.Second, nil)
	within(t, "add -> route on BIRD", start, time.Second)
	for _, c := range []string{"65535:666", "65535:65281"} {
		if !r.HasCommunity(c) {
			t.Errorf("BIRD route communities = %v, want %s", r.Communities, c)
		}
	}
	if !r.HasLargeCommunity("64500:666:0") || !r.Blackhole || r.NextHop != netip.MustParseAddr("192.0.2.1") || r.Origin != "IGP" {
		t.Errorf("BIRD route = %+v, want large community 64500:666:0, blackhole via 192.0.2.1, origin IGP", r)
	}
	fr := frr.WaitRoute(own, 5*time.Second, nil)
	if !fr.HasCommunity("64502:666") || !fr.HasCommunity("65535:65281") || fr.HasCommunity("65535:666") {
		t.Errorf("FRR route communities = %v, want 64502:666 and no-export only", fr.Communities)
	}

	// Outside own_prefixes: BIRD only, never the peer.
	ctl(t, d, "add", "--reason", "reported by partner", "203.0.113.9")
	bird.WaitRoute(foreign, 5*time.Second, nil)

	// IPv6 /128 over the same session, into BIRD's IPv6 table.
	ctl(t, d, "add", "--reason", "v6 zombie", "2001:db8::7")
	r6 := bird.WaitRoute(v6, 5*time.Second, nil)
	if !r6.Blackhole || r6.NextHop != netip.MustParseAddr("100::1") || !r6.HasCommunity("65535:65281") {
		t.Errorf("BIRD IPv6 route = %+v, want blackhole via 100::1 with no-export", r6)
	}
	// FRR gets the /128 (own space). rtbhd applies route changes in order
	// and sends them in order on the session: the foreign /32, added
	// before it, would be on FRR by now if it had been sent at all.
	frr.WaitRoute(v6, 5*time.Second, nil)
	if _, found, err := frr.Route(foreign); err != nil || found {
		t.Errorf("FRR holds %s (err %v): a peer must never get a blackhole outside own_prefixes", foreign, err)
	}

	// remove withdraws from both within a second.
	start = time.Now()
	ctl(t, d, "remove", "--reason", "cleaned", "198.51.100.7")
	bird.WaitNoRoute(own, 5*time.Second)
	frr.WaitNoRoute(own, 5*time.Second)
	within(t, "remove -> withdrawn from BIRD and FRR", start, time.Second)

	// A 3 s TTL disappears within about a second of its expiry.
	c := dial(t, d.apiAddr(), testToken)
	resp, err := c.bh.AddBlackhole(context.Background(), &rtbhv1.AddBlackholeRequest{
		Prefix: "198.51.100.8", Ttl: durationpb.New(3 * time.Second), Reason: "short"})
	if err != nil {
		t.Fatal(err)
	}
	short := netip.MustParsePrefix("198.51.100.8/32")
	bird.WaitRoute(short, 2*time.Second, nil)
	frr.WaitRoute(short, 2*time.Second, nil)
	expires := resp.Blackhole.ExpiresAt.AsTime()
	bird.WaitNoRoute(short, time.Until(expires)+5*time.Second)
	frr.WaitNoRoute(short, 2*time.Second)
	if late := time.Since(expires); late > 1200*time.Millisecond {
		t.Errorf("3 s TTL withdrawn %s after expires_at, want about 1 s at most", late.Round(time.Millisecond))
	} else {
		t.Logf("3 s TTL withdrawn %s after expires_at", late.Round(time.Millisecond))
	}

	// The metrics SPEC.md names are there, with live values.
	m := d.metrics()
	for _, want := range []string{
		`rtbh_blackholes_active 2`,
		fmt.Sprintf(`rtbh_bgp_neighbor_up{neighbor="%s"} 1`, birdAddr),
		fmt.Sprintf(`rtbh_bgp_neighbor_up{neighbor="%s"} 1`, frrAddr),
		`rtbh_api_requests_total{code="OK",method="AddBlackhole"} 4`,
		`rtbh_api_requests_total{code="OK",method="RemoveBlackhole"} 1`,
		`rtbh_sflow_datagrams_total{result="ok"} 0`,
		`rtbh_sflow_samples_total 0`,
		`rtbh_detector_tracked_sources 0`,
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The CLI sees the sessions.
	out := ctl(t, d, "neighbors")
	if strings.Count(strings.ToLower(out), "established") != 2 {
		t.Errorf("rtbhctl neighbors shows not both established:\n%s", out)
	}
	d.stop()
}

// birdSet returns the IPv4 and IPv6 prefixes BIRD holds from rtbhd.
func birdSet(t *testing.T, b *routertest.BIRD) []string {
	t.Helper()
	var out []string
	for _, fam := range []routertest.Family{routertest.IPv4, routertest.IPv6} {
		rs, err := b.Routes(fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			out = append(out, r.Prefix.String())
		}
	}
	slices.Sort(out)
	return out
}

func waitBirdSet(t *testing.T, b *routertest.BIRD, want []string, timeout time.Duration) {
	t.Helper()
	slices.Sort(want)
	var got []string
	if !testkit.Poll(timeout, func() bool { got = birdSet(t, b); return slices.Equal(got, want) }) {
		t.Fatalf("BIRD holds %v, want exactly %v", got, want)
	}
}

// SIGTERM leaves the routes on a graceful-restart router; kill -9 and a
// restart leave BIRD with exactly the set that was active: nothing lost,
// nothing resurrected, nothing kept past its expiry.
func TestRestartsKeepExactlyTheActiveSet(t *testing.T) {
	d, bird, _ := routerSetup(t, newDaemonConfig(t, t.TempDir()), false, netip.MustParseAddr("127.0.31.1"), netip.MustParseAddr("127.0.31.2"), netip.Addr{})
	active := []string{"198.51.100.10/32", "198.51.100.11/32", "2001:db8::10/128"}
	for _, p := range active {
		ctl(t, d, "add", "--ttl", "2h", "--reason", "keep", p)
	}
	ctl(t, d, "add", "--reason", "gone", "198.51.100.12")
	ctl(t, d, "remove", "198.51.100.12")
	waitBirdSet(t, bird, active, 5*time.Second)

	// SIGTERM: no Cease, BIRD keeps the routes as stale. It decides when
	// it sees the session go; wait for that, not for time to pass.
	d.stop()
	testkit.WaitFor(t, 5*time.Second, "BIRD to notice the session is gone", func() bool { return !bird.Established() })
	if !testkit.Poll(5*time.Second, bird.GracefulRestartActive) {
		t.Fatalf("after SIGTERM BIRD is not in graceful restart (it holds %v): a Cease was sent?", birdSet(t, bird))
	}
	if got := birdSet(t, bird); !slices.Equal(got, active) {
		t.Fatalf("after SIGTERM BIRD holds %v, want %v kept by graceful restart", got, active)
	}

	d = startDaemon(t, d.cfg)
	bird.WaitEstablished(20 * time.Second)
	waitBirdSet(t, bird, active, 10*time.Second)
	lapses, err := dial(t, d.apiAddr(), testToken).bh.AddBlackhole(context.Background(), &rtbhv1.AddBlackholeRequest{
		Prefix: "198.51.100.13", Ttl: durationpb.New(2 * time.Second), Reason: "lapses while down"})
	if err != nil {
		t.Fatal(err)
	}
	ctl(t, d, "add", "--ttl", "1h", "--reason", "added before the kill", "198.51.100.14")
	want := append(slices.Clone(active), "198.51.100.14/32")
	waitBirdSet(t, bird, append(slices.Clone(want), "198.51.100.13/32"), 5*time.Second)

	d.kill9()
	// 198.51.100.13 expires while rtbhd is down. rtbhd is a process on the
	// real clock: wait for the expiry it recorded, not a guessed duration.
	expires := lapses.Blackhole.ExpiresAt.AsTime()
	testkit.WaitFor(t, 5*time.Second, "198.51.100.13 to expire while rtbhd is down", func() bool { return time.Now().After(expires) })
	d = startDaemon(t, d.cfg)
	bird.WaitEstablished(20 * time.Second)
	waitBirdSet(t, bird, want, 15*time.Second)
	// And it stays that way (no late resurrection). rtbhd applies route
	// changes in order, retries included: once a blackhole added now is on
	// BIRD, anything queued before it is there too.
	ctl(t, d, "add", "--ttl", "1h", "--reason", "added after the restart", "198.51.100.15")
	bird.WaitRoute(netip.MustParsePrefix("198.51.100.15/32"), 5*time.Second, nil)
	want = append(want, "198.51.100.15/32")
	slices.Sort(want)
	if got := birdSet(t, bird); !slices.Equal(got, want) {
		t.Fatalf("BIRD holds %v after a later add, want %v", got, want)
	}
	d.stop()
}

// SIGHUP reloads policy and BGP policy without dropping sessions; a bad
// file is refused and the running config kept.
func TestReloadKeepsSessions(t *testing.T) {
	speaker, birdA := netip.MustParseAddr("127.0.35.1"), netip.MustParseAddr("127.0.35.2")
	d, bird, _ := routerSetup(t, newDaemonConfig(t, t.TempDir()), false, speaker, birdA, netip.Addr{})
	p := netip.MustParsePrefix("198.51.100.30/32")
	ctl(t, d, "add", "--reason", "before reload", "198.51.100.30")
	bird.WaitRoute(p, 5*time.Second, nil)
	c := dial(t, d.apiAddr(), testToken)
	since := func() time.Time {
		ns, err := c.st.ListNeighbors(context.Background(), &rtbhv1.ListNeighborsRequest{})
		if err != nil || len(ns.Neighbors) != 1 || ns.Neighbors[0].State != "established" {
			t.Fatalf("neighbors = %v, %v", ns, err)
		}
		return ns.Neighbors[0].StateSince.AsTime()
	}
	up := since()

	// New communities for the neighbor and a new never_blackhole entry.
	cfg := d.cfg
	cfg.Neighbors = strings.Replace(cfg.Neighbors, `communities: ["65535:666"]`, `communities: ["65535:666", "64500:100"]`, 1)
	cfg.Extra = ""
	writeConfig(t, d.cfgPath, cfg, `"198.51.100.53", "198.51.100.31"`)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	bird.WaitRoute(p, 5*time.Second, func(r routertest.Route) bool { return r.HasCommunity("64500:100") })
	testkit.WaitFor(t, 5*time.Second, "the new never_blackhole to apply", func() bool {
		_, errOut, code := rtbhctl(t, d, "add", "--reason", "after reload", "198.51.100.31")
		return code == 1 && strings.Contains(errOut, "FAILED_PRECONDITION")
	})
	// A broken file is refused; the running config stays.
	if err := os.WriteFile(d.cfgPath, []byte("bgp: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	testkit.WaitFor(t, 5*time.Second, "the reload error in the log", func() bool {
		return strings.Contains(d.logs(), "config reload failed")
	})
	if _, errOut, code := rtbhctl(t, d, "add", "--reason", "still refused", "198.51.100.31"); code != 1 || !strings.Contains(errOut, "FAILED_PRECONDITION") {
		t.Fatalf("after a bad reload: exit %d %s", code, errOut)
	}
	if got := since(); !got.Equal(up) || !bird.Established() {
		t.Fatalf("session state changed at %s (was up since %s): reload dropped the session", got, up)
	}
	d.stop()
}
