package routertest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNeighborGR(t *testing.T) {
	const head = `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
rtbh       BGP        ---        up     21:12:15.622  Established
  BGP state:          Established
    Neighbor address: 127.0.20.15
    Local capabilities
      Multiprotocol
        AF announced: ipv4 ipv6
      Graceful restart
        Restart time: 120
        AF supported: ipv4 ipv6
        AF preserved:
      Long-lived graceful restart
        LL stale time: 3600
        AF supported: ipv4 ipv6
        AF preserved:
    Neighbor capabilities
      Multiprotocol
        AF announced: ipv4 ipv6
      Route refresh
      Extended next hop
        IPv6 nexthop: ipv4
`
	const tail = `      4-octet AS numbers
      Hostname: vm
    Session:          external multihop AS4
    Source address:   127.0.20.14
  Channel ipv4
    State:          UP
`
	for _, tc := range []struct {
		name, caps string
		want       GracefulRestartCaps
	}{
		{"restarting, LLGR", `      Graceful restart
        Restart time: 90
        Restart recovery
        AF supported: ipv4 ipv6
        AF preserved: ipv4 ipv6
      Long-lived graceful restart
        LL stale time: 86400
        AF supported: ipv4 ipv6
        AF preserved: ipv4 ipv6
`, GracefulRestartCaps{RestartTime: 90, Recovery: true, Preserved: []string{"ipv4", "ipv6"},
			LLStaleTime: 86400, LLPreserved: []string{"ipv4", "ipv6"}}},
		{"fresh start", `      Graceful restart
        Restart time: 120
        AF supported: ipv4 ipv6
        AF preserved:
`, GracefulRestartCaps{RestartTime: 120, Preserved: []string{}, LLStaleTime: -1}},
		{"no graceful restart", ``, GracefulRestartCaps{RestartTime: -1, LLStaleTime: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, parseNeighborGR(head+tc.caps+tail)); diff != "" {
				t.Errorf("parseNeighborGR (-want +got):\n%s", diff)
			}
		})
	}
}
