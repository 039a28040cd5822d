package store

import (
	"context"
	"fmt"
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
			lo := q.TextStem()
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
	base := `SELECT id, at, actor, action, prefix, origin, reason, detail, instance FROM audit WHERE id < ?`
	if len(where) > 0 {
		base += " AND " + strings.Join(where, " AND ")
	}
	base += ` ORDER BY id DESC LIMIT ?`

	return q.Collect(exact, auditChunk, func(cursor int64, chunk int, keep func(domain.AuditEntry) bool) (int, int64, error) {
		return db.auditRows(ctx, base, append(append([]any{cursor}, args...), chunk), keep)
	})
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
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.Action, &a.Prefix, &a.Origin, &a.Reason, &a.Detail, &a.Instance); err != nil {
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

// ActiveHistory returns how many blackholes were active at each of the
// points from, from+step, ... up to and including to (at most 1,000
// points).
func (db *DB) ActiveHistory(ctx context.Context, from, to time.Time, step time.Duration) ([]domain.Count, error) {
	c, err := domain.NewActiveCounter(from, to, step)
	if err != nil {
		return nil, err
	}
	rows, err := db.r.QueryContext(ctx, `SELECT created_at, ended_at FROM blackholes
		WHERE created_at <= ? AND (ended_at IS NULL OR ended_at > ?)`, to.UnixNano(), from.UnixNano())
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
		c.Add(created, ended)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("active history: %w", err)
	}
	return c.Counts(), nil
}

// DetectionsPerHour returns, for each hour from from's hour up to to's,
// how many detector evidence rows were recorded in it (shadow catches
// included).
func (db *DB) DetectionsPerHour(ctx context.Context, from, to time.Time) ([]domain.Count, error) {
	out, err := domain.HourBuckets(from, to)
	if err != nil {
		return nil, err
	}
	from = out[0].At
	n := len(out)
	rows, err := db.r.QueryContext(ctx, `SELECT (recorded_at - ?) / ?, count(*) FROM evidence
		WHERE recorded_at >= ? AND recorded_at < ? GROUP BY 1`,
		from.UnixNano(), int64(time.Hour), from.UnixNano(), from.Add(time.Duration(n)*time.Hour).UnixNano())
	if err != nil {
		return nil, fmt.Errorf("detections per hour: %w", err)
	}
	defer rows.Close()
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
