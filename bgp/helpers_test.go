package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// Tests of this package use 127.0.20.0/24 .. 127.0.29.0/24 (see the
// project's test address plan); each test takes fresh addresses.
var nextAddr atomic.Uint32

func testAddr(t testing.TB) netip.Addr {
	t.Helper()
	n := nextAddr.Add(1) + 10
	if n > 2500 {
		t.Fatal("out of test addresses")
	}
	return netip.AddrFrom4([4]byte{127, 0, byte(20 + n/250), byte(n%250 + 2)})
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() || os.Getenv("RTBH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// receiver is a plain GoBGP speaker standing in for a router: it accepts
// the session from our speaker and keeps what it gets.
type receiver struct {
	srv  *server.BgpServer
	addr netip.Addr
	port int
	asn  uint32
}

type receiverOpts struct {
	gracefulRestart bool
}

func startReceiver(t testing.TB, asn uint32, speaker netip.Addr, speakerASN uint32, o receiverOpts) *receiver {
	t.Helper()
	r := &receiver{addr: testAddr(t), asn: asn}
	r.port = testkit.FreePort(t, r.addr)
	r.srv = server.NewBgpServer(server.LoggerOption(newSlogAdapter(testLogger(t).With("receiver", r.addr))))
	go r.srv.Serve()
	ctx := context.Background()
	err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: r.addr.String(), ListenPort: int32(r.port), ListenAddresses: []string{r.addr.String()},
	}})
	if err != nil {
		t.Fatalf("starting receiver: %v", err)
	}
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: speaker.String(), PeerAsn: speakerASN},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{IdleHoldTimeAfterReset: 1, ConnectRetry: 1}},
	}
	for _, f := range []*api.Family{familyV4, familyV6} {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if o.gracefulRestart {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = append(p.AfiSafis, af)
	}
	if o.gracefulRestart {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: 120}
	}
	if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: p}); err != nil {
		t.Fatalf("adding peer to receiver: %v", err)
	}
	t.Cleanup(r.srv.Stop)
	return r
}

// route is what a receiver holds for one prefix.
type route struct {
	NextHop     netip.Addr
	Origin      uint8
	ASPath      []uint32
	Communities []string // "65535:666", sorted
	Large       []string // "64500:666:0", sorted
	Stale       bool
}

func (r *receiver) routes(t testing.TB) map[netip.Prefix]route {
	t.Helper()
	out := make(map[netip.Prefix]route)
	for _, f := range []*api.Family{familyV4, familyV6} {
		err := r.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: f},
			func(d *api.Destination) {
				for _, p := range d.Paths {
					if !p.Best {
						continue
					}
					pfx, rt, err := decodePath(p)
					if err != nil {
						t.Errorf("decoding received path: %v", err)
						continue
					}
					out[pfx] = rt
				}
			})
		if err != nil {
			t.Fatalf("listing receiver paths: %v", err)
		}
	}
	return out
}

func (r *receiver) count(t testing.TB) int {
	t.Helper()
	n := 0
	for _, f := range []*api.Family{familyV4, familyV6} {
		res, err := r.srv.GetTable(context.Background(), &api.GetTableRequest{TableType: api.TableType_GLOBAL, Family: f})
		if err != nil {
			t.Fatalf("receiver table: %v", err)
		}
		n += int(res.NumDestination)
	}
	return n
}

func decodePath(p *api.Path) (netip.Prefix, route, error) {
	var rt route
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return netip.Prefix{}, rt, err
	}
	pfx, err := netip.ParsePrefix(nlri.String())
	if err != nil {
		return netip.Prefix{}, rt, err
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return netip.Prefix{}, rt, err
	}
	rt.Stale = p.Stale
	for _, a := range attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeOrigin:
			rt.Origin = a.Value
		case *bgp.PathAttributeNextHop:
			rt.NextHop, _ = netip.AddrFromSlice(a.Value)
			rt.NextHop = rt.NextHop.Unmap()
		case *bgp.PathAttributeMpReachNLRI:
			rt.NextHop, _ = netip.AddrFromSlice(a.Nexthop)
		case *bgp.PathAttributeAsPath:
			for _, seg := range a.Value {
				rt.ASPath = append(rt.ASPath, seg.GetAS()...)
			}
		case *bgp.PathAttributeCommunities:
			for _, c := range a.Value {
				rt.Communities = append(rt.Communities, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
			}
		case *bgp.PathAttributeLargeCommunities:
			for _, c := range a.Values {
				rt.Large = append(rt.Large, fmt.Sprintf("%d:%d:%d", c.ASN, c.LocalData1, c.LocalData2))
			}
		}
	}
	slices.Sort(rt.Communities)
	slices.Sort(rt.Large)
	return pfx, rt, nil
}

// newTestSpeaker starts a speaker on a fresh address that connects out to
// the given receivers (index-matched neighbor templates).
func newTestSpeaker(t testing.TB, addr netip.Addr, cfg Config) *Speaker {
	t.Helper()
	if cfg.ASN == 0 {
		cfg.ASN = 64500
	}
	cfg.RouterID = addr
	if cfg.ListenAddress == "" {
		cfg.ListenAddress = addr.String()
		cfg.ListenPort = testkit.FreePort(t, addr)
	}
	if !cfg.NextHopV4.IsValid() {
		cfg.NextHopV4 = netip.MustParseAddr("192.0.2.1")
	}
	if !cfg.NextHopV6.IsValid() {
		cfg.NextHopV6 = netip.MustParseAddr("100::1")
	}
	s, err := New(cfg, testLogger(t).With("speaker", addr), nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (r *receiver) neighbor(role Role) Neighbor {
	return Neighbor{Address: r.addr, ASN: r.asn, Role: role, Port: uint16(r.port)}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = pfx(s)
	}
	return out
}

func keys(m map[netip.Prefix]route) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return out
}

func waitEstablished(t testing.TB, s *Speaker, addr netip.Addr) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "session to "+addr.String()+" established", func() bool {
		ns, err := s.Neighbors(context.Background())
		if err != nil {
			t.Fatalf("Neighbors: %v", err)
		}
		for _, n := range ns {
			if n.Address == addr {
				return n.State == "established"
			}
		}
		return false
	})
}

var cmpNetip = cmp.Options{cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})}
