package sflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtbh/rtbh/detector/domain"
)

// Defaults for Config fields left zero.
const (
	DefaultListen        = "0.0.0.0:6343"
	DefaultReceiveBuffer = 8 << 20
	DefaultBatchSize     = 64
	DefaultDatagramSize  = 9216
)

// Config configures a Collector.
type Config struct {
	// Listen is the UDP address to listen on, "host:port". A wildcard
	// IPv4 address (0.0.0.0) or "[::]" accepts IPv4 and IPv6 agents.
	Listen string
	// Agents lists the prefixes datagrams must come from (by UDP source
	// address); others are counted (agent_denied) and dropped. Empty
	// accepts only loopback agents (127.0.0.0/8, ::1): an agent list is
	// what lets datagrams from the network in.
	Agents []netip.Prefix
	// ReceiveBuffer is the socket receive buffer in bytes. The kernel may
	// clamp it (net.core.rmem_max); the collector then warns.
	ReceiveBuffer int
	// BatchSize is the number of datagrams read per recvmmsg call.
	BatchSize int
	// DatagramSize is the largest datagram accepted; longer ones are
	// counted as malformed (truncated_datagram).
	DatagramSize int
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.ReceiveBuffer <= 0 {
		c.ReceiveBuffer = DefaultReceiveBuffer
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.DatagramSize <= 0 {
		c.DatagramSize = DefaultDatagramSize
	}
	if c.DatagramSize > 65535 {
		c.DatagramSize = 65535
	}
	return c
}

// readerKind selects a datagramReader.
type readerKind uint8

const (
	readerDefault readerKind = iota // blocking recvmmsg on Linux, else x/net
	readerPoll                      // recvmmsg through the runtime poller
	readerXnet                      // x/net ReadBatch
)

// Stats are the collector's counters since it started.
type Stats struct {
	Datagrams   uint64 // valid datagrams decoded
	Malformed   uint64 // datagrams rejected by the decoder
	Denied      uint64 // datagrams from agents outside Config.Agents
	Samples     uint64 // flow samples handed to the sink
	SocketDrops uint64 // datagrams the kernel dropped (SO_RXQ_OVFL), if known
	Batches     uint64 // recvmmsg calls that returned datagrams
}

// Collector receives sFlow datagrams on one UDP socket, decodes them and
// hands the samples to a Sink.
type Collector struct {
	cfg    Config
	agents *domain.PrefixSet // agentSet(cfg.Agents)
	sink   Sink
	logger *slog.Logger

	conn   *net.UDPConn
	reader readerKind // which reader to use (tests and benchmarks)

	mu  sync.Mutex // guards dec
	dec Decoder

	stats struct {
		datagrams, malformed, denied, samples, socketDrops, batches atomic.Uint64
	}

	mLost   *prometheus.CounterVec
	mRate   *prometheus.GaugeVec
	mRcvBuf prometheus.Gauge
}

// NewCollector returns a Collector for cfg that delivers samples to sink.
// Its metrics are registered on reg (nil: not registered).
func NewCollector(cfg Config, sink Sink, logger *slog.Logger, reg prometheus.Registerer) (*Collector, error) {
	if sink == nil {
		return nil, errors.New("creating sFlow collector: nil sink")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	for _, p := range cfg.Agents {
		if !p.IsValid() {
			return nil, fmt.Errorf("creating sFlow collector: invalid agent prefix %v", p)
		}
	}
	c := &Collector{cfg: cfg, agents: agentSet(cfg.Agents), sink: sink, logger: logger}

	// Counters are read from the collector's own counts at scrape time:
	// nothing is added to Prometheus on the read path.
	counter := func(name, help string, labels prometheus.Labels, read func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(read()) })
	}
	const datagramsHelp = "sFlow datagrams received, by result (ok, malformed, agent_denied)."
	metrics := []prometheus.Collector{
		counter("rtbh_sflow_datagrams_total", datagramsHelp, prometheus.Labels{"result": "ok"}, c.stats.datagrams.Load),
		counter("rtbh_sflow_datagrams_total", datagramsHelp, prometheus.Labels{"result": "malformed"}, c.stats.malformed.Load),
		counter("rtbh_sflow_datagrams_total", datagramsHelp, prometheus.Labels{"result": "agent_denied"}, c.stats.denied.Load),
		counter("rtbh_sflow_samples_total", "sFlow flow samples decoded and handed to the detector.", nil, c.stats.samples.Load),
		counter("rtbh_sflow_socket_drops_total", "sFlow datagrams dropped by the kernel because the socket buffer was full (SO_RXQ_OVFL).",
			nil, c.stats.socketDrops.Load),
	}
	for _, r := range Reasons() {
		metrics = append(metrics, counter("rtbh_sflow_decode_errors_total", "sFlow datagrams rejected as malformed, by reason.",
			prometheus.Labels{"reason": r.String()}, func() uint64 { return c.DecodeErrors(r) }))
	}
	c.mLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rtbh_sflow_lost_datagrams_total",
		Help: "sFlow datagrams missing from an agent's sequence numbers.",
	}, []string{"agent"})
	c.mRcvBuf = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rtbh_sflow_receive_buffer_bytes",
		Help: "Receive buffer of the sFlow socket as granted by the kernel.",
	})
	c.mRate = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rtbh_sflow_agent_sampling_rate",
		Help: "Sampling rate (1 in N packets) of each agent's latest flow sample.",
	}, []string{"agent"})
	c.dec.newAgent = func(agent netip.Addr, _ uint32) agentMetrics {
		return agentMetrics{lost: c.mLost.WithLabelValues(agent.String()), rate: c.mRate.WithLabelValues(agent.String())}
	}
	if reg != nil {
		for _, m := range append(metrics, c.mLost, c.mRate, c.mRcvBuf) {
			if err := reg.Register(m); err != nil {
				return nil, fmt.Errorf("registering sFlow metrics: %w", err)
			}
		}
	}
	return c, nil
}

// loopbackAgents are the agents accepted when Config.Agents is empty.
var loopbackAgents = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// agentSet is the set of UDP source addresses datagrams are accepted from:
// agents, or only loopback ones when agents is empty.
func agentSet(agents []netip.Prefix) *domain.PrefixSet {
	if len(agents) == 0 {
		return domain.NewPrefixSet(loopbackAgents)
	}
	return domain.NewPrefixSet(agents)
}

// Listen opens the UDP socket. Run calls it if it was not called before.
func (c *Collector) Listen() error {
	if c.conn != nil {
		return errors.New("sFlow collector: already listening")
	}
	addr, err := net.ResolveUDPAddr("udp", c.cfg.Listen)
	if err != nil {
		return fmt.Errorf("resolving sFlow listen address %q: %w", c.cfg.Listen, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return fmt.Errorf("listening for sFlow on %s: %w", c.cfg.Listen, err)
	}
	got, err := setReceiveBuffer(conn, c.cfg.ReceiveBuffer)
	if err != nil {
		conn.Close()
		return fmt.Errorf("setting sFlow receive buffer: %w", err)
	}
	c.mRcvBuf.Set(float64(got))
	if got < c.cfg.ReceiveBuffer {
		c.logger.Warn("kernel clamped the sFlow receive buffer; raise net.core.rmem_max",
			"requested", c.cfg.ReceiveBuffer, "granted", got)
	}
	if err := enableDropCounter(conn); err != nil {
		c.logger.Info("socket drop counter unavailable", "err", err)
	}
	c.conn = conn
	c.logger.Info("listening for sFlow", "addr", c.Addr().String(), "receive_buffer", got)
	return nil
}

// Addr returns the address the socket is bound to (zero before Listen).
func (c *Collector) Addr() netip.AddrPort {
	if c.conn == nil {
		return netip.AddrPort{}
	}
	ap := c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Stats returns the collector's counters.
func (c *Collector) Stats() Stats {
	return Stats{
		Datagrams:   c.stats.datagrams.Load(),
		Malformed:   c.stats.malformed.Load(),
		Denied:      c.stats.denied.Load(),
		Samples:     c.stats.samples.Load(),
		SocketDrops: c.stats.socketDrops.Load(),
		Batches:     c.stats.batches.Load(),
	}
}

// Agents returns what the decoder knows about each agent.
func (c *Collector) Agents() []AgentStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dec.Agents()
}

// DecodeErrors returns how many datagrams were rejected for reason r.
func (c *Collector) DecodeErrors(r Reason) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dec.Errors(r)
}

// Run reads, decodes and delivers datagrams until ctx is done, then
// closes the socket and returns nil. It runs the socket's reader in the
// calling goroutine.
func (c *Collector) Run(ctx context.Context) error {
	if c.conn == nil {
		if err := c.Listen(); err != nil {
			return err
		}
	}
	defer c.conn.Close()
	reader, err := c.newReader()
	if err != nil {
		return fmt.Errorf("setting up sFlow reader: %w", err)
	}
	defer reader.release()
	// Wait for a close that has started to finish, so that the socket is
	// closed (its port free) when Run returns, whatever the reader.
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { reader.close(); close(closed) })
	defer func() {
		if !stop() {
			<-closed
		}
	}()
	err = c.read(ctx, reader)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// newReader picks the socket's reader: on Linux the blocking recvmmsg
// reader (falling back to recvmmsg through the runtime poller), elsewhere
// x/net's ReadBatch.
func (c *Collector) newReader() (datagramReader, error) {
	size := c.cfg.DatagramSize + 1 // one spare byte detects truncation
	switch c.reader {
	case readerXnet:
		return newXnetReader(c.conn, c.cfg.BatchSize, size), nil
	case readerPoll:
		return newPollReader(c.conn, c.cfg.BatchSize, size)
	}
	return newReader(c.conn, c.cfg.BatchSize, size)
}

// batchCounts are counted locally per batch and added to metrics once.
type batchCounts struct {
	ok, malformed, denied, samples uint64
}

func (c *Collector) read(ctx context.Context, reader datagramReader) error {
	size := c.cfg.DatagramSize + 1
	batch := c.cfg.BatchSize
	perDatagram := MaxSamples(c.cfg.DatagramSize)
	flows := make([]domain.Flow, max(batch*8, 256)+perDatagram)
	fill := 0
	var bc batchCounts
	var lastDrops uint32
	haveDrops := false
	for {
		n, err := reader.readBatch()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return net.ErrClosed
			}
			c.logger.Warn("reading sFlow datagrams", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		bc = batchCounts{}
		c.mu.Lock()
		for i := range n {
			payload, src, drops, ok := reader.datagram(i)
			if ok {
				lastDrops, haveDrops = drops, true
			}
			if !c.agents.Contains(src) {
				bc.denied++
				continue
			}
			if len(payload) >= size {
				bc.malformed++
				c.dec.errors[ReasonTruncatedDatagram]++
				continue
			}
			k, err := c.dec.DecodeFlows(payload, flows[fill:])
			if err != nil {
				bc.malformed++
				continue
			}
			bc.ok++
			fill += k
			if len(flows)-fill < perDatagram {
				c.mu.Unlock()
				c.sink.HandleFlows(flows[:fill])
				c.mu.Lock()
				bc.samples += uint64(fill)
				fill = 0
			}
		}
		c.mu.Unlock()
		if fill > 0 {
			c.sink.HandleFlows(flows[:fill])
			bc.samples += uint64(fill)
			fill = 0
		}
		c.commit(&bc)
		if haveDrops {
			c.stats.socketDrops.Store(uint64(lastDrops))
		}
	}
}

// commit adds one batch's counts to the stats and metrics.
func (c *Collector) commit(bc *batchCounts) {
	c.stats.batches.Add(1)
	c.stats.datagrams.Add(bc.ok)
	c.stats.samples.Add(bc.samples)
	c.stats.denied.Add(bc.denied)
	c.stats.malformed.Add(bc.malformed)
}
