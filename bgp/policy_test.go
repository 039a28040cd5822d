package bgp

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// cappedPair starts a speaker with two established border neighbors: one
// capped at max_routes 2, one free.
func cappedPair(t *testing.T) (s *Speaker, capped, free *receiver) {
	t.Helper()
	me := testAddr(t)
	capped = startReceiver(t, 64501, me, 64500, receiverOpts{})
	free = startReceiver(t, 64503, me, 64500, receiverOpts{})
	cn := capped.neighbor(RoleBorder)
	cn.MaxRoutes = 2
	s = newTestSpeaker(t, me, Config{Neighbors: []Neighbor{cn, free.neighbor(RoleBorder)}, DefaultMaxRoutes: 100})
	waitEstablished(t, s, capped.addr)
	waitEstablished(t, s, free.addr)
	return s, capped, free
}

func TestMaxRoutesHoldsBackAndPromotes(t *testing.T) {
	ctx := context.Background()
	s, capped, free := cappedPair(t)

	all := pfxs("198.51.100.1/32", "198.51.100.2/32", "2001:db8::3/128", "198.51.100.4/32")
	if err := s.Announce(ctx, all); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "uncapped neighbor gets all", func() bool { return free.count(t) == 4 })
	// What the capped neighbor is sent is what the speaker's adj-RIB-out
	// for it holds after the export policy: exactly the admitted routes
	// means nothing more is on its way. Then wait for those to arrive.
	if diff := cmp.Diff(all[:2], adjOut(t, s, capped.addr), cmpNetip); diff != "" {
		t.Fatalf("adj-RIB-out of the capped neighbor (-want +got):\n%s", diff)
	}
	testkit.Poll(5*time.Second, func() bool { return cmp.Equal(all[:2], keys(capped.routes(t)), cmpNetip) })
	if diff := cmp.Diff(all[:2], keys(capped.routes(t)), cmpNetip); diff != "" {
		t.Fatalf("capped neighbor routes (-want +got):\n%s", diff)
	}
	ns, _ := s.Neighbors(ctx)
	if ns[0].RoutesSent != 2 || ns[0].RoutesHeld != 2 {
		t.Errorf("capped neighbor status: %+v", ns[0])
	}
	// Withdrawing an admitted route lets the oldest held one through.
	if err := s.Withdraw(ctx, all[:1]); err != nil {
		t.Fatal(err)
	}
	want := pfxs("198.51.100.2/32", "2001:db8::3/128")
	testkit.WaitFor(t, 5*time.Second, "held route promoted", func() bool { return cmp.Equal(want, keys(capped.routes(t)), cmpNetip) })
	// Withdrawing a held route: nothing changes on the capped neighbor.
	if err := s.Withdraw(ctx, all[3:]); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "uncapped neighbor after withdrawals", func() bool { return free.count(t) == 2 })
	if diff := cmp.Diff(want, keys(capped.routes(t)), cmpNetip); diff != "" {
		t.Errorf("capped neighbor routes (-want +got):\n%s", diff)
	}
	// A route announced later fits again once there is room.
	if err := s.Withdraw(ctx, pfxs("198.51.100.2/32")); err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(ctx, pfxs("198.51.100.9/32")); err != nil {
		t.Fatal(err)
	}
	want = pfxs("198.51.100.9/32", "2001:db8::3/128")
	testkit.WaitFor(t, 5*time.Second, "new route within the cap", func() bool { return cmp.Equal(want, keys(capped.routes(t)), cmpNetip) })
}

// adjOut returns the prefixes in the speaker's adj-RIB-out for the
// neighbor at addr, sorted: what GoBGP sends it, its export policy
// applied.
func adjOut(t testing.TB, s *Speaker, addr netip.Addr) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, f := range []*api.Family{familyV4, familyV6} {
		err := s.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_ADJ_OUT, Name: addr.String(), Family: f},
			func(d *api.Destination) { out = append(out, netip.MustParsePrefix(d.Prefix)) })
		if err != nil {
			t.Fatalf("listing the adj-RIB-out for %s: %v", addr, err)
		}
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return out
}

func TestReconfigureWithoutDroppingSessions(t *testing.T) {
	ctx := context.Background()
	me := testAddr(t)
	peer := startReceiver(t, 64502, me, 64500, receiverOpts{})
	border := startReceiver(t, 64501, me, 64500, receiverOpts{})
	pn := peer.neighbor(RolePeer)
	pn.Communities = []string{"64502:666"}
	bn := border.neighbor(RoleBorder)
	cfg := Config{Neighbors: []Neighbor{pn, bn}, OwnPrefixes: pfxs("198.51.100.0/24")}
	s := newTestSpeaker(t, me, cfg)
	waitEstablished(t, s, peer.addr)
	waitEstablished(t, s, border.addr)
	if err := s.Announce(ctx, pfxs("198.51.100.7/32", "203.0.113.9/32")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "initial routes", func() bool { return border.count(t) == 2 && peer.count(t) == 1 })
	before, _ := s.Neighbors(ctx)

	cfg = s.cfg // the test's defaults filled in
	cfg.OwnPrefixes = pfxs("203.0.113.0/24")
	cfg.Neighbors = []Neighbor{pn, bn}
	cfg.Neighbors[0].Communities = []string{"64502:777"}
	if err := s.Reconfigure(ctx, cfg); err != nil {
		t.Fatalf("Reconfigure: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "peer routes follow own_prefixes", func() bool {
		got := peer.routes(t)
		r, ok := got[pfx("203.0.113.9/32")]
		return len(got) == 1 && ok && cmp.Equal(r.Communities, []string{"64502:777", "65535:65281"})
	})
	if n := border.count(t); n != 2 {
		t.Errorf("border has %d routes after reconfigure, want 2", n)
	}
	after, _ := s.Neighbors(ctx)
	for i := range before {
		if after[i].State != "established" || !after[i].StateSince.Equal(before[i].StateSince) {
			t.Errorf("neighbor %s session changed: %s since %v -> %s since %v", after[i].Address,
				before[i].State, before[i].StateSince, after[i].State, after[i].StateSince)
		}
	}

	// Adding a neighbor: it gets the current set.
	extra := startReceiver(t, 64503, me, 64500, receiverOpts{})
	cfg.Neighbors = append(cfg.Neighbors, extra.neighbor(RoleBorder))
	if err := s.Reconfigure(ctx, cfg); err != nil {
		t.Fatalf("Reconfigure adding a neighbor: %v", err)
	}
	waitEstablished(t, s, extra.addr)
	testkit.WaitFor(t, 5*time.Second, "new neighbor gets the current set", func() bool { return extra.count(t) == 2 })

	bad := cfg
	bad.ASN = 64999
	if err := s.Reconfigure(ctx, bad); err == nil {
		t.Error("Reconfigure changing the ASN succeeded, want error")
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{ASN: 64500, RouterID: netip.MustParseAddr("192.0.2.254"),
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1")}
	n := Neighbor{Address: netip.MustParseAddr("192.0.2.2"), ASN: 64501, Role: RoleBorder}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"bad community", func(c *Config) { n := n; n.Communities = []string{"65536:1"}; c.Neighbors = []Neighbor{n} }, `bgp neighbors[0] communities[0]: community "65536:1": both parts must be numbers 0..65535`},
		{"bad large community", func(c *Config) { n := n; n.LargeCommunities = []string{"1:2"}; c.Neighbors = []Neighbor{n} }, `bgp neighbors[0] large_communities[0]: large community "1:2": want GLOBAL:LOCAL1:LOCAL2, e.g. 64500:666:0`},
		{"bad role", func(c *Config) { n := n; n.Role = "transit"; c.Neighbors = []Neighbor{n} }, `bgp neighbors[0] role: "transit" is not border or peer`},
		{"duplicate", func(c *Config) { c.Neighbors = []Neighbor{n, n} }, `bgp neighbors[1] address: duplicate neighbor 192.0.2.2`},
		{"v6 router id", func(c *Config) { c.RouterID = netip.MustParseAddr("::1") }, `bgp router_id: "::1" is not an IPv4 address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.Validate()
			if err == nil || err.Error() != tc.want {
				t.Errorf("Validate() = %v, want %s", err, tc.want)
			}
		})
	}
	if err := good.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

// A held-set update that fails must not let the routes it should hold
// reach the capped neighbor: they are not announced at all until a retry
// succeeds, and then they are held as usual.
func TestMaxRoutesHoldsWhenHeldSetUpdateFails(t *testing.T) {
	ctx := context.Background()
	s, capped, free := cappedPair(t)

	first, more := pfxs("198.51.100.1/32", "198.51.100.2/32"), pfxs("198.51.100.3/32", "2001:db8::4/128")
	if err := s.Announce(ctx, first); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.heldFault = func(addr netip.Addr) error {
		if addr == capped.addr {
			return errors.New("injected: defined set update failed")
		}
		return nil
	}
	s.mu.Unlock()
	err := s.Announce(ctx, more)
	if err == nil || !strings.Contains(err.Error(), "so not announcing them") {
		t.Fatalf("Announce with a failing held set = %v, want the routes refused", err)
	}
	// A later marker proves what reached the uncapped neighbor: only the
	// first routes, and the capped one has exactly its two.
	s.mu.Lock()
	s.heldFault = nil
	s.mu.Unlock()
	testkit.WaitFor(t, 5*time.Second, "the uncapped neighbor to hold the first routes", func() bool { return free.count(t) == 2 })
	if diff := cmp.Diff(first, adjOut(t, s, capped.addr), cmpNetip); diff != "" {
		t.Fatalf("adj-RIB-out of the capped neighbor after the failure (-want +got):\n%s", diff)
	}
	// The retry (what the decision path's route queue does) succeeds: the
	// routes go to the uncapped neighbor and are held for the capped one.
	if err := s.Announce(ctx, more); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the uncapped neighbor to get the retried routes", func() bool { return free.count(t) == 4 })
	if diff := cmp.Diff(first, adjOut(t, s, capped.addr), cmpNetip); diff != "" {
		t.Fatalf("adj-RIB-out of the capped neighbor after the retry (-want +got):\n%s", diff)
	}
	if ns, _ := s.Neighbors(ctx); ns[0].RoutesSent != 2 || ns[0].RoutesHeld != 2 {
		t.Errorf("capped neighbor status: %+v", ns[0])
	}
}
