package routertest

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// GoBGPConfig describes an in-process GoBGP speaker standing in for a
// router: it waits for the speaker under test to connect and keeps what it
// receives (IPv4 and IPv6 unicast).
type GoBGPConfig struct {
	LocalAddr  netip.Addr
	LocalASN   uint32
	ListenPort int // 0 = a free port (see GoBGP.Port)
	PeerAddr   netip.Addr
	PeerASN    uint32
}

// GoBGP is a running in-process GoBGP peer.
type GoBGP struct {
	srv  *server.BgpServer
	port int
}

// StartGoBGP starts an in-process GoBGP peer; it is stopped when the test
// ends. The speaker under test must connect to LocalAddr:Port.
func StartGoBGP(t testing.TB, cfg GoBGPConfig) *GoBGP {
	t.Helper()
	g := &GoBGP{port: cfg.ListenPort}
	if g.port == 0 {
		g.port = testkit.FreePort(t, cfg.LocalAddr)
	}
	g.srv = server.NewBgpServer(server.LoggerOption(quietLogger{}))
	go g.srv.Serve()
	ctx := context.Background()
	if err := g.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.LocalASN, RouterId: cfg.LocalAddr.String(), ListenPort: int32(g.port),
		ListenAddresses: []string{cfg.LocalAddr.String()},
	}}); err != nil {
		t.Fatalf("starting GoBGP peer: %v", err)
	}
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: cfg.PeerAddr.String(), PeerAsn: cfg.PeerASN},
		Transport: &api.Transport{PassiveMode: true},
	}
	for _, f := range families {
		p.AfiSafis = append(p.AfiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}})
	}
	if err := g.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: p}); err != nil {
		t.Fatalf("adding peer to GoBGP: %v", err)
	}
	t.Cleanup(g.srv.Stop)
	return g
}

var families = []*api.Family{
	{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
	{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST},
}

// Port is the port the peer listens on.
func (g *GoBGP) Port() int { return g.port }

// Established reports whether a session is established.
func (g *GoBGP) Established() bool {
	up := false
	g.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State != nil && p.State.SessionState == api.PeerState_ESTABLISHED {
			up = true
		}
	})
	return up
}

// Count returns the number of prefixes received, both families together.
func (g *GoBGP) Count() (int, error) {
	n := 0
	for _, f := range families {
		res, err := g.srv.GetTable(context.Background(), &api.GetTableRequest{TableType: api.TableType_GLOBAL, Family: f})
		if err != nil {
			return 0, err
		}
		n += int(res.NumDestination)
	}
	return n, nil
}

// Prefixes returns the prefixes received, both families together, in no
// particular order.
func (g *GoBGP) Prefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range families {
		var bad error
		err := g.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: f},
			func(d *api.Destination) {
				p, err := netip.ParsePrefix(d.Prefix)
				if err != nil {
					bad = err
					return
				}
				out = append(out, p)
			})
		if err = errors.Join(err, bad); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// quietLogger drops GoBGP's logs: the peer is scaffolding, not under test.
type quietLogger struct{}

func (quietLogger) Panic(msg string, _ gobgplog.Fields) { panic(msg) }
func (quietLogger) Fatal(string, gobgplog.Fields)       {}
func (quietLogger) Error(string, gobgplog.Fields)       {}
func (quietLogger) Warn(string, gobgplog.Fields)        {}
func (quietLogger) Info(string, gobgplog.Fields)        {}
func (quietLogger) Debug(string, gobgplog.Fields)       {}
func (quietLogger) SetLevel(gobgplog.LogLevel)          {}
func (quietLogger) GetLevel() gobgplog.LogLevel         { return gobgplog.ErrorLevel }
