package domain

import (
	"net/netip"
	"time"
)

// AuditQuery selects rows of the audit log, newest first (by id, the order
// they were written in). Zero fields select everything.
type AuditQuery struct {
	// Prefix, when valid, selects rows about it or about prefixes inside it
	// (rows about a wider prefix that covers it are not selected).
	Prefix netip.Prefix
	// Actor, when set, selects rows of exactly this actor.
	Actor string
	// Since (inclusive) and Until (exclusive) bound the rows' time.
	Since, Until time.Time
	// BeforeID > 0 selects rows with a smaller id: the keyset cursor of
	// the next page.
	BeforeID int64
	// Limit is the most rows returned (<= 0: no limit).
	Limit int
}

// Match reports whether a row passes q's filters (not the cursor or the
// limit). Stores that pre-filter in their query language use it for the
// exact prefix test.
func (q AuditQuery) Match(a AuditEntry) bool {
	if q.Actor != "" && a.Actor != q.Actor {
		return false
	}
	if !q.Since.IsZero() && a.At.Before(q.Since) {
		return false
	}
	if !q.Until.IsZero() && !a.At.Before(q.Until) {
		return false
	}
	if q.Prefix.IsValid() {
		p, err := netip.ParsePrefix(a.Prefix)
		if err != nil || p.Addr().Is4() != q.Prefix.Addr().Is4() || p.Bits() < q.Prefix.Bits() || !q.Prefix.Contains(p.Addr()) {
			return false
		}
	}
	return true
}

// Count is a number at one moment: active blackholes then, or detections
// in the hour starting then (the web console's charts).
type Count struct {
	At    time.Time
	Value int
}
