package fanout

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

var populationVariants = flag.Bool("rtbh.population.variants", true,
	"also run the population at other sampling rates, zombie rates and from a cold start (reported, not enforced)")

// population is a traffic model at real packet rates, sampled the way an
// agent samples: every packet independently with probability 1/rate. The
// samples are built as real sFlow datagrams (sflowtest), decoded by the real
// decoder and handed to the engine in simulated time.
//
//   - normals subscribers (10% IPv6) browse (tcp/443 and QUIC), resolve
//     (udp/53), submit mail to the big providers on 587/465 and send
//     tcp/25 only to the ISP's smarthost: ~20 packets/s each.
//   - cgnat addresses inside the subscriber space each carry 300
//     households: heavy web, submission, smarthost mail.
//   - mtas self-hosted mail servers send mtaOut SMTP connections/s to
//     distinct MX hosts and receive mtaIn connections/s of inbound SMTP
//     from a pool of 2,000 outside senders.
//   - zombies (ordinary subscribers, their web traffic goes on) start at
//     zombieAt, each opening zombieConns SMTP connections/s to distinct
//     MX hosts; the MX replies come back from port 25.
//
// An SMTP connection is 12 packets from the client (the first a SYN) and
// as many replies.
type population struct {
	rate        int     // 1 in rate packets sampled
	normals     int     // normal subscribers
	cgnat       int     // CGNAT addresses
	mtas        int     // self-hosted mail servers
	mtaOut      float64 // their outbound SMTP connections/s
	mtaIn       float64 // their inbound SMTP connections/s
	zombies     int     //
	zombieConns float64 // SMTP connections/s per zombie
	zombieAt    int     // simulated second the zombies start (0 = cold start: everything starts at once)
	duration    int     // simulated seconds in all
	seed        uint64
}

// populationResult is what a run saw.
type populationResult struct {
	firings []Firing
	// allowed[z] is when zombie z's samples first allowed detection: 3
	// sampled distinct destinations within one window (zero: never).
	allowed    []time.Time
	started    time.Time // zombies' start
	zombieAddr map[netip.Addr]int
	mtaAddr    map[netip.Addr]bool
	samples    int
	stats      Stats
}

const packetsPerConn = 12

func (p population) run(t *testing.T) populationResult {
	t.Helper()
	rng := rand.New(rand.NewPCG(p.seed, 13))
	subsV4 := netip.MustParsePrefix("100.64.0.0/10")
	cfg := Config{
		SubscriberPrefixes: []netip.Prefix{subsV4, netip.MustParsePrefix("2001:db8::/33")},
		NeverBlackhole:     []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:ffff::/48")},
		Rules:              []Rule{SMTPFanout()}, // the default rule
	}
	res := populationResult{zombieAddr: map[netip.Addr]int{}, mtaAddr: map[netip.Addr]bool{}}
	e, err := New(cfg, func(f Firing) { res.firings = append(res.firings, f) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	smarthost, smarthost6 := netip.MustParseAddr("192.0.2.25"), netip.MustParseAddr("2001:db8:ffff::25")
	resolver, resolver6 := netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8:ffff::53")
	subscriber := func(i int) netip.Addr {
		if i%10 == 0 {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
		}
		return netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
	}
	outside := func(v6 bool) netip.Addr {
		if v6 {
			return netip.AddrFrom16([16]byte{0x2a, 0x00, byte(rng.Uint32()), byte(rng.Uint32()), 8: byte(rng.Uint32()), 14: byte(rng.Uint32()), 15: byte(rng.Uint32())})
		}
		for {
			a := netip.AddrFrom4([4]byte{byte(1 + rng.IntN(222)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
			if !a.IsPrivate() && !subsV4.Contains(a) && a.As4()[0] != 192 {
				return a
			}
		}
	}
	web := make([]netip.Addr, 4000)
	for i := range web {
		web[i] = outside(i%10 == 0)
	}
	providers := web[:30] // the big mail providers (587/465)
	senders := make([]netip.Addr, 2000)
	for i := range senders {
		senders[i] = outside(i%10 == 0)
	}
	sameFamily := func(v6 bool, pool []netip.Addr) netip.Addr {
		for {
			if d := pool[rng.IntN(len(pool))]; d.Is6() == v6 {
				return d
			}
		}
	}
	// The special hosts are subscribers too, far apart from each other.
	perm := rng.Perm(p.normals)
	zombieIdx, mtaIdx := perm[:p.zombies], perm[p.zombies:p.zombies+p.mtas]
	for z, i := range zombieIdx {
		res.zombieAddr[subscriber(i)] = z
	}
	for _, i := range mtaIdx {
		res.mtaAddr[subscriber(i)] = true
	}
	cgnat := make([]netip.Addr, p.cgnat)
	for i := range cgnat {
		cgnat[i] = netip.AddrFrom4([4]byte{100, 127, 255, byte(i)})
	}

	agents := make([]*sflowtest.Stream, 4)
	for i := range agents {
		agents[i] = sflowtest.NewStream(netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + i)}), uint32(p.rate))
	}
	var (
		dec     sflow.Decoder
		pending [4][]sflowtest.Packet
		out     = make([]domain.Flow, 8)
		batch   []domain.Flow
	)
	emit := func(pk sflowtest.Packet) {
		a := pk.Src.As16()
		ag := int(a[15]^a[13]) & 3
		pending[ag] = append(pending[ag], pk)
		if len(pending[ag]) == 7 {
			k, err := dec.DecodeFlows(agents[ag].Datagram(pending[ag]...), out)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			batch = append(batch, out[:k]...)
			pending[ag] = pending[ag][:0]
		}
	}
	tcp := func(src, dst netip.Addr, sport, dport uint16, flags uint8) sflowtest.Packet {
		return sflowtest.Packet{Src: src, Dst: dst, Protocol: sflowtest.ProtoTCP, SrcPort: sport, DstPort: dport, TCPFlags: flags, PayloadLen: 40}
	}
	udp := func(src, dst netip.Addr, dport uint16) sflowtest.Packet {
		return sflowtest.Packet{Src: src, Dst: dst, Protocol: sflowtest.ProtoUDP, SrcPort: uint16(32768 + rng.IntN(28000)), DstPort: dport, PayloadLen: 60}
	}
	// poisson draws a Poisson count (Knuth; the means here are small).
	poisson := func(mean float64) int {
		if mean > 30 {
			return max(int(math.Round(mean+math.Sqrt(mean)*rng.NormFloat64())), 0)
		}
		l, k, q := math.Exp(-mean), 0, rng.Float64()
		for q > l {
			k++
			q *= rng.Float64()
		}
		return k
	}
	sampled := func() bool { return rng.IntN(p.rate) == 0 }
	// smtp samples the packets of one SMTP connection from client to
	// server:25 (and the replies); it returns whether a client packet was
	// sampled.
	smtp := func(client, server netip.Addr) bool {
		sport := uint16(32768 + rng.IntN(28000))
		hit := false
		for k := 0; k < packetsPerConn; k++ {
			if sampled() {
				flags := uint8(sflowtest.TCPAck | sflowtest.TCPPsh)
				if k == 0 {
					flags = sflowtest.TCPSyn
				}
				emit(tcp(client, server, sport, 25, flags))
				hit = true
			}
			if sampled() {
				emit(tcp(server, client, 25, sport, sflowtest.TCPAck))
			}
		}
		return hit
	}
	// connections draws how many connections start in one second.
	connections := func(perSec float64) int { return poisson(perSec) }
	// normalTraffic samples one second of a subscriber population of n
	// hosts at pkts packets/s each.
	normalTraffic := func(n int, pkts float64, host func() netip.Addr) {
		for k := poisson(float64(n) * pkts / float64(p.rate)); k > 0; k-- {
			src := host()
			v6 := src.Is6()
			sport := uint16(32768 + rng.IntN(28000))
			switch x := rng.IntN(100); {
			case x < 62:
				emit(tcp(src, sameFamily(v6, web), sport, 443, sflowtest.TCPAck))
			case x < 72:
				emit(udp(src, sameFamily(v6, web), 443))
			case x < 80:
				emit(udp(src, map[bool]netip.Addr{false: resolver, true: resolver6}[v6], 53))
			case x < 88:
				emit(tcp(src, sameFamily(v6, providers), sport, []uint16{587, 465}[x&1], sflowtest.TCPAck))
			case x < 92:
				emit(tcp(src, map[bool]netip.Addr{false: smarthost, true: smarthost6}[v6], sport, 25, sflowtest.TCPAck))
			default: // replies
				emit(tcp(sameFamily(v6, web), src, 443, sport, sflowtest.TCPAck))
			}
		}
	}

	start := time.Date(2026, 6, 1, 20, 0, 0, 0, time.UTC)
	res.started = start.Add(time.Duration(p.zombieAt) * time.Second)
	res.allowed = make([]time.Time, p.zombies)
	type hit struct {
		at  time.Time
		dst netip.Addr
	}
	zombieHits := make([][]hit, p.zombies)
	window := DefaultWindow
	for sec := 0; sec < p.duration; sec++ {
		now := start.Add(time.Duration(sec) * time.Second)
		normalTraffic(p.normals, 20, func() netip.Addr { return subscriber(rng.IntN(p.normals)) })
		normalTraffic(p.cgnat*300, 20, func() netip.Addr { return cgnat[rng.IntN(len(cgnat))] })
		for _, i := range mtaIdx {
			mta := subscriber(i)
			for c := connections(p.mtaOut); c > 0; c-- {
				smtp(mta, outside(mta.Is6()))
			}
			for c := connections(p.mtaIn); c > 0; c-- {
				smtp(sameFamily(mta.Is6(), senders), mta)
			}
		}
		if sec >= p.zombieAt {
			for z, i := range zombieIdx {
				src := subscriber(i)
				for c := connections(p.zombieConns); c > 0; c-- {
					mx := outside(src.Is6())
					if smtp(src, mx) {
						zombieHits[z] = append(zombieHits[z], hit{now, mx})
					}
				}
				if res.allowed[z].IsZero() {
					seen := map[netip.Addr]bool{}
					for _, h := range zombieHits[z] {
						if now.Sub(h.at) < window*9/10 { // surely inside the engine's sliding window
							seen[h.dst] = true
						}
					}
					if len(seen) >= DefaultMinSamples {
						res.allowed[z] = now
					}
				}
			}
		}
		res.samples += len(batch)
		e.HandleFlowsAt(batch, now.Add(500*time.Millisecond))
		batch = batch[:0]
	}
	res.stats = e.Stats()
	return res
}

// score sorts the firings of blackhole kind after warmEnd into caught
// zombies and false positives, and reports the detection delays.
func (r populationResult) score(t *testing.T, warmEnd time.Time) (caught map[int]time.Time, falsePos []Firing) {
	caught = map[int]time.Time{}
	for _, f := range r.firings {
		if f.Kind == ServerLearned || f.At.Before(warmEnd) {
			continue
		}
		z, ok := r.zombieAddr[f.Source]
		if !ok {
			falsePos = append(falsePos, f)
			continue
		}
		if f.Kind == Fired {
			if _, dup := caught[z]; !dup {
				caught[z] = f.At
			}
		}
	}
	return caught, falsePos
}

func (r populationResult) report(t *testing.T, name string, p population, warmEnd time.Time) (precision, recall float64, delays []time.Duration) {
	caught, fps := r.score(t, warmEnd)
	var servers int
	for _, f := range r.firings {
		if f.Kind == ServerLearned && f.NewServer {
			servers++
		}
	}
	for _, at := range caught {
		delays = append(delays, at.Sub(r.started))
	}
	slices.Sort(delays)
	tp, fp := float64(len(caught)), float64(len(fps))
	precision, recall = 1, tp/float64(p.zombies)
	var mtaFlags, partials int
	for _, f := range fps {
		switch {
		case f.Kind == Partial:
			partials++
		case r.mtaAddr[f.Source]:
			mtaFlags++
		}
	}
	tp, fp = float64(len(caught)), float64(len(fps)-partials)
	if tp+fp > 0 {
		precision = tp / (tp + fp)
	}
	line := fmt.Sprintf("%s: 1:%d, zombies at %.0f conn/s: %d/%d caught, precision %.3f recall %.3f; %d other hosts blackholed (%d of them MTAs), %d with partial evidence; %d servers learned; %d samples, %d tracked",
		name, p.rate, p.zombieConns, len(caught), p.zombies, precision, recall, len(fps)-partials, mtaFlags, partials, servers, r.samples, r.stats.Tracked)
	if len(delays) > 0 {
		line += fmt.Sprintf("; time to detection min %s median %s max %s", delays[0], delays[len(delays)/2], delays[len(delays)-1])
	}
	t.Log(line)
	return precision, recall, delays
}

// TestPopulationRealSampling is the accuracy test of "Detection at real
// sampling rates": 1:2048, 100,000 subscribers, 20 self-hosted MTAs (3
// connections/s out to distinct MX hosts, 2 in), CGNAT addresses; rtbhd is
// up 20 minutes before 20 zombies start at 2 SMTP connections/s. With the
// default rule every zombie is caught within 15 minutes of its start and
// within a minute of the moment its samples first allow it, and no other
// host is flagged after the warm-up.
func TestPopulationRealSampling(t *testing.T) {
	p := population{rate: 2048, normals: 100_000, cgnat: 50, mtas: 20, mtaOut: 3, mtaIn: 2,
		zombies: 20, zombieConns: 2, zombieAt: 20 * 60, duration: 35 * 60, seed: 2026}
	if testing.Short() {
		p.normals = 20_000
	}
	r := p.run(t)
	warmEnd := r.started
	caught, fps := r.score(t, warmEnd)
	for _, f := range fps {
		t.Errorf("non-zombie %v flagged after the warm-up (mta %v): %+v", f.Source, r.mtaAddr[f.Source], f)
	}
	for z, allowed := range r.allowed {
		at, ok := caught[z]
		switch {
		case allowed.IsZero() || allowed.Sub(r.started) > 15*time.Minute:
			t.Errorf("zombie %d: its samples never allowed detection within 15 minutes (first allowed %v): change the seed", z, allowed)
		case !ok:
			t.Errorf("zombie %d never blackholed (samples allowed it %s after its start)", z, allowed.Sub(r.started))
		case at.Sub(r.started) > 15*time.Minute:
			t.Errorf("zombie %d blackholed %s after its start, want within 15 minutes", z, at.Sub(r.started))
		case at.Sub(allowed) > time.Minute:
			t.Errorf("zombie %d blackholed %s after its samples allowed it, want within a minute", z, at.Sub(allowed))
		}
	}
	for _, f := range r.firings {
		if _, zombie := r.zombieAddr[f.Source]; f.Kind == Fired && zombie && (f.Destinations < 20 || f.Packets < 1000 || f.SampledDestinations < 3) {
			t.Errorf("firing under the rule's estimated thresholds: %+v", f)
		}
	}
	learned := map[netip.Addr]bool{}
	for _, f := range r.firings {
		if f.Kind == ServerLearned {
			learned[f.Source] = true
			if !r.mtaAddr[f.Source] {
				t.Errorf("learned %v as a server; only the MTAs receive SMTP from outside", f.Source)
			}
		}
	}
	if len(learned) != p.mtas {
		t.Errorf("learned %d of %d MTAs as servers", len(learned), p.mtas)
	}
	precision, recall, _ := r.report(t, "default rule after a 20-minute warm-up", p, warmEnd)
	if precision != 1 || recall != 1 {
		t.Errorf("precision %.3f, recall %.3f; want 1 and 1", precision, recall)
	}
}

// TestPopulationVariants reports how the default rule does at other
// sampling rates and zombie rates, and what a cold start (no warm-up, no
// remembered servers) flags. It enforces only what must hold at every
// rate: nothing but zombies and MTAs is ever flagged.
func TestPopulationVariants(t *testing.T) {
	if testing.Short() || !*populationVariants {
		t.Skip("variants are reported in full runs")
	}
	base := population{rate: 2048, normals: 20_000, cgnat: 20, mtas: 20, mtaOut: 3, mtaIn: 2,
		zombies: 20, zombieConns: 2, zombieAt: 20 * 60, duration: 35 * 60, seed: 7}
	for _, v := range []struct {
		name string
		edit func(*population)
	}{
		{"1 conn/s at 1:2048", func(p *population) { p.zombieConns = 1 }},
		{"2 conn/s at 1:512", func(p *population) { p.rate = 512 }},
		{"2 conn/s at 1:8192", func(p *population) { p.rate = 8192 }},
		{"cold start at 1:2048", func(p *population) { p.zombieAt = 0; p.duration = 15 * 60 }},
		{"cold start at 1:512", func(p *population) { p.rate = 512; p.zombieAt = 0; p.duration = 15 * 60 }},
	} {
		t.Run(v.name, func(t *testing.T) {
			p := base
			v.edit(&p)
			r := p.run(t)
			_, fps := r.score(t, r.started)
			for _, f := range fps {
				if !r.mtaAddr[f.Source] {
					t.Errorf("%v flagged: neither a zombie nor an MTA: %+v", f.Source, f)
				}
			}
			r.report(t, v.name, p, r.started)
		})
	}
}

func TestEstimateDestinations(t *testing.T) {
	for _, tc := range []struct{ d, s, n, want uint64 }{
		{20, 20, 1, 20},          // unsampled: exact
		{5, 400, 1, 5},           // unsampled, many packets each: exact
		{3, 3, 2048, 3 * 2048},   // three single samples at 1:2048
		{15, 47, 256, 15},        // 15 destinations sampled ~3 times each
		{10, 12, 256, 2 + 8*256}, // at most 2 seen twice, 8 seen once
		{0, 0, 2048, 0},
	} {
		if got := EstimateDestinations(tc.d, tc.s, tc.n); got != tc.want {
			t.Errorf("EstimateDestinations(%d, %d, %d) = %d, want %d", tc.d, tc.s, tc.n, got, tc.want)
		}
	}
}
