package bgp

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

var addPathStreamN = flag.Int("rtbh.addpathstream", 0, "run TestAddPathVersusStream with this many routes (e.g. 100000)")

func selfCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestAddPathVersusStream decides how rtbhd hands routes to GoBGP v3: one
// embedded AddPath call per route (sequential, or 8 in flight as forEach
// does, or 2) against GoBGP's batch entry point, AddPathStream, reachable only
// through GoBGP's own gRPC API (served here on a unix socket), 1,000 paths a
// message. Each variant announces N routes to a real BIRD; the figure is
// this process's CPU (getrusage: the speaker and, for the stream, its gRPC
// client) from the first call until BIRD holds all N.
//
// GoBGP v3.37's addPathStream takes one management operation for the
// whole list, but propagateUpdate still walks it path by path, queueing one
// outgoing message — one UPDATE, one write — per path and peer: the stream
// saves the per-call hand-off and UUID, and pays protobuf and a socket.
//
//	go test -count=1 -run TestAddPathVersusStream -v ./bgp -rtbh.addpathstream=100000
func TestAddPathVersusStream(t *testing.T) {
	n := *addPathStreamN
	if n == 0 {
		t.Skip("run with -rtbh.addpathstream=100000")
	}
	pb, err := newPathBuilder(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("100::1"))
	if err != nil {
		t.Fatal(err)
	}
	paths := make([]*api.Path, n)
	for i := range n {
		if paths[i], err = pb.path(routertest.BarePrefix(i), false); err != nil {
			t.Fatal(err)
		}
	}
	for _, variant := range []string{"AddPath sequential", "AddPath 2 in flight", "AddPath 8 in flight", "AddPathStream 1000/msg"} {
		t.Run(variant, func(t *testing.T) {
			me, rtr := testAddr(t), testAddr(t)
			port := testkit.FreePort(t, me)
			bird := routertest.StartBIRD(t, routertest.BIRDConfig{LocalAddr: rtr, LocalASN: 64501, PeerAddr: me, PeerPort: port, PeerASN: 64500})
			sock := filepath.Join(t.TempDir(), "gobgp.sock")
			s := server.NewBgpServer(server.LoggerOption(newSlogAdapter(slog.New(slog.DiscardHandler))), server.GrpcListenAddress("unix://"+sock))
			go s.Serve()
			t.Cleanup(s.Stop)
			ctx := context.Background()
			if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64500, RouterId: me.String(),
				ListenPort: int32(port), ListenAddresses: []string{me.String()}}}); err != nil {
				t.Fatal(err)
			}
			peer := &api.Peer{Conf: &api.PeerConf{NeighborAddress: rtr.String(), PeerAsn: 64501},
				Transport:    &api.Transport{PassiveMode: true, RemotePort: uint32(bird.Port())},
				EbgpMultihop: &api.EbgpMultihop{Enabled: true, MultihopTtl: 8}}
			peer.AfiSafis = []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: familyV4, Enabled: true}}}
			if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
				t.Fatal(err)
			}
			bird.WaitEstablished(30 * time.Second)
			var stream api.GobgpApi_AddPathStreamClient
			if variant == "AddPathStream 1000/msg" {
				var conn *grpc.ClientConn
				testkit.WaitFor(t, 10*time.Second, "GoBGP's gRPC socket", func() bool {
					conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
					if err != nil {
						return false
					}
					stream, err = api.NewGobgpApiClient(conn).AddPathStream(ctx)
					return err == nil
				})
				t.Cleanup(func() { conn.Close() })
			}
			cpu0, t0 := selfCPU(t), time.Now()
			switch variant {
			case "AddPath sequential":
				for _, p := range paths {
					if _, err := s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
						t.Fatal(err)
					}
				}
			case "AddPath 2 in flight", "AddPath 8 in flight":
				var next atomic.Int64
				var wg sync.WaitGroup
				for range int(variant[8] - '0') {
					wg.Go(func() {
						for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
							if _, err := s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: paths[i]}); err != nil {
								t.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			default:
				for i := 0; i < n; i += 1000 {
					if err := stream.Send(&api.AddPathStreamRequest{TableType: api.TableType_GLOBAL, Paths: paths[i:min(i+1000, n)]}); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := stream.CloseAndRecv(); err != nil {
					t.Fatal(err)
				}
			}
			rc, err := bird.RouteCounter()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			testkit.WaitFor(t, time.Duration(n/500+30)*time.Second, fmt.Sprintf("BIRD to hold %d routes", n), func() bool {
				got, err := rc.Count()
				return err == nil && got == n
			})
			cpu, wall := selfCPU(t)-cpu0, time.Since(t0)
			t.Logf("%-24s %d routes: %6.1f µs CPU/route, wall %s", variant, n, float64(cpu.Microseconds())/float64(n), wall.Round(time.Millisecond))
		})
	}
}
