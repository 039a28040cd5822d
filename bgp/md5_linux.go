package bgp

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// tcpMD5Supported sets a TCP_MD5SIG key on a loopback listener, as GoBGP and
// BIRD do; kernels built without CONFIG_TCP_MD5SIG refuse it.
func tcpMD5Supported() error {
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
