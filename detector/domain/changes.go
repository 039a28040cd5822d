package domain

// Change is one blackhole row as another rtbhd instance committed it to a
// shared store (store.driver: postgres): the entry now active for its
// (Prefix, Match), or, when Ended, an entry that was removed or expired.
type Change struct {
	Blackhole Blackhole
	Ended     bool
	EndReason string // removed or expired, when Ended
}

// Changes is what a shared store committed since an instance last looked:
// blackhole rows in commit order, and the reports other instances stored.
type Changes struct {
	Blackholes []Change
	Reports    []Report
}
