package main

// End-to-end detection at real sampling rates, against the real rtbhd
// binary: the default smtp-fanout rule's partial evidence (half of its
// thresholds) adding up with a partner's report in report fusion
// (reports.threshold, reports.min_reporters), and servers learned from
// inbound connections (skip_servers) kept across a restart.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// The default smtp-fanout rule's name and its origin.
const (
	fusionRule   = "smtp-fanout"
	fusionOrigin = "detector:smtp-fanout"
)

// fusionSender sends sFlow datagrams from one agent to a daemon and counts
// the samples sent, so that a test can wait until rtbhd counted them all.
type fusionSender struct {
	t      *testing.T
	d      *daemon
	conn   net.Conn
	stream *sflowtest.Stream
	sent   int
}

func newFusionSender(t *testing.T, d *daemon, agent netip.Addr, rate uint32) *fusionSender {
	t.Helper()
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", d.cfg.SFlowPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fusionSender{t: t, d: d, conn: conn, stream: sflowtest.NewStream(agent, rate)}
}

// send sends pkts, at most 7 samples a datagram, in order.
func (s *fusionSender) send(pkts ...sflowtest.Packet) {
	s.t.Helper()
	for i := 0; i < len(pkts); i += 7 {
		if _, err := s.conn.Write(s.stream.Datagram(pkts[i:min(i+7, len(pkts))]...)); err != nil {
			s.t.Fatal(err)
		}
	}
	s.sent += len(pkts)
}

// handled waits until rtbhd has counted every sample sent to it (by this
// daemon's lifetime: base is what it counted before this sender started).
func (s *fusionSender) handled(base float64) {
	s.t.Helper()
	testkit.WaitFor(s.t, 5*time.Second, fmt.Sprintf("rtbhd to count %d samples", s.sent), func() bool {
		return s.d.samples() >= base+float64(s.sent)
	})
}

// fusionSYN is a tcp/25 SYN from src to dst.
func fusionSYN(src, dst netip.Addr) sflowtest.Packet {
	return sflowtest.Packet{Src: src, Dst: dst, Protocol: sflowtest.ProtoTCP, SrcPort: 40000, DstPort: 25,
		TCPFlags: sflowtest.TCPSyn}
}

// fusionMX is the i-th (remote) mail server a subscriber sends to: outside the
// subscriber space.
func fusionMX(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}) }

// fusionOffender returns GetOffender(a), or nil when nothing is recorded yet
// (NotFound) or the call failed.
func fusionOffender(c clients, a netip.Addr) *rtbhv1.Offender {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o, err := c.st.GetOffender(ctx, &rtbhv1.GetOffenderRequest{Address: a.String()})
	if err != nil {
		return nil
	}
	return o.Offender
}

// fusionBlackholes returns the active blackholes by prefix.
func fusionBlackholes(t *testing.T, c clients) map[string]*rtbhv1.Blackhole {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := c.bh.ListBlackholes(ctx, &rtbhv1.ListBlackholesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]*rtbhv1.Blackhole, len(l.Blackholes))
	for _, b := range l.Blackholes {
		m[b.Prefix] = b
	}
	return m
}

func fusionHost(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// fusionSettle makes sure rtbhd has decided on every sample s sent so
// far: it sends 3 SYNs from marker to distinct mail servers (enough for
// smtp-fanout at 1:334 and sparser) and waits for marker's detector
// blackhole. Firings are decided one after another in sample order,
// partial evidence and its report fusion included, so every earlier
// decision has then been taken.
func fusionSettle(t *testing.T, s *fusionSender, c clients, marker netip.Addr) {
	t.Helper()
	s.send(fusionSYN(marker, fusionMX(50)), fusionSYN(marker, fusionMX(51)), fusionSYN(marker, fusionMX(52)))
	testkit.WaitFor(t, 5*time.Second, "the marker "+marker.String()+" blackholed by the detector", func() bool {
		b := fusionBlackholes(t, c)[fusionHost(marker)]
		return b != nil && b.Origin == fusionOrigin
	})
}

// fusionPart returns the score part of reporter, or nil.
func fusionPart(o *rtbhv1.Offender, reporter string) *rtbhv1.ScorePart {
	if o == nil {
		return nil
	}
	for _, p := range o.ScoreParts {
		if p.Reporter == reporter {
			return p
		}
	}
	return nil
}

// At 1:8192, two sampled SYNs from a zombie to distinct mail servers
// estimate 16,384 destinations and packets: past half of smtp-fanout's
// thresholds, but one sample short of min_samples 3. That is partial
// evidence (reporter detector:smtp-fanout, weight report_trust 0.5), not a
// blackhole; a partner of trust 0.5 reporting the zombie makes score 1.0
// from two reporters, and fusion blackholes it at once. The same partner
// alone (score 0.5, one reporter) blackholes nothing.
func TestFusionPartialEvidenceAndPartnerReport(t *testing.T) {
	cfg := newDaemonConfig(t, t.TempDir()) // default rules, report_trust, min_reporters
	d := startDaemon(t, cfg)
	op := dial(t, d.apiAddr(), testToken)
	partner := dial(t, d.apiAddr(), partnerToken)

	zombie := netip.MustParseAddr("198.51.100.66")
	other := netip.MustParseAddr("198.51.100.77") // reported by the partner only

	base := d.samples()
	s := newFusionSender(t, d, netip.MustParseAddr("192.0.2.13"), 8192)
	s.send(fusionSYN(zombie, fusionMX(0)), fusionSYN(zombie, fusionMX(1)))
	s.handled(base)
	testkit.WaitFor(t, 5*time.Second, "the zombie's partial evidence in GetOffender's score parts", func() bool {
		return fusionPart(fusionOffender(op, zombie), fusionOrigin) != nil
	})
	o := fusionOffender(op, zombie)
	if p := fusionPart(o, fusionOrigin); p.Trust != 0.5 {
		t.Errorf("partial evidence weighs %v in fusion, want report_trust 0.5", p.Trust)
	}
	if o.Score != 0.5 || len(o.ScoreParts) != 1 {
		t.Errorf("after partial evidence alone: score %v from %v, want 0.5 from detector:smtp-fanout alone", o.Score, o.ScoreParts)
	}
	// The score part shows before the partial evidence's fusion is done:
	// a later marker proves every decision on the zombie's samples taken.
	fusionSettle(t, s, op, netip.MustParseAddr("198.51.100.67"))
	if b, ok := fusionBlackholes(t, op)[fusionHost(zombie)]; ok {
		t.Fatalf("zombie blackholed on 2 samples (min_samples 3, threshold 1.0): %v", b)
	}
	if o := fusionOffender(op, zombie); o == nil || o.Blackhole != nil || len(o.Evidence) != 1 || o.Evidence[0].Action != "partial" {
		t.Fatalf("GetOffender(zombie) after partial evidence alone = %v, want one partial evidence, no blackhole", o)
	}
	if f := metricValue(d.metrics(), "rtbh_detector_firings_total"); f != 1 {
		t.Errorf("rtbh_detector_firings_total = %v, want 1 (the marker; the zombie's 2 samples are below min_samples 3)", f)
	}

	// The partner reports the other address first, then the zombie. Each
	// SubmitReports fuses before it answers, in order: once the zombie is
	// blackholed, the decision about the other one has been taken.
	report := func(a netip.Addr) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := partner.rep.SubmitReports(ctx, &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{
			{Address: a.String(), Kind: "spam", Evidence: "spam trap hit"}}})
		if err != nil || resp.Accepted != 1 {
			t.Fatalf("partner report on %s: %v %v", a, resp, err)
		}
	}
	report(other)
	start := time.Now()
	report(zombie)
	var bh *rtbhv1.Blackhole
	testkit.WaitFor(t, 5*time.Second, "the zombie blackholed by report fusion", func() bool {
		bh = fusionBlackholes(t, op)[fusionHost(zombie)]
		return bh != nil
	})
	within(t, "partner report -> fused blackhole listed", start, time.Second)
	if bh.Origin != "reports" {
		t.Errorf("zombie blackhole origin %q, want reports", bh.Origin)
	}
	if b, ok := fusionBlackholes(t, op)[fusionHost(other)]; ok {
		t.Errorf("address reported by one partner only (score 0.5, 1 reporter) blackholed: %v", b)
	}

	o = fusionOffender(op, zombie)
	if o == nil {
		t.Fatal("GetOffender(zombie) failed after the blackhole")
	}
	if o.Score != 1.0 || len(o.ScoreParts) != 2 {
		t.Errorf("zombie score %v from %v, want 1.0 from two parts", o.Score, o.ScoreParts)
	}
	if p := fusionPart(o, fusionOrigin); p == nil || p.Trust != 0.5 {
		t.Errorf("score part of %s = %v, want trust 0.5", fusionOrigin, p)
	}
	if p := fusionPart(o, "isp-b"); p == nil || p.Trust != 0.5 {
		t.Errorf("score part of the partner isp-b = %v, want trust 0.5", p)
	}
	if o.Blackhole == nil || o.Blackhole.Origin != "reports" {
		t.Errorf("GetOffender(zombie).blackhole = %v, want origin reports", o.Blackhole)
	}
	if o2 := fusionOffender(op, other); o2 == nil || o2.Score != 0.5 || len(o2.ScoreParts) != 1 || o2.Blackhole != nil {
		t.Errorf("GetOffender(other) = %v, want score 0.5 from the partner alone, no blackhole", o2)
	}
	t.Logf("zombie %s: score %v from %d parts, blackhole %s origin %s; %s (partner only): not blackholed",
		zombie, o.Score, len(o.ScoreParts), bh.Prefix, bh.Origin, other)
	d.stop()
}

// A self-hosted MTA in the subscriber space receives tcp/25 from three
// distinct outside clients at 1:2048: rtbhd learns it is a server and
// stores it. After a SIGTERM restart on the same store, rtbhd lists it
// still, and the MTA's own fan-out (5 samples to distinct mail servers,
// ~10,240 destinations and packets: past every threshold) is not flagged,
// while a control zombie sending the same pattern in the same datagrams
// is blackholed.
func TestLearnedServersSurviveRestart(t *testing.T) {
	cfg := newDaemonConfig(t, t.TempDir()) // default rules: skip_servers, server_min_clients 3
	d := startDaemon(t, cfg)
	c := dial(t, d.apiAddr(), testToken)

	mta := netip.MustParseAddr("198.51.100.25")
	zombie := netip.MustParseAddr("198.51.100.99")
	agent := netip.MustParseAddr("192.0.2.14")
	const rate = 2048

	listed := func(c clients) *rtbhv1.Server {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.st.ListOffenders(ctx, &rtbhv1.ListOffendersRequest{Servers: true})
		if err != nil {
			t.Fatalf("ListOffenders(servers): %v", err)
		}
		for _, s := range resp.Servers {
			if s.Address == mta.String() && s.Rule == fusionRule {
				return s
			}
		}
		return nil
	}
	ctlListed := func(d *daemon) string {
		out := ctl(t, d, "offenders", "--servers")
		found := false
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == mta.String() && f[1] == fusionRule {
				found = true
			}
		}
		if !found {
			t.Errorf("rtbhctl offenders --servers does not list %s for %s:\n%s", mta, fusionRule, out)
		}
		return out
	}

	base := d.samples()
	s := newFusionSender(t, d, agent, rate)
	var in []sflowtest.Packet
	for i := range 3 {
		in = append(in, fusionSYN(netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}), mta))
	}
	s.send(in...)
	s.handled(base)
	var srv *rtbhv1.Server
	testkit.WaitFor(t, 5*time.Second, "the MTA listed as a learned server", func() bool {
		srv = listed(c)
		return srv != nil
	})
	if srv.Clients < 3 {
		t.Errorf("learned server %v: %d clients, want >= 3", srv, srv.Clients)
	}
	t.Logf("before restart, rtbhctl offenders --servers:\n%s", ctlListed(d))

	d.stop()
	d = startDaemon(t, cfg)
	c = dial(t, d.apiAddr(), testToken)
	if srv = listed(c); srv == nil {
		t.Fatalf("learned server %s forgotten by the restart", mta)
	}
	t.Logf("after restart, rtbhctl offenders --servers:\n%s", ctlListed(d))
	if o := fusionOffender(c, mta); o == nil || len(o.Servers) == 0 || o.Servers[0].Rule != fusionRule {
		t.Errorf("GetOffender(mta) after restart = %v, want servers with %s", o, fusionRule)
	}

	// The new process received no inbound sample: only the stored server
	// protects the MTA now. In each datagram the MTA's sample comes before
	// the zombie's, so the MTA crosses the thresholds first; firings are
	// decided in order, so once the zombie's blackhole is listed, a
	// blackhole of the MTA would be listed too.
	base = d.samples()
	s = newFusionSender(t, d, agent, rate)
	var out []sflowtest.Packet
	for i := range 5 {
		out = append(out, fusionSYN(mta, fusionMX(i)), fusionSYN(zombie, fusionMX(i)))
	}
	s.send(out...)
	s.handled(base)
	var bh *rtbhv1.Blackhole
	testkit.WaitFor(t, 5*time.Second, "the control zombie blackholed by the detector", func() bool {
		bh = fusionBlackholes(t, c)[fusionHost(zombie)]
		return bh != nil
	})
	if bh.Origin != fusionOrigin {
		t.Errorf("control zombie blackhole origin %q, want %s", bh.Origin, fusionOrigin)
	}
	if b, ok := fusionBlackholes(t, c)[fusionHost(mta)]; ok {
		t.Errorf("learned server %s blackholed after the restart: %v", mta, b)
	}
	o := fusionOffender(c, mta)
	if o == nil {
		t.Fatal("GetOffender(mta) failed")
	}
	if o.Blackhole != nil || len(o.Evidence) != 0 || o.Score != 0 {
		t.Errorf("learned server flagged: blackhole %v, evidence %v, score %v; want none", o.Blackhole, o.Evidence, o.Score)
	}
	// The firings counter is flushed per batch, maybe after the decision.
	testkit.WaitFor(t, 5*time.Second, "rtbh_detector_firings_total to count the zombie", func() bool {
		return metricValue(d.metrics(), "rtbh_detector_firings_total") >= 1
	})
	if f := metricValue(d.metrics(), "rtbh_detector_firings_total"); f != 1 {
		t.Errorf("rtbh_detector_firings_total = %v, want 1 (the control zombie only)", f)
	}
	if f := metricValue(d.metrics(), "rtbh_detector_firings_dropped_total"); f != 0 {
		t.Errorf("rtbh_detector_firings_dropped_total = %v, want 0", f)
	}
	d.stop()
}

// With reports.threshold 0.5, one reporter reaches the threshold alone:
// min_reporters 2 is then what keeps partial evidence alone, and a partner
// of trust 0.5 alone, from blackholing. Both together do; one operator
// report suffices alone.
func TestFusionMinReporters(t *testing.T) {
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.Threshold = 0.5
	d := startDaemon(t, cfg)
	op := dial(t, d.apiAddr(), testToken)
	partner := dial(t, d.apiAddr(), partnerToken)

	zombie := netip.MustParseAddr("198.51.100.81")   // partial evidence, then the partner
	reported := netip.MustParseAddr("198.51.100.82") // the partner alone
	byOperator := netip.MustParseAddr("198.51.100.83")

	base := d.samples()
	s := newFusionSender(t, d, netip.MustParseAddr("192.0.2.15"), 8192)
	s.send(fusionSYN(zombie, fusionMX(0)), fusionSYN(zombie, fusionMX(1)))
	s.handled(base)
	testkit.WaitFor(t, 5*time.Second, "the zombie's partial evidence in GetOffender's score parts", func() bool {
		return fusionPart(fusionOffender(op, zombie), fusionOrigin) != nil
	})
	fusionSettle(t, s, op, netip.MustParseAddr("198.51.100.84"))
	if b, ok := fusionBlackholes(t, op)[fusionHost(zombie)]; ok {
		t.Fatalf("partial evidence alone (score 0.5 >= threshold 0.5, 1 reporter) blackholed: %v", b)
	}

	submit := func(c clients, a netip.Addr) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.rep.SubmitReports(ctx, &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{{Address: a.String()}}})
		if err != nil || resp.Accepted != 1 {
			t.Fatalf("report on %s: %v %v", a, resp, err)
		}
	}
	submit(partner, reported)
	submit(partner, zombie)
	submit(op, byOperator)
	// SubmitReports fuses before it answers: every decision is taken.
	bhs := fusionBlackholes(t, op)
	if b, ok := bhs[fusionHost(reported)]; ok {
		t.Errorf("one partner alone (score 0.5 >= threshold 0.5, 1 reporter) blackholed: %v", b)
	}
	if b := bhs[fusionHost(zombie)]; b == nil || b.Origin != "reports" {
		t.Errorf("partial evidence + partner: blackhole %v, want origin reports", b)
	}
	if b := bhs[fusionHost(byOperator)]; b == nil || b.Origin != "reports" {
		t.Errorf("one operator report: blackhole %v, want origin reports", b)
	}
	d.stop()
}
