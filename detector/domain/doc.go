// Package domain holds the plain values every layer of rtbh shares: the
// blackhole, its origin, the detector's evidence, partner reports, audit
// rows, the unit of work a decision writes to storage, and the prefix
// helpers (parsing, host prefixes, prefix sets).
//
// It imports nothing of rtbh, so feed, detector, store and bgp can all
// depend on it without depending on each other. It lives under detector/
// only because the repository's top-level folders are fixed; it contains no
// decisions.
package domain
