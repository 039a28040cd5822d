package api

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/rtbh/rtbh/detector/domain"
)

// Roles of API clients (SPEC.md, api.clients[].role): domain's, named here
// for this package's callers.
const (
	RoleOperator = domain.RoleOperator
	RolePartner  = domain.RolePartner
)

// Defaults applied by New to zero Config fields.
const (
	DefaultMaxMessageBytes          = 4 << 20
	DefaultMaxReportsPerBatch       = 1000
	DefaultMaxWatchStreamsPerClient = 4
	DefaultMaxConcurrentStreams     = 256
)

// maxConcurrentStreams bounds Config.MaxConcurrentStreams.
const maxConcurrentStreams = 1 << 16

// Client is one configured API client (api.clients[] in the config).
type Client struct {
	Name string
	Role string // RoleOperator or RolePartner
	// TokenSHA256 is the SHA-256 of the client's bearer token; only
	// meaningful when HasToken is set.
	TokenSHA256 [32]byte
	HasToken    bool
	// CertName names the client by its certificate's DNS SAN, or by its CN
	// when the certificate has no DNS SAN (RFC 6125; only
	// with Config.ClientCA set). Empty = no certificate identity.
	CertName string
	// Prefixes is the space a partner may blackhole. Ignored for operators.
	Prefixes []netip.Prefix
	// Trust is the weight of each of a partner's reports (operators count 1.0).
	Trust float64
	// Rate is the number of requests per second allowed, with a burst of
	// twice that. Rate <= 0 means unlimited (the config layer applies the
	// documented default of 50).
	Rate float64
}

// Config configures the gRPC server (the api section of the config).
type Config struct {
	// Listen is the TCP address to listen on. Plaintext (no TLSCert/TLSKey)
	// is allowed only on a loopback address.
	Listen string
	// TLSCert and TLSKey are PEM files of the server certificate and key.
	TLSCert, TLSKey string
	// ClientCA is a PEM file of the CA that signs client certificates. Set,
	// clients may authenticate by certificate (mTLS); a certificate that
	// does not verify against it is refused by the handshake.
	ClientCA string
	Clients  []Client
	// MaxMessageBytes caps a received message (default 4 MiB).
	MaxMessageBytes int
	// MaxReportsPerBatch caps the reports of one SubmitReports (default 1000).
	MaxReportsPerBatch int
	// MaxWatchStreamsPerClient caps concurrent WatchBlackholes streams per
	// client (default 4).
	MaxWatchStreamsPerClient int
	// MaxConcurrentStreams caps the calls open at once on one connection
	// (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS, default 256); a client's
	// further calls wait for one to finish.
	MaxConcurrentStreams int
}

func (c *Config) applyDefaults() {
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxReportsPerBatch <= 0 {
		c.MaxReportsPerBatch = DefaultMaxReportsPerBatch
	}
	if c.MaxWatchStreamsPerClient <= 0 {
		c.MaxWatchStreamsPerClient = DefaultMaxWatchStreamsPerClient
	}
	if c.MaxConcurrentStreams <= 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
}

// tlsEnabled reports whether the server speaks TLS.
func (c *Config) tlsEnabled() bool { return c.TLSCert != "" || c.TLSKey != "" }

func (c *Config) validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("api.listen: %w", err)
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		return fmt.Errorf("api.tls.key: required with api.tls.cert")
	case c.TLSKey != "" && c.TLSCert == "":
		return fmt.Errorf("api.tls.cert: required with api.tls.key")
	case c.ClientCA != "" && !c.tlsEnabled():
		return fmt.Errorf("api.tls.client_ca: needs api.tls.cert and api.tls.key")
	}
	if c.MaxConcurrentStreams > maxConcurrentStreams {
		return fmt.Errorf("api.max_concurrent_streams: %d is above %d", c.MaxConcurrentStreams, maxConcurrentStreams)
	}
	if !c.tlsEnabled() && !IsLoopback(c.Listen) {
		return fmt.Errorf("api.listen: %q is not a loopback address: plaintext gRPC is refused, set api.tls.cert and api.tls.key", c.Listen)
	}
	return validateClients(c.Clients)
}

func validateClients(clients []Client) error {
	names := make(map[string]bool, len(clients))
	for i, cl := range clients {
		switch {
		case cl.Name == "":
			return fmt.Errorf("api.clients[%d].name: empty", i)
		case names[cl.Name]:
			return fmt.Errorf("api.clients[%d].name: duplicate %q", i, cl.Name)
		case cl.Role != RoleOperator && cl.Role != RolePartner:
			return fmt.Errorf("api.clients[%d].role: %q is neither %q nor %q", i, cl.Role, RoleOperator, RolePartner)
		}
		names[cl.Name] = true
	}
	return nil
}

// IsLoopback reports whether the listen address host:port only ever binds
// loopback: its host is "localhost" or a loopback IP (an empty host binds
// every interface). Plaintext gRPC is allowed only there.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
