package fanout

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// Protocol numbers a Rule may name.
const (
	ProtocolTCP uint8 = 6
	ProtocolUDP uint8 = 17
)

// Rule actions.
const (
	ActionBlackhole = "blackhole" // record evidence and blackhole the source
	ActionLog       = "log"       // shadow mode: record evidence only
	// ActionFlowSpec records evidence and adds a FlowSpec filter that
	// discards only the source's traffic matching the rule (its protocol
	// to its dst_ports), not a route cutting the host off.
	ActionFlowSpec = "flowspec"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultWindow            = 10 * time.Minute
	DefaultMaxTrackedSources = 1_000_000
	MinWindow                = time.Second // shortest window New accepts
	MaxRules                 = 127         // rule indexes use 7 bits (the 8th marks server-learning state)
	DefaultMinSamples        = 3
	DefaultServerMinClients  = 3
	DefaultServerMemory      = 168 * time.Hour
)

// Rule is one fan-out rule (detector.rules[] in the configuration).
type Rule struct {
	Name            string
	Protocol        uint8 // ProtocolTCP or ProtocolUDP
	DstPorts        []uint16
	MinDestinations int    // distinct destination addresses within the window
	MinPackets      uint64 // estimated packets (sum of sampling rates) within the window
	Exempt          []netip.Prefix
	Action          string        // ActionBlackhole, ActionFlowSpec or ActionLog
	TTL             time.Duration // first blackhole's TTL, passed through in Firing

	// MinSamples is how many sampled packets to distinct destinations the
	// source must have in the window before the estimates are trusted
	// (0 = DefaultMinSamples; never more than MinDestinations).
	MinSamples int
	// SkipServers: a source that receives connections on DstPorts from at
	// least ServerMinClients distinct addresses outside the subscriber
	// space within the window is a server (a self-hosted MTA), learned for
	// Config.ServerMemory, and this rule does not flag it.
	SkipServers      bool
	ServerMinClients int // 0 = DefaultServerMinClients
}

// SMTPFanout returns the default rule of the specification: tcp/25 to at
// least 20 distinct destinations and 1000 estimated packets, blackhole for
// one hour.
func SMTPFanout() Rule {
	return Rule{
		Name:             "smtp-fanout",
		Protocol:         ProtocolTCP,
		DstPorts:         []uint16{25},
		MinDestinations:  20,
		MinPackets:       1000,
		Action:           ActionBlackhole,
		TTL:              time.Hour,
		MinSamples:       DefaultMinSamples,
		SkipServers:      true,
		ServerMinClients: DefaultServerMinClients,
	}
}

// Config is the engine's configuration (the detector section plus
// policy.never_blackhole).
type Config struct {
	SubscriberPrefixes []netip.Prefix // only sources inside are judged
	NeverBlackhole     []netip.Prefix // sources never flagged by any rule
	Window             time.Duration  // 0 = DefaultWindow
	MaxTrackedSources  int            // (source, rule) pairs kept; 0 = DefaultMaxTrackedSources
	Rules              []Rule
	// ServerMemory is how long a learned server stays exempt after it
	// was last seen serving; 0 = DefaultServerMemory.
	ServerMemory time.Duration

	// Now is the clock HandleFlows reads once per batch; nil means
	// time.Now. Tests inject a simulated clock here or call
	// HandleFlowsAt.
	Now func() time.Time
}

// rule is a Rule compiled for the hot path. Its slices are private copies
// and never change after compilation.
type rule struct {
	Rule
	proto      uint8
	minDest    uint64
	minSamples uint64 // at most minDest
	// Half of each threshold: partial evidence (Firing.Kind Partial).
	halfSamples, halfDest, halfPackets uint64
	minClients                         uint64 // server_min_clients
	exempt                             *domain.PrefixSet
	checkEx                            bool
	firedBatch                         uint64 // firings in the current batch, flushed to the metric
}

func (r *rule) hasPort(p uint16) bool {
	for _, q := range r.DstPorts {
		if q == p {
			return true
		}
	}
	return false
}

// sameTraffic reports whether r and o match the same samples, so that
// state built for one is valid for the other.
func (r *rule) sameTraffic(o *rule) bool {
	return r.Name == o.Name && r.proto == o.proto && slices.Equal(r.DstPorts, o.DstPorts)
}

// compiled is a validated Config in the form the hot path wants.
type compiled struct {
	subs, never *domain.PrefixSet
	window      int64 // ns
	granule     int64 // ns, window / nBuckets
	maxTracked  int
	rules       []rule
	ports       [2][1024]uint64 // [tcp, udp] bit set of ports some rule matches
	servers     bool            // some rule learns servers
	memory      int64           // ns, server memory
	now         func() time.Time
}

func protoIndex(p uint8) int {
	switch p {
	case ProtocolTCP:
		return 0
	case ProtocolUDP:
		return 1
	}
	return -1
}

// compile validates cfg and applies defaults. All problems are reported,
// joined, each naming the field.
func compile(cfg Config) (*compiled, error) {
	var errs []error
	c := &compiled{
		subs:       domain.NewPrefixSet(cfg.SubscriberPrefixes),
		never:      domain.NewPrefixSet(cfg.NeverBlackhole),
		maxTracked: cfg.MaxTrackedSources,
		memory:     int64(cfg.ServerMemory),
		now:        cfg.Now,
	}
	switch {
	case c.memory == 0:
		c.memory = int64(DefaultServerMemory)
	case c.memory < 0:
		errs = append(errs, fmt.Errorf("server_memory: negative"))
	}
	if c.now == nil {
		c.now = time.Now
	}
	window := cfg.Window
	switch {
	case window == 0:
		window = DefaultWindow
	case window < MinWindow:
		errs = append(errs, fmt.Errorf("window: %v is shorter than %v", window, MinWindow))
	}
	c.window = int64(window)
	c.granule = int64(window) / nBuckets
	switch {
	case c.maxTracked == 0:
		c.maxTracked = DefaultMaxTrackedSources
	case c.maxTracked < 0 || c.maxTracked > maxEntries:
		errs = append(errs, fmt.Errorf("max_tracked_sources: %d is outside 1..%d", c.maxTracked, maxEntries))
	}
	for i, p := range cfg.SubscriberPrefixes {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("subscriber_prefixes[%d]: invalid prefix", i))
		}
	}
	for i, p := range cfg.NeverBlackhole {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("never_blackhole[%d]: invalid prefix", i))
		}
	}
	if len(cfg.Rules) > MaxRules {
		errs = append(errs, fmt.Errorf("rules: %d rules, at most %d allowed", len(cfg.Rules), MaxRules))
	}
	seen := make(map[string]bool, len(cfg.Rules))
	for i, in := range cfg.Rules {
		where := fmt.Sprintf("rules[%d]", i)
		if in.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: missing", where))
		} else {
			where = fmt.Sprintf("rules[%d] (%s)", i, in.Name)
			if seen[in.Name] {
				errs = append(errs, fmt.Errorf("%s.name: duplicate rule name", where))
			}
			seen[in.Name] = true
		}
		if protoIndex(in.Protocol) < 0 {
			errs = append(errs, fmt.Errorf("%s.protocol: %d is neither tcp (6) nor udp (17)", where, in.Protocol))
		}
		if len(in.DstPorts) == 0 {
			errs = append(errs, fmt.Errorf("%s.dst_ports: at least one port is required", where))
		}
		for j, p := range in.DstPorts {
			if p == 0 {
				errs = append(errs, fmt.Errorf("%s.dst_ports[%d]: port 0", where, j))
			}
		}
		if in.MinDestinations < 1 {
			errs = append(errs, fmt.Errorf("%s.min_destinations: %d, must be at least 1", where, in.MinDestinations))
		}
		if in.Action != ActionBlackhole && in.Action != ActionLog && in.Action != ActionFlowSpec {
			errs = append(errs, fmt.Errorf("%s.action: %q is not %q, %q or %q", where, in.Action, ActionBlackhole, ActionFlowSpec, ActionLog))
		}
		if in.TTL < 0 {
			errs = append(errs, fmt.Errorf("%s.ttl: negative", where))
		}
		for j, p := range in.Exempt {
			if !p.IsValid() {
				errs = append(errs, fmt.Errorf("%s.exempt[%d]: invalid prefix", where, j))
			}
		}
		if in.MinSamples < 0 {
			errs = append(errs, fmt.Errorf("%s.min_samples: negative", where))
		}
		if in.ServerMinClients < 0 {
			errs = append(errs, fmt.Errorf("%s.server_min_clients: negative", where))
		}
		r := rule{Rule: in, proto: in.Protocol, minDest: uint64(max(in.MinDestinations, 1))}
		r.minSamples = uint64(in.MinSamples)
		if r.minSamples == 0 {
			r.minSamples = DefaultMinSamples
		}
		r.minSamples = min(r.minSamples, r.minDest)
		r.halfSamples = max((r.minSamples+1)/2, 1)
		r.halfDest = max((r.minDest+1)/2, 1)
		r.halfPackets = r.MinPackets / 2
		r.minClients = uint64(in.ServerMinClients)
		if r.minClients == 0 {
			r.minClients = DefaultServerMinClients
		}
		c.servers = c.servers || in.SkipServers
		r.DstPorts = slices.Clone(in.DstPorts)
		slices.Sort(r.DstPorts)
		r.DstPorts = slices.Compact(r.DstPorts)
		r.Exempt = slices.Clone(in.Exempt)
		r.exempt = domain.NewPrefixSet(in.Exempt)
		r.checkEx = !r.exempt.Empty()
		c.rules = append(c.rules, r)
		if pi := protoIndex(in.Protocol); pi >= 0 {
			for _, p := range in.DstPorts {
				c.ports[pi][p>>6] |= 1 << (p & 63)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// ReferencePacketsPerSecond is the zombie a rule is expected to catch when
// rtbhd checks sampling rates: one SMTP connection a second, 12 packets
// each, every connection to a new destination.
const ReferencePacketsPerSecond = 12

// ExpectedSamples is how many sampled packets a source sending pps packets
// a second (each to a new destination) leaves in a window at sampling rate
// 1 in rate.
func ExpectedSamples(pps float64, window time.Duration, rate uint32) float64 {
	return pps * window.Seconds() / float64(max(rate, 1))
}

// SamplingWarnings names the rules of cfg that cannot be expected to
// catch the reference zombie (ReferencePacketsPerSecond) at sampling rate
// 1 in rate: it leaves fewer than the rule's min_samples sampled packets in
// the window. Each warning says which window would do.
func SamplingWarnings(cfg Config, rate uint32) []string {
	c, err := compile(cfg)
	if err != nil {
		return nil
	}
	window := time.Duration(c.window)
	var out []string
	for i, r := range c.rules {
		exp := ExpectedSamples(ReferencePacketsPerSecond, window, rate)
		if exp >= float64(r.minSamples) {
			continue
		}
		need := time.Duration(float64(r.minSamples) * float64(max(rate, 1)) / ReferencePacketsPerSecond * float64(time.Second)).Round(time.Minute)
		out = append(out, fmt.Sprintf("detector.rules[%d] (%s): at 1:%d a zombie at 1 SMTP connection/s (%d packets/s) leaves ~%.1f sampled packets in the %s window, fewer than min_samples %d: it is caught only by chance; use detector.window %s or more, or sample more often",
			i, r.Name, rate, ReferencePacketsPerSecond, exp, window, r.minSamples, need))
	}
	return out
}
