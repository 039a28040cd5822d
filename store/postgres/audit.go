package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// auditChunk is how many rows one query of ListAudit reads at most when
// the prefix filter needs an exact test in Go after SQL's pre-filter.
const auditChunk = 1000

// ListAudit returns the audit rows q selects, newest first (by id), as
// store.DB.ListAudit does: SQL narrows a prefix filter to the rows whose
// text starts with what every prefix inside it starts with
// (domain.AuditQuery.TextStem), and AuditQuery.Match tests each exactly.
func (db *DB) ListAudit(ctx context.Context, q domain.AuditQuery) ([]domain.AuditEntry, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args)+1) // $1 is the cursor
	}
	if q.Actor != "" {
		where = append(where, "actor = "+arg(q.Actor))
	}
	if !q.Since.IsZero() {
		where = append(where, "at >= "+arg(q.Since.UnixNano()))
	}
	if !q.Until.IsZero() {
		where = append(where, "at < "+arg(q.Until.UnixNano()))
	}
	exact := true
	if q.Prefix.IsValid() {
		q.Prefix = q.Prefix.Masked()
		switch stem := q.TextStem(); {
		case q.Prefix.IsSingleIP():
			where = append(where, "prefix = "+arg(q.Prefix.String()))
		case stem != "":
			exact = false
			where = append(where, "starts_with(prefix, "+arg(stem)+")")
		case q.Prefix.Addr().Is4():
			exact = false
			where = append(where, "prefix <> '' AND strpos(prefix, ':') = 0")
		default:
			exact = false
			where = append(where, "strpos(prefix, ':') > 0")
		}
	}
	query := `SELECT id, at, actor, action, prefix, origin, reason, detail, instance FROM audit WHERE id < $1`
	if len(where) > 0 {
		query += " AND " + strings.Join(where, " AND ")
	}
	query += ` ORDER BY id DESC LIMIT ` + "$" + strconv.Itoa(len(args)+2)
	return q.Collect(exact, auditChunk, func(cursor int64, chunk int, keep func(domain.AuditEntry) bool) (int, int64, error) {
		var limit any = chunk
		if chunk < 0 {
			limit = nil // LIMIT NULL: no limit
		}
		rows, err := db.pool.Query(ctx, query, append(append([]any{cursor}, args...), limit)...)
		if err != nil {
			return 0, 0, unavailable(fmt.Errorf("reading audit log: %w", err))
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
			a.At = ns(at)
			n++
			last = a.ID
			if !keep(a) {
				break
			}
		}
		return n, last, rows.Err()
	})
}

// ActiveHistory returns how many blackholes were active at each of the
// points from, from+step, ... up to and including to (at most 1,000).
func (db *DB) ActiveHistory(ctx context.Context, from, to time.Time, step time.Duration) ([]domain.Count, error) {
	c, err := domain.NewActiveCounter(from, to, step)
	if err != nil {
		return nil, err
	}
	rows, err := db.pool.Query(ctx, `SELECT created_at, ended_at FROM blackholes
		WHERE created_at <= $1 AND (ended_at IS NULL OR ended_at > $2)`, to.UnixNano(), from.UnixNano())
	if err != nil {
		return nil, unavailable(fmt.Errorf("active history: %w", err))
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
		return nil, unavailable(fmt.Errorf("active history: %w", err))
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
	f := out[0].At.UnixNano()
	rows, err := db.pool.Query(ctx, `SELECT (recorded_at - $1) / $2, count(*) FROM evidence
		WHERE recorded_at >= $1 AND recorded_at < $3 GROUP BY 1`,
		f, int64(time.Hour), f+int64(len(out))*int64(time.Hour))
	if err != nil {
		return nil, unavailable(fmt.Errorf("detections per hour: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var h, c int64
		if err := rows.Scan(&h, &c); err != nil {
			return nil, fmt.Errorf("detections per hour: %w", err)
		}
		if h >= 0 && h < int64(len(out)) {
			out[h].Value = int(c)
		}
	}
	return out, rows.Err()
}
