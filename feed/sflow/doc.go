// Package sflow receives sFlow v5 datagrams over UDP and turns each flow
// sample into the detector's flow record, domain.Flow: Decode gives the
// whole Sample (the Flow and its sFlow context, SampleInfo), DecodeFlows
// the Flows alone, which is what the Collector hands to its Sink.
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
// Allocation policy: Decode writes into a caller-owned []Sample, and
// DecodeFlows into a caller-owned []domain.Flow, in place, and allocate
// nothing per datagram or per sample; the only allocations are the
// per-agent state made the first time an agent is seen (bounded in
// number) and DecodeFlows' scratch for the SampleInfos, grown to the
// largest datagram seen. Samples and Flows never point into the datagram
// buffer.
//
// The Collector owns the UDP socket: one reader goroutine per socket reads
// datagrams in batches (recvmmsg), filters agents by source address
// (Config.Agents; loopback only when it is empty), decodes them and hands the flows to a Sink in batches, reusing one
// slice. Metrics are counted locally per batch and added to Prometheus
// once per batch. The receive path allocates nothing per batch either.
//
// Syscall policy. At sFlow rates most of the daemon's CPU goes into
// waking up and receiving, not decoding, so the reader minimises wake-ups
// per datagram. On 64-bit Linux it takes the socket out of the runtime
// poller (it dups the descriptor and closes the net.UDPConn, which
// deregisters it from epoll) and reads with blocking recvmmsg and
// MSG_WAITFORONE: one syscall per wake-up that sleeps in the kernel until
// a datagram arrives and then takes all that are queued, where the poller
// path costs recvmmsg (EAGAIN) + epoll_wait + recvmmsg. The goroutine's M
// blocks in the syscall and takes its P back on return. After a partial
// batch of two or more datagrams it pauses (nanosleep, not a Go timer,
// which would wake the poller and idle Ps) long enough for about a batch
// to queue up, at most 4 ms: under load one wake-up then reads tens of
// datagrams; a full batch is followed by an immediate read, a lone
// datagram by an immediate blocking read, so a trickle gets no added
// latency. The socket has SO_RCVTIMEO (100 ms) and is shut down for
// reading (shutdown(2) wakes a blocked recvmmsg) when Run's context is
// done; Run returns once the socket is closed. Measured with TestSFlowLoad
// in cmd/rtbhd (20,000 datagrams/s x 7 samples, 2 cores): ~1,030 ns of
// daemon CPU per sample and 0.26 thread wake-ups per datagram through the
// poller, ~950 ns and 0.34 with blocking reads alone, ~380 ns and 0.07
// with the pause, 0% loss in each. Not used: SO_RCVLOWAT, which Linux
// accepts on a UDP socket but ignores (a blocking recv returns on the
// first datagram, however small); SO_BUSY_POLL, which spins a CPU while
// waiting, the opposite of the aim, and needs a NAPI device; recvmmsg's
// timeout argument, checked only after each datagram (recvmmsg(2)).
// Where the socket cannot be set up so, the reader falls back to raw
// recvmmsg through the runtime poller, and off 64-bit Linux to x/net's
// ReadBatch.
package sflow
