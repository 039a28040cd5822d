//go:build linux

package bgp

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// shutdownSessions shuts down (FIN, without a BGP NOTIFICATION) the TCP
// sockets of this process that carry sessions to the given neighbors: those
// whose remote end is a neighbor's address and port (we connected out) or
// whose local port is our listen port (the neighbor connected in). GoBGP
// keeps its connections to itself, so they are found through /proc/self/fd.
// It returns the number of sockets shut down.
func shutdownSessions(neighbors map[netip.Addr]uint16, listenPort int) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		if typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE); err != nil || typ != syscall.SOCK_STREAM {
			continue
		}
		peerSA, err := syscall.Getpeername(fd)
		if err != nil {
			continue // a listener or not connected
		}
		localSA, err := syscall.Getsockname(fd)
		if err != nil {
			continue
		}
		peer, peerPort, ok1 := sockaddr(peerSA)
		_, localPort, ok2 := sockaddr(localSA)
		if !ok1 || !ok2 {
			continue
		}
		port, isNeighbor := neighbors[peer]
		if !isNeighbor || (peerPort != int(port) && (listenPort <= 0 || localPort != listenPort)) {
			continue
		}
		if syscall.Shutdown(fd, syscall.SHUT_RDWR) == nil {
			n++
		}
	}
	return n
}

func sockaddr(sa syscall.Sockaddr) (netip.Addr, int, bool) {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrFrom4(a.Addr), a.Port, true
	case *syscall.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap(), a.Port, true
	}
	return netip.Addr{}, 0, false
}
