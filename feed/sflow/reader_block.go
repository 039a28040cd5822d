//go:build linux && (amd64 || arm64 || ppc64le || ppc64 || riscv64 || s390x || loong64 || mips64 || mips64le)

package sflow

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// maxPause bounds the pause between two reads (see plan) and so the
// latency it adds; minPause is the shortest pause worth a nanosleep.
const (
	maxPause = 4 * time.Millisecond
	minPause = 50 * time.Microsecond
)

// blockTimeout bounds one blocking recvmmsg (SO_RCVTIMEO) so that the
// reader notices close even if the shutdown(2) wake-up were lost.
const blockTimeout = 100 * time.Millisecond

// blockingReader reads with blocking recvmmsg(2) and MSG_WAITFORONE on
// its own descriptor of the socket, which is taken out of the runtime
// poller: a wake-up is one syscall that sleeps in the kernel until the
// first datagram arrives and then takes whatever else is queued, instead
// of recvmmsg (EAGAIN) + the poller's epoll_wait + recvmmsg. The
// goroutine's M blocks in the syscall (entersyscall); the runtime leaves
// its P in _Psyscall (sysmon hands it off only when other goroutines need
// it, or after 10 ms when another P is idle) and the M takes it back on
// return (exitsyscall fast path) without a scheduler round trip. The
// goroutine is not locked to its thread: it stays on its M anyway while
// it blocks in syscalls, and a locked goroutine that waits on a mutex
// (the decoder's, the sink's) costs a thread hand-off.
//
// Blocking alone wakes the reader sooner, so it reads fewer datagrams per
// wake-up than through the poller; the pause of plan (a nanosleep in the
// same syscall state, not a Go timer) is what brings wake-ups per
// datagram down (see the package documentation for figures).
type blockingReader struct {
	mmsgBufs

	mu     sync.Mutex // guards fd against close(2) while close shuts it down
	fd     int        // -1 once released
	closed atomic.Bool

	ts     unix.Timespec // nanosleep argument
	wakeAt time.Time     // end of the pause before the next read
	since  time.Time     // start of the current rate estimate
	got    int           // datagrams read since then
}

// newBlockingReader duplicates conn's descriptor, closes conn (which
// removes the socket from the runtime poller, so that arriving datagrams
// do not also wake an idle M's epoll_wait; the duplicate keeps the socket
// open and bound) and makes the socket blocking with a receive timeout.
// conn's LocalAddr stays valid. On error conn is left as it was.
func newBlockingReader(conn *net.UDPConn, batch, size int) (*blockingReader, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("getting raw socket: %w", err)
	}
	fd := -1
	var serr error
	if err := rc.Control(func(s uintptr) {
		fd, serr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("controlling socket: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("duplicating socket: %w", serr)
	}
	tv := unix.NsecToTimeval(blockTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("setting SO_RCVTIMEO: %w", err)
	}
	conn.Close()
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("making socket blocking: %w", err)
	}
	r := &blockingReader{fd: fd}
	r.init(batch, size)
	return r, nil
}

func (r *blockingReader) readBatch() (int, error) {
	if !r.wakeAt.IsZero() {
		if d := time.Until(r.wakeAt); d >= minPause {
			r.ts = unix.NsecToTimespec(d.Nanoseconds())
			unix.Nanosleep(&r.ts, nil)
		}
		r.wakeAt = time.Time{}
	}
	for {
		if r.closed.Load() {
			r.release()
			return 0, net.ErrClosed
		}
		n, e := r.recvmmsg(uintptr(r.fd), unix.MSG_WAITFORONE)
		switch e {
		case 0:
			if r.closed.Load() {
				continue
			}
			r.plan(n)
			return n, nil
		case unix.EAGAIN, unix.EINTR: // SO_RCVTIMEO expired, or a signal
			continue
		default:
			return 0, fmt.Errorf("recvmmsg: %w", e)
		}
	}
}

// plan decides, after a recvmmsg returned n datagrams, how long to
// pause before the next one: long enough for about a batch to queue up,
// estimated from the datagrams read since the previous partial batch,
// and at most maxPause. A full batch means a backlog: read again at once.
// A lone datagram means a trickle: block again at once (one wake-up per
// datagram costs nothing at such rates, and adds no latency).
func (r *blockingReader) plan(n int) {
	r.got += n
	if n >= len(r.hdrs) {
		return
	}
	now := time.Now()
	since, got := r.since, r.got
	r.since, r.got = now, 0
	if got < 2 || since.IsZero() {
		return
	}
	d := now.Sub(since) * time.Duration(len(r.hdrs)) / time.Duration(got)
	r.wakeAt = now.Add(min(d, maxPause))
}

// close makes a readBatch in progress (woken by shutdown(2)) or to come
// return net.ErrClosed. Any goroutine may call it.
func (r *blockingReader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Swap(true) || r.fd < 0 {
		return
	}
	// On an unconnected UDP socket shutdown fails with ENOTCONN but
	// still marks it shut for reading and wakes blocked receivers.
	unix.Shutdown(r.fd, unix.SHUT_RD)
}

// release closes the socket. It must not run concurrently with
// readBatch.
func (r *blockingReader) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed.Store(true)
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}
