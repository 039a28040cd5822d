//go:build linux

package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp/routertest"
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
			port := routertest.FreePort(t, me)
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
			if routertest.Poll(4*time.Second, b.Established) {
				t.Fatal("session came up with a wrong MD5 password")
			}
		})
	}
}
