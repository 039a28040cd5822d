package domain

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
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

// TextStem returns the text every prefix inside q.Prefix starts with,
// ending in its separator ("198.51." for 198.51.0.0/16, "2001:db8:" for
// 2001:db8::/32), or "" when nothing useful is shared (less than one whole
// octet or group, or a zero group, which IPv6 text may compress). Stores
// narrow the rows with it in their query language, then test each row
// with Match.
func (q AuditQuery) TextStem() string {
	p := q.Prefix.Masked()
	a := p.Addr()
	var s strings.Builder
	if a.Is4() {
		b := a.As4()
		for i := 0; i < p.Bits()/8; i++ {
			s.WriteString(strconv.Itoa(int(b[i])))
			s.WriteByte('.')
		}
		return s.String()
	}
	b := a.As16()
	for i := 0; i < p.Bits()/16; i++ {
		g := uint16(b[2*i])<<8 | uint16(b[2*i+1])
		if g == 0 {
			break
		}
		s.WriteString(strconv.FormatUint(uint64(g), 16))
		s.WriteByte(':')
	}
	return s.String()
}

// MaxHistoryPoints bounds ActiveHistory and DetectionsPerHour.
const MaxHistoryPoints = 1000

// ActiveCounter counts how many blackholes were active at each of the
// points from, from+step, ... to, given each entry's lifetime (a store's
// ActiveHistory feeds it the rows that overlap the range).
type ActiveCounter struct {
	from  time.Time
	step  time.Duration
	delta []int // entries starting in (point i-1, point i] minus those ending there
}

// NewActiveCounter checks the range: at most MaxHistoryPoints points.
func NewActiveCounter(from, to time.Time, step time.Duration) (*ActiveCounter, error) {
	if step <= 0 || to.Before(from) {
		return nil, fmt.Errorf("active history: bad range %s..%s step %s", from, to, step)
	}
	n := int(to.Sub(from)/step) + 1
	if n > MaxHistoryPoints {
		return nil, fmt.Errorf("active history: %d points, at most %d", n, MaxHistoryPoints)
	}
	return &ActiveCounter{from: from, step: step, delta: make([]int, n+1)}, nil
}

// index is the first point at or after ns (unix nanoseconds).
func (c *ActiveCounter) index(ns int64) int {
	f := c.from.UnixNano()
	if ns <= f {
		return 0
	}
	i := int((ns - f + int64(c.step) - 1) / int64(c.step))
	return min(i, len(c.delta)-1)
}

// Add counts an entry created at created (unix nanoseconds) and ended at
// *ended (nil: still active). It is active at a point strictly before
// its end.
func (c *ActiveCounter) Add(created int64, ended *int64) {
	c.delta[c.index(created)]++
	if ended != nil {
		c.delta[c.index(*ended)]--
	}
}

// Counts returns the count at each point.
func (c *ActiveCounter) Counts() []Count {
	out := make([]Count, len(c.delta)-1)
	cur := 0
	for i := range out {
		cur += c.delta[i]
		out[i] = Count{At: c.from.Add(time.Duration(i) * c.step).UTC(), Value: cur}
	}
	return out
}

// HourBuckets returns the zero counts of each hour from from's hour up to
// to's (at most MaxHistoryPoints), for DetectionsPerHour to fill.
func HourBuckets(from, to time.Time) ([]Count, error) {
	from, to = from.Truncate(time.Hour), to.Truncate(time.Hour)
	n := int(to.Sub(from)/time.Hour) + 1
	if n <= 0 || n > MaxHistoryPoints {
		return nil, fmt.Errorf("detections per hour: %d hours, want 1..%d", n, MaxHistoryPoints)
	}
	out := make([]Count, n)
	for i := range out {
		out[i].At = from.Add(time.Duration(i) * time.Hour).UTC()
	}
	return out, nil
}

// Collect runs a store's paged audit query for q. fetch reads rows with an
// id below cursor, newest first, at most chunk of them (chunk < 0: no
// limit), handing each to keep until it returns false, and returns how
// many rows it read and the id of the last. exact says the store's query
// applied every filter itself; otherwise Collect tests each row with Match
// and reads on in chunks of chunkSize until the page is full.
func (q AuditQuery) Collect(exact bool, chunkSize int, fetch func(cursor int64, chunk int, keep func(AuditEntry) bool) (int, int64, error)) ([]AuditEntry, error) {
	cursor := q.BeforeID
	if cursor <= 0 {
		cursor = 1<<63 - 1
	}
	var out []AuditEntry
	for {
		chunk := chunkSize
		if exact {
			chunk = -1
			if q.Limit > 0 {
				chunk = q.Limit - len(out)
			}
		}
		n, last, err := fetch(cursor, chunk, func(a AuditEntry) bool {
			if !exact && !q.Match(a) {
				return true
			}
			out = append(out, a)
			return q.Limit <= 0 || len(out) < q.Limit
		})
		if err != nil {
			return nil, err
		}
		if exact || n < chunk || (q.Limit > 0 && len(out) >= q.Limit) {
			return out, nil
		}
		cursor = last
	}
}
