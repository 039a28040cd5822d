//go:build linux && (amd64 || arm64 || ppc64le || ppc64 || riscv64 || s390x || loong64 || mips64 || mips64le)

package sflow

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr on 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// mmsgReader calls recvmmsg(2) directly on the socket through the
// runtime poller: no allocation per batch or per datagram, and the
// source address is read straight from the sockaddr.
type mmsgReader struct {
	rc    syscall.RawConn
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  []byte
	oob   []byte
	size  int

	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool
}

func newReader(conn *net.UDPConn, batch, size int) (datagramReader, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("getting raw socket: %w", err)
	}
	r := &mmsgReader{
		rc:    rc,
		hdrs:  make([]mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet6, batch),
		bufs:  make([]byte, batch*size),
		oob:   make([]byte, batch*oobSize),
		size:  size,
	}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.bufs[i*size]
		r.iovs[i].SetLen(size)
		h := &r.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		if oobSize > 0 {
			h.Control = &r.oob[i*oobSize]
		}
	}
	r.readFn = r.recvmmsg
	return r, nil
}

func (r *mmsgReader) recvmmsg(fd uintptr) bool {
	for i := range r.hdrs {
		h := &r.hdrs[i].hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(oobSize)
		h.Flags = 0
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])),
		uintptr(len(r.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false // wait for the poller
	}
	r.n, r.errno = int(n), e
	return true
}

func (r *mmsgReader) readBatch() (int, error) {
	if err := r.rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, fmt.Errorf("recvmmsg: %w", r.errno)
	}
	return r.n, nil
}

func (r *mmsgReader) datagram(i int) ([]byte, netip.Addr, uint32, bool) {
	m := &r.hdrs[i]
	l := min(int(m.len), r.size)
	payload := r.bufs[i*r.size : i*r.size+l]
	if m.hdr.Flags&unix.MSG_TRUNC != 0 {
		payload = r.bufs[i*r.size : (i+1)*r.size]
	}
	var src netip.Addr
	sa := &r.names[i]
	switch sa.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		src = netip.AddrFrom4(p.Addr)
	case unix.AF_INET6:
		src = netip.AddrFrom16(sa.Addr).Unmap()
	}
	var drops uint32
	var ok bool
	if oobSize > 0 {
		drops, ok = dropCounter(r.oob[i*oobSize : i*oobSize+int(m.hdr.Controllen)])
	}
	return payload, src, drops, ok
}
