package domain

import (
	"errors"
	"net/netip"
	"time"
)

// Blackhole is one blackholed prefix as recorded by the decision path and the store.
type Blackhole struct {
	Prefix netip.Prefix
	// Match is empty for a blackhole route. For a FlowSpec filter it is the
	// filter's canonical match, e.g. "tcp/25", "udp/53,5353" or
	// "tcp/25,465-587": traffic from Prefix that matches it is discarded.
	// An entry is keyed by (Prefix, Match).
	Match     string
	Origin    string // detector:<rule>, operator:<client>, partner:<client> or reports
	Reason    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Evidence is what a detector rule saw when it fired for an address.
type Evidence struct {
	Address              netip.Addr
	Rule                 string
	Action               string // blackhole or log
	Protocol             string // tcp or udp
	DstPorts             []uint16
	DistinctDestinations uint64
	EstimatedPackets     uint64
	EstimatedConnections uint64
	Window               time.Duration
	FirstSeen, LastSeen  time.Time
	Examples             []netip.Addr
	RecordedAt           time.Time
}

// Report is one abuse report about an address, from a partner or operator.
type Report struct {
	Address    netip.Addr
	Reporter   string  // client name
	Trust      float64 // the reporter's trust when the report was received
	Kind       string
	ObservedAt time.Time
	Count      uint64
	Evidence   string
	ReceivedAt time.Time
	// Operator is set for an operator's report: it suffices alone for
	// reports.min_reporters.
	Operator bool
}

// Offender is everything recorded about one address.
type Offender struct {
	Address  netip.Addr
	Evidence []Evidence // newest first
	Reports  []Report   // newest first
	Offenses int        // blackholes by the detector so far (drives TTL doubling)

	// Filled by the decision path, not the store:
	Score      float64     // current report score
	ScoreParts []ScorePart // the reporters that make up Score
	Servers    []Server    // set when learned as a server (skip_servers)
}

// AuditEntry is one row of the audit log.
type AuditEntry struct {
	ID     int64
	At     time.Time
	Actor  string // client name, detector:<rule>, reports, expiry
	Action string // add, extend, remove, expire, report, ...
	Prefix string
	Origin string
	Reason string
	Detail string
	// Instance is the ha.instance of the rtbhd that wrote the row.
	Instance string
}

// BlackholeOp says what a Write does to the blackholes table.
type BlackholeOp int

const (
	BlackholeNone   BlackholeOp = iota
	BlackholeInsert             // a new active entry
	BlackholeExtend             // update the active entry's expires_at, reason and origin (an extension or a takeover)
	BlackholeEnd                // end the active entry (removed or expired)
)

// Write is one unit of work, committed atomically: either all of it is
// stored or none.
type Write struct {
	Op        BlackholeOp
	Blackhole Blackhole
	EndReason string // for BlackholeEnd: removed or expired
	At        time.Time

	Audit    []AuditEntry
	Evidence *Evidence
	Offense  netip.Addr // when valid, count one more detector blackhole for it
	Reports  []Report
	Servers  []Server    // learned or refreshed servers (upserted by address and rule)
	Agents   []AgentRate // agents' sampling rates (upserted by agent)
}

// Server is a subscriber address the detector learned is a server for a
// rule's ports (a self-hosted MTA for tcp/25): it received connections on
// them from several distinct outside clients within a window. Servers are
// not flagged by that rule while remembered (detector.server_memory).
type Server struct {
	Address   netip.Addr
	Rule      string
	Clients   uint64 // distinct outside clients seen in the window that taught it
	FirstSeen time.Time
	LastSeen  time.Time // refreshed while it keeps serving
}

// ScorePart is one reporter's share of an address's report score.
type ScorePart struct {
	Reporter   string // client name, or detector:<rule> for partial detector evidence
	Trust      float64
	ObservedAt time.Time
}

// AgentRate is the sampling rate an sFlow agent last reported.
type AgentRate struct {
	Agent        netip.Addr
	SamplingRate uint32
	SeenAt       time.Time
}

// ErrStoreUnavailable marks a store write that failed for a reason that
// may pass (disk full, I/O error, lock timeout, a closed store): nothing of
// it is durable and the caller may try again. Stores wrap their errors so
// that errors.Is(err, ErrStoreUnavailable) holds; the API answers
// UNAVAILABLE.
var ErrStoreUnavailable = errors.New("store unavailable")

// Pruned counts the rows a retention pass deleted (store.retention).
type Pruned struct{ Reports, Evidence, Audit int64 }
