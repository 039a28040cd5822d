//go:build linux

package bgp

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// TestMD5Password: a session with a TCP MD5 password comes up with BIRD
// using the same password, and does not with a wrong one.
func TestMD5Password(t *testing.T) {
	if kerr := tcpMD5Supported(); kerr != nil {
		// Then a password must stop Start, not be ignored.
		s, err := New(Config{ASN: 64500, RouterID: netip.MustParseAddr("127.0.29.250"),
			NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"),
			Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.29.251"), ASN: 64501, Role: RoleBorder, Password: "x"}},
		}, testLogger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "password") {
			t.Fatalf("Start with a password on a kernel without TCP MD5 = %v, want an error naming the password", err)
		}
		t.Logf("this kernel cannot do TCP MD5 (%v): checked that Start refuses passwords; no session to test", kerr)
		return
	}
	for _, tc := range []struct {
		name, ours, bird string
		up               bool
	}{
		{"same password", "s3cret-md5", "s3cret-md5", true},
		{"wrong password", "s3cret-md5", "other", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			me, rtr := testAddr(t), testAddr(t)
			port := testkit.FreePort(t, me)
			b := routertest.StartBIRD(t, routertest.BIRDConfig{
				LocalAddr: rtr, LocalASN: 64501, PeerAddr: me, PeerPort: port, PeerASN: 64500, Password: tc.bird,
			})
			s, err := New(Config{
				ASN: 64500, RouterID: me, ListenAddress: me.String(), ListenPort: port,
				NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1"),
				Neighbors: []Neighbor{{Address: rtr, ASN: 64501, Role: RoleBorder, Port: uint16(b.Port()),
					Passive: true, Password: tc.ours, Communities: []string{"65535:666"}}},
			}, testLogger(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			if tc.up {
				b.WaitEstablished(30 * time.Second)
				p := pfx("198.51.100.9/32")
				if err := s.Announce(context.Background(), []netip.Prefix{p}); err != nil {
					t.Fatal(err)
				}
				b.WaitRoute(p, 5*time.Second, nil)
				return
			}
			// The speaker listens (passive): a SYN from BIRD that goes
			// unanswered until BIRD's kernel retransmits it was dropped for
			// its MD5 signature, and so will every later attempt be.
			testkit.WaitFor(t, 10*time.Second, "BIRD's SYN to be dropped (its kernel retransmits it)", func() bool {
				return synRetransmitted(t, rtr, netip.AddrPortFrom(me, uint16(port)))
			})
			if b.Established() {
				t.Fatal("session came up with a wrong MD5 password")
			}
		})
	}
}

// synRetransmitted reports whether a TCP socket from local to remote is in
// SYN-SENT and has retransmitted its SYN (/proc/net/tcp: state 02, a
// retransmit count above 0): nothing answered it, not even a reset.
func synRetransmitted(t testing.TB, local netip.Addr, remote netip.AddrPort) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatalf("reading TCP sockets: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt ...
		f := strings.Fields(line)
		if len(f) < 7 || f[3] != "02" {
			continue
		}
		l, lok := procAddrPort(f[1])
		r, rok := procAddrPort(f[2])
		if lok && rok && l.Addr() == local && r == remote && f[6] != "00000000" {
			return true
		}
	}
	return false
}

// procAddrPort parses an IPv4 "0100007F:00B3" of /proc/net/tcp: the
// address is the in-memory (network order) bytes printed as a host-order
// number, the port a plain number.
func procAddrPort(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	av, err1 := strconv.ParseUint(a, 16, 32)
	pv, err2 := strconv.ParseUint(p, 16, 16)
	if err1 != nil || err2 != nil {
		return netip.AddrPort{}, false
	}
	var ip [4]byte
	binary.NativeEndian.PutUint32(ip[:], uint32(av))
	return netip.AddrPortFrom(netip.AddrFrom4(ip), uint16(pv)), true
}
