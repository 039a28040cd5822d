// Package commits is the hook behind both stores' ObserveCommits (SQLite:
// store, PostgreSQL: store/postgres): each group commit's time, reported
// to the function rtbhd feeds rtbh_store_commit_seconds with.
package commits

import (
	"sync/atomic"
	"time"
)

// Observer holds the function to report to; the zero value reports
// nowhere.
type Observer struct {
	f atomic.Pointer[func(time.Duration)]
}

// Set makes f the function to report to.
func (o *Observer) Set(f func(time.Duration)) { o.f.Store(&f) }

// Done reports a commit that began at start.
func (o *Observer) Done(start time.Time) {
	if f := o.f.Load(); f != nil {
		(*f)(time.Since(start))
	}
}
