// Package detector decides. Manager is the one decision path: operators,
// partners, report fusion and the fan-out rules (package detector/fanout)
// all ask it for blackholes; it checks policy (never_blackhole, minimum
// prefix lengths, host bits, max_active, TTL clamp, caller scope), records
// the decision and its audit row in the store, hands route changes to BGP
// in decision order, expires entries on time, and fuses partner reports
// into per-address scores. An entry is a blackhole route or a FlowSpec
// filter, keyed by (prefix, match) (domain.Key): both go through the same
// path. Batches (AddBatch, RemoveBatch) are decided item by item by the
// same functions as single requests (decideAdd, decideRemove) under one
// hold of the lock and written in one store unit; List pages the committed
// set. It opens no sockets and runs no SQL itself.
package detector
