package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/fanout"
	"github.com/rtbh/rtbh/feed/api"
)

// validate is the one pass over the decoded Config for the rules that
// involve several keys. It runs even when some keys
// were bad, so that every problem is reported at once, and skips values
// that failed to decode: those keep their defaults.
func (d *decoder) validate(c *Config) {
	if !d.failed("policy.default_ttl") && !d.failed("policy.max_ttl") && c.Policy.DefaultTTL > c.Policy.MaxTTL {
		d.errAt("policy.default_ttl", "%s is longer than policy.max_ttl (%s)", c.Policy.DefaultTTL, c.Policy.MaxTTL)
	}
	// Reports deleted by the retention would not count after a restart.
	if !d.failed("store.retention") && !d.failed("reports.window") && c.Store.Retention < c.Reports.Window {
		d.errAt("store.retention", "%s is shorter than reports.window (%s)", c.Store.Retention, c.Reports.Window)
	}
	d.neighbors(c)
	d.rules(c)
	d.sflowAgents(c)
	d.tls(c)
	d.webTLS(c)
	d.clients(c)
	d.store(c)
}

// webTLS: the console's login token and session cookie never cross a
// network in plaintext.
func (d *decoder) webTLS(c *Config) {
	w := c.Web
	if d.failed("web.listen") {
		return
	}
	switch {
	case w.Listen != "" && w.TLS.Cert == "" && !api.IsLoopback(w.Listen):
		line := d.lineOf("web.listen")
		if d.seen["web.tls.cert"] {
			line = d.lineOf("web.tls.cert")
		}
		d.errorf("web.tls.cert", line, "required: web.listen %q is not a loopback address", w.Listen)
	case w.TLS.Cert != "" && w.TLS.Key == "":
		d.errAt("web.tls.key", "required with web.tls.cert")
	case w.TLS.Key != "" && w.TLS.Cert == "":
		d.errAt("web.tls.cert", "required with web.tls.key")
	}
}

// sflowAgents: with no agents listed the collector accepts only loopback
// sources, so a collector listening beyond loopback would drop every
// datagram; the file must say which agents to accept.
func (d *decoder) sflowAgents(c *Config) {
	if len(c.SFlow.Agents) > 0 || api.IsLoopback(c.SFlow.Listen) || d.failed("sflow.listen") || d.failed("sflow.agents") {
		return
	}
	line := d.lineOf("sflow.listen")
	if d.seen["sflow.agents"] {
		line = d.lineOf("sflow.agents")
	}
	d.errorf("sflow.agents", line, "required when sflow.listen is not a loopback address")
}

func (d *decoder) neighbors(c *Config) {
	first := make(map[netip.Addr]int)
	for i, nb := range c.BGP.Neighbors {
		p := index("bgp.neighbors", i)
		if nb.Passive && c.BGP.ListenAddress == "" && !d.failed("bgp.listen_address") {
			d.errAt(p+".passive", `waits for the router, but bgp.listen_address is "" (rtbhd does not listen)`)
		}
		if nb.MaxFlowSpec > 0 && !nb.FlowSpec {
			d.errAt(p+".max_flowspec", "caps FlowSpec filters, but flowspec is not true for this neighbor")
		}
		if nb.Multihop > 0 && nb.ASN == c.BGP.ASN && nb.ASN != 0 {
			d.errAt(p+".multihop", "only for eBGP neighbors (asn %d is bgp.asn: iBGP)", nb.ASN)
		}
		if !nb.Address.IsValid() {
			continue
		}
		if j, dup := first[nb.Address]; dup {
			d.errAt(p+".address", "%s is already bgp.neighbors[%d]", nb.Address, j)
			continue
		}
		first[nb.Address] = i
	}
}

func (d *decoder) rules(c *Config) {
	if w := c.Detector.Window; w > 0 && w < fanout.MinWindow {
		d.errAt("detector.window", "%s is shorter than %s", w, fanout.MinWindow)
	}
	if n := len(c.Detector.Rules); n > fanout.MaxRules {
		d.errAt("detector.rules", "%d rules, at most %d allowed", n, fanout.MaxRules)
	}
	first := make(map[string]int)
	for i, r := range c.Detector.Rules {
		p := index("detector.rules", i)
		if r.Name == "" {
			continue
		}
		if r.Action == fanout.ActionFlowSpec && len(r.DstPorts) > 0 && !d.failed(p+".dst_ports") {
			// The rule's protocol and ports become each filter's match.
			proto, _ := domain.ParseProtocol(r.Protocol)
			rs := make([]domain.PortRange, len(r.DstPorts))
			for j, port := range r.DstPorts {
				rs[j] = domain.PortRange{First: port, Last: port}
			}
			if _, err := domain.NewFlowMatch(proto, rs); err != nil && proto != 0 {
				d.errAt(p+".dst_ports", "action flowspec: %v", err)
			}
		}
		if j, dup := first[r.Name]; dup {
			d.errAt(p+".name", "%q is already the name of detector.rules[%d]", r.Name, j)
			continue
		}
		first[r.Name] = i
	}
}

func (d *decoder) tls(c *Config) {
	t, loopback := c.API.TLS, api.IsLoopback(c.API.Listen)
	switch {
	case t.Cert == "" && !loopback:
		line := d.lineOf("api.listen")
		if d.seen["api.tls.cert"] {
			line = d.lineOf("api.tls.cert")
		}
		d.errorf("api.tls.cert", line, "required: api.listen %q is not a loopback address", c.API.Listen)
	case t.Cert != "" && t.Key == "":
		d.errAt("api.tls.key", "required with api.tls.cert")
	}
	if t.Key != "" && t.Cert == "" && loopback {
		d.errAt("api.tls.cert", "required with api.tls.key")
	}
	if t.ClientCA != "" && t.Cert == "" && loopback {
		d.errAt("api.tls.client_ca", "needs api.tls.cert and api.tls.key (mTLS is TLS)")
	}
}

func (d *decoder) clients(c *Config) {
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
		if cl.Role == domain.RoleOperator {
			for _, k := range []string{"prefixes", "trust"} {
				if d.seen[p+"."+k] {
					d.errAt(p+"."+k, "only for role %s (this client is %s)", domain.RolePartner, cl.Role)
				}
			}
		}
	}
}

// errAt reports a problem at path, with the line of path or of its closest
// enclosing key found in the file.
func (d *decoder) errAt(path string, format string, args ...any) {
	d.errorf(path, d.lineOf(path), format, args...)
}

// failed reports whether a problem was already recorded at path or below it.
func (d *decoder) failed(path string) bool {
	for _, e := range d.errs {
		if e.Path == path || strings.HasPrefix(e.Path, path+".") || strings.HasPrefix(e.Path, path+"[") {
			return true
		}
	}
	return false
}

func (d *decoder) lineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := d.lines[p]; ok {
			return l
		}
	}
	return 0
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// store: the keys of each store driver, the PostgreSQL DSN and password
// file, and ha.instance.
func (d *decoder) store(c *Config) {
	if name := c.HA.Instance; !d.failed("ha.instance") && !validInstance(name) {
		d.errAt("ha.instance", "%q: must be 1 to 64 letters, digits, '.', '_' or '-'", name)
	}
	if d.failed("store.driver") {
		return
	}
	s := c.Store
	if s.Driver != DriverPostgres {
		for key, set := range map[string]bool{"store.dsn": s.DSN != "", "store.password_file": s.PasswordFile != ""} {
			if set {
				d.errAt(key, "only with store.driver: %s", DriverPostgres)
			}
		}
		return
	}
	if d.seen["store.path"] {
		d.errAt("store.path", "only with store.driver: %s (%s uses store.dsn)", DriverSQLite, DriverPostgres)
	}
	if s.DSN == "" {
		d.errAt("store.driver", "%s needs store.dsn", DriverPostgres)
	} else if err := checkDSN(s.DSN); err != nil {
		d.errAt("store.dsn", "%v", err)
	}
	if s.PasswordFile != "" {
		if _, err := ReadPassword(s.PasswordFile); err != nil {
			d.errAt("store.password_file", "%v", err)
		}
	}
}

// validInstance: ha.instance is a Prometheus label value and a log field;
// keep it a plain name.
func validInstance(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// checkDSN checks a postgres:// URL: scheme, host and database. A DSN in
// key=value form is left to the driver.
func checkDSN(dsn string) error {
	if !strings.Contains(dsn, "://") {
		if !strings.Contains(dsn, "=") {
			return fmt.Errorf("%q is not a postgres:// URL or key=value list", dsn)
		}
		return nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return fmt.Errorf("not a URL: %v", errors.Unwrap(err))
	}
	switch {
	case u.Scheme != "postgres" && u.Scheme != "postgresql":
		return fmt.Errorf("scheme %q: want postgres://", u.Scheme)
	case u.Host == "":
		return fmt.Errorf("no host (postgres://user@host:port/db)")
	case strings.Trim(u.Path, "/") == "":
		return fmt.Errorf("no database name (postgres://user@host:port/db)")
	}
	if _, ok := u.User.Password(); ok {
		return fmt.Errorf("holds a password: put it in store.password_file or PGPASSWORD instead")
	}
	return nil
}

// ReadPassword reads store.password_file: its first line.
func ReadPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read: %v", errors.Unwrap(err))
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return pw, nil
}
