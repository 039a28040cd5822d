package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/rtbh/rtbh/detector/domain"
)

// Follower is the decision path that Follow keeps in step with what other
// instances commit (detector.Manager).
type Follower interface {
	// Resync replaces the follower's state with the store's.
	Resync(ctx context.Context) error
	// Sync calls fetch once, with no write of the follower in flight, and
	// applies the changes it returns.
	Sync(ctx context.Context, fetch func(context.Context) (domain.Changes, error)) error
	// LeadershipChanged tells the follower that Leader changed.
	LeadershipChanged()
}

// Timing of Follow.
const (
	// reconnectEvery is how often a lost listener connection is retried.
	reconnectEvery = 500 * time.Millisecond
	// idleCheck is how long the listener waits for a notification before it
	// checks the connection and tries to take the leadership.
	idleCheck = time.Second
	// syncTimeout bounds one incremental sync (read and apply).
	syncTimeout = 10 * time.Second
	// hungAfter is how long the leader's listener session may sit idle
	// before another instance ends it: a live leader runs a query at least
	// every idleCheck, and a sync for at most syncTimeout.
	hungAfter = 2*syncTimeout + idleCheck
)

type followState struct {
	connected atomic.Bool
	leader    atomic.Bool
	syncedAt  atomic.Int64 // unix ns: the last moment everything committed was known applied
	hungPID   atomic.Int32 // the hung leader's session last reported (replaceHungLeader)
}

func (s *followState) init() { s.syncedAt.Store(time.Now().UnixNano()) }

// Leader reports whether this instance holds the leadership (a session
// advisory lock on its listener connection): the leader expires entries,
// fuses reports and applies the retention, so that each of those events is
// taken, and audited, once.
func (db *DB) Leader() bool { return db.follow.leader.Load() }

// Up reports whether the store works: the listener is connected and the
// last group commit succeeded.
func (db *DB) Up() bool { return db.follow.connected.Load() && db.writesOK.Load() }

// SyncLag is how long ago this instance last knew it had applied every
// change committed by any instance (0 while it follows live).
func (db *DB) SyncLag() time.Duration {
	if db.follow.connected.Load() {
		return 0
	}
	return time.Since(time.Unix(0, db.follow.syncedAt.Load()))
}

// Follow keeps f in step with the store until ctx ends: it LISTENs on
// Channel, resyncs f fully on every (re)connect, then applies each batch
// of changes other instances commit (and its own writes the store merged
// with others'). It also holds or tries to take the leadership. Errors are
// logged and the connection retried; Follow returns when ctx ends.
func (db *DB) Follow(ctx context.Context, f Follower) error {
	for first := true; ; first = false {
		if !first {
			// Connections that lived through the outage are likely broken.
			db.pool.Reset()
		}
		err := db.followOnce(ctx, f)
		db.follow.connected.Store(false)
		if db.follow.leader.Swap(false) {
			f.LeadershipChanged()
		}
		if ctx.Err() != nil {
			return nil
		}
		db.log.Warn("store listener disconnected; announcing the last known set, retrying", "in", reconnectEvery, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(reconnectEvery):
		}
	}
}

func (db *DB) followOnce(ctx context.Context, f Follower) error {
	cc := db.pool.Config().ConnConfig.Copy()
	// A timed-out wait for a notification must leave the connection usable.
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	// Instances tell their own changes from others' by name: two with one
	// name would miss each other's. The listener's application_name shows
	// whether another instance already listens under this one.
	cc.RuntimeParams["application_name"] = listenerName(db.instance)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := pgx.ConnectConfig(cctx, cc)
	cancel()
	if err != nil {
		return fmt.Errorf("connecting the listener: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := serverDetectsDeadPeer(ctx, conn); err != nil {
		return fmt.Errorf("configuring the listener connection: %w", err)
	}
	var twins int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
		listenerName(db.instance)).Scan(&twins); err != nil {
		return fmt.Errorf("looking for other instances named %q: %w", db.instance, err)
	}
	if twins > 0 {
		return fmt.Errorf("another rtbhd is connected as ha.instance %q: give each instance its own name (not following the store meanwhile)", db.instance)
	}
	if _, err := conn.Exec(ctx, `LISTEN `+Channel); err != nil {
		return fmt.Errorf("LISTEN: %w", err)
	}
	var seq, rep int64
	if err := conn.QueryRow(ctx, `SELECT (SELECT coalesce(max(seq), 0) FROM blackholes),
		(SELECT coalesce(max(id), 0) FROM reports)`).Scan(&seq, &rep); err != nil {
		return fmt.Errorf("reading the change sequence: %w", err)
	}
	if err := f.Resync(ctx); err != nil {
		return fmt.Errorf("resyncing: %w", err)
	}
	db.follow.connected.Store(true)
	db.follow.syncedAt.Store(time.Now().UnixNano())
	db.log.Info("store listener connected; state resynced from the store", "seq", seq)

	lastQuery := time.Now() // of this connection (see ping)
	fetch := func(ctx context.Context) (domain.Changes, error) {
		ch, s, r, err := db.changes(ctx, conn, seq, rep)
		lastQuery = time.Now()
		db.log.Debug("changes read", "blackholes", len(ch.Blackholes), "reports", len(ch.Reports), "seq", s, "err", err)
		if err == nil {
			seq, rep = s, r
		}
		return ch, err
	}
	// ping checks the connection, bounded: behind a partition the check
	// would otherwise wait as long as TCP does, this instance still taking
	// itself for the leader. Every query also moves the session's
	// state_change, which tells the others that the leader is alive (see
	// replaceHungLeader): the leader runs one at least every idleCheck,
	// however busy its notifications keep it.
	ping := func() error {
		cctx, cancel := context.WithTimeout(ctx, deadPeerAfter)
		defer cancel()
		if _, err := conn.Exec(cctx, `SELECT 1`); err != nil {
			return fmt.Errorf("checking the listener connection: %w", err)
		}
		lastQuery = time.Now()
		return nil
	}
	for {
		if db.follow.leader.Load() && time.Since(lastQuery) >= idleCheck {
			if err := ping(); err != nil {
				return err
			}
		}
		if !db.follow.leader.Load() {
			var got bool
			if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockLeader).Scan(&got); err != nil {
				return fmt.Errorf("trying the leadership: %w", err)
			}
			if got {
				db.follow.leader.Store(true)
				db.log.Info("this instance leads: it expires entries, fuses reports and applies the retention")
				f.LeadershipChanged()
			} else if err := db.replaceHungLeader(ctx, conn); err != nil {
				return fmt.Errorf("checking the leader: %w", err)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, idleCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed() {
				if err := ping(); err != nil {
					return err
				}
				db.follow.syncedAt.Store(time.Now().UnixNano())
				continue
			}
			return fmt.Errorf("waiting for notifications: %w", err)
		}
		need := n.Payload != db.instance
		// Take every notification already received: one sync covers them.
		for {
			dctx, cancel := context.WithCancel(ctx)
			cancel()
			n, err := conn.WaitForNotification(dctx)
			if err != nil {
				break
			}
			need = need || n.Payload != db.instance
		}
		if !need {
			continue
		}
		db.log.Debug("applying changes committed through other instances", "since_seq", seq)
		// The follower holds its decision lock while fetching: bound it.
		sctx, cancel := context.WithTimeout(ctx, syncTimeout)
		err = f.Sync(sctx, fetch)
		cancel()
		if err != nil {
			return fmt.Errorf("applying changes: %w", err)
		}
		db.follow.syncedAt.Store(time.Now().UnixNano())
	}
}

func listenerName(instance string) string { return "rtbhd listener " + instance }

// replaceHungLeader ends the leader's session when it has been idle for
// hungAfter. A leader that hangs (stopped, or stuck on a disk) while its
// kernel still answers TCP keeps its session, and with it the lock, for
// as long as it hangs: keepalives cannot tell. Ending the session frees
// the lock for the next try; should the old leader wake up, its next
// query fails, it gives the leadership up and follows again. Its
// expiries meanwhile are conditional writes: none can happen twice.
func (db *DB) replaceHungLeader(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT a.pid, a.application_name, extract(epoch FROM now() - a.state_change)::float8
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
			AND ((l.classid::bigint << 32) | l.objid::bigint) = $1
			AND a.state = 'idle' AND a.state_change < now() - make_interval(secs => $2)`,
		lockLeader, hungAfter.Seconds())
	if err != nil {
		return err
	}
	type hung struct {
		pid  int32
		name string
		idle float64
	}
	hs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (hung, error) {
		var h hung
		return h, r.Scan(&h.pid, &h.name, &h.idle)
	})
	if err != nil {
		return err
	}
	for _, h := range hs {
		var ended bool
		err := conn.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, h.pid).Scan(&ended)
		if ended || db.follow.hungPID.Swap(h.pid) != h.pid {
			// Once per hung session when it cannot be ended (another
			// database role without pg_signal_backend), not every second.
			db.log.Warn("the leader's session has been idle too long: ending it so that another instance can lead",
				"leader", h.name, "pid", h.pid, "idle", time.Duration(h.idle*float64(time.Second)).Round(time.Second), "ended", ended, "err", err)
		}
	}
	return nil
}

// changes reads, in one snapshot, the blackhole rows changed after seq and
// the reports stored after rep that this instance needs: those other
// instances wrote, and its own writes stored differently from its
// decision. It returns the new high-water marks.
func (db *DB) changes(ctx context.Context, conn *pgx.Conn, seq, rep int64) (domain.Changes, int64, int64, error) {
	var out domain.Changes
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return out, 0, 0, fmt.Errorf("reading changes: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var topSeq, topRep int64
	if err := tx.QueryRow(ctx, `SELECT (SELECT coalesce(max(seq), 0) FROM blackholes),
		(SELECT coalesce(max(id), 0) FROM reports)`).Scan(&topSeq, &topRep); err != nil {
		return out, 0, 0, fmt.Errorf("reading changes: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT `+bhColumns+`, ended_at IS NOT NULL, coalesce(end_reason, '') FROM blackholes
		WHERE seq > $1 AND seq <= $2 AND changed_by <> $3 ORDER BY seq`, seq, topSeq, db.instance)
	if err != nil {
		return out, 0, 0, fmt.Errorf("reading changes: %w", err)
	}
	for rows.Next() {
		var c domain.Change
		if c.Blackhole, err = scanBlackhole(rows, &c.Ended, &c.EndReason); err != nil {
			rows.Close()
			return out, 0, 0, fmt.Errorf("reading changes: %w", err)
		}
		out.Blackholes = append(out.Blackholes, c)
	}
	if err := rows.Err(); err != nil {
		return out, 0, 0, fmt.Errorf("reading changes: %w", err)
	}
	rows, err = tx.Query(ctx, `SELECT `+reportColumns+` FROM reports WHERE id > $1 AND id <= $2 AND instance <> $3 ORDER BY id`,
		rep, topRep, db.instance)
	if err != nil {
		return out, 0, 0, fmt.Errorf("reading reports: %w", err)
	}
	for rows.Next() {
		r, err := scanReport(rows)
		if err != nil {
			rows.Close()
			return out, 0, 0, fmt.Errorf("reading reports: %w", err)
		}
		out.Reports = append(out.Reports, r)
	}
	if err := rows.Err(); err != nil {
		return out, 0, 0, fmt.Errorf("reading reports: %w", err)
	}
	return out, topSeq, topRep, nil
}
