package routertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// A bare speaker is the yardstick of the route path: an embedded GoBGP v3
// speaker in a process of its own, announcing host routes to one router
// with the attributes rtbhd uses (ORIGIN IGP, NEXT_HOP, the neighbor's
// communities and NO_EXPORT), one AddPath (or DeletePath) call per route
// from one goroutine, nothing stored — what a user of the library would
// write. Tests compare rtbhd's CPU per route with its CPU per route, both
// read from /proc, in the same run.
//
// The child is the test binary itself, re-executed with bareEnv set: call
// RunBareSpeakerIfAsked first thing in TestMain.

// BareConfig describes a bare speaker.
type BareConfig struct {
	LocalAddr   netip.Addr // its address and router ID
	LocalPort   int        // the port it listens on (0: it does not listen, it connects out)
	LocalASN    uint32
	PeerAddr    netip.Addr
	PeerPort    int
	PeerASN     uint32
	NextHop     netip.Addr // default 192.0.2.1
	Communities []uint32   // besides NO_EXPORT; default 65535:666
}

const bareEnv = "RTBH_ROUTERTEST_BARE_SPEAKER"

// BarePrefix is the i-th host route the bare speaker (and a test giving
// rtbhd the same routes) announces: 10.0.0.0/32 onwards.
func BarePrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

// RunBareSpeakerIfAsked runs the bare speaker and exits when this process
// was started as one; otherwise it returns at once.
func RunBareSpeakerIfAsked() {
	if cfg := os.Getenv(bareEnv); cfg != "" {
		os.Exit(bareMain(cfg, os.Stdin, os.Stdout))
	}
}

// bareMain serves the commands "add FIRST N", "del FIRST N" and "up" on
// in, answering each with one line on out.
func bareMain(cfgJSON string, in io.Reader, out io.Writer) int {
	var cfg BareConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(out, "error", err)
		return 1
	}
	if !cfg.NextHop.IsValid() {
		cfg.NextHop = netip.MustParseAddr("192.0.2.1")
	}
	if cfg.Communities == nil {
		cfg.Communities = []uint32{65535<<16 | 666}
	}
	ctx := context.Background()
	s := server.NewBgpServer(server.LoggerOption(quietLogger{}))
	go s.Serve()
	port := int32(cfg.LocalPort)
	if port == 0 {
		port = -1
	}
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: cfg.LocalASN, RouterId: cfg.LocalAddr.String(),
		ListenPort: port, ListenAddresses: []string{cfg.LocalAddr.String()}}}); err != nil {
		fmt.Fprintln(out, "error", err)
		return 1
	}
	peer := &api.Peer{
		Conf:         &api.PeerConf{NeighborAddress: cfg.PeerAddr.String(), PeerAsn: cfg.PeerASN},
		Transport:    &api.Transport{LocalAddress: cfg.LocalAddr.String(), RemotePort: uint32(cfg.PeerPort)},
		EbgpMultihop: &api.EbgpMultihop{Enabled: true, MultihopTtl: 8},
		Timers:       &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1}},
	}
	for _, f := range families {
		peer.AfiSafis = append(peer.AfiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}})
	}
	if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		fmt.Fprintln(out, "error", err)
		return 1
	}
	var attrs [][]byte
	for _, a := range []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		bgp.NewPathAttributeAsPath(nil),
		bgp.NewPathAttributeNextHop(cfg.NextHop.String()),
		bgp.NewPathAttributeCommunities(append(append([]uint32{}, cfg.Communities...), 0xFFFFFF01)),
	} {
		b, err := a.Serialize()
		if err != nil {
			fmt.Fprintln(out, "error", err)
			return 1
		}
		attrs = append(attrs, b)
	}
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	path := func(i int, withdraw bool) *api.Path {
		p := BarePrefix(i)
		nlri, _ := bgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String()).Serialize()
		return &api.Path{Family: family, NlriBinary: nlri, PattrsBinary: attrs, IsWithdraw: withdraw}
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "up":
			up := false
			s.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
				up = up || (p.State != nil && p.State.SessionState == api.PeerState_ESTABLISHED)
			})
			fmt.Fprintln(out, up)
		case "add", "del":
			first, _ := strconv.Atoi(f[1])
			n, _ := strconv.Atoi(f[2])
			var err error
			for i := first; i < first+n && err == nil; i++ {
				if f[0] == "add" {
					_, err = s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path(i, false)})
				} else {
					err = s.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: family, Path: path(i, true)})
				}
			}
			if err != nil {
				fmt.Fprintln(out, "error", err)
				continue
			}
			fmt.Fprintln(out, "done")
		default:
			fmt.Fprintln(out, "error unknown command", f[0])
		}
	}
	return 0
}

// BareSpeaker is a running bare speaker process.
type BareSpeaker struct {
	t   testing.TB
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// StartBareSpeaker starts a bare speaker (this test binary, re-executed);
// it is stopped when the test ends.
func StartBareSpeaker(t testing.TB, cfg BareConfig) *BareSpeaker {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), bareEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &BareSpeaker{t: t, cmd: cmd, in: in, out: bufio.NewScanner(outp)}
	t.Cleanup(b.Stop)
	return b
}

func (b *BareSpeaker) call(cmd string) string {
	b.t.Helper()
	if _, err := fmt.Fprintln(b.in, cmd); err != nil {
		b.t.Fatalf("bare speaker: %v", err)
	}
	if !b.out.Scan() {
		b.t.Fatalf("bare speaker exited: %v", b.out.Err())
	}
	return b.out.Text()
}

// Established reports whether its session is up.
func (b *BareSpeaker) Established() bool { return b.call("up") == "true" }

// Add announces BarePrefix(first) .. BarePrefix(first+n-1), one AddPath
// each, returning when the calls have returned.
func (b *BareSpeaker) Add(first, n int) {
	b.t.Helper()
	if r := b.call(fmt.Sprintf("add %d %d", first, n)); r != "done" {
		b.t.Fatalf("bare speaker add: %s", r)
	}
}

// Delete withdraws them, one DeletePath each.
func (b *BareSpeaker) Delete(first, n int) {
	b.t.Helper()
	if r := b.call(fmt.Sprintf("del %d %d", first, n)); r != "done" {
		b.t.Fatalf("bare speaker delete: %s", r)
	}
}

// Pid is its process ID.
func (b *BareSpeaker) Pid() int { return b.cmd.Process.Pid }

// Stop ends it (closing its session).
func (b *BareSpeaker) Stop() {
	if b.cmd.ProcessState != nil {
		return
	}
	b.in.Close()
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
}

// ProcessCPU returns the user and system CPU time process pid has used,
// from /proc/PID/stat (in clock ticks of 10 ms).
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick, nil
}
