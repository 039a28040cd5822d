package detector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/store"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var testNever = []netip.Prefix{netip.MustParsePrefix("198.51.100.53/32"), netip.MustParsePrefix("2001:db8:53::/48")}

func testPolicy() Policy {
	return Policy{
		OwnPrefixes:    []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		NeverBlackhole: domain.NewPrefixSet(testNever),
		MaxActive:      5, DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour, MinPrefixLenV4: 32, MinPrefixLenV6: 128,
	}
}

// fixture is a Manager on a real SQLite file announcing through a real
// (neighbor-less) BGP speaker, whose RIB shows what was handed to BGP.
type fixture struct {
	t       *testing.T
	path    string
	db      *store.DB
	speaker *bgp.Speaker
	m       *Manager
	cancel  context.CancelFunc
	done    chan error
}

func newFixture(t *testing.T, path string, pol Policy, rp ReportPolicy) *fixture {
	t.Helper()
	return newFixtureAt(t, path, pol, rp, nil)
}

// newFixtureAt is newFixture with the Manager's clock (nil: time.Now).
func newFixtureAt(t *testing.T, path string, pol Policy, rp ReportPolicy, now func() time.Time) *fixture {
	t.Helper()
	db, err := store.Open(path, quiet)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := bgp.New(bgp.Config{ASN: 64500, RouterID: netip.MustParseAddr("192.0.2.254"),
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1")}, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{Policy: pol, Reports: rp, Now: now}, db, sp, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, path: path, db: db, speaker: sp, m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- m.Run(ctx) }()
	t.Cleanup(f.close)
	return f
}

func (f *fixture) close() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	<-f.done
	f.speaker.Close()
	f.db.Close()
	f.cancel = nil
}

// announced waits up to 2 s for BGP's RIB to hold exactly want.
func (f *fixture) announced(want ...string) {
	f.t.Helper()
	slices.Sort(want)
	var got []string
	testkit.WaitFor(f.t, 2*time.Second, fmt.Sprintf("BGP to announce exactly %v", want), func() bool {
		got = got[:0]
		for _, p := range f.speaker.Announced() {
			got = append(got, p.String())
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	})
}

func pfx(s string) netip.Prefix {
	p, err := domain.ParsePrefix(s)
	if err != nil {
		panic(err)
	}
	return p
}

func TestRefusals(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	ctx := context.Background()
	partner := domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")})
	for _, tc := range []struct {
		name string
		req  Request
		want Kind
	}{
		{"missing prefix", Request{}, KindInvalid},
		{"host bits", Request{Prefix: netip.MustParsePrefix("198.51.100.7/24")}, KindInvalid},
		{"zero ttl given", Request{Prefix: pfx("198.51.100.7"), HasTTL: true}, KindInvalid},
		{"negative ttl", Request{Prefix: pfx("198.51.100.7"), TTL: -time.Second}, KindInvalid},
		{"shorter than v4 minimum", Request{Prefix: pfx("198.51.100.0/24")}, KindPolicy},
		{"shorter than v6 minimum", Request{Prefix: pfx("2001:db8::/64")}, KindPolicy},
		{"never_blackhole", Request{Prefix: pfx("198.51.100.53")}, KindPolicy},
		{"never_blackhole v6", Request{Prefix: pfx("2001:db8:53::1")}, KindPolicy},
		{"partner outside scope", Request{Prefix: pfx("198.51.100.7"), Scope: partner}, KindScope},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := f.m.Add(ctx, tc.req)
			if KindOf(err) != tc.want {
				t.Fatalf("Add(%v) = %v (kind %d), want kind %d", tc.req.Prefix, err, KindOf(err), tc.want)
			}
		})
	}
	// max_active
	for i := range 5 {
		if _, _, err := f.m.Add(ctx, Request{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 32), Scope: partner}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.99")}); KindOf(err) != KindLimit {
		t.Fatalf("add beyond max_active = %v, want KindLimit", err)
	}
	// Extending an active entry is allowed at the cap.
	if _, c, err := f.m.Add(ctx, Request{Prefix: pfx("203.0.113.0"), TTL: 2 * time.Hour}); err != nil || c != Extended {
		t.Fatalf("extend at the cap = %v, %v", c, err)
	}
	if _, err := f.m.Remove(ctx, RemoveRequest{Prefix: pfx("198.51.100.99")}); KindOf(err) != KindNotFound {
		t.Fatalf("remove of inactive = %v, want KindNotFound", err)
	}
	if _, err := f.m.Remove(ctx, RemoveRequest{Prefix: pfx("203.0.113.1"), Scope: partner, Owner: "partner:other"}); KindOf(err) != KindScope {
		t.Fatalf("remove of another's entry = %v, want KindScope", err)
	}
	if len(f.m.Active()) != 5 {
		t.Fatalf("refusals changed the active set: %v", f.m.Active())
	}
}

func TestAddExtendRemoveAudit(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	ctx := context.Background()
	b, c, err := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.7"), Origin: "operator:noc", Actor: "noc", Reason: "zombie"})
	if err != nil || c != Added || b.ExpiresAt.Sub(b.CreatedAt) != time.Hour {
		t.Fatalf("add = %+v, %v, %v; want default TTL 1h", b, c, err)
	}
	// A longer TTL extends; a shorter one changes nothing; above max is clamped.
	if b2, c, _ := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.7"), TTL: 2 * time.Hour, Actor: "noc"}); c != Extended || !b2.ExpiresAt.After(b.ExpiresAt) || b2.Origin != "operator:noc" {
		t.Fatalf("extend = %+v, %v", b2, c)
	}
	if _, c, _ := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.7"), TTL: time.Minute, Actor: "noc"}); c != Unchanged {
		t.Fatalf("shorter add = %v, want Unchanged", c)
	}
	b3, _, _ := f.m.Add(ctx, Request{Prefix: pfx("2001:db8::7"), TTL: 1000 * time.Hour, Actor: "noc"})
	if got := b3.ExpiresAt.Sub(b3.CreatedAt); got != 24*time.Hour {
		t.Fatalf("TTL above max = %s, want clamped to 24h", got)
	}
	f.announced("198.51.100.7/32", "2001:db8::7/128")
	if _, err := f.m.Remove(ctx, RemoveRequest{Prefix: pfx("198.51.100.7"), Actor: "noc", Reason: "cleaned"}); err != nil {
		t.Fatal(err)
	}
	f.announced("2001:db8::7/128")
	log, err := f.db.AuditLog(ctx, "198.51.100.7/32", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log {
		got = append(got, e.Actor+" "+e.Action)
	}
	want := []string{"noc add", "noc extend", "noc add", "noc remove"}
	if !slices.Equal(got, want) {
		t.Fatalf("audit = %v, want %v", got, want)
	}
}

// An entry is withdrawn within a second of its expiry, by a timer; a
// restart neither extends a TTL nor brings back a removed or expired entry.
func TestExpiryAndRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	f := newFixture(t, path, testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	ctx := context.Background()
	short, _, err := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.1"), TTL: 700 * time.Millisecond, Actor: "noc"})
	if err != nil {
		t.Fatal(err)
	}
	long, _, _ := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.2"), TTL: time.Hour, Actor: "noc"})
	f.m.Add(ctx, Request{Prefix: pfx("198.51.100.3"), TTL: time.Hour, Actor: "noc"})
	f.m.Remove(ctx, RemoveRequest{Prefix: pfx("198.51.100.3"), Actor: "noc"})
	willLapse, _, _ := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.4"), TTL: 1500 * time.Millisecond, Actor: "noc"})
	_, events := f.m.Watch(ctx)
	for {
		ev := <-events
		if ev.Type == EventExpired && ev.Blackhole.Prefix == short.Prefix {
			if late := time.Since(short.ExpiresAt); late > time.Second || late < 0 {
				t.Fatalf("expired %s after expires_at, want within 1 s", late)
			}
			break
		}
	}
	f.announced("198.51.100.2/32", "198.51.100.4/32")
	f.close()

	// Down while 198.51.100.4 lapses: the restarted Manager's clock is
	// past its expiry.
	later := func() time.Time { return time.Now().Add(time.Until(willLapse.ExpiresAt) + 100*time.Millisecond) }
	f2 := newFixtureAt(t, path, testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour}, later)
	f2.announced("198.51.100.2/32")
	act := f2.m.Active()
	if len(act) != 1 || act[0].Prefix != long.Prefix || !act[0].ExpiresAt.Equal(long.ExpiresAt) {
		t.Fatalf("after restart active = %+v, want only %s expiring at %s", act, long.Prefix, long.ExpiresAt)
	}
	log, _ := f2.db.AuditLog(ctx, "198.51.100.4/32", 0)
	if len(log) != 2 || log[1].Action != "expire" || log[1].Actor != "expiry" {
		t.Fatalf("audit of an entry that lapsed while down = %+v", log)
	}
}

func TestReportFusion(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: 6 * time.Hour})
	ctx := context.Background()
	a, b := Reporter{Name: "isp-a", Trust: 0.5}, Reporter{Name: "isp-b", Trust: 0.5}
	addr := "198.51.100.20"
	// One partner twice does not cross the threshold.
	for range 2 {
		if n, rej, err := f.m.SubmitReports(ctx, a, []Report{{Address: addr}}); n != 1 || rej != nil || err != nil {
			t.Fatalf("submit = %d, %v, %v", n, rej, err)
		}
	}
	if _, ok := f.m.Lookup(pfx(addr)); ok || f.m.Score(netip.MustParseAddr(addr)) != 0.5 {
		t.Fatalf("one partner twice: blackholed=%v score=%v", ok, f.m.Score(netip.MustParseAddr(addr)))
	}
	// A report from before the window does not count.
	old := time.Now().Add(-2 * time.Hour)
	f.m.SubmitReports(ctx, b, []Report{{Address: addr, ObservedAt: old}})
	if _, ok := f.m.Lookup(pfx(addr)); ok {
		t.Fatal("a report older than the window counted")
	}
	// A second partner within the window does.
	f.m.SubmitReports(ctx, b, []Report{{Address: addr, Kind: "spam", Count: 12, Evidence: "Received: ..."}})
	bh, ok := f.m.Lookup(pfx(addr))
	if !ok || bh.Origin != "reports" || bh.ExpiresAt.Sub(bh.CreatedAt) != 6*time.Hour {
		t.Fatalf("two partners: blackhole = %+v, %v; want origin reports, ttl 6h", bh, ok)
	}
	f.announced(addr + "/32")
	// Partial batch: invalid ones rejected by index, the rest stored.
	n, rej, err := f.m.SubmitReports(ctx, a, []Report{{Address: "198.51.100.21"}, {Address: "not-an-ip"},
		{Address: "198.51.100.0/24"}, {Address: "2001:db8::9", ObservedAt: time.Now().Add(time.Hour)}, {Address: ""}})
	if err != nil || n != 1 || len(rej) != 4 || rej[0].Index != 1 || rej[1].Index != 2 || rej[2].Index != 3 || rej[3].Index != 4 {
		t.Fatalf("partial batch = %d, %+v, %v", n, rej, err)
	}
	o, active, err := f.m.Offender(ctx, netip.MustParseAddr(addr))
	if err != nil || len(o.Reports) != 4 || o.Score != 1 || active == nil {
		t.Fatalf("offender = %+v, active %v, %v", o, active, err)
	}
}

func TestDetectedDoublesTTLAndShadowMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	f := newFixture(t, path, testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	ctx := context.Background()
	src := netip.MustParseAddr("198.51.100.66")
	d := domain.Evidence{Rule: "smtp-fanout", Action: "blackhole", Protocol: "tcp", DstPorts: []uint16{25},
		Address: src, DistinctDestinations: 150, EstimatedPackets: 40000, Window: 10 * time.Minute,
		FirstSeen: time.Now().Add(-time.Minute), LastSeen: time.Now(), Examples: []netip.Addr{netip.MustParseAddr("192.0.2.25")}}
	b, err := f.m.Detected(ctx, d, time.Hour)
	if err != nil || b == nil || b.Origin != "detector:smtp-fanout" || b.ExpiresAt.Sub(b.CreatedAt) != time.Hour {
		t.Fatalf("first detection = %+v, %v", b, err)
	}
	// Already blackholed: evidence recorded, not re-added.
	if b2, err := f.m.Detected(ctx, d, time.Hour); err != nil || b2.CreatedAt != b.CreatedAt {
		t.Fatalf("second detection while active = %+v, %v", b2, err)
	}
	f.m.Remove(ctx, RemoveRequest{Prefix: pfx("198.51.100.66"), Actor: "noc"})
	f.close()
	// The offense count survives a restart: the repeat gets double.
	f2 := newFixture(t, path, testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	b3, err := f2.m.Detected(ctx, d, time.Hour)
	if err != nil || b3.ExpiresAt.Sub(b3.CreatedAt) != 2*time.Hour {
		t.Fatalf("repeat offense = %+v, %v; want TTL 2h", b3, err)
	}
	// Shadow rule: evidence only.
	shadow := d
	shadow.Rule, shadow.Action, shadow.Address = "worm-scan", "log", netip.MustParseAddr("198.51.100.67")
	if b4, err := f2.m.Detected(ctx, shadow, time.Hour); err != nil || b4 != nil {
		t.Fatalf("shadow detection = %+v, %v", b4, err)
	}
	f2.announced("198.51.100.66/32")
	ev, err := f2.m.Offenders(ctx, true, 10)
	if err != nil || len(ev) != 1 || ev[0].Address != shadow.Address || ev[0].Rule != "worm-scan" {
		t.Fatalf("shadow offenders = %+v, %v", ev, err)
	}
	o, _, _ := f2.m.Offender(ctx, src)
	if o.Offenses != 2 || len(o.Evidence) != 3 || o.Evidence[0].DistinctDestinations != 150 {
		t.Fatalf("offender = %+v", o)
	}
}

func TestConcurrentAddsShareCommitsAndOrder(t *testing.T) {
	pol := testPolicy()
	pol.MaxActive = 10000
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), pol, ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(w), 0, byte(i)}), 32)
				if _, _, err := f.m.Add(ctx, Request{Prefix: p, Actor: "t"}); err != nil {
					t.Error(err)
				}
				if i%2 == 0 {
					if _, err := f.m.Remove(ctx, RemoveRequest{Prefix: p, Actor: "t"}); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := len(f.m.Active()); n != 16*25 {
		t.Fatalf("active = %d, want %d", n, 16*25)
	}
	var want []string
	for _, b := range f.m.Active() {
		want = append(want, b.Prefix.String())
	}
	f.announced(want...)
	stored, _ := f.db.ActiveBlackholes(ctx)
	if len(stored) != 16*25 {
		t.Fatalf("stored active = %d", len(stored))
	}
}

// A malformed request is INVALID_ARGUMENT even when it would also break
// scope or policy.
func TestInvalidBeatsScopeAndPolicy(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	partner := domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")})
	for _, req := range []Request{
		{Prefix: pfx("198.51.100.53"), HasTTL: true},                // never_blackhole, ttl 0
		{Prefix: pfx("198.51.100.0/24"), TTL: -time.Minute},         // too short, negative ttl
		{Prefix: pfx("198.51.100.7"), HasTTL: true, Scope: partner}, // out of scope, ttl 0
	} {
		if _, _, err := f.m.Add(context.Background(), req); KindOf(err) != KindInvalid {
			t.Errorf("Add(%v, ttl %v) = %v, want KindInvalid", req.Prefix, req.TTL, err)
		}
	}
}

// A never_blackhole entry added by a reload or a restart withdraws what it
// covers.
func TestNewNeverBlackholeAppliesToActive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	rp := ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour}
	f := newFixture(t, path, testPolicy(), rp)
	ctx := context.Background()
	for _, p := range []string{"198.51.100.40", "198.51.100.41", "198.51.100.42"} {
		if _, _, err := f.m.Add(ctx, Request{Prefix: pfx(p), Actor: "noc"}); err != nil {
			t.Fatal(err)
		}
	}
	pol := testPolicy()
	never := append(slices.Clone(testNever), pfx("198.51.100.40"))
	pol.NeverBlackhole = domain.NewPrefixSet(never)
	f.m.SetPolicy(pol, rp)
	f.announced("198.51.100.41/32", "198.51.100.42/32")
	f.close()
	pol.NeverBlackhole = domain.NewPrefixSet(append(never, pfx("198.51.100.41")))
	f2 := newFixture(t, path, pol, rp)
	f2.announced("198.51.100.42/32")
	log, _ := f2.db.AuditLog(ctx, "198.51.100.41/32", 0)
	if last := log[len(log)-1]; last.Actor != "policy" || last.Action != "remove" {
		t.Fatalf("audit of the withdrawal = %+v", last)
	}
}

func TestReportEdgeCases(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	ctx := context.Background()
	// Ten partners of trust 0.1 reach 1.0 despite float rounding.
	for i := range 10 {
		f.m.SubmitReports(ctx, Reporter{Name: fmt.Sprintf("isp-%d", i), Trust: 0.1}, []Report{{Address: "198.51.100.60"}})
	}
	if _, ok := f.m.Lookup(pfx("198.51.100.60")); !ok {
		t.Fatal("ten reports of trust 0.1 did not reach the threshold 1.0")
	}
	// A count SQLite cannot store is rejected alone; the rest is stored.
	n, rej, err := f.m.SubmitReports(ctx, Reporter{Name: "isp-a", Trust: 0.1},
		[]Report{{Address: "198.51.100.61", Count: 1 << 63}, {Address: "198.51.100.62", Count: 5}})
	if err != nil || n != 1 || len(rej) != 1 || rej[0].Index != 0 {
		t.Fatalf("batch with a huge count = %d, %+v, %v", n, rej, err)
	}
}

// reports.min_reporters: one partner alone never blackholes, whatever its
// trust; partial detector evidence counts as a second reporter; an operator
// suffices alone. GetOffender's parts name each share.
func TestFusionMinReportersAndPartialEvidence(t *testing.T) {
	ctx := context.Background()
	rp := ReportPolicy{Window: 24 * time.Hour, Threshold: 1, TTL: 6 * time.Hour, MinReporters: 2}
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), rp)
	zombie, other, op := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8"), netip.MustParseAddr("198.51.100.9")

	if _, _, err := f.m.SubmitReports(ctx, Reporter{Name: "isp-b", Trust: 1}, []Report{{Address: other.String()}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.m.SubmitReports(ctx, Reporter{Name: "isp-a", Trust: 0.5}, []Report{{Address: zombie.String()}}); err != nil {
		t.Fatal(err)
	}
	if got := f.m.Active(); len(got) != 0 {
		t.Fatalf("one partner's reports blackholed %v", got)
	}
	ev := domain.Evidence{Address: zombie, Rule: "smtp-fanout", Protocol: "tcp", DstPorts: []uint16{25},
		DistinctDestinations: 10, EstimatedPackets: 500, Window: 10 * time.Minute}
	if err := f.m.Partial(ctx, ev, 0.5); err != nil {
		t.Fatal(err)
	}
	b, ok := f.m.Lookup(domain.HostPrefix(zombie))
	if !ok || b.Origin != domain.OriginReports {
		t.Fatalf("partner report + partial detector evidence: blackhole = %+v, %v; want origin reports", b, ok)
	}
	parts := f.m.ScoreParts(zombie)
	if len(parts) != 2 || parts[0].Reporter != "detector:smtp-fanout" || parts[0].Trust != 0.5 || parts[1].Reporter != "isp-a" {
		t.Fatalf("score parts = %+v", parts)
	}
	if _, ok := f.m.Lookup(domain.HostPrefix(other)); ok {
		t.Fatalf("a single partner at trust 1.0 blackholed %s", other)
	}
	if _, _, err := f.m.SubmitReports(ctx, Reporter{Name: "noc", Trust: OperatorTrust, Operator: true}, []Report{{Address: op.String()}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.m.Lookup(domain.HostPrefix(op)); !ok {
		t.Fatalf("an operator's report alone did not blackhole %s", op)
	}
	// The scores, operator flag included, come back from the store.
	f.close()
	f2 := newFixture(t, f.path, testPolicy(), rp)
	if s := f2.m.Score(zombie); s != 1 {
		t.Fatalf("score after restart = %v, want 1", s)
	}
	if names, operator := f2.m.scores.reporters(op, time.Now(), rp.Window); len(names) != 1 || !operator {
		t.Fatalf("operator report after restart: reporters %v, operator %v", names, operator)
	}
}

// Learned servers are stored: a restart forgets none, and memory bounds
// what is listed. Only the first learning is audited.
func TestLearnedServersSurviveRestart(t *testing.T) {
	ctx := context.Background()
	rp := ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour}
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), testPolicy(), rp)
	now := time.Now().UTC()
	mta := netip.MustParseAddr("198.51.100.25")
	old := netip.MustParseAddr("198.51.100.26")
	for _, s := range []struct {
		sv    domain.Server
		isNew bool
	}{
		{domain.Server{Address: mta, Rule: "smtp-fanout", Clients: 3, FirstSeen: now, LastSeen: now}, true},
		{domain.Server{Address: mta, Rule: "smtp-fanout", Clients: 5, FirstSeen: now, LastSeen: now.Add(time.Second)}, false},
		{domain.Server{Address: old, Rule: "smtp-fanout", Clients: 4, FirstSeen: now.Add(-200 * time.Hour), LastSeen: now.Add(-200 * time.Hour)}, true},
	} {
		if err := f.m.LearnServer(ctx, s.sv, s.isNew); err != nil {
			t.Fatal(err)
		}
	}
	f.close()
	f2 := newFixture(t, f.path, testPolicy(), rp)
	got, err := f2.m.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Address != mta || got[0].Clients != 5 || !got[0].LastSeen.Equal(now.Add(time.Second)) || !got[0].FirstSeen.Equal(now) {
		t.Fatalf("servers after restart = %+v", got)
	}
	log, _ := f2.db.AuditLog(ctx, "198.51.100.25/32", 0)
	if len(log) != 1 || log[0].Action != "server" {
		t.Fatalf("audit of a learned server = %+v, want one server row", log)
	}
}

// An operator who adds or extends a partner's entry takes it over (SPEC.md):
// its origin becomes operator:<client> in memory, in the store (a restart
// keeps it) and in the audit log, watchers see the change, and the partner
// can no longer remove it. A re-add that does not move the expiry takes
// over too; other origins (detector, reports, operators) are never taken
// over.
func TestOperatorTakesOverPartnerEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	f := newFixture(t, path, testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	isp := domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")})
	partnerAdd := func(p string, ttl time.Duration) domain.Blackhole {
		t.Helper()
		b, c, err := f.m.Add(ctx, Request{Prefix: pfx(p), TTL: ttl, Origin: "partner:isp-b", Actor: "isp-b", Reason: "under attack", Scope: isp})
		if err != nil || c != Added {
			t.Fatalf("partner add %s = %v, %v", p, c, err)
		}
		return b
	}
	same := partnerAdd("203.0.113.9", 2*time.Hour)
	later := partnerAdd("203.0.113.10", time.Hour)
	_, events := f.m.Watch(ctx)

	// Re-add with a shorter TTL: the expiry stays, the origin changes.
	b, c, err := f.m.Add(ctx, Request{Prefix: pfx("203.0.113.9"), TTL: time.Hour, Origin: "operator:noc", Actor: "noc", Reason: "confirmed"})
	if err != nil || c != Extended || b.Origin != "operator:noc" || !b.ExpiresAt.Equal(same.ExpiresAt) || b.Reason != "under attack" {
		t.Fatalf("operator re-add = %+v, %v, %v; want Extended, origin operator:noc, expiry unchanged", b, c, err)
	}
	// Extend with a longer TTL: both.
	b2, c, err := f.m.Add(ctx, Request{Prefix: pfx("203.0.113.10"), TTL: 3 * time.Hour, Origin: "operator:noc", Actor: "noc", Reason: "confirmed"})
	if err != nil || c != Extended || b2.Origin != "operator:noc" || !b2.ExpiresAt.After(later.ExpiresAt) {
		t.Fatalf("operator extend = %+v, %v, %v", b2, c, err)
	}
	for i, want := range []domain.Blackhole{b, b2} {
		ev := <-events
		if ev.Type != EventExtended || ev.Blackhole != want || ev.TakenOverFrom != "partner:isp-b" || ev.Actor != "noc" {
			t.Fatalf("event %d = %+v, want EventExtended of %+v taken over from partner:isp-b", i, ev, want)
		}
	}

	for _, p := range []string{"203.0.113.9/32", "203.0.113.10/32"} {
		_, err := f.m.Remove(ctx, RemoveRequest{Prefix: pfx(p), Actor: "isp-b", Scope: isp, Owner: "partner:isp-b"})
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindScope || e.Msg != p+" belongs to operator:noc, not to you" {
			t.Fatalf("partner removing a taken-over entry: %v, want KindScope %q", err, p+" belongs to operator:noc, not to you")
		}
	}

	for p, want := range map[string][]string{
		"203.0.113.9/32": {
			"isp-b add partner:isp-b expires_at " + same.ExpiresAt.Format(time.RFC3339),
			"noc add operator:noc already active until " + same.ExpiresAt.Format(time.RFC3339) + "; taken over from partner:isp-b",
		},
		"203.0.113.10/32": {
			"isp-b add partner:isp-b expires_at " + later.ExpiresAt.Format(time.RFC3339),
			"noc extend operator:noc expires_at " + later.ExpiresAt.Format(time.RFC3339) + " -> " + b2.ExpiresAt.Format(time.RFC3339) + "; taken over from partner:isp-b",
		},
	} {
		log, err := f.db.AuditLog(ctx, p, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range log {
			got = append(got, e.Actor+" "+e.Action+" "+e.Origin+" "+e.Detail)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("audit of %s (-want +got):\n%s", p, diff)
		}
	}

	// Only partner entries are taken over, and only by operators.
	if _, _, err := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.7"), Origin: "detector:smtp-fanout", Actor: "detector:smtp-fanout"}); err != nil {
		t.Fatal(err)
	}
	if b, c, _ := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.7"), TTL: time.Minute, Origin: "operator:noc", Actor: "noc"}); c != Unchanged || b.Origin != "detector:smtp-fanout" {
		t.Fatalf("operator re-adding a detector entry = %+v, %v; want Unchanged, origin kept", b, c)
	}
	partnerAdd("203.0.113.11", time.Hour)
	if b, c, _ := f.m.Add(ctx, Request{Prefix: pfx("203.0.113.11"), TTL: time.Minute, Origin: "reports", Actor: "reports"}); c != Unchanged || b.Origin != "partner:isp-b" {
		t.Fatalf("report fusion re-adding a partner entry = %+v, %v; want Unchanged, origin kept", b, c)
	}
	cancel()
	f.close()

	f2 := newFixture(t, path, testPolicy(), ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	origins := map[string]string{}
	for _, b := range f2.m.Active() {
		origins[b.Prefix.String()] = b.Origin
	}
	want := map[string]string{"203.0.113.9/32": "operator:noc", "203.0.113.10/32": "operator:noc",
		"203.0.113.11/32": "partner:isp-b", "198.51.100.7/32": "detector:smtp-fanout"}
	if diff := cmp.Diff(want, origins); diff != "" {
		t.Fatalf("origins after restart (-want +got):\n%s", diff)
	}
}
