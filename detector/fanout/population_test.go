package fanout

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

// The Collector hands its flows straight to the engine; only this test,
// which feeds the engine real datagrams, imports the sFlow package.
var _ sflow.Sink = (*Engine)(nil)

// TestPopulation is the accuracy test of issue 5: a generated sFlow stream
// at 1:256 from four agents, built as real datagrams with sflowtest and
// decoded by the real decoder, with simulated time.
//
//   - 100,000 normal subscribers (10% IPv6): web (tcp/443, QUIC udp/443),
//     DNS (udp/53), submission (tcp/587) and SMTP to the ONE smarthost.
//   - 200 of them are busy small-business senders: many packets to the
//     smarthost (far above min_packets, one destination).
//   - 100 of them run their own mail server: 2 connections per second,
//     all to the 15 big mail providers (15 distinct destinations, many
//     packets: just under the rule).
//   - 50 zombies (10 IPv6) inside the subscriber space, each starting at a
//     random time in the first six minutes and opening 5-8 SMTP
//     connections per second to random mail servers (10 packets per
//     connection, the first a SYN).
//   - The ISP's exempt outbound MTA and 20 spamming hosts outside the
//     subscriber space, fanning out the same way.
//
// Every zombie must fire smtp-fanout; nothing else may fire. The time to
// detection (firing time minus the zombie's start) is logged.
func TestPopulation(t *testing.T) {
	const (
		rate       = 256
		duration   = 15 * 60 // simulated seconds
		zombies    = 50
		busy       = 200
		outsiders  = 20
		perDgram   = 7  // flow samples per datagram
		dgramBatch = 64 // datagrams per HandleFlows call, like the collector's recvmmsg batch
	)
	normals := 100_000
	normalSamplesPerSec := 5000 // ~12.8 packets/s per subscriber on average
	if testing.Short() {
		normals, normalSamplesPerSec = 20_000, 1000
	}
	rng := rand.New(rand.NewPCG(2026, 5))

	smarthost := netip.MustParseAddr("192.0.2.25")
	smarthost6 := netip.MustParseAddr("2001:db8:ffff::25")
	mta := netip.MustParseAddr("100.64.255.25") // the ISP's outbound MTA, in subscriber space but exempt
	resolvers := []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8:ffff::53")}
	cfg := Config{
		SubscriberPrefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("2001:db8::/33")},
		NeverBlackhole:     []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:ffff::/48")},
		Window:             10 * time.Minute,
		Rules:              []Rule{SMTPFanout()},
	}
	cfg.Rules[0].Exempt = []netip.Prefix{netip.PrefixFrom(mta, 32)}
	var firings []Firing
	e, err := New(cfg, func(f Firing) { firings = append(firings, f) }, nil)
	if err != nil {
		t.Fatal(err)
	}

	subscriber := func(i int) netip.Addr {
		if i%10 == 0 {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
		}
		return netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
	}
	// Zombies are ordinary subscribers (their web traffic goes on).
	zombieIdx := rng.Perm(normals)[:zombies]
	for i := range zombieIdx[:10] {
		zombieIdx[i] -= zombieIdx[i] % 10 // IPv6
		zombieIdx[i] += 10 * i            // stay distinct
		zombieIdx[i] %= normals
	}
	zombieStart := make([]int, zombies)
	zombieAddr := make(map[netip.Addr]int, zombies)
	for z, i := range zombieIdx {
		zombieStart[z] = 60 + rng.IntN(300)
		zombieAddr[subscriber(i)] = z
	}
	if len(zombieAddr) != zombies {
		t.Fatalf("zombie addresses collide: %d", len(zombieAddr))
	}
	perm := rng.Perm(normals)
	busyIdx, ownMTAIdx := perm[:busy], perm[busy:busy+100]
	for _, i := range append(slices.Clone(busyIdx), ownMTAIdx...) {
		if _, ok := zombieAddr[subscriber(i)]; ok {
			t.Fatal("a zombie is also a legitimate sender; change the seed")
		}
	}
	randomMX := func(v6 bool) netip.Addr {
		if v6 {
			return netip.AddrFrom16([16]byte{0x2a, 0x00, byte(rng.Uint32()), byte(rng.Uint32()), 8: byte(rng.Uint32()), 15: byte(rng.Uint32())})
		}
		for {
			a := netip.AddrFrom4([4]byte{byte(1 + rng.IntN(222)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
			if !a.IsPrivate() && !cfg.SubscriberPrefixes[0].Contains(a) {
				return a
			}
		}
	}
	web := make([]netip.Addr, 2000)
	for i := range web {
		web[i] = randomMX(i%10 == 0)
	}
	mailProviders := web[:20]
	var big4, big6 [15]netip.Addr // the big mail providers
	for i := range big4 {
		big4[i], big6[i] = randomMX(false), randomMX(true)
	}
	bigMX := func(v6 bool) netip.Addr {
		if v6 {
			return big6[rng.IntN(len(big6))]
		}
		return big4[rng.IntN(len(big4))]
	}

	agents := make([]*sflowtest.Stream, 4)
	for i := range agents {
		agents[i] = sflowtest.NewStream(netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + i)}), rate)
	}
	var (
		dec     sflow.Decoder
		pending [4][]sflowtest.Packet
		dgrams  [][]byte
		out     = make([]domain.Flow, perDgram)
		batch   []domain.Flow
		nSample int
		nDgram  int
	)
	// flush decodes the buffered datagrams and hands them to the engine in
	// collector-sized batches at time now.
	flushDatagrams := func(now time.Time) {
		for len(dgrams) > 0 {
			n := min(dgramBatch, len(dgrams))
			batch = batch[:0]
			for _, d := range dgrams[:n] {
				k, err := dec.DecodeFlows(d, out)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				batch = append(batch, out[:k]...)
			}
			dgrams = dgrams[n:]
			nSample += len(batch)
			e.HandleFlowsAt(batch, now)
		}
		dgrams = dgrams[:0]
	}
	emit := func(p sflowtest.Packet) {
		a := p.Src.As16()
		ag := int(a[15]^a[14]) & 3
		pending[ag] = append(pending[ag], p)
		if len(pending[ag]) == perDgram {
			dgrams = append(dgrams, slices.Clone(agents[ag].Datagram(pending[ag]...)))
			nDgram++
			pending[ag] = pending[ag][:0]
		}
	}
	tcp := func(src, dst netip.Addr, port uint16, flags uint8) sflowtest.Packet {
		return sflowtest.Packet{Src: src, Dst: dst, Protocol: sflowtest.ProtoTCP, SrcPort: uint16(32768 + rng.IntN(28000)), DstPort: port, TCPFlags: flags, PayloadLen: 40}
	}
	udp := func(src, dst netip.Addr, port uint16) sflowtest.Packet {
		return sflowtest.Packet{Src: src, Dst: dst, Protocol: sflowtest.ProtoUDP, SrcPort: uint16(32768 + rng.IntN(28000)), DstPort: port, PayloadLen: 60}
	}
	pick := func(v6 bool, v4s, v6s netip.Addr) netip.Addr {
		if v6 {
			return v6s
		}
		return v4s
	}
	sameFamily := func(src netip.Addr, pool []netip.Addr) netip.Addr {
		for {
			if d := pool[rng.IntN(len(pool))]; d.Is6() == src.Is6() {
				return d
			}
		}
	}
	// smtpSession samples one second of SMTP: conns connections of 10
	// packets each, every packet sampled with probability 1/rate, to
	// destinations from mx.
	smtpSession := func(src netip.Addr, conns int, mx func(v6 bool) netip.Addr) {
		for c := 0; c < conns; c++ {
			dst := mx(src.Is6())
			for k := 0; k < 10; k++ {
				if rng.IntN(rate) != 0 {
					continue
				}
				flags := uint8(sflowtest.TCPAck | sflowtest.TCPPsh)
				if k == 0 {
					flags = sflowtest.TCPSyn
				}
				emit(tcp(src, dst, 25, flags))
			}
		}
	}

	start := time.Date(2026, 6, 1, 20, 0, 0, 0, time.UTC)
	for sec := 0; sec < duration; sec++ {
		now := start.Add(time.Duration(sec) * time.Second)
		for n := 0; n < normalSamplesPerSec; n++ {
			src := subscriber(rng.IntN(normals))
			v6 := src.Is6()
			switch x := rng.IntN(100); {
			case x < 65:
				flags := uint8(sflowtest.TCPAck)
				if x == 0 {
					flags = sflowtest.TCPSyn
				}
				emit(tcp(src, sameFamily(src, web), 443, flags))
			case x < 72:
				emit(udp(src, sameFamily(src, web), 443))
			case x < 82:
				emit(udp(src, pick(v6, resolvers[0], resolvers[1]), 53))
			case x < 90:
				emit(tcp(src, sameFamily(src, mailProviders), 587, sflowtest.TCPAck))
			default:
				emit(tcp(src, pick(v6, smarthost, smarthost6), 25, sflowtest.TCPAck))
			}
		}
		for _, i := range busyIdx { // ~2 samples/s each: ~512 packets/s to the smarthost
			src := subscriber(i)
			for k := rng.IntN(5); k > 0; k-- {
				emit(tcp(src, pick(src.Is6(), smarthost, smarthost6), 25, sflowtest.TCPAck))
			}
		}
		for z, i := range zombieIdx {
			if sec >= zombieStart[z] {
				smtpSession(subscriber(i), 5+rng.IntN(4), randomMX)
			}
		}
		for o := 0; o < outsiders; o++ {
			smtpSession(netip.AddrFrom4([4]byte{203, 0, 113, byte(o)}), 8, randomMX)
		}
		smtpSession(mta, 20, randomMX)
		for _, i := range ownMTAIdx {
			smtpSession(subscriber(i), 2, bigMX)
		}
		flushDatagrams(now.Add(500 * time.Millisecond))
	}

	var conns uint64
	detected := make([]time.Duration, zombies)
	lastFired := make([]time.Time, zombies)
	for _, f := range firings {
		z, ok := zombieAddr[f.Source]
		if !ok {
			t.Errorf("non-zombie %v fired: %+v", f.Source, f)
			continue
		}
		zs := start.Add(time.Duration(zombieStart[z]) * time.Second)
		if detected[z] != 0 {
			// Still spamming a window later: the engine fires again
			// (the lead's path extends the blackhole).
			if f.At.Sub(lastFired[z]) < cfg.Window {
				t.Errorf("zombie %v fired again %v after its previous firing", f.Source, f.At.Sub(lastFired[z]))
			}
		} else {
			detected[z] = f.At.Sub(zs)
		}
		lastFired[z] = f.At
		// (FirstSeen may precede the zombie's start: it also mails through
		// the smarthost. Connections may be 0: with ~20 samples, a SYN in
		// every tenth packet is often not sampled.)
		if f.Rule != "smtp-fanout" || f.Destinations < 20 || f.Packets < 1000 || f.ExampleCount != numExamples ||
			f.LastSeen.Before(zs) || f.LastSeen.After(f.At) {
			t.Errorf("zombie firing evidence: %+v", f)
		}
		conns += f.Connections
	}
	var times []time.Duration
	for z, d := range detected {
		if d == 0 {
			t.Errorf("zombie %v (start %ds) never fired", subscriber(zombieIdx[z]), zombieStart[z])
			continue
		}
		times = append(times, d)
	}
	if conns == 0 {
		t.Error("no connection attempts estimated in any zombie firing")
	}
	slices.Sort(times)
	// The self-hosted mail servers are close to the rule: make sure the
	// test exercised that (many packets, up to 15 destinations).
	var near int
	for _, i := range ownMTAIdx {
		if n, _ := e.distinctOf(subscriber(i), 0); n >= 10 && e.packetsOf(subscriber(i), 0) >= 1000 {
			near++
		}
	}
	if near < len(ownMTAIdx)/2 {
		t.Errorf("only %d of %d self-hosted mail servers reached 10 destinations and 1000 packets", near, len(ownMTAIdx))
	}
	st := e.Stats()
	t.Logf("%d subscribers, %d zombies, %d samples in %d datagrams over %ds simulated; %d tracked, %d overflow records",
		normals, zombies, nSample, nDgram, duration, st.Tracked, st.Overflow)
	if len(times) > 0 {
		t.Logf("time to detection: min %v, median %v, p90 %v, max %v",
			times[0], times[len(times)/2], times[len(times)*9/10], times[len(times)-1])
	}
}
