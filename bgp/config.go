package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// Role says which routes a neighbor gets.
type Role string

const (
	// RoleBorder neighbors (the ISP's own border routers) get every route.
	RoleBorder Role = "border"
	// RolePeer neighbors (other ISPs) get only routes inside Config.OwnPrefixes.
	RolePeer Role = "peer"
)

// Config is the speaker's configuration (the bgp section of rtbhd's config
// plus the policy keys the speaker acts on).
type Config struct {
	ASN      uint32
	RouterID netip.Addr // IPv4
	// ListenAddress is the address to accept sessions on; "" = do not
	// listen, connect out only. A specific address is also used as the
	// local address of outgoing sessions of the same family.
	ListenAddress string
	ListenPort    int // used when ListenAddress != ""; 0 = 179

	NextHopV4       netip.Addr
	NextHopV6       netip.Addr
	GracefulRestart bool
	// GracefulRestartTime (bgp.graceful_restart_time) is the restart time
	// advertised in the graceful restart capability: how long routers keep
	// our routes as stale after the session is lost. 0 means
	// DefaultGracefulRestartTime; whole seconds, at most 4095 s (the
	// capability has 12 bits for it).
	GracefulRestartTime time.Duration
	// LongLivedStaleTime (bgp.long_lived_stale_time) is the long-lived stale
	// time advertised for IPv4 and IPv6 unicast in the long-lived graceful
	// restart capability (RFC 9494): routers that support it keep our
	// routes, marked LLGR_STALE, this much longer once GracefulRestartTime
	// has run out. 0 = no LLGR capability; whole seconds, at most
	// 16777215 s; needs GracefulRestart.
	LongLivedStaleTime time.Duration
	Neighbors          []Neighbor

	// OwnPrefixes is the ISP's own space: RolePeer neighbors get only
	// routes inside it.
	OwnPrefixes []netip.Prefix
	own         *domain.PrefixSet // OwnPrefixes as a set, made by cloneConfig
	// DefaultMaxRoutes caps the routes sent to a neighbor whose MaxRoutes
	// is 0 (policy.max_active). 0 = no cap.
	DefaultMaxRoutes int
}

// Neighbor is one BGP session.
type Neighbor struct {
	Address  netip.Addr
	ASN      uint32 // == Config.ASN for iBGP
	Role     Role
	Port     uint16 // remote TCP port, 0 = 179
	Passive  bool   // wait for the router to connect
	Multihop uint8  // eBGP multihop TTL, 0 = default
	Password string // TCP MD5
	// Communities ("65535:666") and LargeCommunities ("64500:666:0") are
	// added to every route sent to this neighbor.
	Communities      []string
	LargeCommunities []string
	MaxRoutes        int // 0 = Config.DefaultMaxRoutes
	// FlowSpec (flowspec: true) negotiates IPv4 and IPv6 FlowSpec
	// (RFC 8955/8956) on this session besides unicast: the neighbor gets
	// the FlowSpec filters (peers only for sources inside OwnPrefixes).
	FlowSpec bool
	// MaxFlowSpec caps the filters sent to this neighbor (0 =
	// Config.DefaultMaxRoutes): beyond it filters are held back and
	// promoted, oldest first, as others are withdrawn.
	MaxFlowSpec int
}

// DefaultGracefulRestartTime is Config.GracefulRestartTime when it is 0.
const DefaultGracefulRestartTime = 120 * time.Second

// Limits of the restart times (RFC 4724 §3: 12 bits; RFC 9494 §2: 24 bits).
const (
	maxGracefulRestartTime = 4095 * time.Second
	maxLongLivedStaleTime  = 16777215 * time.Second
)

// restartTime is the effective graceful restart time.
func (c *Config) restartTime() time.Duration {
	if c.GracefulRestartTime == 0 {
		return DefaultGracefulRestartTime
	}
	return c.GracefulRestartTime
}

func (n Neighbor) port() uint16 {
	if n.Port == 0 {
		return 179
	}
	return n.Port
}

func (c *Config) listenPort() int {
	if c.ListenPort == 0 {
		return 179
	}
	return c.ListenPort
}

// maxRoutes is the effective cap for n, 0 = none.
func (c *Config) maxRoutes(n *Neighbor) int {
	if n.MaxRoutes > 0 {
		return n.MaxRoutes
	}
	return c.DefaultMaxRoutes
}

// Validate checks what the speaker relies on (identity, next hops, one
// session per address, roles and communities it hands to GoBGP) and returns
// every problem found, each naming its field. rtbhd's config package has
// already refused a bad file, naming each key with its line; this guards
// the speaker against other callers.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.ASN == 0 {
		add("bgp asn: must not be 0")
	}
	if !c.RouterID.Is4() {
		add("bgp router_id: %q is not an IPv4 address", c.RouterID)
	}
	if !c.NextHopV4.Is4() {
		add("bgp next_hop_ipv4: %q is not an IPv4 address", c.NextHopV4)
	}
	if !c.NextHopV6.Is6() || c.NextHopV6.Is4In6() {
		add("bgp next_hop_ipv6: %q is not an IPv6 address", c.NextHopV6)
	}
	if d := c.GracefulRestartTime; d < 0 || d > maxGracefulRestartTime || d%time.Second != 0 {
		add("bgp graceful_restart_time: %s is not a whole number of seconds from 1s to %s", d, maxGracefulRestartTime)
	}
	if d := c.LongLivedStaleTime; d < 0 || d > maxLongLivedStaleTime || d%time.Second != 0 {
		add("bgp long_lived_stale_time: %s is not a whole number of seconds from 0s (off) to %s", d, maxLongLivedStaleTime)
	} else if d > 0 && !c.GracefulRestart {
		add("bgp long_lived_stale_time: needs graceful_restart")
	}
	seen := make(map[netip.Addr]bool)
	for i, n := range c.Neighbors {
		key := fmt.Sprintf("bgp neighbors[%d]", i)
		if !n.Address.IsValid() || n.Address.Zone() != "" {
			add("%s address: %q is not a valid address", key, n.Address)
		} else if seen[n.Address.Unmap()] {
			add("%s address: duplicate neighbor %s", key, n.Address)
		}
		seen[n.Address.Unmap()] = true
		if n.ASN == 0 {
			add("%s asn: must not be 0", key)
		}
		if n.MaxFlowSpec < 0 {
			add("%s max_flowspec: must not be negative", key)
		}
		if n.Role != RoleBorder && n.Role != RolePeer {
			add("%s role: %q is not border or peer", key, n.Role)
		}
		for j, s := range n.Communities {
			if _, err := ParseCommunity(s); err != nil {
				add("%s communities[%d]: %w", key, j, err)
			}
		}
		for j, s := range n.LargeCommunities {
			if _, err := ParseLargeCommunity(s); err != nil {
				add("%s large_communities[%d]: %w", key, j, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ParseCommunity parses a standard community "ASN:VALUE" (each 0..65535)
// and returns it as a 32-bit value.
func ParseCommunity(s string) (uint32, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok || strings.Contains(b, ":") {
		return 0, fmt.Errorf("community %q: want ASN:VALUE, e.g. 65535:666", s)
	}
	hi, err1 := strconv.ParseUint(a, 10, 16)
	lo, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q: both parts must be numbers 0..65535", s)
	}
	return uint32(hi)<<16 | uint32(lo), nil
}

// LargeCommunity is an RFC 8092 large community.
type LargeCommunity struct{ Global, Local1, Local2 uint32 }

func (l LargeCommunity) String() string {
	return fmt.Sprintf("%d:%d:%d", l.Global, l.Local1, l.Local2)
}

// ParseLargeCommunity parses "GLOBAL:LOCAL1:LOCAL2" (each 0..4294967295).
func ParseLargeCommunity(s string) (LargeCommunity, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return LargeCommunity{}, fmt.Errorf("large community %q: want GLOBAL:LOCAL1:LOCAL2, e.g. 64500:666:0", s)
	}
	var v [3]uint32
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return LargeCommunity{}, fmt.Errorf("large community %q: parts must be numbers 0..4294967295", s)
		}
		v[i] = uint32(n)
	}
	return LargeCommunity{v[0], v[1], v[2]}, nil
}

// eligible reports whether a neighbor of role r may receive p.
func (c *Config) eligible(r Role, p netip.Prefix) bool {
	return r != RolePeer || c.own.ContainsPrefix(p)
}
