package config

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector/fanout"
)

// Detector rule protocols, as the file names them.
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// Config is a validated rtbhd configuration.
//
// The yaml tags are the file's keys. The check tags are the rules for each
// value, applied by the decoder (decode.go): required; a numeric range
// (lo..hi; lo.. = at least lo; >lo); a kind: nonempty, ipv4, ipv6, listen
// (host:port), listen-or-off ("" allowed), ip-or-empty, community,
// large-community, ports (a non-empty list) or one of the enums; and sets=F
// (a non-empty value also sets the bool field F). The rules that involve
// several keys are in validate.go.
type Config struct {
	Store    Store    `yaml:"store"`
	BGP      BGP      `yaml:"bgp" check:"required"`
	Policy   Policy   `yaml:"policy"`
	SFlow    SFlow    `yaml:"sflow"`
	Detector Detector `yaml:"detector"`
	Reports  Reports  `yaml:"reports"`
	API      API      `yaml:"api"`
	Metrics  Metrics  `yaml:"metrics"`
	Web      Web      `yaml:"web"`
	HA       HA       `yaml:"ha"`
}

// Store drivers (store.driver).
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Store is the store section.
type Store struct {
	Driver string `yaml:"driver" check:"store-driver"` // DriverSQLite or DriverPostgres
	Path   string `yaml:"path" check:"nonempty"`       // SQLite file, relative to the working directory unless absolute
	// DSN is the PostgreSQL URL (postgres://user@host:port/db?sslmode=...)
	// of store.driver postgres; the password comes from PasswordFile or
	// PGPASSWORD.
	DSN          string `yaml:"dsn"`
	PasswordFile string `yaml:"password_file"`
	// Retention: reports, evidence and audit rows older than this are
	// deleted (at least hourly); rows of active blackholes are kept.
	Retention time.Duration `yaml:"retention" check:"1h.."`
}

// BGP is the bgp section.
type BGP struct {
	ASN             uint32     `yaml:"asn" check:"required,1..4294967295"`
	RouterID        netip.Addr `yaml:"router_id" check:"required,ipv4"`
	ListenAddress   string     `yaml:"listen_address" check:"ip-or-empty"` // "" = do not listen, connect out only
	ListenPort      uint16     `yaml:"listen_port" check:"1..65535"`
	NextHopV4       netip.Addr `yaml:"next_hop_ipv4" check:"ipv4"` // IPv4 discard next hop
	NextHopV6       netip.Addr `yaml:"next_hop_ipv6" check:"ipv6"` // IPv6 discard next hop
	GracefulRestart bool       `yaml:"graceful_restart"`
	// GracefulRestartTime is advertised in the graceful restart capability:
	// how long routers keep rtbhd's routes as stale while it restarts.
	GracefulRestartTime time.Duration `yaml:"graceful_restart_time" check:"1s..4095s,seconds"`
	// LongLivedStaleTime (RFC 9494 LLGR, 0s = off) keeps routes longer
	// where routers support it, once GracefulRestartTime has run out.
	LongLivedStaleTime time.Duration `yaml:"long_lived_stale_time" check:"0s..4660h,seconds"`
	Neighbors          []Neighbor    `yaml:"neighbors" check:"required"`
}

// Neighbor is one BGP neighbor.
type Neighbor struct {
	Address          netip.Addr `yaml:"address" check:"required"`
	ASN              uint32     `yaml:"asn" check:"required,1..4294967295"` // equal to BGP.ASN means iBGP
	Role             bgp.Role   `yaml:"role" check:"required,neighbor-role"`
	Port             uint16     `yaml:"port" check:"1..65535"`   // remote TCP port
	Passive          bool       `yaml:"passive"`                 // wait for the router to connect
	Multihop         uint8      `yaml:"multihop" check:"0..255"` // eBGP multihop TTL, 0 = default
	Password         string     `yaml:"password"`                // TCP MD5, "" = none
	Communities      []string   `yaml:"communities" check:"community"`
	LargeCommunities []string   `yaml:"large_communities" check:"large-community"`
	MaxRoutes        int        `yaml:"max_routes" check:"0.."` // cap on routes sent, 0 = Policy.MaxActive
	// FlowSpec negotiates IPv4 and IPv6 FlowSpec (RFC 8955/8956) with the
	// neighbor, which then gets the FlowSpec filters (peers only inside
	// policy.own_prefixes).
	FlowSpec bool `yaml:"flowspec"`
	// MaxFlowSpec caps the filters sent to it, 0 = Policy.MaxActive.
	MaxFlowSpec int `yaml:"max_flowspec" check:"0.."`
}

// Policy is the policy section.
type Policy struct {
	OwnPrefixes    []netip.Prefix `yaml:"own_prefixes"`
	NeverBlackhole []netip.Prefix `yaml:"never_blackhole"`
	MaxActive      int            `yaml:"max_active" check:"1.."`
	DefaultTTL     time.Duration  `yaml:"default_ttl"`
	MaxTTL         time.Duration  `yaml:"max_ttl"`
	MinPrefixLenV4 int            `yaml:"min_prefix_len_v4" check:"0..32"`
	MinPrefixLenV6 int            `yaml:"min_prefix_len_v6" check:"0..128"`
}

// SFlow is the sflow section.
type SFlow struct {
	Listen string `yaml:"listen" check:"listen"` // host:port (UDP)
	// Agents are the accepted agent (UDP source) addresses and prefixes.
	// Empty accepts only loopback agents, and is then refused unless
	// Listen is a loopback address.
	Agents []netip.Prefix `yaml:"agents"`
	// ReceiveBuffer is the socket receive buffer in bytes (an extension of
	// the SPEC schema).
	ReceiveBuffer int `yaml:"receive_buffer" check:"65536..1073741824"`
}

// Detector is the detector section.
type Detector struct {
	SubscriberPrefixes []netip.Prefix `yaml:"subscriber_prefixes"`
	Window             time.Duration  `yaml:"window"`
	// MaxTrackedSources is bounded at 100 million (about 200 bytes each:
	// ~20 GB).
	MaxTrackedSources int `yaml:"max_tracked_sources" check:"1..100000000"`
	// Rules present in the file (even empty) replace the default
	// smtp-fanout rule; each starts from its values, except the name.
	Rules []Rule `yaml:"rules"`
	// ReportTrust is the weight, in report fusion, of a host that reached
	// half of a rule's thresholds (one reporter, detector:<rule>).
	ReportTrust float64 `yaml:"report_trust" check:"0..1"`
	// ServerMemory is how long a learned server (skip_servers) is
	// remembered after it was last seen serving.
	ServerMemory time.Duration `yaml:"server_memory"`
}

// Rule is one fan-out detection rule.
type Rule struct {
	Name            string         `yaml:"name" check:"required,nonempty"`
	Protocol        string         `yaml:"protocol" check:"protocol"` // ProtocolTCP or ProtocolUDP
	DstPorts        []uint16       `yaml:"dst_ports" check:"ports,1..65535"`
	MinDestinations int            `yaml:"min_destinations" check:"1.."`
	MinPackets      uint64         `yaml:"min_packets" check:"0.."`
	Exempt          []netip.Prefix `yaml:"exempt"`
	TTL             time.Duration  `yaml:"ttl"`
	Action          string         `yaml:"action" check:"action"` // fanout.ActionBlackhole, fanout.ActionFlowSpec or fanout.ActionLog
	// MinSamples sampled packets to distinct destinations are needed
	// before the estimates are trusted.
	MinSamples int `yaml:"min_samples" check:"1..1000000"`
	// SkipServers: a source receiving connections on the rule's ports from
	// ServerMinClients distinct outside addresses is a server, not flagged.
	SkipServers      bool `yaml:"skip_servers"`
	ServerMinClients int  `yaml:"server_min_clients" check:"1..1000000"`
}

// Reports is the reports section.
type Reports struct {
	Window    time.Duration `yaml:"window"`
	Threshold float64       `yaml:"threshold" check:">0"`
	TTL       time.Duration `yaml:"ttl"`
	// MinReporters distinct reporters must reach Threshold together; one
	// operator report suffices alone.
	MinReporters int `yaml:"min_reporters" check:"1..1000"`
	// MaxTrackedAddresses bounds the scores kept in memory; the least
	// recently reported address is evicted first (its stored reports no
	// longer count until it is reported again). Bounded at 100 million
	// (a few hundred bytes each).
	MaxTrackedAddresses int `yaml:"max_tracked_addresses" check:"1..100000000"`
}

// API is the api section.
type API struct {
	Listen  string   `yaml:"listen" check:"listen"` // host:port
	TLS     TLS      `yaml:"tls"`
	Clients []Client `yaml:"clients"`
}

// TLS holds the API's certificate files; all "" = plaintext (loopback only).
type TLS struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"` // set = mTLS; clients may then be named by certificate
}

// Client is one API client.
type Client struct {
	Name string `yaml:"name" check:"required,nonempty"`
	Role string `yaml:"role" check:"required,client-role"` // domain.RoleOperator or domain.RolePartner
	// TokenSHA256 is the SHA-256 of the bearer token, written as 64 hex
	// digits; valid only if HasToken ("" = none).
	TokenSHA256 [32]byte       `yaml:"token_sha256" check:"sets=HasToken"`
	HasToken    bool           `yaml:"-"`
	CertName    string         `yaml:"cert_name"`          // client certificate DNS SAN or CN, "" = none
	Prefixes    []netip.Prefix `yaml:"prefixes"`           // partner only: space it may blackhole
	Trust       float64        `yaml:"trust" check:"0..1"` // partner only: weight of each report
	Rate        float64        `yaml:"rate" check:">0"`    // requests per second (burst = 2 x Rate)
}

// HA is the ha section: several rtbhd on one PostgreSQL.
type HA struct {
	// Instance names this rtbhd in logs, audit rows and metrics; default
	// the host name.
	Instance string `yaml:"instance"`
}

// Metrics is the metrics section.
type Metrics struct {
	Listen string `yaml:"listen" check:"listen-or-off"` // host:port, "" = off
}

// Web is the web section: the NOC console.
type Web struct {
	Listen string `yaml:"listen" check:"listen-or-off"` // host:port, "" = off
	TLS    WebTLS `yaml:"tls"`                          // required unless Listen is a loopback address
}

// WebTLS holds the console's certificate files; both "" = plaintext
// (loopback only).
type WebTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Load reads and parses the configuration file at path. Problems with the
// file's content are returned as Errors, unwrapped, so that callers can print
// them one per line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data)
}

// Parse decodes and validates a configuration. On failure the error is
// Errors, holding every problem found.
func Parse(data []byte) (*Config, error) {
	d := newDecoder()
	cfg := defaults()
	if d.decode(data, cfg) {
		d.validate(cfg)
	}
	if len(d.errs) > 0 {
		return nil, d.errs.sorted()
	}
	return cfg, nil
}

// defaults returns a Config holding every default of the specification.
// Required keys are left zero.
func defaults() *Config {
	return &Config{
		Store: Store{Driver: DriverSQLite, Path: "rtbhd.db", Retention: 720 * time.Hour},
		HA:    HA{Instance: hostname()},
		BGP: BGP{
			ListenAddress:       "0.0.0.0",
			ListenPort:          179,
			NextHopV4:           netip.MustParseAddr("192.0.2.1"),
			NextHopV6:           netip.MustParseAddr("100::1"),
			GracefulRestart:     true,
			GracefulRestartTime: bgp.DefaultGracefulRestartTime,
		},
		Policy: Policy{
			MaxActive:      10000,
			DefaultTTL:     time.Hour,
			MaxTTL:         168 * time.Hour,
			MinPrefixLenV4: 32,
			MinPrefixLenV6: 128,
		},
		SFlow: SFlow{Listen: "0.0.0.0:6343", ReceiveBuffer: 8 << 20},
		Detector: Detector{
			Window:            fanout.DefaultWindow,
			MaxTrackedSources: fanout.DefaultMaxTrackedSources,
			Rules:             []Rule{defaultRule()},
			ReportTrust:       0.5,
			ServerMemory:      fanout.DefaultServerMemory,
		},
		Reports: Reports{Window: 24 * time.Hour, Threshold: 1.0, TTL: 6 * time.Hour, MinReporters: 2,
			MaxTrackedAddresses: 1000000},
		API:     API{Listen: "127.0.0.1:50051"},
		Metrics: Metrics{Listen: "127.0.0.1:9180"},
	}
}

// hostname is ha.instance's default.
func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "rtbhd"
	}
	return h
}

// defaultRule is the smtp-fanout rule, as the detector defines it.
func defaultRule() Rule {
	r := fanout.SMTPFanout()
	proto := ProtocolTCP
	if r.Protocol == fanout.ProtocolUDP {
		proto = ProtocolUDP
	}
	return Rule{Name: r.Name, Protocol: proto, DstPorts: r.DstPorts, MinDestinations: r.MinDestinations,
		MinPackets: r.MinPackets, TTL: r.TTL, Action: r.Action, MinSamples: r.MinSamples,
		SkipServers: r.SkipServers, ServerMinClients: r.ServerMinClients}
}

// The defaults of list items, applied before an item is decoded.

func (n *Neighbor) setDefaults() { *n = Neighbor{Port: 179, Communities: []string{"65535:666"}} }
func (r *Rule) setDefaults()     { *r = defaultRule(); r.Name = "" }
func (c *Client) setDefaults()   { *c = Client{Trust: 0.5, Rate: 50} }
