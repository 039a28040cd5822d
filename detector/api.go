package detector

// This file is the decision path's contract, used by feed/api and the
// daemon. The implementation lives in manager.go.

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// Kind classifies a refusal so that callers (the gRPC API) can map it to a
// status code without string matching.
type Kind int

const (
	KindInvalid  Kind = iota + 1 // malformed prefix, host bits, TTL <= 0      -> INVALID_ARGUMENT
	KindPolicy                   // too short, never_blackhole overlap          -> FAILED_PRECONDITION
	KindScope                    // outside the caller's prefixes               -> PERMISSION_DENIED
	KindLimit                    // max_active reached                          -> RESOURCE_EXHAUSTED
	KindNotFound                 // remove of a prefix that is not active       -> NOT_FOUND
)

// Error is a refusal of the decision path.
type Error struct {
	Kind Kind
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func refuse(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// KindOf returns the refusal kind of err, or 0 when err is not a refusal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// Request asks for a blackhole. Whoever asks — operator, partner, detector
// rule, report fusion — goes through Manager.Add with one of these.
type Request struct {
	Prefix netip.Prefix
	TTL    time.Duration // 0 = policy default unless HasTTL; negative is refused; above max is clamped
	// HasTTL says TTL was given explicitly (the API's ttl field was set): then
	// a TTL <= 0 is refused instead of meaning the default.
	HasTTL bool
	Reason string
	// Match, when set, asks for a FlowSpec filter instead of a blackhole
	// route: traffic from Prefix matching it ("tcp/25", see
	// domain.ParseMatch) is discarded. It is canonicalized; a malformed
	// match is refused (KindInvalid).
	Match  string
	Origin string // operator:<client>, partner:<client>, detector:<rule>, reports
	Actor  string // who, for the audit log
	// Scope, when non-nil, restricts the request to prefixes inside one of
	// the set's (partners). A nil Scope is unrestricted.
	Scope *domain.PrefixSet

	// Set by Detected: stored atomically with the blackhole.
	evidence *domain.Evidence
	offense  bool
}

// RemoveRequest asks to withdraw an active blackhole now.
type RemoveRequest struct {
	Prefix netip.Prefix
	Match  string // the FlowSpec filter to remove; "" = the route
	Reason string
	Actor  string
	Scope  *domain.PrefixSet // as in Request
	// Owner, when set, allows removing only entries with this origin
	// (a partner removes only its own entries: "partner:<client>").
	Owner string
}

// Change says what an Add did.
type Change int

const (
	Added     Change = iota + 1 // new entry
	Extended                    // existing entry, expiry moved later or taken over by an operator
	Unchanged                   // existing entry already expired later
)

// EventType is the kind of a change to the active set.
type EventType int

const (
	EventAdded EventType = iota + 1
	EventExtended
	EventRemoved
	EventExpired
)

// Event is one change to the active set, as streamed to watchers.
// EventExtended means the entry changed: its expiry moved later, or an
// operator took it over from a partner (TakenOverFrom is then the
// partner's origin, Blackhole.Origin the operator's), or both.
type Event struct {
	Type          EventType
	Blackhole     domain.Blackhole
	Actor         string
	TakenOverFrom string
}

// Reporter is who submits reports: a partner with its trust, or an
// operator (whose reports count 1.0).
type Reporter struct {
	Name     string
	Trust    float64
	Operator bool // an operator's report suffices alone for min_reporters
}

// Report is one submitted report, before validation. Zero values take the
// defaults of SPEC.md: Kind "spam", ObservedAt now, Count 1.
type Report struct {
	Address    string
	Kind       string
	ObservedAt time.Time
	Count      uint64
	Evidence   string
}

// Rejected names a refused report of a batch by its index (from 0).
type Rejected struct {
	Index  int
	Reason string
}
