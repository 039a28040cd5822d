package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/store/internal/column"
	"github.com/rtbh/rtbh/store/internal/commits"
)

// maxBatch bounds how many writes share one transaction (a SubmitAll unit
// larger than that has a transaction of its own).
const maxBatch = 1024

// writeTimeout bounds one group commit: a PostgreSQL that stops answering
// makes writes fail (UNAVAILABLE) instead of hanging.
const writeTimeout = 10 * time.Second

// Advisory lock keys (pg_advisory_*): one serialises every write
// transaction of every instance (so that change sequence numbers and
// report ids are in commit order), one is held by the leader's session, one
// by a migration.
const (
	lockWrites  int64 = 0x72746268_0001 // "rtbh" 1
	lockLeader  int64 = 0x72746268_0002
	lockMigrate int64 = 0x72746268_0003
)

// Channel is the LISTEN/NOTIFY channel a commit that changed blackholes or
// reports notifies, with the committing instance's name as payload (""
// when the stored result differs from what that instance decided: then it
// reads its own change back too).
const Channel = "rtbh_changes"

// ErrClosed is the cause of the error returned for writes submitted after
// Close (which is also domain.ErrStoreUnavailable).
var ErrClosed = errors.New("store: closed")

// errStale is a write that does not fit the stored state: it ends an entry
// that is not active (another instance removed it first, or extended an
// entry this instance would expire). Once the instance has reloaded, the
// same request gets its right answer, so it is unavailable (try again).
var errStale = errors.New("the stored state differs from the decision's (changed by another instance, or an earlier write failed)")

type unavailableError struct{ cause error }

func (e *unavailableError) Error() string {
	return "store unavailable: " + e.cause.Error() + ": try again"
}

func (e *unavailableError) Unwrap() []error { return []error{domain.ErrStoreUnavailable, e.cause} }

func unavailable(err error) error {
	if err == nil || errors.Is(err, domain.ErrStoreUnavailable) {
		return err
	}
	return &unavailableError{cause: err}
}

// transient reports whether err may pass: anything but a statement that
// PostgreSQL refused for its content (data exceptions, integrity
// violations, syntax or undefined objects).
func transient(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && len(pe.Code) >= 2 {
		switch pe.Code[:2] {
		case "22", "23", "42":
			return false
		}
	}
	return true
}

// Config configures Open.
type Config struct {
	// DSN is a postgres:// URL or key=value string (store.dsn).
	DSN string
	// Password, if not "", is the password (store.password_file); otherwise
	// the DSN's or PGPASSWORD's is used.
	Password string
	// Instance names this rtbhd (ha.instance) in audit rows and reports.
	Instance string
}

// DB is rtbh's PostgreSQL store. Like the SQLite store, every write goes
// through one writer goroutine that commits concurrent writes together
// (group commit); reads use the pool.
type DB struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	instance string

	queue  chan *pending
	mu     sync.RWMutex // guards closed against Submit
	closed bool
	done   chan struct{}

	writesOK atomic.Bool      // the last group commit succeeded
	commits  commits.Observer // ObserveCommits
	follow   followState
}

// pending is one unit of the queue: a Submit's write, or a SubmitAll's
// writes, applied together, all or nothing.
type pending struct {
	ws   []*domain.Write
	one  [1]*domain.Write // Submit's ws, without an allocation of its own
	done chan error
}

// Open connects to PostgreSQL and applies the schema migrations.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*DB, error) {
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("opening store: store.dsn: %w", err)
	}
	if cfg.Password != "" {
		pc.ConnConfig.Password = cfg.Password
	}
	// Fail fast on an unreachable server: writes answer UNAVAILABLE.
	if pc.ConnConfig.ConnectTimeout == 0 || pc.ConnConfig.ConnectTimeout > 5*time.Second {
		pc.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	detectDeadPeers(&pc.ConnConfig.Config)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("opening store %s: %w", redact(pc.ConnConfig), err)
	}
	db := &DB{pool: pool, log: logger, instance: cfg.Instance, queue: make(chan *pending, 4*maxBatch), done: make(chan struct{})}
	db.writesOK.Store(true)
	db.follow.init()
	go db.writer()
	return db, nil
}

// redact names the server without credentials.
func redact(c *pgx.ConnConfig) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// Close finishes queued writes and closes the pool.
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
	db.pool.Close()
	return nil
}

// Instance is the ha.instance this store writes as.
func (db *DB) Instance() string { return db.instance }

// Submit queues w for the next group commit and returns a function that
// waits for the outcome (called exactly once). Writes are applied in the
// order they were submitted.
func (db *DB) Submit(w *domain.Write) func() error {
	p := &pending{done: make(chan error, 1)}
	p.one[0] = w
	p.ws = p.one[:]
	return db.enqueue(p)
}

// SubmitAll queues ws as one unit: they are applied in order in one
// transaction, all or nothing (a batch of blackholes committed together),
// in order with the writes submitted before and after it, each with its
// change sequence number, changed_by and audit rows as a single write has
// them. The returned function waits for the outcome, as Submit's does.
func (db *DB) SubmitAll(ws []*domain.Write) func() error {
	return db.enqueue(&pending{ws: ws, done: make(chan error, 1)})
}

func (db *DB) enqueue(p *pending) func() error {
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return func() error { return unavailable(ErrClosed) }
	}
	db.queue <- p
	db.mu.RUnlock()
	return func() error { return <-p.done }
}

// Commit submits w and waits until it is committed.
func (db *DB) Commit(w *domain.Write) error { return db.Submit(w)() }

func (db *DB) writer() {
	defer close(db.done)
	batch := make([]*pending, 0, maxBatch)
	for p := range db.queue {
		batch = append(batch[:0], p)
		n := len(p.ws)
	fill:
		for n < maxBatch {
			select {
			case p, ok := <-db.queue:
				if !ok {
					break fill
				}
				batch = append(batch, p)
				n += len(p.ws)
			default:
				break fill
			}
		}
		db.commit(batch)
	}
}

// commit commits batch in one transaction. The fast path sends every
// statement of every write in one pipeline; if any write fails (a stale
// end, a refused statement), the transaction is rolled back and the batch
// runs again with each unit (a write, or a SubmitAll's writes) in its own
// savepoint, so that one failing unit does not undo its neighbours.
func (db *DB) commit(batch []*pending) {
	start := time.Now()
	errs := make([]error, len(batch))
	ctx, cancel := context.WithTimeout(context.Background(), timeoutFor(batch))
	defer cancel()
	err := db.run(ctx, batch, errs, false)
	if errors.Is(err, errRetryOneByOne) {
		clear(errs)
		err = db.run(ctx, batch, errs, true)
	}
	if err != nil {
		err = unavailable(err)
		db.log.Error("store commit failed", "writes", len(batch), "err", err)
		// The pool's other connections likely broke the same way (a server
		// restart): drop them rather than fail on each in turn.
		db.pool.Reset()
		for i := range errs {
			errs[i] = err
		}
	}
	db.writesOK.Store(err == nil)
	db.commits.Done(start)
	for i, p := range batch {
		p.done <- errs[i]
	}
}

// ObserveCommits has f called with the time of every group commit, from
// its begin until it is durable (or failed), before the writes it carried
// are answered. f runs on the writer and must not block.
func (db *DB) ObserveCommits(f func(time.Duration)) { db.commits.Set(f) }

// timeoutFor is writeTimeout, and a millisecond more for each write above
// maxBatch (a SubmitAll of up to 10,000 writes gets up to 19s).
func timeoutFor(batch []*pending) time.Duration {
	n := 0
	for _, p := range batch {
		n += len(p.ws)
	}
	return writeTimeout + time.Duration(max(0, n-maxBatch))*time.Millisecond
}

var errRetryOneByOne = errors.New("a write failed in the pipeline")

// Outcomes of a blackhole statement, as its final SELECT returns them.
const (
	outcomeNone      = 0 // End: no active entry (stale)
	outcomeAsDecided = 1 // the row is what the decision wrote
	outcomeMerged    = 2 // the row differs (merged with or re-created over another instance's change)
)

func (db *DB) run(ctx context.Context, batch []*pending, errs []error, oneByOne bool) error {
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockWrites); err != nil {
		return fmt.Errorf("taking the write lock: %w", err)
	}
	notify, merged := false, false
	if !oneByOne {
		b := &pgx.Batch{}
		n := 0
		for _, p := range batch {
			n += len(p.ws)
		}
		counts := make([]int, 0, n)
		for _, p := range batch {
			for _, w := range p.ws {
				counts = append(counts, db.queue1(b, w))
			}
		}
		res := tx.SendBatch(ctx, b)
		k := 0
		for _, p := range batch {
			for _, w := range p.ws {
				out, err := readWrite(res, w, counts[k])
				k++
				if err != nil {
					res.Close()
					if !transient(err) || errors.Is(err, errStale) {
						return errRetryOneByOne
					}
					return err
				}
				notify = notify || touches(w)
				merged = merged || out == outcomeMerged
			}
		}
		if err := res.Close(); err != nil {
			return err
		}
	} else {
		for i, p := range batch {
			sp, err := tx.Begin(ctx)
			if err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
			b := &pgx.Batch{}
			counts := make([]int, len(p.ws))
			for k, w := range p.ws {
				counts[k] = db.queue1(b, w)
			}
			res := sp.SendBatch(ctx, b)
			unitNotify, unitMerged := false, false
			for k, w := range p.ws {
				var out int
				if out, err = readWrite(res, w, counts[k]); err != nil {
					break
				}
				unitNotify = unitNotify || touches(w)
				unitMerged = unitMerged || out == outcomeMerged
			}
			if cerr := res.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				if errors.Is(err, errStale) || transient(err) {
					err = unavailable(err)
				}
				errs[i] = err
				if rerr := sp.Rollback(ctx); rerr != nil {
					return fmt.Errorf("rolling back one write: %w", rerr)
				}
				continue
			}
			if err := sp.Commit(ctx); err != nil {
				return fmt.Errorf("releasing savepoint: %w", err)
			}
			notify = notify || unitNotify
			merged = merged || unitMerged
		}
	}
	if notify {
		payload := db.instance
		if merged {
			payload = ""
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, payload); err != nil {
			return fmt.Errorf("notifying: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	return nil
}

// touches reports whether w changes what other instances follow.
func touches(w *domain.Write) bool { return w.Op != domain.BlackholeNone || len(w.Reports) > 0 }

// The blackhole statements. Each ends in a SELECT of its outcome, and
// writes the write's audit rows in the same statement only when it took
// effect. Every changed row gets the next change sequence number (commit
// order: write transactions hold lockWrites) and changed_by: this
// instance when the row is what it decided, "" when the stored row differs
// (so that this instance reads it back too).
const (
	// An insert that meets an active entry (another instance added it
	// first) extends it instead: one active entry, the later expiry; an
	// operator takes over a partner's entry, any other origin stays.
	sqlInsertBH = `WITH b AS (
		INSERT INTO blackholes AS o (prefix, match, origin, reason, created_at, expires_at, seq, changed_by)
		VALUES ($1, $2, $3, $4, $5, $6, nextval('blackholes_seq'), $8)
		ON CONFLICT (prefix, match) WHERE ended_at IS NULL DO UPDATE SET
			expires_at = GREATEST(o.expires_at, excluded.expires_at),
			reason = CASE WHEN excluded.expires_at > o.expires_at THEN excluded.reason ELSE o.reason END,
			origin = CASE WHEN excluded.origin LIKE 'operator:%' AND o.origin LIKE 'partner:%' THEN excluded.origin ELSE o.origin END,
			seq = excluded.seq, changed_by = ''
		RETURNING CASE WHEN o.xmax = 0 THEN 1 ELSE 2 END AS outcome),
	a AS (INSERT INTO audit(at, actor, action, prefix, origin, reason, detail, instance)
		SELECT $7, x.actor, CASE WHEN b.outcome = 1 THEN x.action ELSE 'extend' END, x.prefix, x.origin, x.reason,
			CASE WHEN b.outcome = 1 THEN x.detail ELSE x.detail || '; merged with the entry another instance added' END, x.instance
		FROM b, unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
			AS x(actor, action, prefix, origin, reason, detail, instance))
	SELECT outcome FROM b`
	// An extension keeps the later expiry and an operator's origin; if
	// the entry ended meanwhile (another instance removed it), the request
	// — add or extend — adds it again.
	sqlExtendBH = `WITH u AS (
		UPDATE blackholes o SET
			expires_at = GREATEST(o.expires_at, $6),
			reason = CASE WHEN $6 >= o.expires_at THEN $4 ELSE o.reason END,
			origin = CASE WHEN o.origin LIKE 'operator:%' AND $3 NOT LIKE 'operator:%' THEN o.origin ELSE $3 END,
			seq = nextval('blackholes_seq'),
			changed_by = CASE WHEN o.expires_at <= $6 AND o.created_at = $5
				AND (o.origin NOT LIKE 'operator:%' OR $3 LIKE 'operator:%') THEN $8 ELSE '' END
		WHERE o.prefix = $1 AND o.match = $2 AND o.ended_at IS NULL
		RETURNING CASE WHEN changed_by = '' THEN 2 ELSE 1 END AS outcome),
	i AS (INSERT INTO blackholes (prefix, match, origin, reason, created_at, expires_at, seq, changed_by)
		SELECT $1, $2, $3, $4, $7, $6, nextval('blackholes_seq'), '' WHERE NOT EXISTS (SELECT 1 FROM u)
		RETURNING 2 AS outcome),
	b AS (SELECT outcome FROM u UNION ALL SELECT outcome FROM i),
	a AS (INSERT INTO audit(at, actor, action, prefix, origin, reason, detail, instance)
		SELECT $7, x.actor, CASE WHEN EXISTS (SELECT 1 FROM i) THEN 'add' ELSE x.action END, x.prefix, x.origin, x.reason,
			CASE WHEN EXISTS (SELECT 1 FROM i) THEN x.detail || '; added again: another instance had ended the entry' ELSE x.detail END, x.instance
		FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
			AS x(actor, action, prefix, origin, reason, detail, instance))
	SELECT outcome FROM b`
	// An end takes effect once: only while the entry is active, and an
	// expiry only when the stored entry is due (another instance may have
	// extended it). Otherwise it writes nothing and is stale.
	sqlEndBH = `WITH e AS (
		UPDATE blackholes SET ended_at = $3, end_reason = $4, seq = nextval('blackholes_seq'), changed_by = $5
		WHERE prefix = $1 AND match = $2 AND ended_at IS NULL AND ($4 <> 'expired' OR expires_at <= $3)
		RETURNING 1 AS outcome),
	a AS (INSERT INTO audit(at, actor, action, prefix, origin, reason, detail, instance)
		SELECT $3, x.actor, x.action, x.prefix, x.origin, x.reason, x.detail, x.instance
		FROM e, unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
			AS x(actor, action, prefix, origin, reason, detail, instance))
	SELECT count(*) FROM e`
	sqlInsertAudit = `INSERT INTO audit(at, actor, action, prefix, origin, reason, detail, instance)
		SELECT $1, x.actor, x.action, x.prefix, x.origin, x.reason, x.detail, x.instance
		FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
			AS x(actor, action, prefix, origin, reason, detail, instance)`
	sqlInsertReports = `INSERT INTO reports(address, reporter, trust, kind, observed_at, count, evidence, received_at, operator, instance)
		SELECT x.address, x.reporter, x.trust, x.kind, x.observed_at, x.count, x.evidence, x.received_at, x.operator, $10
		FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[], $9::bool[])
			AS x(address, reporter, trust, kind, observed_at, count, evidence, received_at, operator)`
	sqlUpsertAgent = `INSERT INTO agents(agent, sampling_rate, seen_at) VALUES($1, $2, $3)
		ON CONFLICT (agent) DO UPDATE SET sampling_rate = excluded.sampling_rate, seen_at = excluded.seen_at`
	sqlUpsertServer = `INSERT INTO servers(address, rule, clients, first_seen, last_seen) VALUES($1, $2, $3, $4, $5)
		ON CONFLICT (address, rule) DO UPDATE SET clients = GREATEST(servers.clients, excluded.clients),
		last_seen = GREATEST(servers.last_seen, excluded.last_seen)`
	sqlInsertEvid = `INSERT INTO evidence(address, rule, action, protocol, dst_ports, distinct_destinations,
		estimated_packets, estimated_connections, window_ns, first_seen, last_seen, examples, recorded_at, instance)
		VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`
	sqlOffense = `INSERT INTO offenses(address, count, last_at) VALUES($1, 1, $2)
		ON CONFLICT (address) DO UPDATE SET count = offenses.count + 1, last_at = excluded.last_at`
)

// auditArgs are the audit rows of w as the column arrays the statements
// unnest.
func (db *DB) auditArgs(w *domain.Write) []any {
	n := len(w.Audit)
	actor, action, prefix, origin, reason, detail, inst := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, a := range w.Audit {
		actor[i], action[i], prefix[i], origin[i], reason[i], detail[i] = a.Actor, a.Action, a.Prefix, a.Origin, a.Reason, a.Detail
		inst[i] = a.Instance
		if inst[i] == "" {
			inst[i] = db.instance
		}
	}
	return []any{actor, action, prefix, origin, reason, detail, inst}
}

// queue1 queues the statements of w and returns how many.
func (db *DB) queue1(b *pgx.Batch, w *domain.Write) int {
	n := b.Len()
	at := w.At.UnixNano()
	bh := w.Blackhole
	switch w.Op {
	case domain.BlackholeInsert:
		b.Queue(sqlInsertBH, append([]any{bh.Prefix.String(), bh.Match, bh.Origin, bh.Reason, bh.CreatedAt.UnixNano(),
			bh.ExpiresAt.UnixNano(), at, db.instance}, db.auditArgs(w)...)...)
	case domain.BlackholeExtend:
		b.Queue(sqlExtendBH, append([]any{bh.Prefix.String(), bh.Match, bh.Origin, bh.Reason, bh.CreatedAt.UnixNano(),
			bh.ExpiresAt.UnixNano(), at, db.instance}, db.auditArgs(w)...)...)
	case domain.BlackholeEnd:
		b.Queue(sqlEndBH, append([]any{bh.Prefix.String(), bh.Match, at, w.EndReason, db.instance}, db.auditArgs(w)...)...)
	default:
		if len(w.Audit) > 0 {
			b.Queue(sqlInsertAudit, append([]any{at}, db.auditArgs(w)...)...)
		}
	}
	if e := w.Evidence; e != nil {
		b.Queue(sqlInsertEvid, e.Address.String(), e.Rule, e.Action, e.Protocol, column.JoinPorts(e.DstPorts),
			int64(e.DistinctDestinations), int64(e.EstimatedPackets), int64(e.EstimatedConnections), int64(e.Window),
			e.FirstSeen.UnixNano(), e.LastSeen.UnixNano(), column.JoinAddrs(e.Examples), e.RecordedAt.UnixNano(), db.instance)
	}
	if w.Offense.IsValid() {
		b.Queue(sqlOffense, w.Offense.String(), at)
	}
	if k := len(w.Reports); k > 0 {
		addr, reporter, kind, evid := make([]string, k), make([]string, k), make([]string, k), make([]string, k)
		trust := make([]float64, k)
		observed, count, recd := make([]int64, k), make([]int64, k), make([]int64, k)
		op := make([]bool, k)
		for i, r := range w.Reports {
			addr[i], reporter[i], kind[i], evid[i] = r.Address.String(), r.Reporter, r.Kind, r.Evidence
			trust[i], observed[i], count[i], recd[i], op[i] = r.Trust, r.ObservedAt.UnixNano(), int64(r.Count), r.ReceivedAt.UnixNano(), r.Operator
		}
		b.Queue(sqlInsertReports, addr, reporter, trust, kind, observed, count, evid, recd, op, db.instance)
	}
	for _, sv := range w.Servers {
		b.Queue(sqlUpsertServer, sv.Address.String(), sv.Rule, int64(sv.Clients), sv.FirstSeen.UnixNano(), sv.LastSeen.UnixNano())
	}
	for _, ag := range w.Agents {
		b.Queue(sqlUpsertAgent, ag.Agent.String(), int64(ag.SamplingRate), ag.SeenAt.UnixNano())
	}
	return b.Len() - n
}

// readWrite reads the n results of one write's statements and returns the
// blackhole statement's outcome.
func readWrite(res pgx.BatchResults, w *domain.Write, n int) (int, error) {
	outcome := outcomeAsDecided
	for k := range n {
		if k == 0 && w.Op != domain.BlackholeNone {
			var o int64
			if err := res.QueryRow().Scan(&o); err != nil {
				return 0, fmt.Errorf("writing blackhole %s: %w", w.Blackhole.Prefix, err)
			}
			if o == outcomeNone {
				return 0, fmt.Errorf("%s %s: no active entry to end: %w", w.EndReason, w.Blackhole.Prefix, errStale)
			}
			outcome = int(o)
			continue
		}
		if _, err := res.Exec(); err != nil {
			return 0, fmt.Errorf("writing %s: %w", describe(w), err)
		}
	}
	return outcome, nil
}

func describe(w *domain.Write) string {
	var parts []string
	if w.Evidence != nil {
		parts = append(parts, "evidence")
	}
	if len(w.Reports) > 0 {
		parts = append(parts, "reports")
	}
	if len(w.Servers) > 0 {
		parts = append(parts, "servers")
	}
	if len(w.Agents) > 0 {
		parts = append(parts, "agents")
	}
	parts = append(parts, "audit")
	return strings.Join(parts, ", ")
}
