package main

// End-to-end detection: real sFlow from pmacct's sfprobe, replaying a pcap
// the test writes, into rtbhd, with BIRD peered as a border router.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

var samplesTotal = regexp.MustCompile(`(?m)^rtbh_sflow_samples_total (\S+)$`)

func (d *daemon) samples() float64 {
	m := samplesTotal.FindStringSubmatch(d.metrics())
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// trafficMix interleaves, packet by packet, what each host sends.
func trafficMix() []sflowtest.Packet {
	type host struct {
		src   string
		port  uint16
		dsts  int
		per   int // packets per destination
		proto uint8
	}
	hosts := []host{
		{"198.51.100.150", 25, 120, 20, sflowtest.ProtoTCP},  // the zombie: direct SMTP to 120 mail servers
		{"198.51.100.140", 25, 120, 20, sflowtest.ProtoTCP},  // the ISP's MTA (exempt), same pattern
		{"198.51.100.151", 443, 200, 10, sflowtest.ProtoTCP}, // a subscriber browsing the web
		{"198.51.100.152", 587, 30, 40, sflowtest.ProtoTCP},  // a subscriber submitting mail on 587
		{"198.51.100.10", 25, 120, 20, sflowtest.ProtoTCP},   // outside subscriber_prefixes, on tcp/25
		{"198.51.100.153", 53, 2, 300, sflowtest.ProtoUDP},   // DNS to two resolvers
	}
	var pkts []sflowtest.Packet
	for round := 0; ; round++ {
		any := false
		for _, h := range hosts {
			if round >= h.dsts*h.per {
				continue
			}
			any = true
			d := round % h.dsts
			dst := netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + d)})
			if h.port == 443 {
				dst = netip.AddrFrom4([4]byte{203, 0, 113, byte(d)})
			}
			flags := uint8(sflowtest.TCPAck)
			if round < h.dsts {
				flags = sflowtest.TCPSyn
			}
			pkts = append(pkts, sflowtest.Packet{Src: netip.MustParseAddr(h.src), Dst: dst, Protocol: h.proto,
				SrcPort: uint16(40000 + d), DstPort: h.port, TCPFlags: flags, PayloadLen: 40})
		}
		if !any {
			return pkts
		}
	}
}

func TestDetectorEndToEndWithPmacct(t *testing.T) {
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.Subscribers = `"198.51.100.128/25"`
	cfg.Rules = `    - name: smtp-fanout
      protocol: tcp
      dst_ports: [25]
      min_destinations: 20
      min_packets: 1000
      exempt: ["198.51.100.140"]
      ttl: 1h`
	d, bird, _ := routerSetup(t, cfg, false, netip.MustParseAddr("127.0.32.1"), netip.MustParseAddr("127.0.32.2"), netip.Addr{})

	pkts := trafficMix()
	pcap := filepath.Join(t.TempDir(), "traffic.pcap")
	if err := sflowtest.WritePcap(pcap, pkts); err != nil {
		t.Fatal(err)
	}
	const rate = 4
	want := float64(len(pkts)) / rate * 0.9
	zombie := netip.MustParsePrefix("198.51.100.150/32")
	pm := sflowtest.RunPmacct(t, pcap, netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", cfg.SFlowPort)), rate)
	testkit.WaitFor(t, 10*time.Second, "rtbhd to decode the samples", func() bool { return d.samples() >= want })
	t.Logf("pcap: %d packets; rtbhd decoded %.0f samples at 1:%d", len(pkts), d.samples(), rate)

	r := bird.WaitRoute(zombie, 5*time.Second, nil)
	if !r.Blackhole || !r.HasCommunity("65535:666") || !r.HasCommunity("65535:65281") {
		t.Errorf("zombie route on BIRD = %+v, want blackhole with 65535:666 and no-export", r)
	}
	// Let any wrong decision reach BIRD too. Once pmacctd has exited it
	// sends nothing more, and what it sent is queued ahead of anything sent
	// later. rtbhd reads its socket in order and decides, announces and
	// sends routes in order: when a second zombie, sent now, is on BIRD,
	// every decision taken on pmacctd's samples is there too.
	if err := pm.Stop(); err != nil {
		t.Fatalf("stopping pmacctd: %v\n%s", err, pm.Output())
	}
	marker := sendZombie(t, cfg.SFlowPort, netip.MustParseAddr("198.51.100.160"))
	bird.WaitRoute(marker, 5*time.Second, nil)
	if got := birdSet(t, bird); !slices.Equal(got, []string{zombie.String(), marker.String()}) {
		t.Fatalf("BIRD holds %v, want only the zombie %s and the later one %s", got, zombie, marker)
	}

	c := dial(t, d.apiAddr(), testToken)
	o, err := c.st.GetOffender(context.Background(), &rtbhv1.GetOffenderRequest{Address: "198.51.100.150"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Offender.Evidence) == 0 || o.Offender.Blackhole == nil || o.Offender.Blackhole.Origin != "detector:smtp-fanout" {
		t.Fatalf("offender = %v, want evidence and an active detector:smtp-fanout blackhole", o.Offender)
	}
	ev := o.Offender.Evidence[0]
	if ev.DistinctDestinations < 20 || ev.EstimatedPackets < 1000 || len(ev.ExampleDestinations) == 0 {
		t.Errorf("evidence = %v, want >= 20 destinations, >= 1000 packets, examples", ev)
	}
	out := ctl(t, d, "offender", "198.51.100.150")
	t.Logf("rtbhctl offender:\n%s", out)
}

// sendZombie sends, from a test agent (192.0.2.12, 1 in 100), 21 tcp/25
// SYNs from src to distinct mail servers: enough for the smtp-fanout rule
// (20 destinations, 1,000 packets). It returns src's /32.
func sendZombie(t *testing.T, sflowPort int, src netip.Addr) netip.Prefix {
	t.Helper()
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", sflowPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream := sflowtest.NewStream(netip.MustParseAddr("192.0.2.12"), 100)
	var pkts []sflowtest.Packet
	for i := range 21 {
		pkts = append(pkts, sflowtest.Packet{Src: src, Dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + i)}),
			Protocol: sflowtest.ProtoTCP, SrcPort: 40000, DstPort: 25, TCPFlags: sflowtest.TCPSyn})
	}
	for i := 0; i < len(pkts); i += 7 {
		if _, err := conn.Write(stream.Datagram(pkts[i : i+7]...)); err != nil {
			t.Fatal(err)
		}
	}
	return netip.PrefixFrom(src, 32)
}

// From the sFlow datagram whose sample crosses a rule's thresholds to the
// route on a BGP peer: target <= 1 s. At 1:100 each sample stands for 100
// packets (and, to a new destination, 100 destinations): each zombie gets 9
// samples to distinct destinations first (900 packets, one sample short of
// min_packets), then the crossing sample alone.
func TestDetectionLatency(t *testing.T) {
	cfg := newDaemonConfig(t, t.TempDir())
	d, peer := startWithGoBGPPeer(t, cfg, netip.MustParseAddr("127.0.34.1"), netip.MustParseAddr("127.0.34.2"))

	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", cfg.SFlowPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream := sflowtest.NewStream(netip.MustParseAddr("192.0.2.11"), 100) // 1 sample = 100 packets

	sent := 0 // samples sent so far
	send := func(pkts ...sflowtest.Packet) {
		t.Helper()
		if _, err := conn.Write(stream.Datagram(pkts...)); err != nil {
			t.Fatal(err)
		}
		sent += len(pkts)
	}
	// handled waits until rtbhd has counted every sample sent: the
	// detector has then seen them, and fired where a rule says so.
	handled := func() {
		t.Helper()
		testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("rtbhd to handle %d samples", sent), func() bool { return d.samples() >= float64(sent) })
	}
	firings := func() float64 { return metricValue(d.metrics(), "rtbh_detector_firings_total") }
	var worst time.Duration
	for z := range 5 {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(200 + z)})
		syn := func(d int) sflowtest.Packet {
			return sflowtest.Packet{Src: src, Dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(d + 1)}),
				Protocol: sflowtest.ProtoTCP, SrcPort: 40000, DstPort: 25, TCPFlags: sflowtest.TCPSyn}
		}
		var pkts []sflowtest.Packet
		for i := range 9 {
			pkts = append(pkts, syn(i))
		}
		for i := 0; i < len(pkts); i += 7 {
			send(pkts[i:min(i+7, len(pkts))]...)
		}
		handled()
		if f := firings(); f != float64(z) {
			t.Fatalf("zombie %d: %v firings before crossing min_packets, want %d", z, f, z)
		}
		if n, _ := peer.Count(); n != z {
			t.Fatalf("zombie %d blackholed before crossing min_packets (%d routes)", z, n)
		}
		start := time.Now()
		send(syn(9))
		testkit.WaitFor(t, 5*time.Second, "the zombie's route on the peer", func() bool {
			n, _ := peer.Count()
			return n == z+1
		})
		took := time.Since(start)
		worst = max(worst, took)
		t.Logf("zombie %s: crossing sample -> route on the peer in %s", src, took.Round(100*time.Microsecond))
	}
	if worst > time.Second {
		t.Errorf("worst threshold-to-route latency %s, want <= 1 s", worst)
	}

	// An operator lifts a zombie's blackhole early; it carries on and is
	// caught again at once, as a repeat offender with double the TTL.
	c := dial(t, d.apiAddr(), testToken)
	first := netip.MustParseAddr("198.51.100.200")
	if _, err := c.bh.RemoveBlackhole(context.Background(), &rtbhv1.RemoveBlackholeRequest{Prefix: first.String(), Reason: "customer says cleaned"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the withdrawal on the peer", func() bool { n, _ := peer.Count(); return n == 4 })
	// rtbhd lifts the source's suppression when its decision loop sees the
	// removal (a watch event, asynchronous): until then the detector
	// ignores the source. Send its next sample, and again each time one
	// was handled without a firing, until it fires.
	again := sflowtest.Packet{Src: first, Dst: netip.MustParseAddr("192.0.2.99"),
		Protocol: sflowtest.ProtoTCP, SrcPort: 40000, DstPort: 25, TCPFlags: sflowtest.TCPSyn}
	before := firings()
	send(again)
	testkit.WaitFor(t, 5*time.Second, "the repeat offender to fire again", func() bool {
		switch {
		case d.samples() < float64(sent):
			return false
		case firings() > before:
			return true
		}
		send(again)
		return false
	})
	testkit.WaitFor(t, 5*time.Second, "the repeat offender back on the peer", func() bool { n, _ := peer.Count(); return n == 5 })
	l, err := c.bh.ListBlackholes(context.Background(), &rtbhv1.ListBlackholesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range l.Blackholes {
		if b.Prefix == first.String()+"/32" {
			if ttl := b.ExpiresAt.AsTime().Sub(b.CreatedAt.AsTime()); ttl != 2*time.Hour {
				t.Errorf("repeat offender TTL = %s, want 2h (double the rule's 1h)", ttl)
			}
		}
	}
}
