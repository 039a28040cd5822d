package detector

import (
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rtbh/rtbh/detector/domain"
)

// Policy is the operator's policy every blackhole request is checked
// against (the policy section of the config, already validated).
type Policy struct {
	OwnPrefixes    []netip.Prefix
	NeverBlackhole *domain.PrefixSet
	// Protected is rtbhd's own infrastructure, never blackholed whoever
	// asks (nil: nothing).
	Protected      *Protection
	MaxActive      int
	DefaultTTL     time.Duration
	MaxTTL         time.Duration
	MinPrefixLenV4 int
	MinPrefixLenV6 int
}

// ReportPolicy is how partner reports become blackholes.
type ReportPolicy struct {
	Window    time.Duration // reports observed longer ago stop counting
	Threshold float64       // score at which the address is blackholed
	TTL       time.Duration // TTL of a blackhole caused by reports
	// MinReporters is how many distinct reporters must reach Threshold
	// together (reports.min_reporters); one operator report suffices
	// alone. 0 or 1: any reporter alone.
	MinReporters int
	// MaxTrackedAddresses bounds the addresses whose scores are kept in
	// memory (reports.max_tracked_addresses); beyond it the least recently
	// reported address is forgotten: its reports stay in the store but no
	// longer count until it is reported again. 0: no bound.
	MaxTrackedAddresses int
}

// checkAdd is the policy check of an add: a pure function of the policy and
// the request. Malformed requests are INVALID_ARGUMENT whatever else is
// wrong with them; then the caller's scope, then policy. It returns the TTL
// to apply (the default when none was given, clamped to max_ttl). What
// depends on the active set (max_active) is checked by the Manager.
func checkAdd(pol Policy, req Request) (time.Duration, error) {
	if err := checkWellFormed(req.Prefix); err != nil {
		return 0, err
	}
	if _, err := checkMatch(req.Match); err != nil {
		return 0, err
	}
	ttl := req.TTL
	if ttl < 0 || (req.HasTTL && ttl == 0) {
		return 0, refuse(KindInvalid, "ttl must be positive, got %s", ttl)
	}
	if err := checkReason(req.Reason); err != nil {
		return 0, err
	}
	if err := checkAllowed(req.Prefix, req.Scope, pol); err != nil {
		return 0, err
	}
	switch {
	case ttl == 0:
		ttl = pol.DefaultTTL
	case ttl > pol.MaxTTL:
		ttl = pol.MaxTTL
	}
	return ttl, nil
}

// checkRemove is the check of a removal that needs no state: a usable
// prefix and reason, inside the caller's scope.
func checkRemove(req RemoveRequest) error {
	if err := checkWellFormed(req.Prefix); err != nil {
		return err
	}
	if _, err := checkMatch(req.Match); err != nil {
		return err
	}
	if err := checkReason(req.Reason); err != nil {
		return err
	}
	if req.Scope != nil && !req.Scope.ContainsPrefix(req.Prefix) {
		return refuse(KindScope, "%s is outside your prefixes", req.Prefix)
	}
	return nil
}

// checkWellFormed refuses what is not a usable prefix (INVALID_ARGUMENT).
func checkWellFormed(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return refuse(KindInvalid, "missing or malformed prefix")
	case p.Addr().Zone() != "":
		return refuse(KindInvalid, "%s: zones are not allowed", p)
	case p.Addr().Is4In6():
		return refuse(KindInvalid, "%s: use the IPv4 form, not IPv4-mapped IPv6", p)
	case p.Masked() != p:
		return refuse(KindInvalid, "%s has host bits set (did you mean %s?)", p, p.Masked())
	}
	return nil
}

// checkMatch returns the canonical form of a FlowSpec match ("" for a
// route), refusing a malformed one (INVALID_ARGUMENT).
func checkMatch(match string) (string, error) {
	c, err := domain.CanonicalMatch(match)
	if err != nil {
		return "", refuse(KindInvalid, "%s", err)
	}
	return c, nil
}

// MaxReasonBytes is the longest reason a request may give (SPEC "Safety
// defaults and limits"): longer ones are refused (INVALID_ARGUMENT). The
// reasons rtbhd writes itself (detector rules, report fusion) are cut to
// it with ClipReason instead.
const MaxReasonBytes = 1024

// checkReason refuses a reason longer than MaxReasonBytes.
func checkReason(r string) error {
	if len(r) > MaxReasonBytes {
		return refuse(KindInvalid, "reason: %d bytes, at most %d", len(r), MaxReasonBytes)
	}
	if strings.IndexByte(r, 0) >= 0 {
		// PostgreSQL text cannot hold it: refused on every store alike.
		return refuse(KindInvalid, "reason: contains a NUL byte")
	}
	return nil
}

// ClipReason cuts r to at most MaxReasonBytes, on a character boundary,
// ending it with "..." when it was cut.
func ClipReason(r string) string {
	if len(r) <= MaxReasonBytes {
		return r
	}
	const more = "..."
	cut := MaxReasonBytes - len(more)
	for cut > 0 && !utf8.RuneStart(r[cut]) {
		cut--
	}
	return r[:cut] + more
}

// Protected is one address or prefix of rtbhd's own infrastructure: its
// BGP router id and neighbors, the next hops, the addresses it listens on,
// the sFlow agents. A blackhole covering it would cut rtbhd off from its
// routers (or make routers resolve a next hop through a blackhole).
type Protected struct {
	Prefix netip.Prefix
	Label  string // what it is, for the refusal: "BGP neighbor", "sFlow agent"...
}

// String is the label and the address (a host prefix as its bare
// address): "BGP neighbor 127.0.0.2".
func (p Protected) String() string {
	if p.Prefix.IsSingleIP() {
		return p.Label + " " + p.Prefix.Addr().String()
	}
	return p.Label + " " + p.Prefix.String()
}

// Protection is the set of Protected entries a policy refuses to cover.
// It is built once and then only read. A nil *Protection protects nothing.
type Protection struct {
	set     *domain.PrefixSet
	entries []Protected
}

// NewProtection returns the protection of entries; for an address listed
// twice, the first entry names it.
func NewProtection(entries []Protected) *Protection {
	ps := make([]netip.Prefix, len(entries))
	for i, e := range entries {
		ps[i] = e.Prefix
	}
	return &Protection{set: domain.NewPrefixSet(ps), entries: entries}
}

// Entries returns the protected entries, in the order given.
func (p *Protection) Entries() []Protected {
	if p == nil {
		return nil
	}
	return p.entries
}

// Overlapping returns the first protected entry that shares an address
// with q, if any.
func (p *Protection) Overlapping(q netip.Prefix) (Protected, bool) {
	if p == nil {
		return Protected{}, false
	}
	n, ok := p.set.Overlapping(q)
	if !ok {
		return Protected{}, false
	}
	for _, e := range p.entries {
		if e.Prefix == n {
			return e, true
		}
	}
	return Protected{Prefix: n}, true
}

// forbidden refuses (KindPolicy) a prefix that policy never lets anyone
// blackhole: one overlapping protected infrastructure or never_blackhole.
// The message is the reason recorded when a new policy withdraws an active
// entry, too.
func forbidden(pol Policy, p netip.Prefix) error {
	if e, ok := pol.Protected.Overlapping(p); ok {
		switch {
		case p.Bits() < e.Prefix.Bits():
			return refuse(KindPolicy, "%s covers protected: %s", p, e)
		case p.Bits() > e.Prefix.Bits():
			return refuse(KindPolicy, "%s is inside protected: %s", p, e)
		}
		return refuse(KindPolicy, "protected: %s", e)
	}
	if n, ok := pol.NeverBlackhole.Overlapping(p); ok {
		return refuse(KindPolicy, "%s overlaps %s in policy.never_blackhole", p, n)
	}
	return nil
}

// checkAllowed applies the caller's scope, then policy.
func checkAllowed(p netip.Prefix, scope *domain.PrefixSet, pol Policy) error {
	if scope != nil && !scope.ContainsPrefix(p) {
		return refuse(KindScope, "%s is outside your prefixes", p)
	}
	minLen, key := pol.MinPrefixLenV4, "min_prefix_len_v4"
	if p.Addr().Is6() {
		minLen, key = pol.MinPrefixLenV6, "min_prefix_len_v6"
	}
	if p.Bits() < minLen {
		return refuse(KindPolicy, "%s is shorter than /%d (policy.%s)", p, minLen, key)
	}
	return forbidden(pol, p)
}
