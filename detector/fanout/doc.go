// Package fanout is the fan-out detection engine: it finds hosts in the
// subscriber space that send one protocol and destination port to many
// distinct destination addresses — spam trojans speaking SMTP directly to
// mail servers everywhere, worms scanning for the next victim.
//
// The engine is pure: it consumes decoded flow records (domain.Flow, in
// batches from any input: it satisfies sflow.Sink without importing the
// sFlow package), keeps per-source state and reports a Firing when a
// rule's thresholds are crossed, when half of them are, and when it learns
// a server. It opens no sockets, touches no database and
// starts no goroutines; turning a Firing into evidence and a blackhole is
// the job of package detector.
//
// # Rules
//
// A Rule names a protocol (TCP or UDP) and destination ports. Its
// thresholds are in real traffic: a source inside
// Config.SubscriberPrefixes fires a rule when, within the sliding window,
// it really sent that protocol to those ports at an estimated
// MinDestinations distinct destination addresses and MinPackets packets,
// and the samples hold at least MinSamples (default 3) packets to distinct
// destinations. Sources in the rule's Exempt prefixes or in
// Config.NeverBlackhole never fire and get no state. The default rule is
// SMTPFanout (tcp/25, 20 destinations, 1000 packets, 3 samples). A
// worm-scanner rule looks like:
//
//	Rule{Name: "worm-scan", Protocol: 6, DstPorts: []uint16{23, 2323, 445},
//		MinDestinations: 200, MinPackets: 5000, Action: "log", TTL: time.Hour}
//
// # Estimating real traffic from samples
//
// Each sample carries its agent's sampling rate N (1 in N packets). The
// packet estimate is the sum of the rates of the matching samples. The
// destination estimate (EstimateDestinations) starts from d, the distinct
// destinations in the samples, and s, the sampled packets: at most s-d of
// the d were sampled more than once and count once each; every other one
// was sampled once and stands for N destinations like it (Horvitz-Thompson
// with inclusion probability 1/N). Unsampled traffic (N = 1) is counted
// exactly. For flows of k packets each the estimate is the destinations
// times k, an upper bound; the confidence comes from MinSamples: a source
// that really reached fewer than MinSamples destinations can never show
// that many in its samples, and at 3 sampled destinations the 95% lower
// bound of a Poisson count (0.82) puts the source's packets to new
// destinations above 0.8 x N. The window must be long enough for a zombie
// to leave MinSamples samples: a zombie at c connections a second of 12
// packets leaves 12 x c x window / N of them (SamplingWarnings).
//
// At half of each threshold (half the samples, destinations and packets)
// an ActionBlackhole rule reports the source as Partial, once per window:
// the decision path counts that as one reporter of weight
// detector.report_trust in report fusion.
//
// # Servers are not zombies
//
// A self-hosted mail server also sends tcp/25 to many distinct MX hosts.
// With Rule.SkipServers, a subscriber that receives the rule's protocol on
// the rule's ports (its own port 25: inbound packets, not the replies a
// zombie gets from port 25) from at least ServerMinClients distinct
// addresses outside the subscriber space within the window is a server:
// the engine reports it (ServerLearned), skips it for Config.ServerMemory
// after it was last seen serving, and the decision path stores it, so that
// LoadServers restores it after a restart. A source that received such a
// connection within the window is not flagged either while it is being
// learned. This state is kept like a tracked source, keyed by the server
// and the rule with serverBit set, and counts in MaxTrackedSources.
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
