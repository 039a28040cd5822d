package fanout

import (
	"net/netip"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// samplingConfig is the default rule, as configured by default.
func samplingConfig() Config {
	c := testConfig()
	c.Rules = []Rule{SMTPFanout()}
	return c
}

// inbound is a client outside the subscriber space connecting to a
// subscriber's port 25.
func inbound(client, server netip.Addr, rate uint32) domain.Flow {
	return domain.Flow{Src: client, Dst: server, Protocol: 6, SrcPort: 41000, DstPort: 25,
		SamplingRate: rate, TCPFlags: 0x10, FrameLength: 60}
}

func kinds(fs []Firing) []FiringKind {
	var out []FiringKind
	for _, f := range fs {
		out = append(out, f.Kind)
	}
	return out
}

// At 1:2048 the default rule needs three sampled packets to distinct
// destinations; two are partial evidence (half the thresholds).
func TestFiresOnThreeSamplesAtRealRates(t *testing.T) {
	e, rec, _ := newEngine(t, samplingConfig())
	rec.all = true
	zombie := netip.MustParseAddr("10.1.2.3")
	e.HandleFlowsAt([]domain.Flow{smtp(zombie, nthDst(1), 2048)}, t0)
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("one sample: %+v", fs)
	}
	e.HandleFlowsAt([]domain.Flow{smtp(zombie, nthDst(2), 2048)}, t0.Add(time.Minute))
	fs := rec.take()
	if len(fs) != 1 || fs[0].Kind != Partial || fs[0].SampledDestinations != 2 || fs[0].Destinations != 2*2048 || fs[0].Packets != 2*2048 {
		t.Fatalf("two samples: %+v, want one Partial", fs)
	}
	// A repeat to a destination already seen adds a sample, not a
	// destination.
	e.HandleFlowsAt([]domain.Flow{smtp(zombie, nthDst(2), 2048)}, t0.Add(2*time.Minute))
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("repeat destination: %+v", fs)
	}
	e.HandleFlowsAt([]domain.Flow{smtp(zombie, nthDst(3), 2048)}, t0.Add(3*time.Minute))
	fs = rec.take()
	if len(fs) != 1 || fs[0].Kind != Fired || fs[0].SampledDestinations != 3 || fs[0].Samples != 4 {
		t.Fatalf("three destinations: %+v, want Fired", fs)
	}
	// One of the three was sampled twice: it counts once, the others as
	// 2048 each.
	if want := EstimateDestinations(3, 4, 2048); fs[0].Destinations != want || want != 1+2*2048 {
		t.Errorf("estimated destinations %d, want %d", fs[0].Destinations, want)
	}
	// Unsampled traffic (rate 1) is counted exactly: 25 destinations but
	// only 250 packets is not even half of min_packets; 500 more packets
	// make it partial evidence, 500 more a firing.
	host := netip.MustParseAddr("10.1.2.4")
	for i := 0; i < 250; i++ {
		e.HandleFlowsAt([]domain.Flow{smtp(host, nthDst(i%25), 1)}, t0)
	}
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("250 unsampled packets: %+v", fs)
	}
	for i := 0; i < 500; i++ {
		e.HandleFlowsAt([]domain.Flow{smtp(host, nthDst(i%25), 1)}, t0)
	}
	if fs := kinds(rec.take()); len(fs) != 1 || fs[0] != Partial {
		t.Fatalf("750 unsampled packets: %v, want one Partial", fs)
	}
	for i := 0; i < 250; i++ {
		e.HandleFlowsAt([]domain.Flow{smtp(host, nthDst(i%25), 1)}, t0)
	}
	if fs := rec.take(); len(fs) != 1 || fs[0].Kind != Fired || fs[0].Destinations != 25 || fs[0].Packets != 1000 {
		t.Fatalf("1000 unsampled packets to 25 destinations: %+v, want Fired with exactly 25", fs)
	}
}

// A subscriber that receives SMTP from three outside clients is a server:
// learned, announced once (then refreshed at most once per window), and
// not flagged for its own outbound mail. The replies a zombie receives
// from port 25 do not make it a server.
func TestServersAreNotZombies(t *testing.T) {
	e, rec, _ := newEngine(t, samplingConfig())
	rec.all = true
	mta := netip.MustParseAddr("10.0.0.25")
	zombie := netip.MustParseAddr("10.0.0.66")
	clients := []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("2001:db9::3")}
	for i, c := range clients[:2] {
		e.HandleFlowsAt([]domain.Flow{inbound(c, mta, 2048)}, t0.Add(time.Duration(i)*time.Second))
	}
	for i := 0; i < 5; i++ { // MX replies to the zombie: from port 25
		r := inbound(nthDst(i), zombie, 2048)
		r.SrcPort, r.DstPort = 25, 41000
		e.HandleFlowsAt([]domain.Flow{r}, t0)
	}
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("before the third client: %+v", fs)
	}
	mapped := inbound(netip.MustParseAddr("::ffff:203.0.113.9"), mta, 2048)
	e.HandleFlowsAt([]domain.Flow{mapped}, t0.Add(2*time.Second))
	fs := rec.take()
	if len(fs) != 1 || fs[0].Kind != ServerLearned || !fs[0].NewServer || fs[0].Source != mta || fs[0].Destinations != 3 {
		t.Fatalf("third client: %+v, want one new ServerLearned for %s", fs, mta)
	}
	e.HandleFlowsAt([]domain.Flow{inbound(clients[2], mta, 2048)}, t0.Add(3*time.Second))
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("a fourth client within the window: %+v, want nothing (refreshes once per window)", fs)
	}
	for i := 0; i < 30; i++ {
		e.HandleFlowsAt([]domain.Flow{smtp(mta, nthDst(i), 2048), smtp(zombie, nthDst(100+i), 2048)}, t0.Add(time.Duration(4+i)*time.Second))
	}
	fs = rec.take()
	if len(fs) != 2 || fs[0].Source != zombie || fs[0].Kind != Partial || fs[1].Source != zombie || fs[1].Kind != Fired {
		t.Fatalf("outbound mail of the server and the zombie: %+v, want the zombie's Partial and Fired only", fs)
	}
	if st := e.Stats(); st.Servers != 1 {
		t.Errorf("stats %+v, want 1 server", st)
	}
	// Serving again a window later refreshes it.
	later := t0.Add(11 * time.Minute)
	for i, c := range clients {
		e.HandleFlowsAt([]domain.Flow{inbound(c, mta, 2048)}, later.Add(time.Duration(i)*time.Second))
	}
	if fs := rec.take(); len(fs) != 1 || fs[0].Kind != ServerLearned || fs[0].NewServer {
		t.Fatalf("a window later: %+v, want one refresh", fs)
	}
}

// A source that received a connection on the rule's port from outside is
// not flagged while that is inside the window (its other clients may not
// have been sampled yet); once it ages out, it is judged like any other.
func TestServerBeingLearnedIsNotFlagged(t *testing.T) {
	e, rec, _ := newEngine(t, samplingConfig())
	host := netip.MustParseAddr("10.0.0.25")
	e.HandleFlowsAt([]domain.Flow{inbound(netip.MustParseAddr("203.0.113.1"), host, 2048)}, t0)
	for i := 0; i < 5; i++ {
		e.HandleFlowsAt([]domain.Flow{smtp(host, nthDst(i), 2048)}, t0.Add(time.Duration(i+1)*time.Minute))
	}
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("fired while being learned: %+v", fs)
	}
	late := t0.Add(11 * time.Minute)
	for i := 0; i < 3; i++ {
		e.HandleFlowsAt([]domain.Flow{smtp(host, nthDst(50+i), 2048)}, late.Add(time.Duration(i)*time.Second))
	}
	if fs := rec.take(); len(fs) != 1 || fs[0].Source != host {
		t.Fatalf("a window after its only inbound connection: %+v, want it fired", fs)
	}
}

// Servers learned before a restart come back from the store: skipped
// until their last sighting plus the server memory; an expired or unknown
// rule's server is not. Reconfigure keeps them by rule name. A shadow rule
// sends no partial evidence, and a rule without skip_servers flags servers.
func TestLoadedServersAndReconfigure(t *testing.T) {
	cfg := samplingConfig()
	cfg.ServerMemory = 24 * time.Hour
	e, rec, _ := newEngine(t, cfg)
	rec.all = true
	kept, expired := netip.MustParseAddr("10.0.0.25"), netip.MustParseAddr("10.0.0.26")
	e.LoadServers([]domain.Server{
		{Address: kept, Rule: "smtp-fanout", Clients: 5, LastSeen: t0.Add(-23 * time.Hour)},
		{Address: expired, Rule: "smtp-fanout", Clients: 5, LastSeen: t0.Add(-25 * time.Hour)},
		{Address: netip.MustParseAddr("10.0.0.27"), Rule: "gone", Clients: 5, LastSeen: t0},
	})
	if st := e.Stats(); st.Servers != 2 {
		t.Fatalf("stats %+v, want 2 servers loaded", st)
	}
	cfg.Rules = append([]Rule{{Name: "telnet", Protocol: 6, DstPorts: []uint16{23}, MinDestinations: 20, MinPackets: 1, Action: ActionLog}}, cfg.Rules...)
	if err := e.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	var batch []domain.Flow
	for i := 0; i < 3; i++ {
		telnet := smtp(expired, nthDst(200+i), 2048)
		telnet.DstPort = 23
		batch = append(batch, smtp(kept, nthDst(i), 2048), smtp(expired, nthDst(100+i), 2048))
		if i < 2 {
			batch = append(batch, telnet)
		}
	}
	e.HandleFlowsAt(batch, t0)
	var fired []Firing
	for _, f := range rec.take() {
		if f.Rule == "telnet" {
			t.Errorf("the shadow rule sent partial evidence: %+v", f)
		}
		if f.Kind == Fired {
			fired = append(fired, f)
		}
	}
	if len(fired) != 1 || fired[0].Source != expired || fired[0].Rule != "smtp-fanout" {
		t.Fatalf("firings %+v, want only %s (its server memory ran out)", fired, expired)
	}
	cfg.Rules[1].SkipServers = false
	if err := e.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	e.Suppress(kept, "", time.Time{})
	e.HandleFlowsAt([]domain.Flow{smtp(kept, nthDst(9), 2048)}, t0.Add(time.Second))
	if fs := rec.take(); len(fs) != 1 || fs[0].Source != kept {
		t.Fatalf("skip_servers off: %+v, want the server flagged", fs)
	}
}

// The inbound (server-learning) path allocates nothing either.
func TestInboundPathNoAllocs(t *testing.T) {
	e, _, _ := newEngine(t, samplingConfig())
	var batch []domain.Flow
	for i := 0; i < 256; i++ {
		srv := netip.AddrFrom4([4]byte{10, 3, byte(i >> 8), byte(i)})
		batch = append(batch, inbound(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), srv, 2048), smtp(srv, nthDst(i), 2048))
	}
	now := t0
	e.HandleFlowsAt(batch, now)
	allocs := testing.AllocsPerRun(50, func() {
		now = now.Add(7 * time.Second)
		e.HandleFlowsAt(batch, now)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch, want 0", allocs)
	}
}

func TestSamplingWarnings(t *testing.T) {
	cfg := samplingConfig()
	if w := SamplingWarnings(cfg, 2048); len(w) != 0 {
		t.Errorf("1:2048 with a 10m window: %v, want none (12 x 600 / 2048 = 3.5 samples)", w)
	}
	w := SamplingWarnings(cfg, 8192)
	want := "detector.rules[0] (smtp-fanout): at 1:8192 a zombie at 1 SMTP connection/s (12 packets/s) leaves ~0.9 sampled packets in the 10m0s window, fewer than min_samples 3: it is caught only by chance; use detector.window 34m0s or more, or sample more often"
	if len(w) != 1 || w[0] != want {
		t.Errorf("1:8192: %q, want %q", w, want)
	}
}
