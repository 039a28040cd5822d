// Package sflow receives sFlow v5 datagrams over UDP and turns each flow
// sample into a compact Sample for the detector.
//
// The Decoder handles flow_sample and expanded_flow_sample with
// sampled_header records (Ethernet with 802.1Q/QinQ tags and MPLS label
// stacks, raw IPv4, raw IPv6; IPv6 extension headers and IP fragments),
// sampled_ipv4 and sampled_ipv6 records; counter samples and unknown
// samples or records are skipped by their length. A malformed datagram is
// rejected whole with a Reason and never read past its end. The Decoder
// also tracks each agent's datagram sequence (lost datagrams, restarts)
// and each data source's sample_pool and drops counters.
//
// Allocation policy: Decode writes into a caller-owned []Sample and
// allocates nothing per datagram or per sample; the only allocations are
// the per-agent state made the first time an agent is seen (bounded in
// number). Samples never point into the datagram buffer.
//
// The Collector owns the UDP socket: one reader goroutine per socket reads
// datagrams in batches (recvmmsg), filters agents by source address,
// decodes them and hands the samples to a Sink in batches, reusing one
// slice. Metrics are counted locally per batch and added to Prometheus
// once per batch.
package sflow
