package bgp

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// restartSet returns n distinct host routes, one in five IPv6.
func restartSet(n int) []netip.Prefix {
	out := make([]netip.Prefix, 0, n)
	for i := range n {
		if i%5 == 4 {
			a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}
			a[12] = byte(i >> 16)
			out = append(out, netip.PrefixFrom(netip.AddrFrom16(a), 128))
			continue
		}
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32))
	}
	return out
}

// waitEndOfRIB waits until BIRD has had our End-of-RIB for both families
// after a restart: it then deletes the stale routes we did not send again.
func waitEndOfRIB(t *testing.T, b *routertest.BIRD) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "End-of-RIB for both families on BIRD", func() bool {
		return b.Established() && !b.GracefulRestartActive()
	})
}

// TestRestartNeverEmptiesBIRD: a speaker restarted with a stored set
// (announced before Start) reconnects to a BIRD that kept its routes as
// stale with the Restart State and Forwarding State bits set, so BIRD keeps
// them until End-of-RIB, which comes after the whole set: BIRD never holds
// fewer than the full set, sampled every 5 ms from before the stop until a
// route added after the restart has arrived.
func TestRestartNeverEmptiesBIRD(t *testing.T) {
	ctx := context.Background()
	const n = 2000
	s, b, cfg := birdSetup(t, true)
	set := restartSet(n)
	if err := s.Announce(ctx, set); err != nil {
		t.Fatal(err)
	}
	b.WaitRouteCount(t, n, 30*time.Second)

	w := b.WatchCount(t, 5*time.Millisecond, 2*time.Minute, n)
	stopped := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "BIRD to notice the session is gone", func() bool { return !b.Established() })
	if !testkit.Poll(5*time.Second, b.GracefulRestartActive) {
		t.Fatal("BIRD is not in graceful restart after Close")
	}
	s2 := startWithStoredSet(t, cfg, testLogger(t), set)
	b.WaitEstablished(30 * time.Second)
	caps, err := b.NeighborGracefulRestart()
	if err != nil {
		t.Fatal(err)
	}
	if !caps.Recovery || !slices.Equal(caps.Preserved, []string{"ipv4", "ipv6"}) || caps.RestartTime != 120 {
		t.Errorf("BIRD saw graceful restart %+v, want restart recovery (R bit), ipv4 and ipv6 preserved (F bits), 120 s", caps)
	}
	marker := pfx("198.51.100.99/32")
	if err := s2.Announce(ctx, []netip.Prefix{marker}); err != nil {
		t.Fatal(err)
	}
	b.WaitRoute(marker, 10*time.Second, nil)
	waitEndOfRIB(t, b)
	b.WaitRouteCount(t, n+1, 10*time.Second)
	routertest.CheckNeverBelow(t, "BIRD during the restart", w.Stop(), n, stopped)
}

// openCaps returns the graceful restart and long-lived graceful restart
// capabilities the receiver got from the speaker (nil if absent).
func (r *receiver) openCaps(t *testing.T) (*bgp.CapGracefulRestart, *bgp.CapLongLivedGracefulRestart) {
	t.Helper()
	var gr *bgp.CapGracefulRestart
	var llgr *bgp.CapLongLivedGracefulRestart
	err := r.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		caps, err := apiutil.UnmarshalCapabilities(p.GetState().GetRemoteCap())
		if err != nil {
			t.Errorf("decoding the speaker's capabilities: %v", err)
			return
		}
		for _, c := range caps {
			switch c := c.(type) {
			case *bgp.CapGracefulRestart:
				gr = c
			case *bgp.CapLongLivedGracefulRestart:
				llgr = c
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return gr, llgr
}

// TestRestartOpenBits: what the speaker's OPEN says about graceful restart,
// as a GoBGP receiver decodes it. A start with a stored set sets the
// Restart State bit and the Forwarding State bit of both families; a start
// without one sets neither; the configured times are advertised; and the
// whole set arrives, followed by End-of-RIB.
func TestRestartOpenBits(t *testing.T) {
	const rBit, fBit = 0x08, 0x80
	set := pfxs("198.51.100.7/32", "198.51.100.8/32", "2001:db8::7/128")
	for _, tc := range []struct {
		name       string
		cfg        Config
		stored     bool
		wantR      bool
		wantTime   uint16
		wantLLGR   uint32 // 0 = no LLGR capability
		wantNoCaps bool
	}{
		{name: "fresh start", cfg: Config{GracefulRestart: true}, wantTime: 120},
		{name: "stored set", cfg: Config{GracefulRestart: true}, stored: true, wantR: true, wantTime: 120},
		{name: "stored set, times", cfg: Config{GracefulRestart: true, GracefulRestartTime: 90 * time.Second,
			LongLivedStaleTime: 24 * time.Hour}, stored: true, wantR: true, wantTime: 90, wantLLGR: 86400},
		{name: "fresh start, LLGR", cfg: Config{GracefulRestart: true, LongLivedStaleTime: time.Hour}, wantTime: 120, wantLLGR: 3600},
		{name: "graceful restart off", cfg: Config{}, stored: true, wantNoCaps: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			me := testAddr(t)
			r := startReceiver(t, 64501, me, 64500, receiverOpts{gracefulRestart: true})
			cfg := tc.cfg
			cfg.ASN, cfg.RouterID, cfg.ListenAddress, cfg.ListenPort = 64500, me, me.String(), testkit.FreePort(t, me)
			cfg.NextHopV4, cfg.NextHopV6 = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("100::1")
			cfg.Neighbors = []Neighbor{r.neighbor(RoleBorder)}
			s, err := New(cfg, testLogger(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			if tc.stored {
				if err := s.Announce(ctx, set); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			waitEstablished(t, s, r.addr)
			if !tc.stored {
				if err := s.Announce(ctx, set); err != nil {
					t.Fatal(err)
				}
			}
			testkit.WaitFor(t, 10*time.Second, "the whole set on the receiver", func() bool { return r.count(t) == len(set) })

			gr, llgr := r.openCaps(t)
			if tc.wantNoCaps {
				if gr != nil || llgr != nil {
					t.Fatalf("graceful restart off: OPEN has %+v, %+v", gr, llgr)
				}
				return
			}
			if gr == nil {
				t.Fatal("no graceful restart capability in the OPEN")
			}
			if got := gr.Flags&rBit != 0; got != tc.wantR {
				t.Errorf("Restart State bit = %v, want %v (flags %#x)", got, tc.wantR, gr.Flags)
			}
			if gr.Time != tc.wantTime {
				t.Errorf("restart time = %d s, want %d s", gr.Time, tc.wantTime)
			}
			var fams []string
			for _, tu := range gr.Tuples {
				fams = append(fams, bgp.AfiSafiToRouteFamily(tu.AFI, tu.SAFI).String())
				if got := tu.Flags&fBit != 0; got != tc.wantR {
					t.Errorf("%s Forwarding State bit = %v, want %v", bgp.AfiSafiToRouteFamily(tu.AFI, tu.SAFI), got, tc.wantR)
				}
			}
			slices.Sort(fams)
			if want := []string{"ipv4-unicast", "ipv6-unicast"}; !slices.Equal(fams, want) {
				t.Errorf("graceful restart families = %v, want %v", fams, want)
			}
			if tc.wantLLGR == 0 {
				if llgr != nil {
					t.Errorf("LLGR capability %+v, want none", llgr)
				}
				return
			}
			if llgr == nil || len(llgr.Tuples) != 2 {
				t.Fatalf("LLGR capability = %+v, want tuples for both families", llgr)
			}
			for _, tu := range llgr.Tuples {
				if tu.RestartTime != tc.wantLLGR || (tu.Flags&fBit != 0) != tc.wantR {
					t.Errorf("LLGR tuple %s: stale time %d s, flags %#x; want %d s, F bit %v",
						bgp.AfiSafiToRouteFamily(tu.AFI, tu.SAFI), tu.RestartTime, tu.Flags, tc.wantLLGR, tc.wantR)
				}
			}
		})
	}
}

func TestRestartTimesValidate(t *testing.T) {
	good := Config{ASN: 64500, RouterID: netip.MustParseAddr("192.0.2.254"),
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"), GracefulRestart: true}
	for _, tc := range []struct {
		gr, llgr time.Duration
		grOff    bool
		want     string // "" = valid
	}{
		{},
		{gr: time.Second, llgr: 16777215 * time.Second},
		{gr: 4095 * time.Second},
		{gr: 4096 * time.Second, want: "bgp graceful_restart_time: 1h8m16s is not a whole number of seconds from 1s to 1h8m15s"},
		{gr: 1500 * time.Millisecond, want: "bgp graceful_restart_time: 1.5s"},
		{gr: -time.Second, want: "bgp graceful_restart_time: -1s"},
		{llgr: 16777216 * time.Second, want: "bgp long_lived_stale_time: 4660h20m16s is not a whole number of seconds from 0s (off) to 4660h20m15s"},
		{llgr: time.Millisecond, want: "bgp long_lived_stale_time: 1ms"},
		{llgr: time.Hour, grOff: true, want: "bgp long_lived_stale_time: needs graceful_restart"},
	} {
		c := good
		c.GracefulRestartTime, c.LongLivedStaleTime, c.GracefulRestart = tc.gr, tc.llgr, !tc.grOff
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("graceful_restart_time %s, long_lived_stale_time %s: %v, want valid", tc.gr, tc.llgr, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("graceful_restart_time %s, long_lived_stale_time %s: %v, want %q", tc.gr, tc.llgr, err, tc.want)
		}
	}
}

// logBuffer is a slog handler's writer that tests can search.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRestartLateRouterKeepsRoutes: GoBGP ends restarting mode for every
// neighbor once the first ones have exchanged End-of-RIB. A router that
// reconnects later must still get the Forwarding State bit, or it deletes
// the routes it kept the moment its session is up. Router A (BIRD, the
// speaker connects to it) is back at once; router B (BIRD, connects to the
// speaker, 4 s after it lost the session) comes back seconds after A's
// sync. Neither may ever hold fewer than the full set.
func TestRestartLateRouterKeepsRoutes(t *testing.T) {
	ctx := context.Background()
	const n = 1000
	me, ra, rb := testAddr(t), testAddr(t), testAddr(t)
	port := testkit.FreePort(t, me)
	a := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: ra, LocalASN: 64501, PeerAddr: me, PeerPort: port,
		PeerASN: 64500, GracefulRestart: true, Passive: true})
	b := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: rb, LocalASN: 64502, PeerAddr: me, PeerPort: port,
		PeerASN: 64500, GracefulRestart: true, Extra: "  connect delay time 4;\n"})
	cfg := Config{
		ASN: 64500, RouterID: me, ListenAddress: me.String(), ListenPort: port,
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"), GracefulRestart: true,
		Neighbors: []Neighbor{
			{Address: ra, ASN: 64501, Role: RoleBorder, Port: uint16(a.Port())},
			{Address: rb, ASN: 64502, Role: RoleBorder, Passive: true},
		},
	}
	set := restartSet(n)
	s, err := New(cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(ctx, set); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a.WaitEstablished(30 * time.Second)
	b.WaitEstablished(30 * time.Second)
	a.WaitRouteCount(t, n, 30*time.Second)
	b.WaitRouteCount(t, n, 30*time.Second)

	wa := a.WatchCount(t, 5*time.Millisecond, 2*time.Minute, n)
	wb := b.WatchCount(t, 5*time.Millisecond, 2*time.Minute, n)
	stopped := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*routertest.BIRD{a, b} {
		if !testkit.Poll(5*time.Second, r.GracefulRestartActive) {
			t.Fatal("BIRD is not in graceful restart after Close")
		}
	}
	var logs logBuffer
	var out io.Writer = &logs
	if testing.Verbose() {
		out = io.MultiWriter(&logs, os.Stderr)
	}
	s2 := startWithStoredSet(t, cfg, slog.New(slog.NewTextHandler(out, nil)), set)
	a.WaitEstablished(30 * time.Second)
	aUp := time.Since(stopped)
	b.WaitEstablished(30 * time.Second)
	bUp := time.Since(stopped)
	marker := pfx("198.51.100.99/32")
	if err := s2.Announce(ctx, []netip.Prefix{marker}); err != nil {
		t.Fatal(err)
	}
	waitEndOfRIB(t, a)
	waitEndOfRIB(t, b)
	a.WaitRouteCount(t, n+1, 10*time.Second)
	b.WaitRouteCount(t, n+1, 10*time.Second)
	t.Logf("after the stop: A established at +%s, B at +%s", aUp.Round(time.Millisecond), bUp.Round(time.Millisecond))
	routertest.CheckNeverBelow(t, "router A", wa.Stop(), n, stopped)
	routertest.CheckNeverBelow(t, "router B", wb.Stop(), n, stopped)
	if !strings.Contains(logs.String(), "kept in graceful restart") {
		t.Errorf("B came back after A's sync, but the speaker never kept it in restarting mode: the test did not test that")
	}
}

// TestRestartTimesOnBIRD: when the speaker does not come back, BIRD keeps
// its routes as stale for the advertised graceful_restart_time and then
// drops them; with long_lived_stale_time it keeps them that much longer,
// marked LLGR_STALE (65535:6). BIRD fires its restart timer between 3/4
// of the time and the full time (RFC 4271 jitter), hence the bounds.
func TestRestartTimesOnBIRD(t *testing.T) {
	for _, tc := range []struct {
		name     string
		gr, llgr time.Duration
		extra    string
	}{
		{name: "graceful restart", gr: 4 * time.Second},
		{name: "long-lived", gr: 2 * time.Second, llgr: 4 * time.Second, extra: "  long lived graceful restart on;\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			const n = 200
			me, rtr := testAddr(t), testAddr(t)
			port := testkit.FreePort(t, me)
			b := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: rtr, LocalASN: 64501, PeerAddr: me, PeerPort: port,
				PeerASN: 64500, GracefulRestart: true, Extra: tc.extra})
			cfg := Config{
				ASN: 64500, RouterID: me, ListenAddress: me.String(), ListenPort: port,
				NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"),
				GracefulRestart: true, GracefulRestartTime: tc.gr, LongLivedStaleTime: tc.llgr,
				Neighbors: []Neighbor{{Address: rtr, ASN: 64501, Role: RoleBorder, Passive: true}},
			}
			s := newTestSpeaker(t, me, cfg)
			b.WaitEstablished(30 * time.Second)
			set := restartSet(n)
			if err := s.Announce(ctx, set); err != nil {
				t.Fatal(err)
			}
			b.WaitRouteCount(t, n, 30*time.Second)
			caps, err := b.NeighborGracefulRestart()
			if err != nil {
				t.Fatal(err)
			}
			wantLL := -1
			if tc.llgr > 0 {
				wantLL = int(tc.llgr / time.Second)
			}
			if caps.RestartTime != int(tc.gr/time.Second) || caps.LLStaleTime != wantLL || caps.Recovery {
				t.Errorf("BIRD saw graceful restart %+v, want restart time %s, LL stale time %d s, no restart recovery", caps, tc.gr, wantLL)
			}

			w := b.WatchCount(t, 10*time.Millisecond, time.Minute, n)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			testkit.WaitFor(t, 5*time.Second, "BIRD to notice the session is gone", func() bool { return !b.Established() })
			down := time.Now()
			if tc.llgr > 0 {
				r := b.WaitRoute(set[0], tc.gr+5*time.Second, func(r routertest.Route) bool { return r.HasCommunity("65535:6") })
				t.Logf("LLGR_STALE after %s: %v", time.Since(down).Round(time.Millisecond), r.Communities)
			}
			total := tc.gr + tc.llgr
			testkit.WaitFor(t, total+5*time.Second, "BIRD to drop the stale routes", func() bool { return w.Stats().Last == 0 })
			st := w.Stop()
			kept := st.FirstBelow.Sub(down)
			t.Logf("BIRD kept %d routes for %s after it saw the session go (restart time %s, long-lived %s)", n,
				kept.Round(time.Millisecond), tc.gr, tc.llgr)
			if min := tc.gr*3/4 + tc.llgr*3/4 - 100*time.Millisecond; kept < min || kept > total+time.Second {
				t.Errorf("BIRD kept the routes %s, want %s..%s", kept.Round(time.Millisecond), min, total+time.Second)
			}
		})
	}
}

// The restart times are in the OPEN: changing them needs a restart, and
// Reconfigure says so rather than dropping sessions.
func TestReconfigureRefusesRestartTimes(t *testing.T) {
	cfg := Config{ASN: 64500, RouterID: netip.MustParseAddr("192.0.2.254"), GracefulRestart: true,
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1")}
	s, err := New(cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	same := cfg
	same.GracefulRestartTime = DefaultGracefulRestartTime // 0 means the default
	if err := s.Reconfigure(context.Background(), same); err != nil {
		t.Errorf("Reconfigure with the default restart time spelled out: %v", err)
	}
	for _, c := range []Config{{GracefulRestartTime: time.Minute}, {LongLivedStaleTime: time.Hour}} {
		next := cfg
		next.GracefulRestartTime, next.LongLivedStaleTime = c.GracefulRestartTime, c.LongLivedStaleTime
		if err := s.Reconfigure(context.Background(), next); err == nil || !strings.Contains(err.Error(), "need a restart") {
			t.Errorf("Reconfigure to graceful_restart_time %s, long_lived_stale_time %s: %v, want a restart needed",
				c.GracefulRestartTime, c.LongLivedStaleTime, err)
		}
	}
}

// startWithStoredSet starts a speaker the way rtbhd restarts: the stored
// set announced before Start, so its sessions open in restarting mode.
func startWithStoredSet(t *testing.T, cfg Config, logger *slog.Logger, set []netip.Prefix) *Speaker {
	t.Helper()
	ctx := context.Background()
	s, err := New(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Announce(ctx, set); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}
