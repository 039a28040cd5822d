//go:build !linux

package bgp

import "net/netip"

// shutdownSessions is only implemented on Linux; elsewhere Close leaves the
// sessions to the end of the process (see Speaker.Close).
func shutdownSessions(map[netip.Addr]uint16, int) int { return -1 }
