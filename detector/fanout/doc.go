// Package fanout is the fan-out detection engine: it finds hosts in the
// subscriber space that send one protocol and destination port to many
// distinct destination addresses — spam trojans speaking SMTP directly to
// mail servers everywhere, worms scanning for the next victim.
//
// The engine is pure: it consumes decoded flow records (domain.Flow, in
// batches from any input: it satisfies sflow.Sink without importing the
// sFlow package), keeps per-source state and reports a Firing when a
// rule's thresholds are crossed. It opens no sockets, touches no database and
// starts no goroutines; turning a Firing into evidence and a blackhole is
// the job of package detector.
//
// # Rules
//
// A Rule names a protocol (TCP or UDP) and destination ports. A source
// inside Config.SubscriberPrefixes fires a rule when, within the sliding
// window, its samples of that protocol to those ports reached at least
// MinDestinations distinct destination addresses and at least MinPackets
// estimated packets (the sum of the sampling rates of the matching
// samples). Sources in the rule's Exempt prefixes or in
// Config.NeverBlackhole never fire and get no state. The default rule is
// SMTPFanout (tcp/25, 20 destinations, 1000 packets). A worm-scanner rule
// looks like:
//
//	Rule{Name: "worm-scan", Protocol: 6, DstPorts: []uint16{23, 2323, 445},
//		MinDestinations: 200, MinPackets: 5000, Action: "log", TTL: time.Hour}
//
// # State and memory
//
// Only samples whose protocol and destination port match a rule, from a
// subscriber source, create or update state; every other sample costs a
// bit-set test (and, for matching ports, a prefix lookup) and nothing else.
// State is kept per (source, rule) pair, called a tracked source below: a
// 192-byte entry (three cache lines, up to three destinations inline) in a
// slice-backed pool, found through an open-addressing index of 8-byte
// slots kept at most half full: about 210-230 bytes per tracked source in
// all. A source that reaches a fourth distinct destination gets an
// overflow record (about 1 KB) holding an exact set of up to 64
// destination hashes and, beyond that, a sliding HyperLogLog sketch; the
// record is freed when the source's count ages back to zero or the source
// goes quiet. At most Config.MaxTrackedSources pairs are tracked; when a
// new pair needs a slot the least recently seen one is evicted (O(1), an
// intrusive list over the pool) and counted in
// rtbh_detector_evictions_total. Recency is kept at sub-window resolution:
// an entry moves to the front of the list on its first sample of a
// sub-window, so the evicted pair is one whose newest sub-window is the
// oldest. Pairs idle for a whole window are dropped without counting as
// evictions.
//
// # Window
//
// Counts live in a ring of 10 sub-windows of Window/10 each. A sample
// older than Window never counts; a sample younger than 9/10 of Window
// always counts, so counts age out one sub-window at a time instead of
// resetting every window.
//
// # Distinct destinations
//
// Up to 64 distinct destinations per window are counted exactly (as 64-bit
// keyed hashes of the address; two distinct addresses collide with
// probability below 2^-52 per source and window). Above 64 the engine
// switches to a HyperLogLog sketch with 128 four-bit registers per
// sub-window, merged over the window, read with Ertl's improved raw
// estimator ("New cardinality estimation algorithms for HyperLogLog
// sketches", 2017). Its relative standard error is about 1.04/√128 ≈ 9%
// over the whole range up to millions of destinations; pick
// min_destinations above 64 with that margin in mind. Below 64 (the
// default rule uses 20) the count is exact.
//
// # Hot path
//
// Time is read once per batch. A batch is processed in three passes — select
// the (sample, rule) pairs that need state and load their index slots, load
// the entries those slots point to, then update — so that the cache misses
// of many samples overlap; hand the engine whole receive batches (the
// collector's tens of datagrams), not single samples. A sample for an
// already tracked source allocates nothing; the Prometheus metrics are
// updated once per batch. HandleFlows may be called from several
// goroutines (one per socket): a mutex is held for each batch.
package fanout
