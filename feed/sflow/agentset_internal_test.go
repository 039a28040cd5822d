package sflow

import (
	"net/netip"
	"testing"
)

// The agent filter: with no agents configured only loopback sources are
// accepted, so a collector listening on every address takes nothing from
// the network until agents are listed; listed agents replace the default.
func TestAgentSet(t *testing.T) {
	listed := []netip.Prefix{netip.MustParsePrefix("192.0.2.11/32"), netip.MustParsePrefix("2001:db8:a::/48")}
	for _, tc := range []struct {
		src         string
		empty, list bool // accepted with no agents, with listed
	}{
		{"127.0.0.1", true, false},
		{"127.255.0.9", true, false},
		{"::1", true, false},
		{"::ffff:127.0.0.1", true, false}, // an IPv4 agent on a dual-stack socket
		{"192.0.2.11", false, true},
		{"192.0.2.12", false, false},
		{"10.0.0.1", false, false},
		{"2001:db8:a::7", false, true},
		{"2001:db8:b::7", false, false},
		{"::2", false, false},
		{"0.0.0.0", false, false},
	} {
		src := netip.MustParseAddr(tc.src)
		if got := agentSet(nil).Contains(src); got != tc.empty {
			t.Errorf("no agents: %s accepted = %v, want %v", src, got, tc.empty)
		}
		if got := agentSet([]netip.Prefix{}).Contains(src); got != tc.empty {
			t.Errorf("agents []: %s accepted = %v, want %v", src, got, tc.empty)
		}
		if got := agentSet(listed).Contains(src); got != tc.list {
			t.Errorf("agents %v: %s accepted = %v, want %v", listed, src, got, tc.list)
		}
	}
}
