package sflow

// UseXnetReader makes c read with x/net's ReadBatch instead of the raw
// recvmmsg reader, to compare the two.
func UseXnetReader(c *Collector) { c.useXnet = true }
