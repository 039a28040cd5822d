package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3" // the SQLite driver; only this package imports it

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/store/internal/column"
	"github.com/rtbh/rtbh/store/internal/commits"
)

// maxBatch bounds how many writes share one transaction.
const maxBatch = 1024

// ErrClosed is the cause of the error returned for writes submitted after
// Close (which is also domain.ErrStoreUnavailable).
var ErrClosed = errors.New("store: closed")

// unavailableError is a write that failed for a reason that may pass: the
// disk is full, an I/O error, a lock timeout, a closed store. It is
// domain.ErrStoreUnavailable and unwraps to its cause.
type unavailableError struct{ cause error }

func (e *unavailableError) Error() string {
	msg := e.cause.Error()
	var se sqlite3.Error
	if errors.As(e.cause, &se) && se.Code != sqlite3.ErrConstraint {
		msg = se.Error()
	}
	return "store unavailable: " + msg + ": try again"
}

func (e *unavailableError) Unwrap() []error { return []error{domain.ErrStoreUnavailable, e.cause} }

// unavailable wraps err as domain.ErrStoreUnavailable.
func unavailable(err error) error {
	if err == nil || errors.Is(err, domain.ErrStoreUnavailable) {
		return err
	}
	return &unavailableError{cause: err}
}

// errStale is a write that does not fit the stored state: it ends or
// extends an entry that is not active, or inserts one that is. The caller
// decided on a state that an earlier failed write never made durable; once
// it has reloaded the store, the same request succeeds, so it is
// unavailable (try again) rather than internal.
var errStale = errors.New("the stored state differs from the decision's (an earlier write failed)")

// transient reports whether err is an SQLite error that may pass once the
// environment recovers (space, I/O, locks), as opposed to a bad write.
func transient(err error) bool {
	if errors.Is(err, errStale) {
		return true
	}
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code {
	case sqlite3.ErrFull, sqlite3.ErrIoErr, sqlite3.ErrBusy, sqlite3.ErrLocked, sqlite3.ErrCantOpen,
		sqlite3.ErrReadonly, sqlite3.ErrNomem, sqlite3.ErrProtocol, sqlite3.ErrCorrupt, sqlite3.ErrNotADB:
		return true
	}
	return false
}

// DB is rtbh's SQLite database. All writes go through one writer goroutine
// that commits concurrent writes together (group commit); reads use a
// separate connection pool and never wait for the writer (WAL mode).
type DB struct {
	w, r   *sql.DB
	stmts  map[string]*sql.Stmt // prepared on w
	log    *slog.Logger
	queue  chan *pending
	inst   atomic.Pointer[string] // ha.instance stamped on audit rows
	mu     sync.RWMutex           // guards closed against Submit
	closed bool
	done   chan struct{}

	bulkBuf []byte // the writer's scratch space for bulk writes

	commits commits.Observer // ObserveCommits

	ckptStop, ckptDone chan struct{} // the checkpointer's
}

// Statements the writer runs for every write, prepared once on its one
// connection.
const (
	sqlSavepoint    = `SAVEPOINT w`
	sqlRollbackTo   = `ROLLBACK TO w`
	sqlRelease      = `RELEASE w`
	sqlInsertBH     = `INSERT INTO blackholes(prefix, "match", origin, reason, created_at, expires_at) VALUES(?,?,?,?,?,?)`
	sqlExtendBH     = `UPDATE blackholes SET expires_at = ?, reason = ?, origin = ? WHERE prefix = ? AND "match" = ? AND ended_at IS NULL`
	sqlEndBH        = `UPDATE blackholes SET ended_at = ?, end_reason = ? WHERE prefix = ? AND "match" = ? AND ended_at IS NULL`
	sqlInsertAudit  = `INSERT INTO audit(at, actor, action, prefix, origin, reason, detail, instance) VALUES(?,?,?,?,?,?,?,?)`
	sqlInsertReport = `INSERT INTO reports(address, reporter, trust, kind, observed_at, count, evidence, received_at, operator) VALUES(?,?,?,?,?,?,?,?,?)`
	sqlUpsertAgent  = `INSERT INTO agents(agent, sampling_rate, seen_at) VALUES(?,?,?)
		ON CONFLICT(agent) DO UPDATE SET sampling_rate = excluded.sampling_rate, seen_at = excluded.seen_at`
	sqlUpsertServer = `INSERT INTO servers(address, rule, clients, first_seen, last_seen) VALUES(?,?,?,?,?)
		ON CONFLICT(address, rule) DO UPDATE SET clients = max(clients, excluded.clients),
		last_seen = max(last_seen, excluded.last_seen)`
	sqlInsertEvid = `INSERT INTO evidence(address, rule, action, protocol, dst_ports, distinct_destinations,
		estimated_packets, estimated_connections, window_ns, first_seen, last_seen, examples, recorded_at)
		VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)`
	sqlOffense = `INSERT INTO offenses(address, count, last_at) VALUES(?, 1, ?)
		ON CONFLICT(address) DO UPDATE SET count = count + 1, last_at = excluded.last_at`
)

type pending struct {
	w    *domain.Write
	ws   []*domain.Write // SubmitAll: applied together, all or nothing (w is then nil)
	done chan error
}

// writerCacheKiB is the writer connection's page cache (SQLite's default
// is 2 MiB). The audit indexes grow with every change (audit_prefix takes
// each row at its prefix's place, all over the index): with 500,000 audit
// rows, 10,000 more cost 38-43 µs each with 2 MiB of cache and 27-31 µs
// with 64 MiB, as the pages they touch stay in memory instead of being read
// back from the file. The cache fills only as pages are read.
const writerCacheKiB = 32 << 10

// Open opens (creating if missing) the database at path, switches it to WAL
// mode and applies the schema migrations.
func Open(path string, logger *slog.Logger) (*DB, error) {
	if path == "" {
		return nil, errors.New("opening store: empty path")
	}
	dsn := fileDSN(path, fmt.Sprintf("_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_foreign_keys=on&_txlock=immediate&_cache_size=%d", -writerCacheKiB))
	w, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.Ping(); err != nil {
		w.Close()
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	var mode string
	if err := w.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		w.Close()
		return nil, fmt.Errorf("opening store %s: WAL mode not available (journal_mode=%q): %v", path, mode, err)
	}
	if err := migrate(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	r, err := sql.Open("sqlite3", fileDSN(path, "_busy_timeout=10000&_foreign_keys=on"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	db := &DB{w: w, r: r, log: logger, stmts: map[string]*sql.Stmt{}, queue: make(chan *pending, 4*maxBatch), done: make(chan struct{})}
	for _, q := range append([]string{sqlSavepoint, sqlRollbackTo, sqlRelease, sqlInsertBH, sqlExtendBH, sqlEndBH, sqlInsertAudit, sqlInsertReport, sqlInsertEvid, sqlOffense, sqlUpsertServer, sqlUpsertAgent}, bulkStatements...) {
		st, err := w.Prepare(q)
		if err != nil {
			w.Close()
			r.Close()
			return nil, fmt.Errorf("opening store %s: preparing %q: %w", path, q, err)
		}
		db.stmts[q] = st
	}
	go db.writer()
	db.ckptStop, db.ckptDone = make(chan struct{}), make(chan struct{})
	go db.checkpointer()
	return db, nil
}

// ObserveCommits has f called with the time of every group commit, from
// its begin until it is durable (or failed), before the writes it carried
// are answered. f runs on the writer and must not block.
func (db *DB) ObserveCommits(f func(time.Duration)) { db.commits.Set(f) }

// SetInstance names the rtbhd (ha.instance) that audit rows are written
// by, unless a row names its own.
func (db *DB) SetInstance(name string) { db.inst.Store(&name) }

// Instance is the name SetInstance gave ("" before).
func (db *DB) Instance() string {
	if p := db.inst.Load(); p != nil {
		return *p
	}
	return ""
}

// checkpointEvery is how often the checkpointer copies the WAL back into
// the database.
const checkpointEvery = 100 * time.Millisecond

// checkpointer runs passive WAL checkpoints on a reader connection until
// Close. SQLite's automatic checkpoint runs inside the commit that fills
// the WAL to 1,000 pages: it copies them into the database and syncs it
// before that commit returns, and every write queued behind it waits (a
// latency spike of tens of milliseconds at a steady load). A passive
// checkpoint on another connection runs beside the writer instead, never
// blocking it; run often, it copies the WAL back while it is small and,
// whenever the writer pauses, completely, so that the next write restarts
// the WAL from its beginning and the automatic checkpoint is not reached.
// It stays on as the fallback (a sustained bulk load, a full disk).
func (db *DB) checkpointer() {
	defer close(db.ckptDone)
	tick := time.NewTicker(checkpointEvery)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-db.ckptStop:
			return
		case <-tick.C:
		}
		var busy, frames, done int
		err := db.r.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &done)
		switch {
		case err != nil && !failing:
			db.log.Warn("store: WAL checkpoint failed; retrying", "err", err)
			failing = true
		case err == nil:
			failing = false
		}
	}
}

// Close finishes queued writes and closes the database.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	close(db.queue)
	db.mu.Unlock()
	<-db.done
	close(db.ckptStop)
	<-db.ckptDone
	for _, st := range db.stmts {
		st.Close()
	}
	return errors.Join(db.w.Close(), db.r.Close())
}

// migrations are applied in order; PRAGMA user_version records how many
// have run. Never edit one that has shipped: append a new one.
var migrations = []string{
	`CREATE TABLE blackholes (
		id         INTEGER PRIMARY KEY,
		prefix     TEXT NOT NULL,
		origin     TEXT NOT NULL,
		reason     TEXT NOT NULL,
		created_at INTEGER NOT NULL, -- unix nanoseconds
		expires_at INTEGER NOT NULL,
		ended_at   INTEGER,          -- NULL while active
		end_reason TEXT              -- removed | expired
	);
	CREATE UNIQUE INDEX blackholes_active ON blackholes(prefix) WHERE ended_at IS NULL;
	CREATE TABLE audit (
		id     INTEGER PRIMARY KEY,
		at     INTEGER NOT NULL,
		actor  TEXT NOT NULL,
		action TEXT NOT NULL,
		prefix TEXT NOT NULL,
		origin TEXT NOT NULL,
		reason TEXT NOT NULL,
		detail TEXT NOT NULL
	);
	CREATE INDEX audit_prefix ON audit(prefix, at);
	CREATE TABLE evidence (
		id                    INTEGER PRIMARY KEY,
		address               TEXT NOT NULL,
		rule                  TEXT NOT NULL,
		action                TEXT NOT NULL,
		protocol              TEXT NOT NULL,
		dst_ports             TEXT NOT NULL,
		distinct_destinations INTEGER NOT NULL,
		estimated_packets     INTEGER NOT NULL,
		estimated_connections INTEGER NOT NULL,
		window_ns             INTEGER NOT NULL,
		first_seen            INTEGER NOT NULL,
		last_seen             INTEGER NOT NULL,
		examples              TEXT NOT NULL,
		recorded_at           INTEGER NOT NULL
	);
	CREATE INDEX evidence_address ON evidence(address, recorded_at);
	CREATE INDEX evidence_recorded ON evidence(recorded_at);
	CREATE TABLE offenses (
		address TEXT PRIMARY KEY,
		count   INTEGER NOT NULL,
		last_at INTEGER NOT NULL
	);
	CREATE TABLE reports (
		id          INTEGER PRIMARY KEY,
		address     TEXT NOT NULL,
		reporter    TEXT NOT NULL,
		trust       REAL NOT NULL,
		kind        TEXT NOT NULL,
		observed_at INTEGER NOT NULL,
		count       INTEGER NOT NULL,
		evidence    TEXT NOT NULL,
		received_at INTEGER NOT NULL
	);
	CREATE INDEX reports_address ON reports(address, observed_at);
	CREATE INDEX reports_observed ON reports(observed_at);`,
	// 2: learned servers (detector.skip_servers) and operator reports.
	`CREATE TABLE servers (
		address    TEXT NOT NULL,
		rule       TEXT NOT NULL,
		clients    INTEGER NOT NULL,
		first_seen INTEGER NOT NULL,
		last_seen  INTEGER NOT NULL,
		PRIMARY KEY (address, rule)
	);
	CREATE INDEX servers_last_seen ON servers(last_seen);
	ALTER TABLE reports ADD COLUMN operator INTEGER NOT NULL DEFAULT 0;`,
	// 3: the sampling rates agents report (rtbhd --check warns with them).
	`CREATE TABLE agents (
		agent         TEXT PRIMARY KEY,
		sampling_rate INTEGER NOT NULL,
		seen_at       INTEGER NOT NULL
	);`,
	// 4: store.retention deletes audit rows by age.
	`CREATE INDEX audit_at ON audit(at);`,
	// 5: FlowSpec filters. An entry is keyed by (prefix, match): match is
	// the filter's canonical match ("tcp/25"), '' for a blackhole route, so
	// a route and a filter on one prefix are two active rows. Audit rows
	// of a filter carry the match at the start of their detail
	// ("flowspec tcp/25; ...").
	`ALTER TABLE blackholes ADD COLUMN "match" TEXT NOT NULL DEFAULT '';
	DROP INDEX blackholes_active;
	CREATE UNIQUE INDEX blackholes_active ON blackholes(prefix, "match") WHERE ended_at IS NULL;`,
	// 6: ListAudit by actor, newest first, reads the actor's rows in id
	// order instead of scanning the table.
	`CREATE INDEX audit_actor ON audit(actor);`,
	// 7: the ha.instance that wrote each audit row.
	`ALTER TABLE audit ADD COLUMN instance TEXT NOT NULL DEFAULT '';`,
}

func migrate(db *sql.DB) error {
	var version int
	if err := db.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this rtbhd knows (%d): refusing to touch it", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		tx, err := db.Begin()
		if err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return nil
}

// SchemaVersion reports the applied schema version.
func (db *DB) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := db.r.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

// Submit queues w for the next group commit and returns a function that
// waits for the outcome. Writes are applied in the order they were
// submitted. The returned function must be called exactly once.
func (db *DB) Submit(w *domain.Write) func() error {
	p := &pending{w: w, done: make(chan error, 1)}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return func() error { return unavailable(ErrClosed) }
	}
	db.queue <- p
	db.mu.RUnlock()
	return func() error { return <-p.done }
}

// Commit submits w and waits until it is durable.
func (db *DB) Commit(w *domain.Write) error { return db.Submit(w)() }

// SubmitAll queues ws as one unit: they are applied in order in one
// transaction, all or nothing (a batch of blackholes committed together),
// and the returned function waits for the outcome, as Submit's does.
func (db *DB) SubmitAll(ws []*domain.Write) func() error {
	p := &pending{ws: ws, done: make(chan error, 1)}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return func() error { return unavailable(ErrClosed) }
	}
	db.queue <- p
	db.mu.RUnlock()
	return func() error { return <-p.done }
}

// applyPending applies p's write, or each of its writes in order.
// A SubmitAll batch is written in bulk (applyWrites).
func (db *DB) applyPending(st func(string) *sql.Stmt, p *pending, instance string) error {
	if p.ws == nil {
		return apply(st, p.w, instance)
	}
	var err error
	db.bulkBuf, err = applyWrites(st, p.ws, instance, db.bulkBuf)
	return err
}

func (db *DB) writer() {
	defer close(db.done)
	batch := make([]*pending, 0, maxBatch)
	for p := range db.queue {
		batch = append(batch[:0], p)
	fill:
		for len(batch) < maxBatch {
			select {
			case p, ok := <-db.queue:
				if !ok {
					break fill
				}
				batch = append(batch, p)
			default:
				break fill
			}
		}
		db.commit(batch)
	}
}

// commit writes batch in one transaction. Each write is its own unit: one
// that fails leaves the others committed. That takes a savepoint around
// each write, two more statements per write; as writes rarely fail, the
// batch is first written without them, and only when a write fails is
// that attempt rolled back and the batch written again write by write in
// savepoints — the outcome is the same, at half the statements.
func (db *DB) commit(batch []*pending) {
	start := time.Now()
	errs := make([]error, len(batch))
	failed, err := db.attempt(batch, errs, false)
	if err == nil && failed {
		_, err = db.attempt(batch, errs, true)
	}
	if err != nil {
		// The whole transaction failed (begin, savepoint, commit): the
		// environment, not one write, is at fault.
		db.log.Error("store commit failed", "writes", len(batch), "err", err)
		err = unavailable(err)
	}
	db.commits.Done(start)
	for i, p := range batch {
		if err != nil {
			p.done <- err
		} else {
			p.done <- errs[i]
		}
	}
}

// attempt writes batch in one transaction, each write in its own savepoint
// (its error in errs) if savepoints; without, the first write that fails
// rolls the transaction back and attempt reports failed.
func (db *DB) attempt(batch []*pending, errs []error, savepoints bool) (failed bool, err error) {
	tx, err := db.w.Begin()
	if err != nil {
		return false, fmt.Errorf("beginning transaction: %w", err)
	}
	txStmts := make(map[string]*sql.Stmt, len(db.stmts))
	st := func(q string) *sql.Stmt {
		s, ok := txStmts[q]
		if !ok {
			s = tx.Stmt(db.stmts[q])
			txStmts[q] = s
		}
		return s
	}
	for i, p := range batch {
		if !savepoints {
			if err := db.applyPending(st, p, db.Instance()); err != nil {
				if err := tx.Rollback(); err != nil {
					return false, fmt.Errorf("rolling back: %w", err)
				}
				return true, nil
			}
			continue
		}
		if _, err := st(sqlSavepoint).Exec(); err != nil {
			tx.Rollback()
			return false, fmt.Errorf("savepoint: %w", err)
		}
		if err := db.applyPending(st, p, db.Instance()); err != nil {
			if transient(err) {
				err = unavailable(err)
			}
			errs[i] = err
			if _, err := st(sqlRollbackTo).Exec(); err != nil {
				tx.Rollback()
				return false, fmt.Errorf("rolling back one write: %w", err)
			}
		}
		if _, err := st(sqlRelease).Exec(); err != nil {
			tx.Rollback()
			return false, fmt.Errorf("releasing savepoint: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("committing: %w", err)
	}
	return false, nil
}

func apply(st func(string) *sql.Stmt, w *domain.Write, instance string) error {
	at := w.At.UnixNano()
	b := w.Blackhole
	switch w.Op {
	case domain.BlackholeInsert:
		if _, err := st(sqlInsertBH).Exec(b.Prefix.String(), b.Match, b.Origin, b.Reason, b.CreatedAt.UnixNano(), b.ExpiresAt.UnixNano()); err != nil {
			if se := (sqlite3.Error{}); errors.As(err, &se) && se.Code == sqlite3.ErrConstraint {
				err = fmt.Errorf("%w: %w", errStale, err)
			}
			return fmt.Errorf("inserting blackhole %s: %w", b.Key(), err)
		}
	case domain.BlackholeExtend:
		if err := one(st(sqlExtendBH).Exec(b.ExpiresAt.UnixNano(), b.Reason, b.Origin, b.Prefix.String(), b.Match)); err != nil {
			return fmt.Errorf("extending blackhole %s: %w", b.Key(), err)
		}
	case domain.BlackholeEnd:
		if err := one(st(sqlEndBH).Exec(at, w.EndReason, b.Prefix.String(), b.Match)); err != nil {
			return fmt.Errorf("ending blackhole %s: %w", b.Key(), err)
		}
	}
	for _, a := range w.Audit {
		inst := a.Instance
		if inst == "" {
			inst = instance
		}
		if _, err := st(sqlInsertAudit).Exec(at, a.Actor, a.Action, a.Prefix, a.Origin, a.Reason, a.Detail, inst); err != nil {
			return fmt.Errorf("writing audit row: %w", err)
		}
	}
	if e := w.Evidence; e != nil {
		if _, err := st(sqlInsertEvid).Exec(
			e.Address.String(), e.Rule, e.Action, e.Protocol, column.JoinPorts(e.DstPorts), e.DistinctDestinations,
			e.EstimatedPackets, e.EstimatedConnections, int64(e.Window), e.FirstSeen.UnixNano(), e.LastSeen.UnixNano(),
			column.JoinAddrs(e.Examples), e.RecordedAt.UnixNano()); err != nil {
			return fmt.Errorf("writing evidence for %s: %w", e.Address, err)
		}
	}
	if w.Offense.IsValid() {
		if _, err := st(sqlOffense).Exec(
			w.Offense.String(), at); err != nil {
			return fmt.Errorf("counting offense of %s: %w", w.Offense, err)
		}
	}
	if len(w.Reports) > 0 {
		ins := st(sqlInsertReport)
		for _, r := range w.Reports {
			if _, err := ins.Exec(r.Address.String(), r.Reporter, r.Trust, r.Kind, r.ObservedAt.UnixNano(), r.Count,
				r.Evidence, r.ReceivedAt.UnixNano(), r.Operator); err != nil {
				return fmt.Errorf("writing report for %s: %w", r.Address, err)
			}
		}
	}
	for _, sv := range w.Servers {
		if _, err := st(sqlUpsertServer).Exec(sv.Address.String(), sv.Rule, sv.Clients,
			sv.FirstSeen.UnixNano(), sv.LastSeen.UnixNano()); err != nil {
			return fmt.Errorf("recording server %s: %w", sv.Address, err)
		}
	}
	for _, ag := range w.Agents {
		if _, err := st(sqlUpsertAgent).Exec(ag.Agent.String(), ag.SamplingRate, ag.SeenAt.UnixNano()); err != nil {
			return fmt.Errorf("recording agent %s: %w", ag.Agent, err)
		}
	}
	return nil
}

// one checks that an UPDATE touched exactly one row.
func one(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("no active entry (%d rows): %w", n, errStale)
	}
	return nil
}

// ActiveBlackholes returns the entries that were not removed or expired
// when they were last written, including those whose expires_at has passed
// while rtbhd was down (the caller expires them).
func (db *DB) ActiveBlackholes(ctx context.Context) ([]domain.Blackhole, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT prefix, "match", origin, reason, created_at, expires_at
		FROM blackholes WHERE ended_at IS NULL ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing active blackholes: %w", err)
	}
	defer rows.Close()
	var out []domain.Blackhole
	for rows.Next() {
		var (
			b                  domain.Blackhole
			prefix             string
			created, expiresAt int64
		)
		if err := rows.Scan(&prefix, &b.Match, &b.Origin, &b.Reason, &created, &expiresAt); err != nil {
			return nil, fmt.Errorf("listing active blackholes: %w", err)
		}
		p, err := netip.ParsePrefix(prefix)
		if err != nil {
			return nil, fmt.Errorf("listing active blackholes: bad prefix %q in store: %w", prefix, err)
		}
		b.Prefix = p
		b.CreatedAt = time.Unix(0, created).UTC()
		b.ExpiresAt = time.Unix(0, expiresAt).UTC()
		out = append(out, b)
	}
	return out, rows.Err()
}

// AuditLog returns audit rows, oldest first; prefix "" means all. limit <= 0
// means no limit.
func (db *DB) AuditLog(ctx context.Context, prefix string, limit int) ([]domain.AuditEntry, error) {
	q := `SELECT id, at, actor, action, prefix, origin, reason, detail, instance FROM audit`
	var args []any
	if prefix != "" {
		q += ` WHERE prefix = ?`
		args = append(args, prefix)
	}
	q += ` ORDER BY id`
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
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
		a.At = time.Unix(0, at).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// Offenses returns how many times the detector has blackholed addr.
func (db *DB) Offenses(ctx context.Context, addr netip.Addr) (int, error) {
	var n int
	err := db.r.QueryRowContext(ctx, `SELECT count FROM offenses WHERE address = ?`, addr.String()).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading offenses of %s: %w", addr, err)
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
	if o.Evidence, err = db.queryEvidence(ctx, `WHERE address = ?`, []any{addr.String()}, limit); err != nil {
		return o, err
	}
	if o.Reports, err = db.reportsFor(ctx, addr, limit); err != nil {
		return o, err
	}
	return o, nil
}

// RecentEvidence returns the newest evidence rows, optionally only those of
// rules in shadow mode (action log).
func (db *DB) RecentEvidence(ctx context.Context, shadowOnly bool, limit int) ([]domain.Evidence, error) {
	if shadowOnly {
		return db.queryEvidence(ctx, `WHERE action = ?`, []any{"log"}, limit)
	}
	return db.queryEvidence(ctx, ``, nil, limit)
}

func (db *DB) queryEvidence(ctx context.Context, where string, args []any, limit int) ([]domain.Evidence, error) {
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit)
	rows, err := db.r.QueryContext(ctx, `SELECT address, rule, action, protocol, dst_ports, distinct_destinations,
		estimated_packets, estimated_connections, window_ns, first_seen, last_seen, examples, recorded_at
		FROM evidence `+where+` ORDER BY recorded_at DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading evidence: %w", err)
	}
	defer rows.Close()
	var out []domain.Evidence
	for rows.Next() {
		var (
			e                         domain.Evidence
			addr, ports, examples     string
			window, first, last, recd int64
		)
		if err := rows.Scan(&addr, &e.Rule, &e.Action, &e.Protocol, &ports, &e.DistinctDestinations,
			&e.EstimatedPackets, &e.EstimatedConnections, &window, &first, &last, &examples, &recd); err != nil {
			return nil, fmt.Errorf("reading evidence: %w", err)
		}
		e.Address, _ = netip.ParseAddr(addr)
		e.DstPorts = column.SplitPorts(ports)
		e.Examples = column.SplitAddrs(examples)
		e.Window = time.Duration(window)
		e.FirstSeen = time.Unix(0, first).UTC()
		e.LastSeen = time.Unix(0, last).UTC()
		e.RecordedAt = time.Unix(0, recd).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// reportsFor returns the reports about addr, newest first (limit <= 0:
// all).
func (db *DB) reportsFor(ctx context.Context, addr netip.Addr, limit int) ([]domain.Report, error) {
	q := `SELECT address, reporter, trust, kind, observed_at, count, evidence, received_at, operator FROM reports
		WHERE address = ? ORDER BY observed_at DESC, id DESC`
	args := []any{addr.String()}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	return db.queryReports(ctx, q, args...)
}

// ReportsSince returns every report observed at or after since, oldest
// first; rtbhd rebuilds its report scores from it at start.
func (db *DB) ReportsSince(ctx context.Context, since time.Time) ([]domain.Report, error) {
	return db.queryReports(ctx, `SELECT address, reporter, trust, kind, observed_at, count, evidence, received_at, operator
		FROM reports WHERE observed_at >= ? ORDER BY observed_at, id`, column.UnixNanoOrZero(since))
}

func (db *DB) queryReports(ctx context.Context, q string, args ...any) ([]domain.Report, error) {
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading reports: %w", err)
	}
	defer rows.Close()
	var out []domain.Report
	for rows.Next() {
		var (
			r              domain.Report
			addr           string
			observed, recd int64
		)
		if err := rows.Scan(&addr, &r.Reporter, &r.Trust, &r.Kind, &observed, &r.Count, &r.Evidence, &recd, &r.Operator); err != nil {
			return nil, fmt.Errorf("reading reports: %w", err)
		}
		r.Address, _ = netip.ParseAddr(addr)
		r.ObservedAt = time.Unix(0, observed).UTC()
		r.ReceivedAt = time.Unix(0, recd).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// Servers returns the learned servers last seen at or after since, by
// address.
func (db *DB) Servers(ctx context.Context, since time.Time) ([]domain.Server, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT address, rule, clients, first_seen, last_seen FROM servers
		WHERE last_seen >= ? ORDER BY address, rule`, column.UnixNanoOrZero(since))
	if err != nil {
		return nil, fmt.Errorf("reading servers: %w", err)
	}
	defer rows.Close()
	var out []domain.Server
	for rows.Next() {
		var (
			sv          domain.Server
			addr        string
			first, last int64
		)
		if err := rows.Scan(&addr, &sv.Rule, &sv.Clients, &first, &last); err != nil {
			return nil, fmt.Errorf("reading servers: %w", err)
		}
		if sv.Address, err = netip.ParseAddr(addr); err != nil {
			return nil, fmt.Errorf("reading servers: bad address %q in store: %w", addr, err)
		}
		sv.FirstSeen = time.Unix(0, first).UTC()
		sv.LastSeen = time.Unix(0, last).UTC()
		out = append(out, sv)
	}
	return out, rows.Err()
}

// fileDSN is the driver's URI for the file at path with params: the
// characters SQLite's URI syntax gives a meaning (%, ?, #) are escaped, so
// any path works.
func fileDSN(path, params string) string {
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23").Replace(path) + "?" + params
}

// Agents returns the sampling rates the agents last reported, by agent.
func (db *DB) Agents(ctx context.Context) ([]domain.AgentRate, error) {
	return queryAgents(ctx, db.r)
}

// ReadAgents reads the agents' sampling rates from the database at path
// without changing it (rtbhd --check, possibly beside a running rtbhd).
// A missing file, or a schema without agents, is no agents.
func ReadAgents(ctx context.Context, path string) ([]domain.AgentRate, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	r, err := sql.Open("sqlite3", fileDSN(path, "mode=ro&_busy_timeout=5000"))
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	defer r.Close()
	var n int
	if err := r.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'agents'`).Scan(&n); err != nil {
		return nil, fmt.Errorf("reading store %s: %w", path, err)
	}
	if n == 0 {
		return nil, nil
	}
	return queryAgents(ctx, r)
}

func queryAgents(ctx context.Context, q *sql.DB) ([]domain.AgentRate, error) {
	rows, err := q.QueryContext(ctx, `SELECT agent, sampling_rate, seen_at FROM agents ORDER BY agent`)
	if err != nil {
		return nil, fmt.Errorf("reading agents: %w", err)
	}
	defer rows.Close()
	var out []domain.AgentRate
	for rows.Next() {
		var (
			a    domain.AgentRate
			addr string
			seen int64
		)
		if err := rows.Scan(&addr, &a.SamplingRate, &seen); err != nil {
			return nil, fmt.Errorf("reading agents: %w", err)
		}
		if a.Agent, err = netip.ParseAddr(addr); err != nil {
			return nil, fmt.Errorf("reading agents: bad address %q in store: %w", addr, err)
		}
		a.SeenAt = time.Unix(0, seen).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// CountReports returns the number of stored reports.
func (db *DB) CountReports(ctx context.Context) (int, error) {
	var n int
	err := db.r.QueryRowContext(ctx, `SELECT count(*) FROM reports`).Scan(&n)
	return n, err
}

// PruneBatch is how many rows one retention DELETE removes at most: each
// batch is its own short transaction, so report and blackhole writes wait
// for at most one batch.
const PruneBatch = 5000

// The retention deletes (store.retention), one batch each. A row is kept
// while an active blackhole has its prefix (audit) or its address's host
// prefix (reports, evidence); rows about an address inside a wider active
// prefix are not kept for it.
const (
	sqlPruneReports = `DELETE FROM reports WHERE id IN (
		SELECT r.id FROM reports r WHERE r.observed_at < ? AND NOT EXISTS (
			SELECT 1 FROM blackholes b WHERE b.ended_at IS NULL AND b.prefix IN (r.address || '/32', r.address || '/128'))
		LIMIT ?)`
	sqlPruneEvidence = `DELETE FROM evidence WHERE id IN (
		SELECT e.id FROM evidence e WHERE e.recorded_at < ? AND NOT EXISTS (
			SELECT 1 FROM blackholes b WHERE b.ended_at IS NULL AND b.prefix IN (e.address || '/32', e.address || '/128'))
		LIMIT ?)`
	sqlPruneAudit = `DELETE FROM audit WHERE id IN (
		SELECT a.id FROM audit a WHERE a.at < ? AND NOT EXISTS (
			SELECT 1 FROM blackholes b WHERE b.ended_at IS NULL AND b.prefix = a.prefix)
		LIMIT ?)`
)

// Prune deletes the reports observed, evidence recorded and audit rows
// written before before, in batches of at most batch rows (PruneBatch if
// batch <= 0), keeping the rows of active blackholes. It stops at the
// first error or when ctx ends, returning what it deleted so far; a later
// call continues.
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
			res, err := db.w.ExecContext(ctx, t.query, cut, batch)
			if err != nil {
				return n, fmt.Errorf("pruning %s: %w", t.name, err)
			}
			k, err := res.RowsAffected()
			if err != nil {
				return n, fmt.Errorf("pruning %s: %w", t.name, err)
			}
			*t.count += k
			if k < int64(batch) {
				break
			}
		}
	}
	return n, nil
}
