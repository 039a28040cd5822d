package sflow

import (
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oobSize holds one SO_RXQ_OVFL control message per datagram.
var oobSize = unix.CmsgSpace(4) * 2

// setReceiveBuffer asks for size bytes of receive buffer, bypassing
// net.core.rmem_max when privileged (SO_RCVBUFFORCE), and returns what
// the kernel granted. Linux reports twice the usable size; the result is
// halved so it compares with the request.
func setReceiveBuffer(conn *net.UDPConn, size int) (int, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("getting raw socket: %w", err)
	}
	var got int
	var serr error
	err = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size); serr != nil {
				return
			}
		}
		got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	if err != nil {
		return 0, fmt.Errorf("controlling socket: %w", err)
	}
	if serr != nil {
		return 0, fmt.Errorf("setting SO_RCVBUF: %w", serr)
	}
	return got / 2, nil
}

// enableDropCounter asks the kernel to attach its count of datagrams
// dropped on this socket to every received datagram (SO_RXQ_OVFL).
func enableDropCounter(conn *net.UDPConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("getting raw socket: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
	}); err != nil {
		return fmt.Errorf("controlling socket: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("setting SO_RXQ_OVFL: %w", serr)
	}
	return nil
}

// dropCounter extracts the SO_RXQ_OVFL counter from a datagram's control
// messages without allocating.
func dropCounter(oob []byte) (uint32, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, false
		}
		data := oob[unix.CmsgLen(0):l]
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4 {
			return *(*uint32)(unsafe.Pointer(&data[0])), true
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			return 0, false
		}
		oob = oob[next:]
	}
	return 0, false
}
