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

// mmsgBufs are the recvmmsg(2) headers and buffers of one batch, shared
// by the blocking and the poller readers: allocated once, reused for
// every batch.
type mmsgBufs struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  []byte
	oob   []byte
	size  int
}

func (b *mmsgBufs) init(batch, size int) {
	b.hdrs = make([]mmsghdr, batch)
	b.iovs = make([]unix.Iovec, batch)
	b.names = make([]unix.RawSockaddrInet6, batch)
	b.bufs = make([]byte, batch*size)
	b.oob = make([]byte, batch*oobSize)
	b.size = size
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i*size]
		b.iovs[i].SetLen(size)
		h := &b.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		if oobSize > 0 {
			h.Control = &b.oob[i*oobSize]
		}
	}
}

// recvmmsg calls recvmmsg(2) on fd with flags, after resetting the
// in/out fields of the headers.
func (b *mmsgBufs) recvmmsg(fd uintptr, flags int) (int, syscall.Errno) {
	for i := range b.hdrs {
		h := &b.hdrs[i].hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(oobSize)
		h.Flags = 0
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])),
		uintptr(len(b.hdrs)), uintptr(flags), 0, 0)
	return int(n), e
}

func (b *mmsgBufs) datagram(i int) ([]byte, netip.Addr, uint32, bool) {
	m := &b.hdrs[i]
	l := min(int(m.len), b.size)
	payload := b.bufs[i*b.size : i*b.size+l]
	if m.hdr.Flags&unix.MSG_TRUNC != 0 {
		payload = b.bufs[i*b.size : (i+1)*b.size]
	}
	var src netip.Addr
	sa := &b.names[i]
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
		drops, ok = dropCounter(b.oob[i*oobSize : i*oobSize+int(m.hdr.Controllen)])
	}
	return payload, src, drops, ok
}

// newReader returns the blocking recvmmsg reader (see reader_block.go)
// and falls back to the poller one when the socket cannot be set up for
// it.
func newReader(conn *net.UDPConn, batch, size int) (datagramReader, error) {
	r, err := newBlockingReader(conn, batch, size)
	if err == nil {
		return r, nil
	}
	pr, perr := newPollReader(conn, batch, size)
	if perr != nil {
		return nil, fmt.Errorf("%w (blocking reader: %v)", perr, err)
	}
	return pr, nil
}

// pollReader calls recvmmsg(2) directly on the socket through the
// runtime poller: no allocation per batch or per datagram, and the
// source address is read straight from the sockaddr. A wake-up costs
// recvmmsg (EAGAIN), the poller's epoll_wait and recvmmsg again; it is
// the fallback of the blocking reader.
type pollReader struct {
	mmsgBufs
	conn *net.UDPConn
	rc   syscall.RawConn

	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool
}

func newPollReader(conn *net.UDPConn, batch, size int) (*pollReader, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("getting raw socket: %w", err)
	}
	r := &pollReader{conn: conn, rc: rc}
	r.init(batch, size)
	r.readFn = r.read
	return r, nil
}

func (r *pollReader) read(fd uintptr) bool {
	n, e := r.recvmmsg(fd, unix.MSG_DONTWAIT)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false // wait for the poller
	}
	r.n, r.errno = n, e
	return true
}

func (r *pollReader) readBatch() (int, error) {
	if err := r.rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, fmt.Errorf("recvmmsg: %w", r.errno)
	}
	return r.n, nil
}

func (r *pollReader) close()   { r.conn.Close() }
func (r *pollReader) release() { r.conn.Close() }
