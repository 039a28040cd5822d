// Package sflowtest builds sFlow v5 datagrams, packets and pcap files for
// tests, and runs a real exporter (pmacct's pmacctd with the sfprobe
// plugin) against a collector.
//
// The Builder and Stream reuse their buffers: after warm-up they generate
// datagrams without allocating, fast enough to produce millions of samples
// for load and population tests.
package sflowtest
