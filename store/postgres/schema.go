package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are applied in order; rtbh_schema records how many have run.
// Never edit one that has shipped: append a new one. The schema mirrors
// the SQLite store's (times are unix nanoseconds), with what several
// instances need on top: the change sequence and changed_by of each
// blackhole row, and the instance of each audit, report and evidence row.
var migrations = []string{
	`CREATE SEQUENCE blackholes_seq;
	CREATE TABLE blackholes (
		id         BIGSERIAL PRIMARY KEY,
		prefix     TEXT NOT NULL,
		match      TEXT NOT NULL DEFAULT '',
		origin     TEXT NOT NULL,
		reason     TEXT NOT NULL,
		created_at BIGINT NOT NULL, -- unix nanoseconds
		expires_at BIGINT NOT NULL,
		ended_at   BIGINT,          -- NULL while active
		end_reason TEXT,            -- removed | expired
		seq        BIGINT NOT NULL, -- change sequence (commit order), renewed by every change
		changed_by TEXT NOT NULL    -- instance whose decision the row is; '' = differs from it
	);
	CREATE UNIQUE INDEX blackholes_active ON blackholes(prefix, match) WHERE ended_at IS NULL;
	CREATE INDEX blackholes_seq_idx ON blackholes(seq);
	CREATE TABLE audit (
		id       BIGSERIAL PRIMARY KEY,
		at       BIGINT NOT NULL,
		actor    TEXT NOT NULL,
		action   TEXT NOT NULL,
		prefix   TEXT NOT NULL,
		origin   TEXT NOT NULL,
		reason   TEXT NOT NULL,
		detail   TEXT NOT NULL,
		instance TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX audit_prefix ON audit(prefix, at);
	CREATE INDEX audit_at ON audit(at);
	CREATE INDEX audit_actor ON audit(actor);
	CREATE TABLE evidence (
		id                    BIGSERIAL PRIMARY KEY,
		address               TEXT NOT NULL,
		rule                  TEXT NOT NULL,
		action                TEXT NOT NULL,
		protocol              TEXT NOT NULL,
		dst_ports             TEXT NOT NULL,
		distinct_destinations BIGINT NOT NULL,
		estimated_packets     BIGINT NOT NULL,
		estimated_connections BIGINT NOT NULL,
		window_ns             BIGINT NOT NULL,
		first_seen            BIGINT NOT NULL,
		last_seen             BIGINT NOT NULL,
		examples              TEXT NOT NULL,
		recorded_at           BIGINT NOT NULL,
		instance              TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX evidence_address ON evidence(address, recorded_at);
	CREATE INDEX evidence_recorded ON evidence(recorded_at);
	CREATE TABLE offenses (
		address TEXT PRIMARY KEY,
		count   BIGINT NOT NULL,
		last_at BIGINT NOT NULL
	);
	CREATE TABLE reports (
		id          BIGSERIAL PRIMARY KEY,
		address     TEXT NOT NULL,
		reporter    TEXT NOT NULL,
		trust       DOUBLE PRECISION NOT NULL,
		kind        TEXT NOT NULL,
		observed_at BIGINT NOT NULL,
		count       BIGINT NOT NULL,
		evidence    TEXT NOT NULL,
		received_at BIGINT NOT NULL,
		operator    BOOLEAN NOT NULL DEFAULT false,
		instance    TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX reports_address ON reports(address, observed_at);
	CREATE INDEX reports_observed ON reports(observed_at);
	CREATE TABLE servers (
		address    TEXT NOT NULL,
		rule       TEXT NOT NULL,
		clients    BIGINT NOT NULL,
		first_seen BIGINT NOT NULL,
		last_seen  BIGINT NOT NULL,
		PRIMARY KEY (address, rule)
	);
	CREATE INDEX servers_last_seen ON servers(last_seen);
	CREATE TABLE agents (
		agent         TEXT PRIMARY KEY,
		sampling_rate BIGINT NOT NULL,
		seen_at       BIGINT NOT NULL
	);`,
}

// migrate applies the missing migrations, each in its own transaction,
// under an advisory lock so that instances starting together do not race.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockMigrate); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockMigrate)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS rtbh_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("creating rtbh_schema: %w", err)
	}
	version, err := schemaVersion(ctx, conn.Conn())
	if err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this rtbhd knows (%d): refusing to touch it", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DELETE FROM rtbh_schema; INSERT INTO rtbh_schema(version) VALUES (`+fmt.Sprint(i+1)+`)`)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return nil
}

func schemaVersion(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (int, error) {
	var v int
	err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM rtbh_schema`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return v, nil
}

// SchemaVersion reports the applied schema version.
func (db *DB) SchemaVersion(ctx context.Context) (int, error) { return schemaVersion(ctx, db.pool) }
