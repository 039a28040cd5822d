//go:build linux

package bgp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rtbh/rtbh/bgp/routertest"
)

// TestMD5Password: a session with a TCP MD5 password comes up with BIRD
// using the same password, and does not with a wrong one.
func TestMD5Password(t *testing.T) {
	if err := probeTCPMD5(); err != nil {
		t.Skipf("this kernel cannot do TCP MD5 (TCP_MD5SIG: %v): nothing to test", err)
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

// probeTCPMD5 sets a TCP_MD5SIG key on a loopback listener, as GoBGP and
// BIRD do; kernels built without CONFIG_TCP_MD5SIG refuse it.
func probeTCPMD5() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		sig := unix.TCPMD5Sig{Keylen: 4}
		copy(sig.Key[:], "test")
		sig.Addr.Family = unix.AF_INET
		copy(sig.Addr.Data[2:6], []byte{127, 0, 0, 2})
		serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
	})
	return errors.Join(err, serr)
}
