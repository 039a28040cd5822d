package sflow

// UseXnetReader makes c read with x/net's ReadBatch instead of the raw
// recvmmsg reader, to compare the two.
func UseXnetReader(c *Collector) { c.reader = readerXnet }

// UsePollReader makes c read with recvmmsg through the runtime poller
// instead of blocking recvmmsg, to compare the two.
func UsePollReader(c *Collector) { c.reader = readerPoll }
