// Package postgres keeps rtbh's state in PostgreSQL (store.driver:
// postgres), so that two or more rtbhd — each peered with every border
// router — share one set of blackholes. It implements detector.Store with
// the SQLite store's semantics (store/storetest is the contract both pass)
// and is, with package store, the only code that imports a database
// driver (github.com/jackc/pgx/v5).
//
// # Writes
//
// As in SQLite, one writer goroutine commits concurrent writes in one
// transaction (group commit): the statements of all of them go to the
// server in one pipeline, and a response means the transaction committed.
// If one write fails, the batch is rolled back and run again with each
// write in its own savepoint, so it fails alone. SubmitAll (a detector
// batch) queues its writes as one unit: in order with the others, in one
// transaction and, on the retry, in one savepoint, so all or none of them
// commit; each row and audit row is written as a single write writes it. Every write transaction
// of every instance first takes one transaction advisory lock
// (pg_advisory_xact_lock), so write transactions commit one after another:
// the change sequence number each blackhole row gets (blackholes.seq) and
// report ids are in commit order, which is what lets a reader see every
// change exactly once by remembering the highest number it read.
// Transient failures (connection lost, timeout, server shutting down) are
// domain.ErrStoreUnavailable: the API answers UNAVAILABLE and nothing is
// acknowledged.
//
// # Several instances deciding: one entry, one audit row per event
//
// Each instance decides on its own view, which another instance may have
// changed a moment ago. The blackhole statements are conditional, so the
// store — serialised by the write lock — settles what two instances
// decided at once:
//
//   - an insert that meets an active entry (both added the same prefix)
//     extends it instead: one active entry, the later expiry, audited as
//     one add and one extend;
//   - an extension of an entry that ended meanwhile adds it again (the
//     request was "add or extend"), audited as an add;
//   - an end takes effect only while the entry is active, and an expiry
//     only when the stored entry is due; otherwise it writes nothing (no
//     audit row) and fails as unavailable, and the instance reloads.
//
// Expiry, report fusion and retention are done by one instance, the
// leader: the one whose listener connection holds a session advisory lock
// (pg_try_advisory_lock, retried every second by the others, so a new
// leader takes over within about a second of the old one's connection
// going; a connection whose peer vanished without a FIN is dropped after
// about 11 s, see deadpeer.go, and a leader whose listener session has
// sat idle for hungAfter is ended by the others, see replaceHungLeader). Only the leader's timer expires entries, so each expiry is taken
// and audited once; the conditional end makes a second expiry impossible
// even across a change of leader. Reports are stored by whichever instance
// receives them and reach the leader's scores through the change feed; the
// leader fuses them, so a fusion decision is taken once. Each instance's
// detector decides on the sFlow it receives; two instances flagging the
// same host end, by the insert rule, in one entry.
//
// # Following the others
//
// Follow LISTENs on Channel; every commit that changed blackholes or
// reports NOTIFYs it with the committing instance's name. On a
// notification from another instance (or one marked as needing a
// read-back), it reads, in one snapshot, the rows whose sequence number is
// above what it has seen and that the instance did not write exactly as
// decided (blackholes.changed_by), and the reports other instances stored,
// and hands them to the decision path (detector.Manager.Sync), which
// applies them to its active set, expiry heap, committed view, watchers and
// BGP. On every (re)connect it first resyncs fully from the store, so an
// instance that missed notifications converges by itself. Instances tell
// their own changes from others' by ha.instance, so the names must differ:
// a listener that finds another connected under its name (the
// application_name "rtbhd listener NAME") refuses to follow and says so,
// and that instance stays down (/healthz 503) until it is renamed.
//
// # Fail static
//
// When PostgreSQL is unreachable, every instance keeps announcing the last
// set it knew, writes answer UNAVAILABLE, Up is false (/healthz 503,
// rtbh_store_up 0) and SyncLag grows; the listener reconnects every 500 ms
// and resyncs, and the pool's connections from before the outage are
// dropped.
//
// The schema mirrors SQLite's (times in unix nanoseconds; blackholes keyed
// by (prefix, match) while active) and is versioned in rtbh_schema,
// migrated at Open under an advisory lock.
package postgres
