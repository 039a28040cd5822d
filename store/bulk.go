package store

import (
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/rtbh/rtbh/detector/domain"
)

// Bulk writes. A SubmitAll batch (detector.AddBatch, RemoveBatch: up to
// 10,000 new or ended blackholes, one audit row each) written row by row
// costs two statements per item, each a dozen cgo calls (one per bound
// value, the step, the reset) and database/sql's boxing of every value —
// about as much CPU as GoBGP spends announcing the route. A run of such
// writes is instead handed to SQLite as one JSON array per table, bound
// once and unpacked by json_each: three statements per run.
//
// The outcome is the row-by-row one: a run is written inside its own
// savepoint, and when any of its statements fails (a constraint, an entry
// that is not active) it is rolled back and written again row by row,
// which stops at the failing write with that write's own error.

// minBulkRun is the shortest run of writes worth a bulk statement.
const minBulkRun = 8

const (
	sqlBulkSavepoint  = `SAVEPOINT bulk`
	sqlBulkRollbackTo = `ROLLBACK TO bulk`
	sqlBulkRelease    = `RELEASE bulk`
	// [prefix, match, origin, reason, created_at, expires_at]
	sqlBulkInsertBH = `INSERT INTO blackholes(prefix, "match", origin, reason, created_at, expires_at)
		SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM json_each(?) ORDER BY key`
	// [prefix, match, ended_at, end_reason]; the caller checks that every
	// item ended exactly one row.
	sqlBulkEndBH = `UPDATE blackholes SET ended_at = j.value->>2, end_reason = j.value->>3
		FROM json_each(?) AS j
		WHERE blackholes.prefix = j.value->>0 AND blackholes."match" = j.value->>1 AND blackholes.ended_at IS NULL`
	// [at, actor, action, prefix, origin, reason, detail, instance]
	sqlBulkInsertAudit = `INSERT INTO audit(at, actor, action, prefix, origin, reason, detail, instance)
		SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7 FROM json_each(?) ORDER BY key`
)

// The JSON is bound as text: json_each reads a BLOB as JSONB.

// bulkStatements are prepared on the writer's connection with the others.
var bulkStatements = []string{sqlBulkSavepoint, sqlBulkRollbackTo, sqlBulkRelease, sqlBulkInsertBH, sqlBulkEndBH, sqlBulkInsertAudit}

// bulkable reports whether w can be part of a bulk run: it inserts or ends
// a blackhole, carries nothing but audit rows besides, and its text is
// valid UTF-8 without NUL (what a JSON string carries unchanged).
func bulkable(w *domain.Write) bool {
	if (w.Op != domain.BlackholeInsert && w.Op != domain.BlackholeEnd) || w.Evidence != nil || w.Offense.IsValid() ||
		len(w.Reports) > 0 || len(w.Servers) > 0 || len(w.Agents) > 0 {
		return false
	}
	b := w.Blackhole
	if !jsonSafe(b.Match) || !jsonSafe(b.Origin) || !jsonSafe(b.Reason) || !jsonSafe(w.EndReason) {
		return false
	}
	for _, a := range w.Audit {
		if !jsonSafe(a.Actor) || !jsonSafe(a.Action) || !jsonSafe(a.Prefix) || !jsonSafe(a.Origin) ||
			!jsonSafe(a.Reason) || !jsonSafe(a.Detail) || !jsonSafe(a.Instance) {
			return false
		}
	}
	return true
}

func jsonSafe(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// applyWrites applies ws in order, runs of bulkable writes of one kind in
// bulk. buf is scratch space, returned for reuse.
func applyWrites(st func(string) *sql.Stmt, ws []*domain.Write, instance string, buf []byte) ([]byte, error) {
	for i := 0; i < len(ws); {
		j := i
		if bulkable(ws[i]) {
			for j < len(ws) && ws[j].Op == ws[i].Op && bulkable(ws[j]) {
				j++
			}
		}
		if j-i >= minBulkRun {
			var err error
			if buf, err = applyRun(st, ws[i:j], instance, buf); err == nil {
				i = j
				continue
			} else if err != errRowByRow {
				return buf, err
			}
		} else {
			j = i + 1
		}
		for _, w := range ws[i:j] { // one write, or a run that failed in bulk
			if err := apply(st, w, instance); err != nil {
				return buf, err
			}
		}
		i = j
	}
	return buf, nil
}

// errRowByRow says that a bulk run failed and was rolled back: the caller
// writes it row by row, which reports the failing write's own error.
var errRowByRow = errors.New("bulk write failed, rolled back")

// applyRun writes a run of bulkable writes of one Op in bulk, in its own
// savepoint: nil, errRowByRow (rolled back), or the savepoint's failure.
func applyRun(st func(string) *sql.Stmt, run []*domain.Write, instance string, buf []byte) ([]byte, error) {
	if _, err := st(sqlBulkSavepoint).Exec(); err != nil {
		return buf, fmt.Errorf("savepoint: %w", err)
	}
	ok := func() bool {
		buf = buf[:0]
		buf = append(buf, '[')
		for k, w := range run {
			if k > 0 {
				buf = append(buf, ',')
			}
			b := w.Blackhole
			buf = append(buf, '[', '"')
			buf = b.Prefix.AppendTo(buf)
			buf = append(buf, '"', ',')
			buf = appendJSONString(buf, b.Match)
			if w.Op == domain.BlackholeInsert {
				buf = append(buf, ',')
				buf = appendJSONString(buf, b.Origin)
				buf = append(buf, ',')
				buf = appendJSONString(buf, b.Reason)
				buf = append(buf, ',')
				buf = strconv.AppendInt(buf, b.CreatedAt.UnixNano(), 10)
				buf = append(buf, ',')
				buf = strconv.AppendInt(buf, b.ExpiresAt.UnixNano(), 10)
			} else {
				buf = append(buf, ',')
				buf = strconv.AppendInt(buf, w.At.UnixNano(), 10)
				buf = append(buf, ',')
				buf = appendJSONString(buf, w.EndReason)
			}
			buf = append(buf, ']')
		}
		buf = append(buf, ']')
		if run[0].Op == domain.BlackholeInsert {
			if _, err := st(sqlBulkInsertBH).Exec(string(buf)); err != nil {
				return false
			}
		} else {
			res, err := st(sqlBulkEndBH).Exec(string(buf))
			if err != nil {
				return false
			}
			if n, err := res.RowsAffected(); err != nil || n != int64(len(run)) {
				return false
			}
		}
		buf = buf[:0]
		buf = append(buf, '[')
		rows := 0
		for _, w := range run {
			for _, a := range w.Audit {
				if rows > 0 {
					buf = append(buf, ',')
				}
				rows++
				inst := a.Instance
				if inst == "" {
					inst = instance
				}
				buf = append(buf, '[')
				buf = strconv.AppendInt(buf, w.At.UnixNano(), 10)
				for _, s := range [...]string{a.Actor, a.Action, a.Prefix, a.Origin, a.Reason, a.Detail, inst} {
					buf = append(buf, ',')
					buf = appendJSONString(buf, s)
				}
				buf = append(buf, ']')
			}
		}
		buf = append(buf, ']')
		if rows > 0 {
			if _, err := st(sqlBulkInsertAudit).Exec(string(buf)); err != nil {
				return false
			}
		}
		return true
	}()
	if !ok {
		if _, err := st(sqlBulkRollbackTo).Exec(); err != nil {
			return buf, fmt.Errorf("rolling back a bulk write: %w", err)
		}
	}
	if _, err := st(sqlBulkRelease).Exec(); err != nil {
		return buf, fmt.Errorf("releasing savepoint: %w", err)
	}
	if !ok {
		return buf, errRowByRow
	}
	return buf, nil
}

// appendJSONString appends s as a JSON string; s is valid UTF-8 without
// NUL (jsonSafe).
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\t':
			buf = append(buf, '\\', 't')
		case '\r':
			buf = append(buf, '\\', 'r')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
