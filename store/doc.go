// Package store keeps rtbh's state in SQLite: blackholes (active and past),
// the audit log, detector evidence and offense counts, and partner reports.
//
// It is the only package that imports database/sql and the SQLite driver.
// The database runs in WAL mode with synchronous=FULL; every write goes
// through one writer goroutine that commits concurrent writes in one
// transaction (group commit), each inside its own savepoint so one failing
// write does not undo its neighbours. A write's Submit/Commit returns only
// after the transaction holding it is durable. The schema is versioned with
// PRAGMA user_version and migrated forward at Open.
package store
