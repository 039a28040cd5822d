package app

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/cmd/rtbhd/internal/config"
)

// Every address SPEC "Safety defaults and limits" names is protected,
// labelled; wildcard listen addresses are not addresses.
func TestProtection(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"everything named", `
bgp:
  asn: 64500
  router_id: 192.0.2.254
  listen_address: 192.0.2.250
  next_hop_ipv4: 192.0.2.66
  next_hop_ipv6: 2001:db8:ffff::1
  neighbors:
    - {address: 192.0.2.2, asn: 64501, role: border}
    - {address: "2001:db8::2", asn: 64502, role: peer}
sflow:
  listen: 192.0.2.251:6343
  agents: [192.0.2.11, 10.1.0.0/16, "2001:db8:a::1"]
api:
  listen: "[2001:db8::250]:50051"
  tls: {cert: c.pem, key: k.pem}
metrics:
  listen: localhost:9180
web:
  listen: 192.0.2.252:8443
  tls: {cert: c.pem, key: k.pem}
`, []string{
			"BGP router id 192.0.2.254", "BGP neighbor 192.0.2.2", "BGP neighbor 2001:db8::2",
			"IPv4 next hop 192.0.2.66", "IPv6 next hop 2001:db8:ffff::1", "bgp.listen_address 192.0.2.250",
			"api.listen 2001:db8::250", "metrics.listen 127.0.0.1", "metrics.listen ::1", "sflow.listen 192.0.2.251",
			"web.listen 192.0.2.252", "sFlow agent 192.0.2.11", "sFlow agent 10.1.0.0/16", "sFlow agent 2001:db8:a::1",
		}},
		{"wildcards and off", `
bgp:
  asn: 64500
  router_id: 192.0.2.254
  listen_address: "::"
  neighbors: []
sflow:
  listen: ":6343"
  agents: [192.0.2.11]
api:
  listen: 0.0.0.0:50051
  tls: {cert: c.pem, key: k.pem}
metrics:
  listen: ""
web:
  listen: 0.0.0.0:8443
  tls: {cert: c.pem, key: k.pem}
`, []string{"BGP router id 192.0.2.254", "IPv4 next hop 192.0.2.1", "IPv6 next hop 100::1", "sFlow agent 192.0.2.11"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range protection(cfg).Entries() {
				got = append(got, e.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("protected (-want +got):\n%s", diff)
			}
			// policy carries it to the decision path.
			if _, ok := policy(cfg).Protected.Overlapping(netip.MustParsePrefix("192.0.2.254/32")); !ok {
				t.Error("policy(cfg) does not protect the router id")
			}
		})
	}
}
