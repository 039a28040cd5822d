package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/store/internal/column"
)

func ns(v int64) time.Time { return time.Unix(0, v).UTC() }

const bhColumns = `prefix, match, origin, reason, created_at, expires_at`

func scanBlackhole(row pgx.Row, extra ...any) (domain.Blackhole, error) {
	var (
		b                  domain.Blackhole
		prefix             string
		created, expiresAt int64
	)
	if err := row.Scan(append([]any{&prefix, &b.Match, &b.Origin, &b.Reason, &created, &expiresAt}, extra...)...); err != nil {
		return b, err
	}
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return b, fmt.Errorf("bad prefix %q in store: %w", prefix, err)
	}
	b.Prefix, b.CreatedAt, b.ExpiresAt = p, ns(created), ns(expiresAt)
	return b, nil
}

// ActiveBlackholes returns the entries not ended when last written,
// including those whose expires_at has passed (the caller expires them).
func (db *DB) ActiveBlackholes(ctx context.Context) ([]domain.Blackhole, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+bhColumns+` FROM blackholes WHERE ended_at IS NULL ORDER BY id`)
	if err != nil {
		return nil, unavailable(fmt.Errorf("listing active blackholes: %w", err))
	}
	defer rows.Close()
	var out []domain.Blackhole
	for rows.Next() {
		b, err := scanBlackhole(rows)
		if err != nil {
			return nil, fmt.Errorf("listing active blackholes: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("listing active blackholes: %w", err))
	}
	return out, nil
}

// AuditLog returns audit rows, oldest first; prefix "" means all. limit <= 0
// means no limit.
func (db *DB) AuditLog(ctx context.Context, prefix string, limit int) ([]domain.AuditEntry, error) {
	q := `SELECT id, at, actor, action, prefix, origin, reason, detail, instance FROM audit`
	var args []any
	if prefix != "" {
		q += ` WHERE prefix = $1`
		args = append(args, prefix)
	}
	q += ` ORDER BY id`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading audit log: %w", err)
	}
	defer rows.Close()
	var out []domain.AuditEntry
	for rows.Next() {
		var (
			a  domain.AuditEntry
			at int64
		)
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.Action, &a.Prefix, &a.Origin, &a.Reason, &a.Detail, &a.Instance); err != nil {
			return nil, fmt.Errorf("reading audit log: %w", err)
		}
		a.At = ns(at)
		out = append(out, a)
	}
	return out, rows.Err()
}

// Offenses returns how many times the detector has blackholed addr.
func (db *DB) Offenses(ctx context.Context, addr netip.Addr) (int, error) {
	var n int
	err := db.pool.QueryRow(ctx, `SELECT count FROM offenses WHERE address = $1`, addr.String()).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, unavailable(fmt.Errorf("reading offenses of %s: %w", addr, err))
	}
	return n, nil
}

// Offender returns what is recorded about addr: detector evidence, reports
// (at most limit of each, newest first) and the offense count.
func (db *DB) Offender(ctx context.Context, addr netip.Addr, limit int) (domain.Offender, error) {
	o := domain.Offender{Address: addr}
	var err error
	if o.Offenses, err = db.Offenses(ctx, addr); err != nil {
		return o, err
	}
	if o.Evidence, err = db.queryEvidence(ctx, `WHERE address = $1`, []any{addr.String()}, limit); err != nil {
		return o, err
	}
	q := `SELECT ` + reportColumns + ` FROM reports WHERE address = $1 ORDER BY observed_at DESC, id DESC`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	if o.Reports, err = db.queryReports(ctx, q, addr.String()); err != nil {
		return o, err
	}
	return o, nil
}

// RecentEvidence returns the newest evidence rows, optionally only those of
// rules in shadow mode (action log).
func (db *DB) RecentEvidence(ctx context.Context, shadowOnly bool, limit int) ([]domain.Evidence, error) {
	if shadowOnly {
		return db.queryEvidence(ctx, `WHERE action = $1`, []any{"log"}, limit)
	}
	return db.queryEvidence(ctx, ``, nil, limit)
}

func (db *DB) queryEvidence(ctx context.Context, where string, args []any, limit int) ([]domain.Evidence, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := db.pool.Query(ctx, `SELECT address, rule, action, protocol, dst_ports, distinct_destinations,
		estimated_packets, estimated_connections, window_ns, first_seen, last_seen, examples, recorded_at
		FROM evidence `+where+fmt.Sprintf(` ORDER BY recorded_at DESC, id DESC LIMIT %d`, limit), args...)
	if err != nil {
		return nil, fmt.Errorf("reading evidence: %w", err)
	}
	defer rows.Close()
	var out []domain.Evidence
	for rows.Next() {
		var (
			e                         domain.Evidence
			addr, ports, examples     string
			dd, pk, cn                int64
			window, first, last, recd int64
		)
		if err := rows.Scan(&addr, &e.Rule, &e.Action, &e.Protocol, &ports, &dd, &pk, &cn, &window, &first, &last, &examples, &recd); err != nil {
			return nil, fmt.Errorf("reading evidence: %w", err)
		}
		e.Address, _ = netip.ParseAddr(addr)
		e.DistinctDestinations, e.EstimatedPackets, e.EstimatedConnections = uint64(dd), uint64(pk), uint64(cn)
		e.DstPorts = column.SplitPorts(ports)
		e.Examples = column.SplitAddrs(examples)
		e.Window = time.Duration(window)
		e.FirstSeen, e.LastSeen, e.RecordedAt = ns(first), ns(last), ns(recd)
		out = append(out, e)
	}
	return out, rows.Err()
}

const reportColumns = `address, reporter, trust, kind, observed_at, count, evidence, received_at, operator`

// ReportsSince returns every report observed at or after since, oldest
// first; rtbhd rebuilds its report scores from it.
func (db *DB) ReportsSince(ctx context.Context, since time.Time) ([]domain.Report, error) {
	return db.queryReports(ctx, `SELECT `+reportColumns+` FROM reports WHERE observed_at >= $1 ORDER BY observed_at, id`,
		column.UnixNanoOrZero(since))
}

func scanReport(row pgx.Row, extra ...any) (domain.Report, error) {
	var (
		r                     domain.Report
		addr                  string
		observed, recd, count int64
	)
	if err := row.Scan(append([]any{&addr, &r.Reporter, &r.Trust, &r.Kind, &observed, &count, &r.Evidence, &recd, &r.Operator}, extra...)...); err != nil {
		return r, err
	}
	r.Address, _ = netip.ParseAddr(addr)
	r.Count = uint64(count)
	r.ObservedAt, r.ReceivedAt = ns(observed), ns(recd)
	return r, nil
}

func (db *DB) queryReports(ctx context.Context, q string, args ...any) ([]domain.Report, error) {
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, unavailable(fmt.Errorf("reading reports: %w", err))
	}
	defer rows.Close()
	var out []domain.Report
	for rows.Next() {
		r, err := scanReport(rows)
		if err != nil {
			return nil, fmt.Errorf("reading reports: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Servers returns the learned servers last seen at or after since, by
// address.
func (db *DB) Servers(ctx context.Context, since time.Time) ([]domain.Server, error) {
	rows, err := db.pool.Query(ctx, `SELECT address, rule, clients, first_seen, last_seen FROM servers
		WHERE last_seen >= $1 ORDER BY address, rule`, column.UnixNanoOrZero(since))
	if err != nil {
		return nil, fmt.Errorf("reading servers: %w", err)
	}
	defer rows.Close()
	var out []domain.Server
	for rows.Next() {
		var (
			sv                   domain.Server
			addr                 string
			clients, first, last int64
		)
		if err := rows.Scan(&addr, &sv.Rule, &clients, &first, &last); err != nil {
			return nil, fmt.Errorf("reading servers: %w", err)
		}
		if sv.Address, err = netip.ParseAddr(addr); err != nil {
			return nil, fmt.Errorf("reading servers: bad address %q in store: %w", addr, err)
		}
		sv.Clients = uint64(clients)
		sv.FirstSeen, sv.LastSeen = ns(first), ns(last)
		out = append(out, sv)
	}
	return out, rows.Err()
}

// Agents returns the sampling rates the agents last reported, by agent.
func (db *DB) Agents(ctx context.Context) ([]domain.AgentRate, error) {
	rows, err := db.pool.Query(ctx, `SELECT agent, sampling_rate, seen_at FROM agents ORDER BY agent`)
	if err != nil {
		return nil, fmt.Errorf("reading agents: %w", err)
	}
	return db.scanAgents(rows)
}

func (db *DB) scanAgents(rows pgx.Rows) ([]domain.AgentRate, error) {
	defer rows.Close()
	var out []domain.AgentRate
	for rows.Next() {
		var (
			a          domain.AgentRate
			addr       string
			rate, seen int64
		)
		if err := rows.Scan(&addr, &rate, &seen); err != nil {
			return nil, fmt.Errorf("reading agents: %w", err)
		}
		var err error
		if a.Agent, err = netip.ParseAddr(addr); err != nil {
			return nil, fmt.Errorf("reading agents: bad address %q in store: %w", addr, err)
		}
		a.SamplingRate = uint32(rate)
		a.SeenAt = ns(seen)
		out = append(out, a)
	}
	return out, rows.Err()
}

// CountReports returns the number of stored reports.
func (db *DB) CountReports(ctx context.Context) (int, error) {
	var n int
	err := db.pool.QueryRow(ctx, `SELECT count(*) FROM reports`).Scan(&n)
	return n, err
}

// PruneBatch is how many rows one retention DELETE removes at most.
const PruneBatch = 5000

// The retention deletes, one batch each; rows of active blackholes are
// kept (as in the SQLite store).
const (
	sqlPruneReports = `DELETE FROM reports WHERE id IN (
		SELECT r.id FROM reports r WHERE r.observed_at < $1 AND NOT EXISTS (
			SELECT 1 FROM blackholes b WHERE b.ended_at IS NULL AND b.prefix IN (r.address || '/32', r.address || '/128'))
		LIMIT $2)`
	sqlPruneEvidence = `DELETE FROM evidence WHERE id IN (
		SELECT e.id FROM evidence e WHERE e.recorded_at < $1 AND NOT EXISTS (
			SELECT 1 FROM blackholes b WHERE b.ended_at IS NULL AND b.prefix IN (e.address || '/32', e.address || '/128'))
		LIMIT $2)`
	sqlPruneAudit = `DELETE FROM audit WHERE id IN (
		SELECT a.id FROM audit a WHERE a.at < $1 AND NOT EXISTS (
			SELECT 1 FROM blackholes b WHERE b.ended_at IS NULL AND b.prefix = a.prefix)
		LIMIT $2)`
)

// Prune deletes the reports observed, evidence recorded and audit rows
// written before before, in batches of at most batch rows (PruneBatch if
// batch <= 0), keeping the rows of active blackholes. Several instances
// may prune at once: a row is deleted once.
func (db *DB) Prune(ctx context.Context, before time.Time, batch int) (domain.Pruned, error) {
	if batch <= 0 {
		batch = PruneBatch
	}
	var n domain.Pruned
	cut := before.UnixNano()
	for _, t := range []struct {
		name  string
		query string
		count *int64
	}{
		{"reports", sqlPruneReports, &n.Reports},
		{"evidence", sqlPruneEvidence, &n.Evidence},
		{"audit", sqlPruneAudit, &n.Audit},
	} {
		for {
			tag, err := db.pool.Exec(ctx, t.query, cut, batch)
			if err != nil {
				return n, fmt.Errorf("pruning %s: %w", t.name, err)
			}
			k := tag.RowsAffected()
			*t.count += k
			if k < int64(batch) {
				break
			}
		}
	}
	return n, nil
}

// ReadAgents reads the agents' sampling rates without changing anything
// (rtbhd --check, beside running instances). A database without the
// schema yet is no agents.
func ReadAgents(ctx context.Context, cfg Config) ([]domain.AgentRate, error) {
	cc, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("store.dsn: %w", err)
	}
	if cfg.Password != "" {
		cc.Password = cfg.Password
	}
	cc.ConnectTimeout = 5 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", redact(cc), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('agents') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	db := &DB{}
	rows, err := conn.Query(ctx, `SELECT agent, sampling_rate, seen_at FROM agents ORDER BY agent`)
	if err != nil {
		return nil, fmt.Errorf("reading agents: %w", err)
	}
	return db.scanAgents(rows)
}
