package fanout

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rtbh/rtbh/detector/domain"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// recorder collects firings: only Fired ones unless all is set.
type recorder struct {
	mu  sync.Mutex
	fs  []Firing
	all bool
}

func (r *recorder) fire(f Firing) {
	r.mu.Lock()
	if r.all || f.Kind == Fired {
		r.fs = append(r.fs, f)
	}
	r.mu.Unlock()
}

func (r *recorder) take() []Firing {
	r.mu.Lock()
	defer r.mu.Unlock()
	fs := r.fs
	r.fs = nil
	return fs
}

// exact makes r fire on MinDestinations sampled destinations whatever the
// sampling rate, as these tests expect.
func exact(r Rule) Rule {
	r.MinSamples = r.MinDestinations
	return r
}

// testConfig is the default rule with min_samples equal to
// min_destinations: it fires on 20 sampled destinations whatever the
// sampling rate (the estimator's own tests are in sampling_test.go).
func testConfig() Config {
	r := exact(SMTPFanout())
	return Config{
		SubscriberPrefixes: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("2001:db8::/32"),
		},
		NeverBlackhole: []netip.Prefix{netip.MustParsePrefix("10.255.0.0/16")},
		Window:         10 * time.Minute,
		Rules:          []Rule{r},
	}
}

func newEngine(t testing.TB, cfg Config) (*Engine, *recorder, *prometheus.Registry) {
	t.Helper()
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	e, err := New(cfg, rec.fire, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e, rec, reg
}

func smtp(src, dst netip.Addr, rate uint32) domain.Flow {
	return domain.Flow{
		Src: src, Dst: dst, Protocol: 6, SrcPort: 40000, DstPort: 25,
		SamplingRate: rate, TCPFlags: 0x02, FrameLength: 60,
	}
}

// nthDst returns a distinct destination address per n.
func nthDst(n int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, byte(n >> 16), byte(n >> 8), byte(n)})
}

func nthDst6(n int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb9, 12: byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// distinctOf reads a tracked source's distinct destination count.
func (e *Engine) distinctOf(src netip.Addr, rule int) (uint64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := src.Unmap().As16()
	i := e.index.find(&e.pool, keyHash(&a, uint8(rule), e.seed), &a, uint8(rule))
	if i == 0 {
		return 0, false
	}
	en := e.pool.ent(i)
	if en.big != 0 {
		return e.pool.big(en.big).count(), true
	}
	return uint64(en.ndst), true
}

// packetsOf reads a tracked source's estimated packets in the window.
func (e *Engine) packetsOf(src netip.Addr, rule int) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := src.Unmap().As16()
	i := e.index.find(&e.pool, keyHash(&a, uint8(rule), e.seed), &a, uint8(rule))
	if i == 0 {
		return 0
	}
	var n uint64
	for _, v := range e.pool.ent(i).pkts {
		n += uint64(v)
	}
	return n
}

func TestFiresAtThresholds(t *testing.T) {
	e, rec, reg := newEngine(t, testConfig())
	zombie := netip.MustParseAddr("10.1.2.3")
	for i := 0; i < 19; i++ {
		s := smtp(zombie, nthDst(i), 256)
		if i%2 == 1 {
			s.TCPFlags = 0x18 // PSH|ACK: not a connection attempt
		}
		e.HandleFlowsAt([]domain.Flow{s}, t0.Add(time.Duration(i)*time.Second))
	}
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("fired with 19 destinations: %+v", fs)
	}
	last := t0.Add(19 * time.Second)
	e.HandleFlowsAt([]domain.Flow{smtp(zombie, nthDst(19), 256)}, last)
	fs := rec.take()
	if len(fs) != 1 {
		t.Fatalf("got %d firings, want 1", len(fs))
	}
	got := fs[0]
	want := Firing{
		Rule: "smtp-fanout", RuleIndex: 0, Action: "blackhole", Protocol: 6, DstPorts: []uint16{25},
		TTL: time.Hour, Source: zombie, Destinations: 20 * 256, SampledDestinations: 20, Samples: 20, Exact: true, Packets: 20 * 256,
		Connections: 11 * 256, Window: 10 * time.Minute,
		FirstSeen: t0, LastSeen: last, At: last,
		Examples:     [5]netip.Addr{nthDst(19), nthDst(18), nthDst(17), nthDst(16), nthDst(15)},
		ExampleCount: 5,
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("firing (-want +got):\n%s", diff)
	}
	if n := testutil.ToFloat64(e.mFirings.WithLabelValues("smtp-fanout")); n != 1 {
		t.Errorf("firings_total = %v, want 1", n)
	}
	if n, err := testutil.GatherAndCount(reg, "rtbh_detector_tracked_sources"); err != nil || n != 1 {
		t.Errorf("tracked_sources gathered %d, %v", n, err)
	}
	if v := testutil.ToFloat64(e.mTracked); v != 1 {
		t.Errorf("tracked_sources = %v, want 1", v)
	}
}

func TestMinPacketsAndRateScaling(t *testing.T) {
	e, rec, _ := newEngine(t, testConfig())
	src := netip.MustParseAddr("10.9.9.9")
	// 30 distinct destinations at 1:1 sampling: 30 estimated packets.
	var batch []domain.Flow
	for i := 0; i < 30; i++ {
		batch = append(batch, smtp(src, nthDst(i), 1))
	}
	e.HandleFlowsAt(batch, t0)
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("fired on 30 estimated packets: %+v", fs)
	}
	if got := e.packetsOf(src, 0); got != 30 {
		t.Fatalf("packets = %d, want 30", got)
	}
	// Mixed sampling rates add up: 30 + 7*128 = 926, then +100 = 1026.
	batch = batch[:0]
	for i := 0; i < 7; i++ {
		batch = append(batch, smtp(src, nthDst(i), 128))
	}
	e.HandleFlowsAt(batch, t0.Add(time.Second))
	if got := e.packetsOf(src, 0); got != 926 {
		t.Fatalf("packets = %d, want 926", got)
	}
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("fired below min_packets: %+v", fs)
	}
	e.HandleFlowsAt([]domain.Flow{smtp(src, nthDst(3), 100)}, t0.Add(2*time.Second))
	fs := rec.take()
	if len(fs) != 1 || fs[0].Packets != 1026 || fs[0].SampledDestinations != 30 || fs[0].Connections != 1026 {
		t.Fatalf("firings = %+v, want one with 1026 packets, 30 destinations", fs)
	}
}

func TestWindowSlides(t *testing.T) {
	cfg := testConfig()
	cfg.Rules[0].MinDestinations = 1_000_000 // observe, never fire
	e, _, _ := newEngine(t, cfg)
	src := netip.MustParseAddr("10.0.0.1")
	// One new destination per minute for 40 minutes. A sample older than
	// the window (10m) never counts; one younger than 9m always does.
	for m := 0; m < 40; m++ {
		now := t0.Add(time.Duration(m)*time.Minute + 17*time.Second)
		e.HandleFlowsAt([]domain.Flow{smtp(src, nthDst(m), 10)}, now)
		n, ok := e.distinctOf(src, 0)
		if !ok {
			t.Fatalf("minute %d: source not tracked", m)
		}
		lo, hi := min(m+1, 9), min(m+1, 10)
		if n < uint64(lo) || n > uint64(hi) {
			t.Errorf("minute %d: %d distinct destinations, want %d..%d", m, n, lo, hi)
		}
		if p := e.packetsOf(src, 0); p < uint64(lo*10) || p > uint64(hi*10) {
			t.Errorf("minute %d: %d packets, want %d..%d", m, p, lo*10, hi*10)
		}
	}
	// Sub-window precision: one destination every 10 s for 10 minutes,
	// then only a probe destination once a minute. Each minute exactly one
	// sub-window (6 destinations) ages out: counts slide, never reset.
	e2, _, _ := newEngine(t, cfg)
	for s := 0; s < 60; s++ {
		e2.HandleFlowsAt([]domain.Flow{smtp(src, nthDst(s), 1)}, t0.Add(time.Duration(s)*10*time.Second))
	}
	probe := nthDst(9999)
	for m := 10; m < 20; m++ {
		e2.HandleFlowsAt([]domain.Flow{smtp(src, probe, 1)}, t0.Add(time.Duration(m)*time.Minute))
		n, _ := e2.distinctOf(src, 0)
		if want := uint64(6*(19-m) + 1); n != want {
			t.Errorf("minute %d: %d distinct destinations, want %d", m, n, want)
		}
		if p, want := e2.packetsOf(src, 0), uint64(6*(19-m)+m-9); p != want {
			t.Errorf("minute %d: %d packets, want %d", m, p, want)
		}
	}
}

func TestIdleSourceResetsAndExpires(t *testing.T) {
	e, rec, _ := newEngine(t, testConfig())
	src := netip.MustParseAddr("10.0.0.2")
	var batch []domain.Flow
	for i := 0; i < 15; i++ {
		batch = append(batch, smtp(src, nthDst(i), 256))
	}
	e.HandleFlowsAt(batch, t0)
	if got := e.Stats().Tracked; got != 1 {
		t.Fatalf("tracked = %d, want 1", got)
	}
	// 15 more destinations, but the first 15 are older than the window.
	batch = batch[:0]
	for i := 15; i < 30; i++ {
		batch = append(batch, smtp(src, nthDst(i), 256))
	}
	e.HandleFlowsAt(batch, t0.Add(10*time.Minute))
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("fired across windows: %+v", fs)
	}
	if n, _ := e.distinctOf(src, 0); n != 15 {
		t.Fatalf("distinct = %d, want 15", n)
	}
	// Within one window the two halves add up.
	batch = batch[:0]
	for i := 30; i < 35; i++ {
		batch = append(batch, smtp(src, nthDst(i), 256))
	}
	e.HandleFlowsAt(batch, t0.Add(15*time.Minute))
	fs := rec.take()
	if len(fs) != 1 || fs[0].SampledDestinations != 20 || !fs[0].FirstSeen.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("firings = %+v, want one with 20 destinations first seen at +10m", fs)
	}
	// A source idle for a whole window is dropped at the next batch.
	e.HandleFlowsAt(nil, t0.Add(26*time.Minute))
	if got := e.Stats(); got.Tracked != 0 || got.Overflow != 0 {
		t.Fatalf("stats after idling = %+v, want nothing tracked", got)
	}
	if v := testutil.ToFloat64(e.mEvictions); v != 0 {
		t.Errorf("idle expiry counted as %v evictions", v)
	}
}

func TestIgnoredTraffic(t *testing.T) {
	cfg := testConfig()
	cfg.Rules[0].Exempt = []netip.Prefix{netip.MustParsePrefix("10.0.25.0/24")}
	e, rec, _ := newEngine(t, cfg)
	tests := []struct {
		name string
		mod  func(*domain.Flow)
	}{
		{"outside subscriber space", func(s *domain.Flow) { s.Src = netip.MustParseAddr("192.0.2.7") }},
		{"outside subscriber space v6", func(s *domain.Flow) { s.Src = netip.MustParseAddr("2001:db9::7") }},
		{"never_blackhole", func(s *domain.Flow) { s.Src = netip.MustParseAddr("10.255.1.1") }},
		{"exempt MTA", func(s *domain.Flow) { s.Src = netip.MustParseAddr("10.0.25.10") }},
		{"udp", func(s *domain.Flow) { s.Protocol = 17 }},
		{"other port", func(s *domain.Flow) { s.DstPort = 587 }},
		{"icmp", func(s *domain.Flow) { s.Protocol = 1; s.DstPort = 0 }},
		{"fragment", func(s *domain.Flow) { s.Fragment = true }},
		{"no IP", func(s *domain.Flow) { s.Src, s.Dst = netip.Addr{}, netip.Addr{} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var batch []domain.Flow
			for i := 0; i < 200; i++ {
				s := smtp(netip.MustParseAddr("10.1.1.1"), nthDst(i), 1024)
				tc.mod(&s)
				batch = append(batch, s)
			}
			e.HandleFlowsAt(batch, t0)
			if fs := rec.take(); len(fs) != 0 {
				t.Errorf("fired: %+v", fs)
			}
			if st := e.Stats(); st.Tracked != 0 {
				t.Errorf("created state: %+v", st)
			}
		})
	}
}

func TestEvictionOrder(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTrackedSources = 3
	e, _, _ := newEngine(t, cfg)
	a, b, c, d := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("2001:db8::4")
	dst := nthDst(1)
	// The LRU order is kept at sub-window (window/10 = 1m) resolution.
	for i, s := range []netip.Addr{a, b, c, a, d} {
		e.HandleFlowsAt([]domain.Flow{smtp(s, dst, 1)}, t0.Add(time.Duration(i)*time.Minute))
	}
	tracked := func() []string {
		var out []string
		for _, s := range []netip.Addr{a, b, c, d} {
			if _, ok := e.distinctOf(s, 0); ok {
				out = append(out, s.String())
			}
		}
		return out
	}
	if diff := cmp.Diff([]string{"10.0.0.1", "10.0.0.3", "2001:db8::4"}, tracked()); diff != "" {
		t.Fatalf("tracked after evicting (-want +got):\n%s", diff)
	}
	e.HandleFlowsAt([]domain.Flow{smtp(b, dst, 1)}, t0.Add(5*time.Minute))
	if diff := cmp.Diff([]string{"10.0.0.1", "10.0.0.2", "2001:db8::4"}, tracked()); diff != "" {
		t.Fatalf("tracked after second eviction (-want +got):\n%s", diff)
	}
	if v := testutil.ToFloat64(e.mEvictions); v != 2 {
		t.Errorf("evictions_total = %v, want 2", v)
	}
	if v := testutil.ToFloat64(e.mTracked); v != 3 {
		t.Errorf("tracked_sources = %v, want 3", v)
	}
}

func TestEvictionReleasesOverflow(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTrackedSources = 10
	cfg.Rules[0].MinDestinations = 1000
	e, _, _ := newEngine(t, cfg)
	for s := 0; s < 100; s++ {
		src := netip.AddrFrom4([4]byte{10, 0, 1, byte(s)})
		var batch []domain.Flow
		for i := 0; i < 100; i++ {
			batch = append(batch, smtp(src, nthDst(i), 1))
		}
		e.HandleFlowsAt(batch, t0.Add(time.Duration(s)*time.Second))
	}
	st := e.Stats()
	if st.Tracked != 10 || st.Overflow != 10 {
		t.Fatalf("stats = %+v, want 10 tracked, 10 with overflow", st)
	}
	if n := e.pool.nbigs - 1; n > 11 {
		t.Errorf("%d overflow records allocated for 10 live ones", n)
	}
}

func TestSuppression(t *testing.T) {
	e, rec, _ := newEngine(t, testConfig())
	zombie := netip.MustParseAddr("10.3.3.3")
	at := t0
	n := 0
	send := func(k int) {
		var batch []domain.Flow
		for i := 0; i < k; i++ {
			batch = append(batch, smtp(zombie, nthDst(n), 256))
			n++
		}
		e.HandleFlowsAt(batch, at)
	}
	send(25)
	if fs := rec.take(); len(fs) != 1 {
		t.Fatalf("got %d firings, want 1", len(fs))
	}
	// Still spamming: no new firing within the window after the first.
	for i := 0; i < 9; i++ {
		at = at.Add(time.Minute)
		send(25)
	}
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("fired again within the window: %d firings", len(fs))
	}
	at = t0.Add(10 * time.Minute)
	send(25)
	if fs := rec.take(); len(fs) != 1 {
		t.Fatalf("after the window: %d firings, want 1", len(fs))
	}
	// The lead suppresses for the blackhole's TTL.
	if !e.Suppress(zombie, "smtp-fanout", at.Add(time.Hour)) {
		t.Fatal("Suppress did not find the rule")
	}
	if e.Suppress(zombie, "no-such-rule", at.Add(time.Hour)) {
		t.Fatal("Suppress found a rule that does not exist")
	}
	for i := 0; i < 50; i++ {
		at = at.Add(time.Minute)
		send(25)
	}
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("fired while suppressed: %d firings", len(fs))
	}
	at = at.Add(10 * time.Minute)
	send(25) // past the hour
	if fs := rec.take(); len(fs) != 1 {
		t.Fatalf("after the suppression: %d firings, want 1", len(fs))
	}
	// Suppression survives eviction and lifts with a zero time.
	e.Suppress(zombie, "", at.Add(24*time.Hour))
	at = at.Add(11 * time.Minute)
	e.HandleFlowsAt(nil, at)
	if st := e.Stats(); st.Tracked != 0 || st.Suppressed != 1 {
		t.Fatalf("stats = %+v, want nothing tracked, one suppression", st)
	}
	send(25)
	if fs := rec.take(); len(fs) != 0 {
		t.Fatalf("fired while suppressed after expiry: %d", len(fs))
	}
	e.Suppress(zombie, "smtp-fanout", time.Time{})
	send(1)
	if fs := rec.take(); len(fs) != 1 {
		t.Fatalf("after lifting: %d firings, want 1", len(fs))
	}
}

func TestIPv6AndMappedSources(t *testing.T) {
	e, rec, _ := newEngine(t, testConfig())
	z6 := netip.MustParseAddr("2001:db8:1::25")
	mapped := netip.MustParseAddr("::ffff:10.4.4.4")
	var batch []domain.Flow
	for i := 0; i < 20; i++ {
		batch = append(batch, smtp(z6, nthDst6(i), 256))
		batch = append(batch, smtp(mapped, nthDst(i), 256))
	}
	e.HandleFlowsAt(batch, t0)
	fs := rec.take()
	if len(fs) != 2 {
		t.Fatalf("got %d firings, want 2", len(fs))
	}
	got := map[netip.Addr]Firing{}
	for _, f := range fs {
		got[f.Source] = f
	}
	if f, ok := got[z6]; !ok || f.SampledDestinations != 20 || f.Examples[0] != nthDst6(19) {
		t.Errorf("IPv6 firing = %+v", f)
	}
	if f, ok := got[netip.MustParseAddr("10.4.4.4")]; !ok || f.Examples[0] != nthDst(19) {
		t.Errorf("mapped IPv4 firing = %+v (sources %v)", f, fs)
	}
}

func TestSmallRuleExamples(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []Rule{exact(Rule{Name: "tiny", Protocol: 17, DstPorts: []uint16{1900}, MinDestinations: 2, MinPackets: 2, Action: "log"})}
	e, rec, _ := newEngine(t, cfg)
	src := netip.MustParseAddr("10.7.7.7")
	s1 := domain.Flow{Src: src, Dst: nthDst(1), Protocol: 17, DstPort: 1900, SamplingRate: 1}
	s2 := s1
	s2.Dst = nthDst(2)
	e.HandleFlowsAt([]domain.Flow{s1, s2}, t0)
	fs := rec.take()
	if len(fs) != 1 {
		t.Fatalf("got %d firings", len(fs))
	}
	f := fs[0]
	if f.Action != "log" || f.Connections != 0 || f.ExampleCount != 2 ||
		!cmp.Equal(f.ExampleAddrs(), []netip.Addr{nthDst(1), nthDst(2)}, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
		t.Errorf("firing = %+v", f)
	}
}

func TestSeveralRules(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = append(cfg.Rules,
		exact(Rule{Name: "mail-any", Protocol: 6, DstPorts: []uint16{465, 25, 587}, MinDestinations: 30, MinPackets: 1, Action: "log"}),
		exact(Rule{Name: "smb-scan", Protocol: 6, DstPorts: []uint16{445}, MinDestinations: 5, MinPackets: 1, Action: "blackhole",
			Exempt: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/9")}}),
	)
	e, rec, _ := newEngine(t, cfg)
	src := netip.MustParseAddr("10.200.0.1")
	var batch []domain.Flow
	for i := 0; i < 30; i++ {
		s := smtp(src, nthDst(i), 256)
		if i >= 20 {
			s.DstPort = 465
		}
		batch = append(batch, s)
	}
	for i := 0; i < 10; i++ {
		s := smtp(netip.MustParseAddr("10.1.0.1"), nthDst(i), 256) // exempt from smb-scan
		s.DstPort = 445
		batch = append(batch, s)
		s.Src = src
		batch = append(batch, s)
	}
	e.HandleFlowsAt(batch, t0)
	var got []string
	for _, f := range rec.take() {
		got = append(got, fmt.Sprintf("%s %s %d", f.Rule, f.Source, f.SampledDestinations))
	}
	want := []string{"smtp-fanout 10.200.0.1 20", "mail-any 10.200.0.1 30", "smb-scan 10.200.0.1 5"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("firings (-want +got):\n%s", diff)
	}
	if st := e.Stats(); st.Tracked != 3 {
		t.Errorf("tracked = %d, want 3 (one source, three rules)", st.Tracked)
	}
}

func TestReconfigure(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = append(cfg.Rules, exact(Rule{Name: "telnet", Protocol: 6, DstPorts: []uint16{23}, MinDestinations: 100, Action: "log"}))
	e, rec, _ := newEngine(t, cfg)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	var batch []domain.Flow
	for i := 0; i < 10; i++ {
		batch = append(batch, smtp(a, nthDst(i), 256), smtp(b, nthDst(i), 256))
		s := smtp(a, nthDst(i), 256)
		s.DstPort = 23
		batch = append(batch, s)
	}
	e.HandleFlowsAt(batch, t0)
	e.Suppress(a, "telnet", t0.Add(time.Hour))

	// Swap the rule order, change the telnet ports, exempt b, lower the
	// smtp threshold: smtp state of a survives under its new index.
	cfg2 := testConfig()
	telnet := exact(Rule{Name: "telnet", Protocol: 6, DstPorts: []uint16{23, 2323}, MinDestinations: 100, Action: "log"})
	smtpRule := SMTPFanout()
	smtpRule.MinDestinations = 12
	smtpRule.MinSamples = 12
	smtpRule.Exempt = []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}
	cfg2.Rules = []Rule{telnet, smtpRule}
	if err := e.Reconfigure(cfg2); err != nil {
		t.Fatal(err)
	}
	if n, ok := e.distinctOf(a, 1); !ok || n != 10 {
		t.Errorf("smtp state of a: %d, %v; want kept with 10", n, ok)
	}
	if _, ok := e.distinctOf(a, 0); ok {
		t.Errorf("telnet state kept although its ports changed")
	}
	if _, ok := e.distinctOf(b, 1); ok {
		t.Errorf("state of b kept although b is now exempt")
	}
	if st := e.Stats(); st.Tracked != 1 || st.Suppressed != 1 {
		t.Errorf("stats = %+v", st)
	}
	batch = batch[:0]
	for i := 10; i < 12; i++ {
		batch = append(batch, smtp(a, nthDst(i), 256), smtp(b, nthDst(i), 256))
	}
	e.HandleFlowsAt(batch, t0.Add(time.Second))
	fs := rec.take()
	if len(fs) != 1 || fs[0].Source != a || fs[0].RuleIndex != 1 || fs[0].SampledDestinations != 12 {
		t.Fatalf("firings after reconfigure = %+v", fs)
	}
	// A bad config changes nothing.
	bad := cfg2
	bad.Rules = []Rule{{Name: "x", Protocol: 1}}
	if err := e.Reconfigure(bad); err == nil {
		t.Fatal("Reconfigure accepted a bad config")
	}
	if st := e.Stats(); st.Tracked != 1 {
		t.Errorf("bad reconfigure changed state: %+v", st)
	}
	// A new window drops everything.
	cfg3 := cfg2
	cfg3.Window = 5 * time.Minute
	if err := e.Reconfigure(cfg3); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Tracked != 0 {
		t.Errorf("state kept across a window change: %+v", st)
	}
}

func TestConfigErrors(t *testing.T) {
	good := SMTPFanout()
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"short window", Config{Window: time.Millisecond}, []string{"window: 1ms is shorter than 1s"}},
		{"negative max", Config{MaxTrackedSources: -1}, []string{"max_tracked_sources: -1"}},
		{"bad rule", Config{Rules: []Rule{{Protocol: 1, MinDestinations: 0, Action: "drop", DstPorts: []uint16{0}}}}, []string{
			"rules[0].name: missing", "rules[0].protocol: 1", "rules[0].dst_ports[0]: port 0",
			"rules[0].min_destinations: 0", `rules[0].action: "drop"`,
		}},
		{"duplicate", Config{Rules: []Rule{good, good}}, []string{"rules[1] (smtp-fanout).name: duplicate"}},
		{"no ports", Config{Rules: []Rule{{Name: "p", Protocol: 6, MinDestinations: 1, Action: "log"}}}, []string{"rules[0] (p).dst_ports: at least one"}},
		{"bad prefix", Config{SubscriberPrefixes: []netip.Prefix{{}}}, []string{"subscriber_prefixes[0]: invalid prefix"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, func(Firing) {}, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := New(Config{}, nil, nil); err == nil {
		t.Error("nil fire accepted")
	}
	e, err := New(Config{}, func(Firing) {}, nil)
	if err != nil || e.c.window != int64(DefaultWindow) || e.c.maxTracked != DefaultMaxTrackedSources {
		t.Errorf("defaults: %v, %+v", err, e)
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, func(Firing) {}, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, func(Firing) {}, reg); err == nil {
		t.Error("second registration with the same registry accepted")
	}
}

func TestConcurrentBatches(t *testing.T) {
	e, rec, _ := newEngine(t, testConfig())
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := netip.AddrFrom4([4]byte{10, 50, 0, byte(g)})
			for i := 0; i < 200; i++ {
				e.HandleFlows([]domain.Flow{smtp(src, nthDst(i), 256), smtp(netip.MustParseAddr("10.60.0.1"), nthDst(i), 256)})
			}
		}()
	}
	wg.Wait()
	if fs := rec.take(); len(fs) != 5 {
		t.Errorf("got %d firings, want 5", len(fs))
	}
}

func TestNoAllocsPerSample(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = append(cfg.Rules, Rule{Name: "smb", Protocol: 6, DstPorts: []uint16{445}, MinDestinations: 1000, MinPackets: 1, Action: "log"})
	e, rec, _ := newEngine(t, cfg)
	const sources = 1000
	batch := make([]domain.Flow, 0, 4*sources)
	for s := 0; s < sources; s++ {
		src := netip.AddrFrom4([4]byte{10, 1, byte(s >> 8), byte(s)})
		batch = append(batch, smtp(src, nthDst(1), 256)) // one smarthost
		if s%10 == 0 {                                   // some with many destinations: exact set and sketch
			for i := 0; i < 3*s%200; i++ {
				x := smtp(src, nthDst(i), 256)
				x.DstPort = 445
				batch = append(batch, x)
			}
		}
		if s%100 == 0 { // and a few IPv6
			batch = append(batch, smtp(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(s)}), nthDst6(s), 256))
		}
		web := smtp(src, nthDst(s), 256)
		web.DstPort = 443
		batch = append(batch, web)
	}
	now := t0
	e.HandleFlowsAt(batch, now)
	rec.take()
	allocs := testing.AllocsPerRun(50, func() {
		now = now.Add(7 * time.Second) // crosses sub-windows: aging is covered too
		e.HandleFlowsAt(batch, now)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch of %d samples, want 0", allocs, len(batch))
	}
	st := e.Stats()
	if st.Overflow == 0 || st.Tracked < sources {
		t.Errorf("stats = %+v: test does not cover overflow records", st)
	}
}

func TestErtlEstimatorSanity(t *testing.T) {
	var h [hllMaxRho + 1]uint8
	h[0] = hllM
	if got := ertl(&h); got != 0 {
		t.Errorf("empty sketch estimates %v", got)
	}
	h[0], h[1] = hllM-1, 1
	if got := ertl(&h); math.Abs(got-1) > 0.1 {
		t.Errorf("one register set estimates %v, want ~1", got)
	}
}

// inSketch reports whether a tracked source counts with the sketch.
func (e *Engine) inSketch(src netip.Addr, rule int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := src.Unmap().As16()
	i := e.index.find(&e.pool, keyHash(&a, uint8(rule), e.seed), &a, uint8(rule))
	return i != 0 && e.pool.ent(i).big != 0 && e.pool.big(e.pool.ent(i).big).sketch
}

// TestAgainstReference drives the engine with random traffic and checks,
// after every batch, each touched source's distinct destinations (exact
// range) and packets against a direct computation over the sample log:
// the samples whose sub-window is within the last nBuckets of the source's
// newest sub-window.
func TestAgainstReference(t *testing.T) {
	cfg := testConfig()
	cfg.Window = 100 * time.Second // 10 s sub-windows
	cfg.Rules[0].MinDestinations = 1 << 30
	e, _, _ := newEngine(t, cfg)
	rng := rand.New(rand.NewPCG(9, 9))
	type logged struct {
		bucket int64
		dst    netip.Addr
		rate   uint32
	}
	log := map[netip.Addr][]logged{}
	granule := int64(cfg.Window) / nBuckets
	epoch := int64(-1)
	now := t0.Add(1234567 * time.Microsecond)
	sketched, exact := 0, 0
	for step := 0; step < 3000; step++ {
		now = now.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
		ns := now.UnixNano()
		if epoch < 0 {
			epoch = ns - ns%granule
		}
		b := (ns - epoch) / granule
		var batch []domain.Flow
		touched := map[netip.Addr]bool{}
		for k := rng.IntN(80); k >= 0; k-- {
			src := netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(20))})
			space := 8 + int(src.As4()[3])*4 // sources 0-9: at most 44 destinations, exact
			if src.As4()[3] >= 10 {
				space = 8 + int(src.As4()[3])*15 // up to 293: the sketch
			}
			if rng.IntN(100) == 0 { // sparse sources with 1-5 destinations: the inline slots
				src = netip.AddrFrom4([4]byte{10, 0, 1, byte(rng.IntN(5))})
				space = 1 + int(src.As4()[3])
			}
			dst := nthDst(rng.IntN(space))
			rate := uint32(1 + rng.IntN(500))
			batch = append(batch, smtp(src, dst, rate))
			log[src] = append(log[src], logged{b, dst, rate})
			touched[src] = true
		}
		e.HandleFlowsAt(batch, now)
		for src := range touched {
			dsts := map[netip.Addr]bool{}
			var pk uint64
			l := log[src]
			for len(l) > 0 && l[0].bucket <= b-nBuckets {
				l = l[1:]
			}
			log[src] = l
			for _, l := range l {
				if l.bucket > b-nBuckets {
					dsts[l.dst] = true
					pk += uint64(l.rate)
				}
			}
			gotD, _ := e.distinctOf(src, 0)
			gotP := e.packetsOf(src, 0)
			if gotP != pk {
				t.Fatalf("step %d, %v: packets %d, want %d", step, src, gotP, pk)
			}
			want := uint64(len(dsts))
			if sketch := e.inSketch(src, 0); sketch {
				sketched++
				if math.Abs(float64(gotD)-float64(want)) > 0.35*float64(want)+2 {
					t.Fatalf("step %d, %v: distinct %d (sketch), want %d", step, src, gotD, want)
				}
			} else if exact++; gotD != want {
				t.Fatalf("step %d, %v: distinct %d, want %d", step, src, gotD, want)
			}
		}
	}
	if sketched == 0 || exact == 0 {
		t.Errorf("%d checks in sketch mode, %d exact: both must be covered", sketched, exact)
	}
	t.Logf("%d checks in sketch mode, %d exact", sketched, exact)
}
