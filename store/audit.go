package store

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// auditChunk is how many rows one query of ListAudit reads at most when
// the prefix filter needs an exact test in Go after SQL's pre-filter.
const auditChunk = 1000

// ListAudit returns the audit rows q selects, newest first (by id).
//
// The prefix filter is done in two steps: SQL narrows the rows with a
// range of the prefix's text that every prefix inside it starts with (the
// leading whole octets of an IPv4 prefix, the leading non-zero groups of
// an IPv6 one; an index range on audit_prefix), and domain.AuditQuery.Match
// then tests each row exactly. A host prefix is an exact match.
func (db *DB) ListAudit(ctx context.Context, q domain.AuditQuery) ([]domain.AuditEntry, error) {
	var where []string
	var args []any
	if q.Actor != "" {
		where = append(where, "actor = ?")
		args = append(args, q.Actor)
	}
	if !q.Since.IsZero() {
		where = append(where, "at >= ?")
		args = append(args, q.Since.UnixNano())
	}
	if !q.Until.IsZero() {
		where = append(where, "at < ?")
		args = append(args, q.Until.UnixNano())
	}
	exact := true // SQL's filter alone is exact
	if q.Prefix.IsValid() {
		p := q.Prefix.Masked()
		q.Prefix = p
		if p.IsSingleIP() {
			where = append(where, "prefix = ?")
			args = append(args, p.String())
		} else {
			exact = false
			lo := textStem(p)
			switch {
			case lo != "":
				// Every prefix inside p prints starting with lo; '/' and ';'
				// follow '.' and ':' in ASCII, so [lo, hi) is that range.
				hi := lo[:len(lo)-1] + string(lo[len(lo)-1]+1)
				where = append(where, "prefix >= ? AND prefix < ?")
				args = append(args, lo, hi)
			case p.Addr().Is4():
				where = append(where, "prefix != '' AND instr(prefix, ':') = 0")
			default:
				where = append(where, "instr(prefix, ':') > 0")
			}
		}
	}
	base := `SELECT id, at, actor, action, prefix, origin, reason, detail FROM audit WHERE id < ?`
	if len(where) > 0 {
		base += " AND " + strings.Join(where, " AND ")
	}
	base += ` ORDER BY id DESC LIMIT ?`

	cursor := q.BeforeID
	if cursor <= 0 {
		cursor = 1<<63 - 1
	}
	var out []domain.AuditEntry
	for {
		chunk := auditChunk
		if q.Limit > 0 && exact {
			chunk = q.Limit - len(out)
		} else if q.Limit <= 0 && exact {
			chunk = -1 // SQLite: no limit
		}
		n, last, err := db.auditRows(ctx, base, append(append([]any{cursor}, args...), chunk), func(a domain.AuditEntry) bool {
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

// auditRows runs query and hands each row to keep until it returns false;
// it returns how many rows it read and the id of the last.
func (db *DB) auditRows(ctx context.Context, query string, args []any, keep func(domain.AuditEntry) bool) (int, int64, error) {
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, 0, fmt.Errorf("reading audit log: %w", err)
	}
	defer rows.Close()
	var (
		n    int
		last int64
	)
	for rows.Next() {
		var (
			a  domain.AuditEntry
			at int64
		)
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.Action, &a.Prefix, &a.Origin, &a.Reason, &a.Detail); err != nil {
			return n, last, fmt.Errorf("reading audit log: %w", err)
		}
		a.At = time.Unix(0, at).UTC()
		n++
		last = a.ID
		if !keep(a) {
			break
		}
	}
	return n, last, rows.Err()
}

// textStem returns the text every prefix inside p starts with, ending in
// its separator ("198.51." for 198.51.0.0/16, "2001:db8:" for
// 2001:db8::/32), or "" when nothing useful is shared (less than one
// whole octet or group, or a zero group, which IPv6 text may compress).
func textStem(p netip.Prefix) string {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		var s strings.Builder
		for i := 0; i < p.Bits()/8; i++ {
			s.WriteString(strconv.Itoa(int(b[i])))
			s.WriteByte('.')
		}
		return s.String()
	}
	b := a.As16()
	var s strings.Builder
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

// ActiveHistory returns how many blackholes were active at each of the
// points from, from+step, ... up to and including to (at most 1,000
// points).
func (db *DB) ActiveHistory(ctx context.Context, from, to time.Time, step time.Duration) ([]domain.Count, error) {
	if step <= 0 || to.Before(from) {
		return nil, fmt.Errorf("active history: bad range %s..%s step %s", from, to, step)
	}
	n := int(to.Sub(from)/step) + 1
	if n > 1000 {
		return nil, fmt.Errorf("active history: %d points, at most 1000", n)
	}
	// delta[i] counts entries starting in (point i-1, point i] minus those
	// ending there; entries started before from count at point 0.
	delta := make([]int, n+1)
	f, t := from.UnixNano(), to.UnixNano()
	idx := func(ns int64) int { // first point at or after ns
		if ns <= f {
			return 0
		}
		i := int((ns - f + int64(step) - 1) / int64(step))
		return min(i, n)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT created_at, ended_at FROM blackholes
		WHERE created_at <= ? AND (ended_at IS NULL OR ended_at > ?)`, t, f)
	if err != nil {
		return nil, fmt.Errorf("active history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			created int64
			ended   *int64
		)
		if err := rows.Scan(&created, &ended); err != nil {
			return nil, fmt.Errorf("active history: %w", err)
		}
		delta[idx(created)]++
		if ended != nil {
			// Active at a point strictly before ended_at.
			delta[idx(*ended)]--
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("active history: %w", err)
	}
	out := make([]domain.Count, n)
	cur := 0
	for i := range n {
		cur += delta[i]
		out[i] = domain.Count{At: from.Add(time.Duration(i) * step).UTC(), Value: cur}
	}
	return out, nil
}

// DetectionsPerHour returns, for each hour from from's hour up to to's,
// how many detector evidence rows were recorded in it (shadow catches
// included).
func (db *DB) DetectionsPerHour(ctx context.Context, from, to time.Time) ([]domain.Count, error) {
	from, to = from.Truncate(time.Hour), to.Truncate(time.Hour)
	n := int(to.Sub(from)/time.Hour) + 1
	if n <= 0 || n > 1000 {
		return nil, fmt.Errorf("detections per hour: %d hours, want 1..1000", n)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT (recorded_at - ?) / ?, count(*) FROM evidence
		WHERE recorded_at >= ? AND recorded_at < ? GROUP BY 1`,
		from.UnixNano(), int64(time.Hour), from.UnixNano(), to.Add(time.Hour).UnixNano())
	if err != nil {
		return nil, fmt.Errorf("detections per hour: %w", err)
	}
	defer rows.Close()
	out := make([]domain.Count, n)
	for i := range out {
		out[i].At = from.Add(time.Duration(i) * time.Hour).UTC()
	}
	for rows.Next() {
		var h int64
		var c int
		if err := rows.Scan(&h, &c); err != nil {
			return nil, fmt.Errorf("detections per hour: %w", err)
		}
		if h >= 0 && h < int64(n) {
			out[h].Value = c
		}
	}
	return out, rows.Err()
}
