package testkit

import (
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"
)

func TestPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		if !Poll(time.Second, func() bool { calls++; return time.Since(start) >= 95*time.Millisecond }) {
			t.Fatal("Poll = false, want true once the condition holds")
		}
		if took := time.Since(start); took != 100*time.Millisecond || calls != 11 {
			t.Errorf("Poll returned after %s and %d checks, want 100ms and 11 (one every %s)", took, calls, PollInterval)
		}

		start, calls = time.Now(), 0
		if Poll(time.Second, func() bool { calls++; return false }) {
			t.Fatal("Poll = true for a condition that never holds")
		}
		if took := time.Since(start); took != time.Second || calls != 101 {
			t.Errorf("Poll gave up after %s and %d checks, want 1s and 101", took, calls)
		}

		// A check that takes longer than PollInterval is followed by a pause
		// as long as it took.
		start, calls = time.Now(), 0
		Poll(time.Second, func() bool { calls++; time.Sleep(40 * time.Millisecond); return calls == 3 })
		if took := time.Since(start); took != 200*time.Millisecond {
			t.Errorf("three 40ms checks took %s, want 200ms (40ms pause after each)", took)
		}

		start, calls = time.Now(), 0
		Poll(time.Second, AtMostEvery(100*time.Millisecond, func() bool { calls++; return calls == 3 }))
		if took := time.Since(start); took != 200*time.Millisecond {
			t.Errorf("three checks at most every 100ms took %s, want 200ms", took)
		}
	})
}

func TestFreePort(t *testing.T) {
	addr := netip.MustParseAddr("127.0.0.1")
	port := FreePort(t, addr)
	ap := netip.AddrPortFrom(addr, uint16(port)).String()
	l, err := net.Listen("tcp", ap)
	if err != nil {
		t.Fatalf("TCP port %d from FreePort: %v", port, err)
	}
	l.Close()
	c, err := net.ListenPacket("udp", ap)
	if err != nil {
		t.Fatalf("UDP port %d from FreePort: %v", port, err)
	}
	c.Close()
}
