package config

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/rtbh/rtbh/detector/fanout"
)

// Neighbor roles.
const (
	RoleBorder = "border" // the ISP's own border routers: every active blackhole
	RolePeer   = "peer"   // other ISPs: only blackholes inside policy.own_prefixes
)

// API client roles.
const (
	RoleOperator = "operator"
	RolePartner  = "partner"
)

// Detector rule protocols and actions.
const (
	ProtocolTCP     = "tcp"
	ProtocolUDP     = "udp"
	ActionBlackhole = "blackhole"
	ActionLog       = "log" // shadow mode: record offender and evidence, announce nothing
)

// Config is a validated rtbhd configuration.
type Config struct {
	Store    Store
	BGP      BGP
	Policy   Policy
	SFlow    SFlow
	Detector Detector
	Reports  Reports
	API      API
	Metrics  Metrics
}

// Store is the store section.
type Store struct {
	Path string // SQLite file, relative to the working directory unless absolute
}

// BGP is the bgp section.
type BGP struct {
	ASN             uint32
	RouterID        netip.Addr // IPv4
	ListenAddress   string     // IP address literal; "" = do not listen, connect out only
	ListenPort      uint16
	NextHopV4       netip.Addr // IPv4 discard next hop
	NextHopV6       netip.Addr // IPv6 discard next hop
	GracefulRestart bool
	Neighbors       []Neighbor
}

// Neighbor is one BGP neighbor.
type Neighbor struct {
	Address          netip.Addr
	ASN              uint32 // equal to BGP.ASN means iBGP
	Role             string // RoleBorder or RolePeer
	Port             uint16 // remote TCP port
	Passive          bool   // wait for the router to connect
	Multihop         uint8  // eBGP multihop TTL, 0 = default
	Password         string // TCP MD5, "" = none
	Communities      []string
	LargeCommunities []string
	MaxRoutes        int // cap on routes sent, 0 = Policy.MaxActive
}

// Policy is the policy section.
type Policy struct {
	OwnPrefixes    []netip.Prefix
	NeverBlackhole []netip.Prefix
	MaxActive      int
	DefaultTTL     time.Duration
	MaxTTL         time.Duration
	MinPrefixLenV4 int
	MinPrefixLenV6 int
}

// SFlow is the sflow section.
type SFlow struct {
	Listen        string         // host:port (UDP)
	Agents        []netip.Prefix // empty = any agent
	ReceiveBuffer int            // socket receive buffer in bytes (an extension of the SPEC schema)
}

// Detector is the detector section.
type Detector struct {
	SubscriberPrefixes []netip.Prefix
	Window             time.Duration
	MaxTrackedSources  int
	Rules              []Rule
}

// Rule is one fan-out detection rule.
type Rule struct {
	Name            string
	Protocol        string // ProtocolTCP or ProtocolUDP
	DstPorts        []uint16
	MinDestinations int
	MinPackets      uint64
	Exempt          []netip.Prefix
	TTL             time.Duration
	Action          string // ActionBlackhole or ActionLog
}

// Reports is the reports section.
type Reports struct {
	Window    time.Duration
	Threshold float64
	TTL       time.Duration
}

// API is the api section.
type API struct {
	Listen  string // host:port
	TLS     TLS
	Clients []Client
}

// TLS holds the API's certificate files; all "" = plaintext (loopback only).
type TLS struct {
	Cert     string
	Key      string
	ClientCA string // set = mTLS; clients may then be named by certificate
}

// Client is one API client.
type Client struct {
	Name        string
	Role        string   // RoleOperator or RolePartner
	TokenSHA256 [32]byte // SHA-256 of the bearer token; valid only if HasToken
	HasToken    bool
	CertName    string         // client certificate DNS SAN or CN, "" = none
	Prefixes    []netip.Prefix // partner only: space it may blackhole
	Trust       float64        // partner only: weight of each report, 0..1
	Rate        float64        // requests per second (burst = 2 x Rate)
}

// Metrics is the metrics section.
type Metrics struct {
	Listen string // host:port, "" = off
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
	cfg := d.decode(data)
	if len(d.errs) > 0 {
		return nil, d.errs.sorted()
	}
	return cfg, nil
}

// defaults returns a Config holding every default of the specification.
// Required keys are left zero.
func defaults() *Config {
	return &Config{
		Store: Store{Path: "rtbhd.db"},
		BGP: BGP{
			ListenAddress:   "0.0.0.0",
			ListenPort:      179,
			NextHopV4:       netip.MustParseAddr("192.0.2.1"),
			NextHopV6:       netip.MustParseAddr("100::1"),
			GracefulRestart: true,
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
			Window:            10 * time.Minute,
			MaxTrackedSources: 1000000,
			Rules:             []Rule{defaultRule()},
		},
		Reports: Reports{Window: 24 * time.Hour, Threshold: 1.0, TTL: 6 * time.Hour},
		API:     API{Listen: "127.0.0.1:50051"},
		Metrics: Metrics{Listen: "127.0.0.1:9180"},
	}
}

// defaultRule is the smtp-fanout rule, as the detector defines it; a rule
// in the file starts from its values (except the name, which is required).
func defaultRule() Rule {
	r := fanout.SMTPFanout()
	proto := ProtocolTCP
	if r.Protocol == fanout.ProtocolUDP {
		proto = ProtocolUDP
	}
	return Rule{
		Name:            r.Name,
		Protocol:        proto,
		DstPorts:        r.DstPorts,
		MinDestinations: r.MinDestinations,
		MinPackets:      r.MinPackets,
		TTL:             r.TTL,
		Action:          r.Action,
	}
}

func defaultNeighbor() Neighbor {
	return Neighbor{Port: 179, Communities: []string{"65535:666"}}
}

func defaultClient() Client {
	return Client{Trust: 0.5, Rate: 50}
}
