// Package testkit holds the generic helpers that the tests of every rtbh
// package share: waiting for a condition with a deadline (WaitFor, Poll)
// and picking a free port (FreePort). It is the one copy of them; router
// helpers live in bgp/routertest, sFlow helpers in feed/sflow/sflowtest.
// Like package domain beside it, it imports nothing of rtbh, so the tests
// of every layer can use it (the repository's top-level folders are fixed,
// so it cannot be a top-level internal/ package).
//
// No helper here sleeps to wait for something: a wait polls a condition
// until it holds or a deadline passes. Code driven by time itself is
// tested under testing/synctest with fake time; Poll works inside a
// synctest bubble too (its timer then runs on the bubble's clock).
package testkit

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// PollInterval is the shortest pause between two checks of Poll's
// condition. It paces the re-checks of a polling loop that has a deadline;
// nothing waits on it for something to happen.
const PollInterval = 10 * time.Millisecond

// WaitFor checks cond until it returns true, and fails the test with what
// when it has not after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Poll checks cond until it returns true (Poll returns true) or timeout
// has passed (false; cond is checked one last time at the deadline).
// Checks are paced by a time.Timer: the pause after a check is
// PollInterval, or as long as the check took when that was longer, so a
// costly condition (a router's CLI, a big table walk) keeps at most half
// a core busy.
func Poll(timeout time.Duration, cond func() bool) bool {
	end := time.Now().Add(timeout)
	pause := time.NewTimer(0)
	defer pause.Stop()
	<-pause.C
	for {
		start := time.Now()
		if cond() {
			return true
		}
		left := time.Until(end)
		if left <= 0 {
			return false
		}
		// The last pause ends at the deadline, for the last check.
		pause.Reset(min(max(PollInterval, time.Since(start)), left))
		<-pause.C
	}
}

// AtMostEvery returns cond limited to one check per d: a call less than d
// after the last check returns false without checking. It is for
// conditions too costly to check every PollInterval (walking a table of
// 100,000 routes, scraping a daemon whose CPU time is being measured). The
// final check of Poll at its deadline may be one of the skipped calls:
// give the wait a timeout well above d.
func AtMostEvery(d time.Duration, cond func() bool) func() bool {
	var last time.Time
	return func() bool {
		if !last.IsZero() && time.Since(last) < d {
			return false
		}
		last = time.Now()
		return cond()
	}
}

// FreePort returns a port that was free on addr for both TCP and UDP at
// the time of the call (so one helper serves BGP, gRPC and HTTP listeners
// as well as sFlow sockets).
//
// The port is drawn at random from below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), and never twice in one test binary: a
// port the kernel picked for a listen on port 0 lies inside that range, so
// between this call and the listen that uses it an outgoing connection of
// the same test (a client's, BIRD's) could take it as its source port —
// a flake seen as "bind: address already in use". Where the range leaves
// too little room below it, the kernel's own pick is the fallback.
func FreePort(t testing.TB, addr netip.Addr) int {
	t.Helper()
	lo, hi := portPool()
	var err error
	for range 200 {
		port := 0
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
			portsMu.Lock()
			taken := portsGiven[port]
			portsMu.Unlock()
			if taken {
				continue
			}
		}
		var l net.Listener
		l, err = net.Listen("tcp", netip.AddrPortFrom(addr, uint16(port)).String())
		if err != nil {
			continue
		}
		port = l.Addr().(*net.TCPAddr).Port
		var c net.PacketConn
		c, err = net.ListenPacket("udp", netip.AddrPortFrom(addr, uint16(port)).String())
		l.Close()
		if err != nil {
			continue
		}
		c.Close()
		portsMu.Lock()
		taken := portsGiven[port]
		portsGiven[port] = true
		portsMu.Unlock()
		if !taken {
			return port
		}
	}
	t.Fatalf("finding a free port on %s: %v", addr, err)
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// portPool is the range FreePort draws from: [10000, the first ephemeral
// port), or an empty range when that leaves fewer than 2,000 ports.
func portPool() (lo, hi int) {
	lo, hi = 10000, 32768 // Linux's default ephemeral range starts at 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if first, err := strconv.Atoi(f[0]); err == nil {
				hi = first
			}
		}
	}
	if hi-lo < 2000 {
		return 0, 0
	}
	return lo, hi
}
