package config

import (
	"math"

	"go.yaml.in/yaml/v3"
)

// This file is the schema: one table of keys per section, each key with its
// decoder and per-value checks. Checks that involve several keys are in
// check.go.

const required = true

// section decodes a nested mapping with the given fields; an absent section
// is decoded as empty so that its required keys are reported.
func (d *decoder) section(fields []field) setter {
	return func(n *yaml.Node, path string) { d.mapping(n, path, n.Line, fields) }
}

func (d *decoder) configFields(c *Config) []field {
	return []field{
		{"store", false, d.section([]field{
			{"path", false, d.nonEmpty(&c.Store.Path)},
		})},
		{"bgp", required, d.section(d.bgpFields(&c.BGP))},
		{"policy", false, d.section(d.policyFields(&c.Policy))},
		{"sflow", false, d.section([]field{
			{"listen", false, d.listen(&c.SFlow.Listen, false)},
			{"agents", false, d.prefixes(&c.SFlow.Agents)},
			{"receive_buffer", false, d.intRange(&c.SFlow.ReceiveBuffer, 64<<10, 1<<30)},
		})},
		{"detector", false, d.section(d.detectorFields(&c.Detector))},
		{"reports", false, d.section([]field{
			{"window", false, d.duration(&c.Reports.Window)},
			{"threshold", false, d.fraction(&c.Reports.Threshold, 0, math.MaxFloat64, true)},
			{"ttl", false, d.duration(&c.Reports.TTL)},
		})},
		{"api", false, d.section(d.apiFields(&c.API))},
		{"metrics", false, d.section([]field{
			{"listen", false, d.listen(&c.Metrics.Listen, true)},
		})},
	}
}

func (d *decoder) bgpFields(b *BGP) []field {
	return []field{
		{"asn", required, d.asn(&b.ASN)},
		{"router_id", required, d.addr(&b.RouterID, 4)},
		{"listen_address", false, d.ipLiteral(&b.ListenAddress)},
		{"listen_port", false, d.port(&b.ListenPort)},
		{"next_hop_ipv4", false, d.addr(&b.NextHopV4, 4)},
		{"next_hop_ipv6", false, d.addr(&b.NextHopV6, 6)},
		{"graceful_restart", false, d.boolean(&b.GracefulRestart)},
		{"neighbors", required, func(n *yaml.Node, path string) {
			items, _ := d.sequence(n, path)
			b.Neighbors = nil
			for i, it := range items {
				nb := defaultNeighbor()
				d.mapping(it, index(path, i), it.Line, d.neighborFields(&nb))
				b.Neighbors = append(b.Neighbors, nb)
			}
		}},
	}
}

func (d *decoder) neighborFields(nb *Neighbor) []field {
	return []field{
		{"address", required, d.addr(&nb.Address, 0)},
		{"asn", required, d.asn(&nb.ASN)},
		{"role", required, d.oneOf(&nb.Role, RoleBorder, RolePeer)},
		{"port", false, d.port(&nb.Port)},
		{"passive", false, d.boolean(&nb.Passive)},
		{"multihop", false, d.multihop(&nb.Multihop)},
		{"password", false, d.str(&nb.Password)},
		{"communities", false, d.communities(&nb.Communities, false)},
		{"large_communities", false, d.communities(&nb.LargeCommunities, true)},
		{"max_routes", false, d.intRange(&nb.MaxRoutes, 0, math.MaxInt32)},
	}
}

func (d *decoder) policyFields(p *Policy) []field {
	return []field{
		{"own_prefixes", false, d.prefixes(&p.OwnPrefixes)},
		{"never_blackhole", false, d.prefixes(&p.NeverBlackhole)},
		{"max_active", false, d.intRange(&p.MaxActive, 1, math.MaxInt32)},
		{"default_ttl", false, d.duration(&p.DefaultTTL)},
		{"max_ttl", false, d.duration(&p.MaxTTL)},
		{"min_prefix_len_v4", false, d.intRange(&p.MinPrefixLenV4, 0, 32)},
		{"min_prefix_len_v6", false, d.intRange(&p.MinPrefixLenV6, 0, 128)},
	}
}

func (d *decoder) detectorFields(det *Detector) []field {
	return []field{
		{"subscriber_prefixes", false, d.prefixes(&det.SubscriberPrefixes)},
		{"window", false, d.duration(&det.Window)},
		{"max_tracked_sources", false, d.intRange(&det.MaxTrackedSources, 1, MaxTrackedSources)},
		// Present (even empty) replaces the default smtp-fanout rule.
		{"rules", false, func(n *yaml.Node, path string) {
			items, _ := d.sequence(n, path)
			det.Rules = nil
			for i, it := range items {
				r := defaultRule()
				r.Name = ""
				d.mapping(it, index(path, i), it.Line, d.ruleFields(&r))
				det.Rules = append(det.Rules, r)
			}
		}},
	}
}

func (d *decoder) ruleFields(r *Rule) []field {
	return []field{
		{"name", required, d.nonEmpty(&r.Name)},
		{"protocol", false, d.oneOf(&r.Protocol, ProtocolTCP, ProtocolUDP)},
		{"dst_ports", false, d.ports(&r.DstPorts)},
		{"min_destinations", false, d.intRange(&r.MinDestinations, 1, math.MaxInt32)},
		{"min_packets", false, d.uint64Min(&r.MinPackets, 0)},
		{"exempt", false, d.prefixes(&r.Exempt)},
		{"ttl", false, d.duration(&r.TTL)},
		{"action", false, d.oneOf(&r.Action, ActionBlackhole, ActionLog)},
	}
}

func (d *decoder) apiFields(a *API) []field {
	return []field{
		{"listen", false, d.listen(&a.Listen, false)},
		{"tls", false, d.section([]field{
			{"cert", false, d.str(&a.TLS.Cert)},
			{"key", false, d.str(&a.TLS.Key)},
			{"client_ca", false, d.str(&a.TLS.ClientCA)},
		})},
		{"clients", false, func(n *yaml.Node, path string) {
			items, _ := d.sequence(n, path)
			for i, it := range items {
				cl := defaultClient()
				d.mapping(it, index(path, i), it.Line, d.clientFields(&cl))
				a.Clients = append(a.Clients, cl)
			}
		}},
	}
}

func (d *decoder) clientFields(c *Client) []field {
	return []field{
		{"name", required, d.nonEmpty(&c.Name)},
		{"role", required, d.oneOf(&c.Role, RoleOperator, RolePartner)},
		{"token_sha256", false, d.token(c)},
		{"cert_name", false, d.str(&c.CertName)},
		{"prefixes", false, d.prefixes(&c.Prefixes)},
		{"trust", false, d.fraction(&c.Trust, 0, 1, false)},
		{"rate", false, d.fraction(&c.Rate, 0, math.MaxFloat64, true)},
	}
}
