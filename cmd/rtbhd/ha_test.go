package main

// High availability (SPEC "HA: two or more rtbhd on PostgreSQL"): two real
// rtbhd binaries on one real PostgreSQL, one real BIRD peered with both.

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
	"github.com/rtbh/rtbh/store/postgres"
	"github.com/rtbh/rtbh/store/postgres/pgtest"
)

var haScale = flag.Bool("rtbh.ha-scale", false, "run TestHAKill9AtScale (20,000 routes, kill -9 of one instance)")

// The HA tests' addresses: BIRD between the two route servers.
var (
	haA    = netip.MustParseAddr("127.0.10.1")
	haBIRD = netip.MustParseAddr("127.0.10.2")
	haB    = netip.MustParseAddr("127.0.10.3")
)

// testStore is the store section of newDaemonConfig: "" (SQLite at
// daemonConfig.DB) unless RTBH_TEST_STORE=postgres, which runs the daemon
// tests on a database of a throwaway PostgreSQL started for the test.
func testStore(t testing.TB) string {
	if !onPostgres() {
		return ""
	}
	return "  driver: postgres\n  dsn: " + pgtest.Start(t).NewDatabase(t)
}

// onPostgres reports whether RTBH_TEST_STORE=postgres.
func onPostgres() bool { return os.Getenv("RTBH_TEST_STORE") == "postgres" }

// protoB is BIRD's BGP protocol towards instance B (routertest.ProtocolName
// is A's).
const protoB = "rtbh2"

type haSetup struct {
	t          *testing.T
	pg         *pgtest.Server
	dsn        string
	cfgA, cfgB daemonConfig
	a, b       *daemon
	bird       *routertest.BIRD
	store      *postgres.DB // the test's own look at the database
}

// startHA starts PostgreSQL, BIRD (graceful restart on, one session to
// each instance) and instances a and b on it, and waits for both sessions.
func startHA(t *testing.T, tune func(*daemonConfig)) *haSetup {
	t.Helper()
	h := &haSetup{t: t, pg: pgtest.Start(t)}
	h.dsn = h.pg.NewDatabase(t)
	birdPort := testkit.FreePort(t, haBIRD)
	neighbor := fmt.Sprintf(`    - address: %s
      asn: 64501
      role: border
      port: %d
      passive: true
      communities: ["65535:666"]`, haBIRD, birdPort)
	mk := func(name string, addr netip.Addr) daemonConfig {
		cfg := newDaemonConfig(t, t.TempDir())
		cfg.Store = "  driver: postgres\n  dsn: " + h.dsn
		cfg.Extra = "ha:\n  instance: " + name
		cfg.BGPAddr, cfg.BGPPort = addr.String(), testkit.FreePort(t, addr)
		cfg.Neighbors = neighbor
		cfg.LogLevel = "info"
		if tune != nil {
			tune(&cfg)
		}
		return cfg
	}
	h.cfgA, h.cfgB = mk("a", haA), mk("b", haB)
	session := `  connect delay time 1;
  connect retry time 1;
`
	h.bird = routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: haBIRD, LocalASN: 64501, ListenPort: birdPort,
		PeerAddr: haA, PeerPort: h.cfgA.BGPPort, PeerASN: 64500, GracefulRestart: true, Extra: session,
		More: fmt.Sprintf(`protocol bgp %s {
  local %s port %d as 64501;
  neighbor %s port %d as 64500;
  multihop;
  graceful restart on;
  strict bind on;
%s  error wait time 1, 5;
  ipv4 { import all; export none; igp table master4; };
  ipv6 { import all; export none; igp table master6; };
}
`, protoB, haBIRD, birdPort, haB, h.cfgB.BGPPort, session)})
	h.a, h.b = startDaemon(t, h.cfgA), startDaemon(t, h.cfgB)
	h.waitSessions()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	if h.store, err = postgres.Open(ctx, postgres.Config{DSN: h.dsn, Instance: "test"}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.store.Close() })
	return h
}

var birdState = regexp.MustCompile(`(?m)^\s+BGP state:\s+(\S+)`)

func (h *haSetup) established(proto string) bool {
	out, err := h.bird.Birdc("show protocols all " + proto)
	m := birdState.FindStringSubmatch(out)
	return err == nil && m != nil && m[1] == "Established"
}

func (h *haSetup) waitSessions() {
	h.t.Helper()
	testkit.WaitFor(h.t, 30*time.Second, "BIRD's sessions to both instances", func() bool {
		return h.established(routertest.ProtocolName) && h.established(protoB)
	})
}

var birdPrefix = regexp.MustCompile(`(?m)^([0-9a-f.:]+/\d+)\s`)

// routes returns the IPv4 prefixes BIRD holds from one instance's session.
func (h *haSetup) routes(proto string) ([]string, error) {
	out, err := h.bird.Birdc("show route table master4 protocol " + proto)
	if err != nil {
		return nil, err
	}
	var ps []string
	for _, m := range birdPrefix.FindAllStringSubmatch(out, -1) {
		ps = append(ps, m[1])
	}
	sort.Strings(ps)
	return ps, nil
}

// onBoth reports whether BIRD holds p from both sessions (want) or from
// neither (!want).
func (h *haSetup) onBoth(p string, want bool) bool {
	for _, proto := range []string{routertest.ProtocolName, protoB} {
		rs, err := h.routes(proto)
		if err != nil || slices.Contains(rs, p) != want {
			return false
		}
	}
	return true
}

// list pages through an instance's active blackholes.
func list(t *testing.T, c clients) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []string
	token := ""
	for {
		resp, err := c.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{PageToken: token})
		if err != nil {
			t.Fatalf("listing: %v", err)
		}
		for _, b := range resp.Blackholes {
			out = append(out, b.Prefix)
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	sort.Strings(out)
	return out
}

// stored returns the active prefixes in PostgreSQL.
func (h *haSetup) stored() []string {
	h.t.Helper()
	bs, err := h.store.ActiveBlackholes(context.Background())
	for try := 0; err != nil && try < 3; try++ { // a connection from before an outage
		bs, err = h.store.ActiveBlackholes(context.Background())
	}
	if err != nil {
		h.t.Fatal(err)
	}
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Prefix.String()
	}
	sort.Strings(out)
	return out
}

func (h *haSetup) auditCount(prefix, action string) int {
	h.t.Helper()
	log, err := h.store.AuditLog(context.Background(), prefix, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, a := range log {
		if a.Action == action {
			n++
		}
	}
	return n
}

// TestHAPropagation: an add through A is on both sessions within 1 s, a
// removal through B withdraws it from both within 1 s, and a TTL expiry
// is withdrawn from both and audited exactly once.
func TestHAPropagation(t *testing.T) {
	h := startHA(t, nil)
	ctx := context.Background()
	ca, cb := dial(t, h.a.apiAddr(), testToken), dial(t, h.b.apiAddr(), testToken)

	const p = "198.51.100.7/32"
	start := time.Now()
	if _, err := ca.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: p, Reason: "ha add"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the add through A on both sessions", func() bool { return h.onBoth(p, true) })
	within(t, "add through A on both sessions", start, time.Second)
	if got := list(t, cb); !slices.Equal(got, []string{p}) {
		t.Fatalf("B lists %v, want [%s]", got, p)
	}

	start = time.Now()
	if _, err := cb.bh.RemoveBlackhole(ctx, &rtbhv1.RemoveBlackholeRequest{Prefix: p, Reason: "ha remove"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the removal through B withdrawn from both", func() bool { return h.onBoth(p, false) })
	within(t, "removal through B withdrawn from both sessions", start, time.Second)
	if got := list(t, ca); len(got) != 0 {
		t.Fatalf("A still lists %v after the removal through B", got)
	}
	if n := h.auditCount(p, "add") + h.auditCount(p, "remove"); n != 2 {
		t.Fatalf("%d add/remove audit rows for %s, want 2", n, p)
	}

	// An expiry: whichever instance leads takes it, once.
	const e = "198.51.100.8/32"
	if _, err := cb.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: e, Reason: "ha ttl", Ttl: durationpb.New(3 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the short-lived entry on both sessions", func() bool { return h.onBoth(e, true) })
	testkit.WaitFor(t, 10*time.Second, "the expired entry withdrawn from both", func() bool { return h.onBoth(e, false) })
	testkit.WaitFor(t, 5*time.Second, "the expiry audited", func() bool { return h.auditCount(e, "expire") >= 1 })
	// Both instances had the entry and its timer; a second expiry row
	// would show within their sync time.
	if testkit.Poll(2*time.Second, func() bool { return h.auditCount(e, "expire") > 1 }) {
		t.Fatalf("the expiry of %s was audited %d times, want once", e, h.auditCount(e, "expire"))
	}
	for _, c := range []clients{ca, cb} {
		if got := list(t, c); len(got) != 0 {
			t.Fatalf("an instance still lists %v after the expiry", got)
		}
	}
	// Report fusion happens once, on the leader, whichever instance
	// stored the reports: an operator's report through each instance.
	const r = "198.51.100.9"
	for _, c := range []clients{ca, cb} {
		if _, err := c.rep.SubmitReports(ctx, &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{{Address: r}}}); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, 5*time.Second, "the fused blackhole on both sessions", func() bool { return h.onBoth(r+"/32", true) })
	}
	if testkit.Poll(2*time.Second, func() bool { return h.auditCount(r+"/32", "add")+h.auditCount(r+"/32", "extend") > 1 }) {
		log, _ := h.store.AuditLog(ctx, r+"/32", 0)
		t.Fatalf("report fusion decided more than once: %+v", log)
	}
	if n := h.auditCount(r+"/32", "add"); n != 1 {
		t.Fatalf("%d add rows for the fused blackhole, want 1", n)
	}

	// Each instance names itself on what it wrote, and in its metrics.
	log, _ := h.store.AuditLog(ctx, "", 0)
	instances := map[string]bool{}
	for _, a := range log {
		instances[a.Instance] = true
	}
	if !instances["a"] || !instances["b"] {
		t.Fatalf("audit rows written by instances %v, want a and b", instances)
	}
	if m := h.a.metrics(); !strings.Contains(m, `rtbh_instance_info{driver="postgres",ha_instance="a"} 1`) || !hasMetric(h.a, "rtbh_store_up 1") {
		t.Fatalf("A's metrics lack the instance info or rtbh_store_up 1:\n%s", grepLines(m, "rtbh_instance_info", "rtbh_store"))
	}
}

func grepLines(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// hasMetric reports whether d's metrics have the sample line "name value".
func hasMetric(d *daemon, line string) bool {
	return slices.Contains(strings.Split(d.metrics(), "\n"), line)
}

func healthz(d *daemon) int {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", d.cfg.MetricsPort))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHAPostgresOutage: with PostgreSQL stopped both instances keep
// announcing, adds answer UNAVAILABLE and /healthz 503; once it is back,
// writes succeed again within 15 s and both converge.
func TestHAPostgresOutage(t *testing.T) {
	h := startHA(t, nil)
	ctx := context.Background()
	ca, cb := dial(t, h.a.apiAddr(), testToken), dial(t, h.b.apiAddr(), testToken)
	var want []string
	for i := range 20 {
		p := fmt.Sprintf("198.51.100.%d/32", 100+i)
		c := ca
		if i%2 == 1 {
			c = cb
		}
		if _, err := c.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: p, Reason: "before the outage"}); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	sort.Strings(want)
	both := func() bool {
		ra, errA := h.routes(routertest.ProtocolName)
		rb, errB := h.routes(protoB)
		return errA == nil && errB == nil && slices.Equal(ra, want) && slices.Equal(rb, want)
	}
	testkit.WaitFor(t, 5*time.Second, "the 20 entries on both sessions", both)

	h.pg.Stop()
	for _, d := range []*daemon{h.a, h.b} {
		testkit.WaitFor(t, 10*time.Second, "/healthz 503 and rtbh_store_up 0", func() bool {
			return healthz(d) == http.StatusServiceUnavailable && hasMetric(d, "rtbh_store_up 0")
		})
	}
	for _, c := range []clients{ca, cb} {
		_, err := c.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: "198.51.100.200", Reason: "during the outage"})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("add with PostgreSQL down = %v, want UNAVAILABLE", err)
		}
	}
	if !both() {
		t.Fatal("the instances stopped announcing the last known set when PostgreSQL went away")
	}
	for _, c := range []clients{ca, cb} {
		if got := list(t, c); !slices.Equal(got, want) {
			t.Fatalf("an instance lists %v during the outage, want the last known set", got)
		}
	}
	if lag := grepLines(h.a.metrics(), "rtbh_store_sync_lag_seconds"); lag == "rtbh_store_sync_lag_seconds 0" {
		t.Fatalf("sync lag during the outage: %q, want above 0", lag)
	}

	h.pg.Restart()
	back := time.Now()
	const late = "198.51.100.201/32"
	testkit.WaitFor(t, 15*time.Second, "writes to succeed again", func() bool {
		_, err := cb.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: late, Reason: "after the outage"})
		return err == nil
	})
	t.Logf("writes succeed again %s after PostgreSQL came back", time.Since(back).Round(time.Millisecond))
	want = append(want, late)
	sort.Strings(want)
	testkit.WaitFor(t, 10*time.Second, "both instances healthy and BIRD holding the new entry from both", func() bool {
		return healthz(h.a) == http.StatusOK && healthz(h.b) == http.StatusOK && both()
	})
	for _, c := range []clients{ca, cb} {
		if got := list(t, c); !slices.Equal(got, want) {
			t.Fatalf("an instance lists %v after the outage, want %v", got, want)
		}
	}
	if got := h.stored(); !slices.Equal(got, want) {
		t.Fatalf("PostgreSQL holds %v, want %v", got, want)
	}
	// Someone leads again: a short entry expires, once, on both.
	const e = "198.51.100.202/32"
	if _, err := ca.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: e, Reason: "short", Ttl: durationpb.New(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the short entry on both sessions", func() bool { return h.onBoth(e, true) })
	testkit.WaitFor(t, 10*time.Second, "the short entry expired on both sessions", func() bool { return h.onBoth(e, false) })
	testkit.WaitFor(t, 5*time.Second, "its expiry audited", func() bool { return h.auditCount(e, "expire") == 1 })
}

// TestHAConcurrentWrites: adds and removes through both instances at once
// for 30 s; then both instances, PostgreSQL and BIRD (both sessions) hold
// the same set, and every acknowledged write is in it. Each worker owns
// its prefixes and sends its calls one after another (to either
// instance), so the last acknowledged call decides each prefix; a refused
// call changes nothing.
func TestHAConcurrentWrites(t *testing.T) {
	h := startHA(t, nil)
	ca, cb := dial(t, h.a.apiAddr(), testToken), dial(t, h.b.apiAddr(), testToken)
	const (
		workers   = 8
		perWorker = 16
		maxCalls  = 20000
	)
	duration := 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	type state struct{ active bool }
	expect := make([]map[string]bool, workers)
	var (
		wg                 sync.WaitGroup
		mu                 sync.Mutex
		acked, refused, nf int
	)
	for w := range workers {
		expect[w] = map[string]bool{}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < maxCalls/workers && ctx.Err() == nil; i++ {
				p := fmt.Sprintf("198.51.%d.%d/32", 100+w, rng.IntN(perWorker))
				c := ca
				if rng.IntN(2) == 1 {
					c = cb
				}
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				add := rng.IntN(2) == 0
				if add {
					_, err = c.bh.AddBlackhole(cctx, &rtbhv1.AddBlackholeRequest{Prefix: p, Reason: "concurrent"})
				} else {
					_, err = c.bh.RemoveBlackhole(cctx, &rtbhv1.RemoveBlackholeRequest{Prefix: p, Reason: "concurrent"})
				}
				ccancel()
				mu.Lock()
				switch code := status.Code(err); {
				case err == nil:
					acked++
					expect[w][p] = add
				case code == codes.NotFound:
					nf++
				case code == codes.Unavailable:
					refused++
				default:
					t.Errorf("%s: unexpected error %v", p, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var want []string
	for _, m := range expect {
		for p, active := range m {
			if active {
				want = append(want, p)
			}
		}
	}
	sort.Strings(want)
	t.Logf("%d acknowledged writes, %d NOT_FOUND (the instance had not seen the add yet, or it was removed already), %d UNAVAILABLE; %d active at the end",
		acked, nf, refused, len(want))
	if acked < 100 {
		t.Fatalf("only %d writes acknowledged in %s", acked, duration)
	}
	var last string
	if !testkit.Poll(15*time.Second, func() bool {
		la, lb, st := list(t, ca), list(t, cb), h.stored()
		ra, errA := h.routes(routertest.ProtocolName)
		rb, errB := h.routes(protoB)
		ok := errA == nil && errB == nil && slices.Equal(la, want) && slices.Equal(lb, want) && slices.Equal(st, want) &&
			slices.Equal(ra, want) && slices.Equal(rb, want)
		last = fmt.Sprintf("want %d %v\nA lists %d %v\nB lists %d %v\nPostgreSQL %d %v\nBIRD from A %d, from B %d (%v %v)",
			len(want), want, len(la), la, len(lb), lb, len(st), st, len(ra), len(rb), errA, errB)
		return ok
	}) {
		t.Fatalf("the instances, PostgreSQL and BIRD do not agree with the acknowledged writes:\n%s", last)
	}
}

// TestHAKill9AtScale: with 20,000 routes active, kill -9 of A: BIRD's
// table, sampled every <= 20 ms, never holds fewer of them (B announces
// them all), and A restarts and converges.
//
//	go test -run TestHAKill9AtScale -v ./cmd/rtbhd -rtbh.ha-scale
func TestHAKill9AtScale(t *testing.T) {
	if !*haScale {
		t.Skip("run with -rtbh.ha-scale (20,000 routes; deploy/test.sh runs it)")
	}
	const n = 20000
	h := startHA(t, func(c *daemonConfig) { c.LogLevel = "warn" })
	addrs := make([]string, n)
	for i := range n {
		addrs[i] = netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i)}).String()
	}
	addAll(t, h.a, addrs)
	full := func(proto string) func() bool {
		return func() bool { r, err := h.routes(proto); return err == nil && len(r) == n }
	}
	testkit.WaitFor(t, 60*time.Second, "20,000 routes from A", full(routertest.ProtocolName))
	testkit.WaitFor(t, 60*time.Second, "20,000 routes from B", full(protoB))

	rc, err := h.bird.RouteCounter()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	base, err := rc.Networks() // the 20,000 and the two discard routes
	if err != nil || base != n+2 {
		t.Fatalf("BIRD holds %d networks (%v), want %d", base, err, n+2)
	}
	// Sampling walks no table (that takes BIRD milliseconds at this size):
	// the channel counters of each session; what BIRD can forward on is at
	// least the larger of the two, since both carry the same set.
	type sample struct {
		at   time.Time
		n, b int
	}
	stop := make(chan struct{})
	done := make(chan []sample)
	go func() {
		var ss []sample
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(3 * time.Minute)
		for {
			at := time.Now()
			na, _, errA := rc.CountOf(routertest.ProtocolName)
			nb, _, errB := rc.CountOf(protoB)
			if errA != nil || errB != nil {
				na, nb = -1, -1
			}
			ss = append(ss, sample{at, max(na, nb), nb})
			select {
			case <-stop:
				done <- ss
				return
			case <-deadline:
				done <- ss
				return
			case <-tick.C:
			}
		}
	}()
	killed := time.Now()
	h.a.kill9()
	testkit.WaitFor(t, 10*time.Second, "BIRD to notice A is gone", func() bool { return !h.established(routertest.ProtocolName) })
	h.a = startDaemon(t, h.cfgA)
	testkit.WaitFor(t, 60*time.Second, "A back with all 20,000 routes", func() bool {
		return h.established(routertest.ProtocolName) && full(routertest.ProtocolName)()
	})
	close(stop)
	ss := <-done
	slow, minN, minB := 0, n, n
	var maxGap time.Duration
	for i, s := range ss {
		minN, minB = min(minN, s.n), min(minB, s.b)
		if i > 0 {
			g := s.at.Sub(ss[i-1].at)
			maxGap = max(maxGap, g)
			if g > routertest.SampleEvery {
				slow++
			}
		}
	}
	t.Logf("%d samples over %s after the kill, min %d of %d routes (min %d from B), %d gaps over %s, longest %s",
		len(ss), time.Since(killed).Round(time.Millisecond), minN, n, minB, slow, routertest.SampleEvery, maxGap.Round(time.Millisecond))
	if minN < n || minB < n {
		t.Errorf("BIRD held %d routes at the worst moment (%d from B), want never fewer than %d", minN, minB, n)
	}
	if k, err := rc.Networks(); err != nil || k != base {
		t.Errorf("BIRD holds %d networks after A's restart (%v), want %d", k, err, base)
	}
	if slow*20 > len(ss) {
		t.Errorf("%d of %d gaps between samples over %s: sampling too coarse", slow, len(ss), routertest.SampleEvery)
	}
	if got := list(t, dial(t, h.a.apiAddr(), testToken)); len(got) != n {
		t.Fatalf("A lists %d entries after its restart, want %d", len(got), n)
	}
}

var haPerf = flag.Int("rtbh.ha-perf", 0, "run TestHAPerformance with this many adds (e.g. 100000)")

// TestHAPerformance: N adds through the API to a real BIRD cost, in CPU
// per route, at most 2x as much on PostgreSQL as on SQLite (the same run,
// one instance each). SQLite runs inside rtbhd; for PostgreSQL the
// server's CPU is added to rtbhd's, so the comparison is of the whole
// cost.
//
//	go test -run TestHAPerformance -v ./cmd/rtbhd -rtbh.ha-perf=100000
func TestHAPerformance(t *testing.T) {
	n := *haPerf
	if n == 0 {
		t.Skip("run with -rtbh.ha-perf=100000")
	}
	addrs := make([]string, n)
	for i := range n {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
	}
	pg := pgtest.Start(t)
	perRoute := map[string]time.Duration{}   // rtbhd's own
	withServer := map[string]time.Duration{} // rtbhd's and PostgreSQL's
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			cfg := newDaemonConfig(t, t.TempDir())
			cfg.MaxActive = n + 1000
			cfg.LogLevel = "warn"
			if driver == "postgres" {
				cfg.Store = "  driver: postgres\n  dsn: " + pg.NewDatabase(t)
			}
			d, bird := startWithRestartingBIRD(t, cfg, netip.MustParseAddr("127.0.11.1"), netip.MustParseAddr("127.0.11.2"))
			_, before, _ := cpuTime(t, d.cmd.Process.Pid)
			pgBefore, _ := pg.CPU()
			start := time.Now()
			addAll(t, d, addrs)
			bird.WaitRouteCount(t, n, 5*time.Minute)
			_, after, _ := cpuTime(t, d.cmd.Process.Pid)
			pgAfter, _ := pg.CPU()
			cpu := after - before
			perRoute[driver] = cpu / time.Duration(n)
			withServer[driver] = (cpu + pgAfter - pgBefore) / time.Duration(n)
			t.Logf("%s: %d adds on BIRD in %s, rtbhd CPU %s = %s per route; PostgreSQL server CPU meanwhile %s = %s per route",
				driver, n, time.Since(start).Round(time.Millisecond), cpu.Round(time.Millisecond), perRoute[driver],
				(pgAfter - pgBefore).Round(time.Millisecond), (pgAfter-pgBefore)/time.Duration(n))
			d.stop()
		})
	}
	s, p, pw := perRoute["sqlite"], perRoute["postgres"], withServer["postgres"]
	if s == 0 || p == 0 {
		t.Fatal("a run did not finish")
	}
	t.Logf("CPU per route: SQLite %s; PostgreSQL: rtbhd %s (%.2fx), rtbhd + server %s (%.2fx)",
		s, p, float64(p)/float64(s), pw, float64(pw)/float64(s))
	if pw > 2*s {
		t.Errorf("PostgreSQL costs %.2fx SQLite's CPU per route (rtbhd + server), target <= 2x", float64(pw)/float64(s))
	}
}

// TestHALeaderFailover: when the leader dies (kill -9), the other instance
// takes the leadership within seconds and expires what is due, once.
func TestHALeaderFailover(t *testing.T) {
	h := startHA(t, nil)
	ctx := context.Background()
	leads := func(d *daemon) bool { return hasMetric(d, "rtbh_store_leader 1") }
	var leader, follower *daemon
	defer func() {
		if t.Failed() {
			t.Logf("A: %s\nB: %s", grepLines(h.a.metrics(), "rtbh_store"), grepLines(h.b.metrics(), "rtbh_store"))
		}
	}()
	testkit.WaitFor(t, 10*time.Second, "one leader", func() bool {
		la, lb := leads(h.a), leads(h.b)
		switch {
		case la && !lb:
			leader, follower = h.a, h.b
		case lb && !la:
			leader, follower = h.b, h.a
		default:
			return false
		}
		return true
	})
	proto := routertest.ProtocolName
	if follower == h.b {
		proto = protoB
	}
	c := dial(t, follower.apiAddr(), testToken)
	const e = "198.51.100.30/32"
	if _, err := c.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: e, Reason: "short", Ttl: durationpb.New(4 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the entry on both sessions", func() bool { return h.onBoth(e, true) })
	leader.kill9()
	testkit.WaitFor(t, 10*time.Second, "the survivor to lead", func() bool { return leads(follower) })
	testkit.WaitFor(t, 15*time.Second, "the entry expired on the survivor's session", func() bool {
		rs, err := h.routes(proto)
		return err == nil && !slices.Contains(rs, e)
	})
	testkit.WaitFor(t, 5*time.Second, "its expiry audited", func() bool { return h.auditCount(e, "expire") >= 1 })
	if n := h.auditCount(e, "expire"); n != 1 {
		t.Fatalf("%d expire rows, want 1", n)
	}
}
