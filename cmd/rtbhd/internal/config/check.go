package config

import (
	"net"
	"net/netip"
	"time"
)

// checks are the rules that involve more than one key. They run even when
// some keys were bad (so that every problem is reported at once), and skip
// values that failed to decode: those keep their defaults or zero values.
var checks = []struct {
	name string
	fn   func(d *decoder, c *Config)
}{
	{"ttl order", checkTTLs},
	{"unique neighbors", checkNeighbors},
	{"unique rule names", checkRules},
	{"api tls", checkTLS},
	{"api clients", checkClients},
}

func (d *decoder) check(c *Config) {
	for _, ch := range checks {
		ch.fn(d, c)
	}
}

func checkTTLs(d *decoder, c *Config) {
	if d.failed("policy.default_ttl") || d.failed("policy.max_ttl") {
		return
	}
	if c.Policy.DefaultTTL > c.Policy.MaxTTL {
		d.errAt("policy.default_ttl", "%s is longer than policy.max_ttl (%s)", c.Policy.DefaultTTL, c.Policy.MaxTTL)
	}
}

func checkNeighbors(d *decoder, c *Config) {
	first := make(map[netip.Addr]int)
	for i, nb := range c.BGP.Neighbors {
		if nb.Passive && c.BGP.ListenAddress == "" && !d.failed("bgp.listen_address") {
			d.errAt(index("bgp.neighbors", i)+".passive", `waits for the router, but bgp.listen_address is "" (rtbhd does not listen)`)
		}
		if nb.Multihop > 0 && nb.ASN == c.BGP.ASN && nb.ASN != 0 {
			d.errAt(index("bgp.neighbors", i)+".multihop", "only for eBGP neighbors (asn %d is bgp.asn: iBGP)", nb.ASN)
		}
		if !nb.Address.IsValid() {
			continue
		}
		if nb.Address.Zone() != "" {
			d.errAt(index("bgp.neighbors", i)+".address", "%s: zones are not allowed", nb.Address)
			continue
		}
		if j, dup := first[nb.Address]; dup {
			d.errAt(index("bgp.neighbors", i)+".address", "%s is already bgp.neighbors[%d]", nb.Address, j)
			continue
		}
		first[nb.Address] = i
	}
}

// MaxTrackedSources bounds detector.max_tracked_sources (about 200 bytes
// each: 100 million is ~20 GB).
const MaxTrackedSources = 100_000_000

// MaxRules is the most detector rules a config may hold.
const MaxRules = 255

// MinWindow is the shortest detector.window.
const MinWindow = time.Second

func checkRules(d *decoder, c *Config) {
	if w := c.Detector.Window; w > 0 && w < MinWindow {
		d.errAt("detector.window", "%s is shorter than %s", w, MinWindow)
	}
	if n := len(c.Detector.Rules); n > MaxRules {
		d.errAt("detector.rules", "%d rules, at most %d allowed", n, MaxRules)
	}
	first := make(map[string]int)
	for i, r := range c.Detector.Rules {
		if r.Name == "" {
			continue
		}
		if j, dup := first[r.Name]; dup {
			d.errAt(index("detector.rules", i)+".name", "%q is already the name of detector.rules[%d]", r.Name, j)
			continue
		}
		first[r.Name] = i
	}
}

// isLoopback reports whether a host:port listen address is on loopback only.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func checkTLS(d *decoder, c *Config) {
	t := c.API.TLS
	switch {
	case t.Cert == "" && !isLoopback(c.API.Listen):
		line := d.lineOf("api.listen")
		if d.seen["api.tls.cert"] {
			line = d.lineOf("api.tls.cert")
		}
		d.errorf("api.tls.cert", line, "required: api.listen %q is not a loopback address", c.API.Listen)
	case t.Cert != "" && t.Key == "":
		d.errAt("api.tls.key", "required with api.tls.cert")
	}
	if t.Key != "" && t.Cert == "" && isLoopback(c.API.Listen) {
		d.errAt("api.tls.cert", "required with api.tls.key")
	}
	if t.ClientCA != "" && t.Cert == "" && isLoopback(c.API.Listen) {
		d.errAt("api.tls.client_ca", "needs api.tls.cert and api.tls.key (mTLS is TLS)")
	}
}

func checkClients(d *decoder, c *Config) {
	names := make(map[string]int)
	tokens := make(map[[32]byte]int)
	certs := make(map[string]int)
	for i, cl := range c.API.Clients {
		p := index("api.clients", i)
		if cl.Name == "" {
			// missing or bad: already reported
		} else if j, dup := names[cl.Name]; dup {
			d.errAt(p+".name", "%q is already the name of api.clients[%d]", cl.Name, j)
		} else {
			names[cl.Name] = i
		}
		if !cl.HasToken && cl.CertName == "" && !d.failed(p+".token_sha256") && !d.failed(p+".cert_name") {
			d.errAt(p, "needs token_sha256 or cert_name")
		}
		if cl.HasToken {
			if j, dup := tokens[cl.TokenSHA256]; dup {
				d.errAt(p+".token_sha256", "same token as api.clients[%d]", j)
			} else {
				tokens[cl.TokenSHA256] = i
			}
		}
		if cl.CertName != "" {
			if c.API.TLS.ClientCA == "" {
				d.errAt(p+".cert_name", "needs api.tls.client_ca (client certificates)")
			}
			if j, dup := certs[cl.CertName]; dup {
				d.errAt(p+".cert_name", "%q is already the cert_name of api.clients[%d]", cl.CertName, j)
			} else {
				certs[cl.CertName] = i
			}
		}
		if cl.Role == RoleOperator {
			for _, k := range []string{"prefixes", "trust"} {
				if d.seen[p+"."+k] {
					d.errAt(p+"."+k, "only for role %s (this client is %s)", RolePartner, cl.Role)
				}
			}
		}
	}
}
