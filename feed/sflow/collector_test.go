package sflow_test

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

// recordingSink keeps copies of every flow it is handed.
type recordingSink struct {
	mu      sync.Mutex
	flows   []domain.Flow
	batches int
}

func (s *recordingSink) HandleFlows(b []domain.Flow) {
	s.mu.Lock()
	s.flows = append(s.flows, b...)
	s.batches++
	s.mu.Unlock()
}

func (s *recordingSink) get() []domain.Flow {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]domain.Flow(nil), s.flows...)
}

// metric returns the value of the counter or gauge name whose labels
// include want, or -1 when absent.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			return value(m)
		}
	}
	return -1
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}

// startCollector listens and runs a collector until the test ends.
func startCollector(t *testing.T, cfg sflow.Config, sink sflow.Sink, opts ...func(*sflow.Collector)) (*sflow.Collector, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := sflow.NewCollector(cfg, sink, nil, reg)
	if err != nil {
		t.Fatalf("NewCollector: %v", err)
	}
	for _, o := range opts {
		o(c)
	}
	if err := c.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return c, reg
}

// sendFrom sends datagrams to the collector from a socket bound to local.
func sendFrom(t *testing.T, local netip.Addr, to netip.AddrPort, dgrams ...[]byte) {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		t.Fatalf("opening sender on %v: %v", local, err)
	}
	defer conn.Close()
	for _, d := range dgrams {
		if _, err := conn.WriteToUDPAddrPort(d, to); err != nil {
			t.Fatalf("sending: %v", err)
		}
	}
}

func TestCollector(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	tests := []struct {
		name           string
		listen         string
		sender, denied netip.Addr
		agents         []netip.Prefix
	}{
		{"ipv4", "127.0.0.1:0", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"),
			[]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("2001:db8::/32")}},
		{"ipv6", "[::1]:0", netip.MustParseAddr("::1"), netip.Addr{},
			[]netip.Prefix{netip.MustParsePrefix("::1/128")}},
		// No agents listed: loopback agents only (see TestAgentSet for
		// the addresses this host cannot send from).
		{"loopback by default", "127.0.0.1:0", netip.MustParseAddr("127.0.0.3"), netip.Addr{}, nil},
		{"ipv6 loopback by default", "[::1]:0", netip.MustParseAddr("::1"), netip.Addr{}, nil},
		// Agents listed: loopback is not accepted on its own.
		{"listed agents deny loopback", "127.0.0.1:0", netip.MustParseAddr("127.0.0.4"), netip.MustParseAddr("127.0.0.1"),
			[]netip.Prefix{netip.MustParsePrefix("192.0.2.11/32"), netip.MustParsePrefix("127.0.0.4/32")}},
	}
	for _, tc := range tests {
		for _, reader := range []string{"recvmmsg", "poll", "xnet"} {
			t.Run(tc.name+"/"+reader, func(t *testing.T) {
				sink := &recordingSink{}
				opts := readerOpts(reader)
				c, reg := startCollector(t, sflow.Config{Listen: tc.listen, Agents: tc.agents, BatchSize: 8}, sink, opts...)
				if !c.Addr().IsValid() || c.Addr().Port() == 0 {
					t.Fatalf("Addr() = %v", c.Addr())
				}
				s := sflowtest.NewStream(agent4, 512)
				var sent []sflowtest.Packet
				var dgrams [][]byte
				for i := range 4 {
					pkts := make([]sflowtest.Packet, 7)
					for j := range pkts {
						pkts[j] = mixedPacket(i*7 + j)
					}
					if i == 3 {
						s.SetSequence(s.Sequence() + 2) // two datagrams lost
					}
					sent = append(sent, pkts...)
					dgrams = append(dgrams, append([]byte(nil), s.Datagram(pkts...)...))
				}
				malformed := append([]byte(nil), dgrams[0]...)
				malformed[3] = 4 // version 4
				dgrams = append(dgrams, malformed)
				sendFrom(t, tc.sender, c.Addr(), dgrams...)
				wantDenied := uint64(0)
				if tc.denied.IsValid() {
					sendFrom(t, tc.denied, c.Addr(), dgrams[0], dgrams[1])
					wantDenied = 2
				}
				testkit.WaitFor(t, 5*time.Second, "all datagrams", func() bool {
					st := c.Stats()
					return st.Datagrams+st.Malformed+st.Denied == 5+wantDenied
				})
				st := c.Stats()
				if st.Datagrams != 4 || st.Malformed != 1 || st.Denied != wantDenied || st.Samples != 28 {
					t.Errorf("Stats = %+v, want 4 ok, 1 malformed, %d denied, 28 samples", st, wantDenied)
				}
				got := sink.get()
				if len(got) != len(sent) {
					t.Fatalf("sink got %d samples, want %d", len(got), len(sent))
				}
				for i, p := range sent {
					g := got[i]
					if g.Src != p.Src || g.Dst != p.Dst || g.Protocol != p.Protocol || g.SrcPort != p.SrcPort ||
						g.DstPort != p.DstPort || g.SamplingRate != 512 || g.Agent != agent4 {
						t.Errorf("sample %d = %+v, want %v", i, g, p)
					}
				}
				agents := c.Agents()
				if len(agents) != 1 || agents[0].Lost != 2 || agents[0].Datagrams != 4 || agents[0].Samples != 28 {
					t.Errorf("Agents() = %+v, want one agent with 2 lost", agents)
				}
				for _, m := range []struct {
					name   string
					labels map[string]string
					want   float64
				}{
					{"rtbh_sflow_datagrams_total", map[string]string{"result": "ok"}, 4},
					{"rtbh_sflow_datagrams_total", map[string]string{"result": "malformed"}, 1},
					{"rtbh_sflow_datagrams_total", map[string]string{"result": "agent_denied"}, float64(wantDenied)},
					{"rtbh_sflow_samples_total", nil, 28},
					{"rtbh_sflow_lost_datagrams_total", map[string]string{"agent": "192.0.2.11"}, 2},
					{"rtbh_sflow_agent_sampling_rate", map[string]string{"agent": "192.0.2.11"}, 512},
					{"rtbh_sflow_decode_errors_total", map[string]string{"reason": "version"}, 1},
					{"rtbh_sflow_decode_errors_total", map[string]string{"reason": "truncated_sample"}, 0},
					{"rtbh_sflow_socket_drops_total", nil, 0},
				} {
					if got := metric(t, reg, m.name, m.labels); got != m.want {
						t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
					}
				}
				if got := metric(t, reg, "rtbh_sflow_receive_buffer_bytes", nil); got <= 0 {
					t.Errorf("rtbh_sflow_receive_buffer_bytes = %v", got)
				}
			})
		}
	}
}

func TestCollectorOversizedDatagram(t *testing.T) {
	for _, reader := range []string{"recvmmsg", "poll", "xnet"} {
		t.Run(reader, func(t *testing.T) { testOversized(t, reader) })
	}
}

// readerOpts selects the collector's reader: "recvmmsg" (the default),
// "poll" or "xnet".
func readerOpts(reader string) []func(*sflow.Collector) {
	switch reader {
	case "poll":
		return []func(*sflow.Collector){sflow.UsePollReader}
	case "xnet":
		return []func(*sflow.Collector){sflow.UseXnetReader}
	}
	return nil
}

func testOversized(t *testing.T, reader string) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	sink := &recordingSink{}
	opts := readerOpts(reader)
	c, reg := startCollector(t, sflow.Config{Listen: "127.0.0.1:0", DatagramSize: 600}, sink, opts...)
	s := sflowtest.NewStream(agent4, 1)
	pkts := make([]sflowtest.Packet, 7)
	for j := range pkts {
		pkts[j] = mixedPacket(j)
	}
	big := append([]byte(nil), s.Datagram(pkts...)...)
	small := append([]byte(nil), s.Datagram(pkts[:2]...)...)
	if len(big) <= 600 || len(small) > 600 {
		t.Fatalf("datagram sizes %d, %d", len(big), len(small))
	}
	sendFrom(t, netip.MustParseAddr("127.0.0.1"), c.Addr(), big, small)
	testkit.WaitFor(t, 5*time.Second, "both datagrams", func() bool { st := c.Stats(); return st.Datagrams+st.Malformed == 2 })
	if st := c.Stats(); st.Malformed != 1 || st.Samples != 2 {
		t.Errorf("Stats = %+v, want the big datagram malformed", st)
	}
	if got := c.DecodeErrors(sflow.ReasonTruncatedDatagram); got != 1 {
		t.Errorf("DecodeErrors(truncated_datagram) = %d", got)
	}
	if got := metric(t, reg, "rtbh_sflow_decode_errors_total", map[string]string{"reason": "truncated_datagram"}); got != 1 {
		t.Errorf("decode_errors_total{truncated_datagram} = %v", got)
	}
}

func TestCollectorReceiveBuffer(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := sflow.NewCollector(sflow.Config{Listen: "127.0.0.1:0", ReceiveBuffer: 4 << 20}, &recordingSink{}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatalf("Run with a done context = %v, want nil", err)
	}
	// Granted is either what we asked (privileged or rmem_max allows) or
	// the clamp, which the collector reports (and warns about).
	if got := metric(t, reg, "rtbh_sflow_receive_buffer_bytes", nil); got < 4096 {
		t.Errorf("receive buffer %v", got)
	}
	if _, err := sflow.NewCollector(sflow.Config{}, nil, nil, nil); err == nil {
		t.Error("NewCollector with nil sink succeeded")
	}
	if _, err := sflow.NewCollector(sflow.Config{}, &recordingSink{}, nil, reg); err == nil {
		t.Error("registering metrics twice succeeded")
	}
	bad := sflow.Config{Listen: "127.0.0.1:notaport"}
	c2, err := sflow.NewCollector(bad, &recordingSink{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Listen(); err == nil {
		t.Error("Listen on a bad address succeeded")
	}
}

// TestCollectorStopsPromptly checks that Run returns soon after its
// context is cancelled while the reader is blocked on an idle socket, and
// that the port is free again afterwards.
func TestCollectorStopsPromptly(t *testing.T) {
	for _, reader := range []string{"recvmmsg", "poll", "xnet"} {
		t.Run(reader, func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) })
			c, err := sflow.NewCollector(sflow.Config{Listen: "127.0.0.1:0"}, &recordingSink{}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range readerOpts(reader) {
				o(c)
			}
			if err := c.Listen(); err != nil {
				t.Fatal(err)
			}
			addr := c.Addr()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			testkit.WaitFor(t, 5*time.Second, "the reader to block on the idle socket", readerBlocked)
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
			if d := time.Since(start); d > 200*time.Millisecond {
				t.Errorf("Run returned %v after cancel, want < 200ms", d)
			} else {
				t.Logf("Run returned %v after cancel", d)
			}
			if c.Addr() != addr {
				t.Errorf("Addr() = %v after Run, want %v", c.Addr(), addr)
			}
			conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
			if err != nil {
				t.Fatalf("port not released: %v", err)
			}
			conn.Close()
		})
	}
}

// readerBlocked reports whether the collector's reader goroutine is parked
// in a read: in the runtime poller ("IO wait") or in a blocking recvmmsg
// ("syscall"), with (*Collector).read on its stack.
func readerBlocked() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if (strings.Contains(header, "[IO wait") || strings.Contains(header, "[syscall")) &&
			strings.Contains(g, "feed/sflow.(*Collector).read(") {
			return true
		}
	}
	return false
}
