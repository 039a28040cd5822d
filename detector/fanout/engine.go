package fanout

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtbh/rtbh/detector/domain"
)

// FiringKind says what a Firing reports.
type FiringKind uint8

const (
	// Fired: the rule's thresholds are crossed. Record the evidence and,
	// with ActionBlackhole, blackhole the source; with ActionFlowSpec,
	// filter its matching traffic.
	Fired FiringKind = iota
	// Partial: half of each of the rule's thresholds (ActionBlackhole
	// rules only): evidence that counts in report fusion as one reporter.
	Partial
	// ServerLearned: Source received connections on the rule's ports from
	// Destinations distinct outside clients within the window (a
	// self-hosted MTA for tcp/25); the rule skips it (Rule.SkipServers)
	// for Config.ServerMemory. NewServer is false for a refresh, sent at
	// most once per window while it keeps serving.
	ServerLearned
)

// Firing is one rule crossing its thresholds for one source. It is a plain
// value: nothing in it refers to the engine's mutable state (DstPorts is
// the rule's private, never modified copy of its ports; treat it as
// read-only).
type Firing struct {
	Kind      FiringKind
	Rule      string
	RuleIndex int // index in Config.Rules
	Action    string
	Protocol  uint8
	DstPorts  []uint16 // sorted, read-only
	TTL       time.Duration

	Source netip.Addr
	// Destinations is the estimate of the distinct destinations the
	// source really sent to in the window (see EstimateDestinations); for
	// ServerLearned, the distinct outside clients seen.
	Destinations        uint64
	SampledDestinations uint64 // distinct destinations in the samples
	Samples             uint64 // sampled packets (Packets / sampling rate)
	Exact               bool   // SampledDestinations is an exact count, not a sketch estimate
	NewServer           bool   // ServerLearned: first learned, not a refresh
	Packets             uint64 // estimated packets: sum of the sampling rates
	Connections         uint64 // estimated TCP connection attempts: SYN-without-ACK samples × rate
	Window              time.Duration
	FirstSeen           time.Time // first matching sample of this episode (since the source's window was last empty)
	LastSeen            time.Time // latest matching sample
	At                  time.Time // time of the batch that crossed the thresholds

	Examples     [numExamples]netip.Addr // the most recently seen distinct destinations
	ExampleCount int                     // valid entries in Examples
}

// ExampleAddrs returns the valid example destinations.
func (f *Firing) ExampleAddrs() []netip.Addr { return f.Examples[:f.ExampleCount:f.ExampleCount] }

// Stats is a snapshot of the engine's state.
type Stats struct {
	Tracked    int // tracked (source, rule) pairs, server-learning state included
	Overflow   int // of which with an overflow record (more than 3 destinations)
	Suppressed int // (source, rule) suppressions, including expired ones not yet swept
	Servers    int // learned (server, rule) pairs, including expired ones not yet swept
}

// Engine is the fan-out detector. It reads domain.Flows, whichever input
// decoded them: HandleFlows is the batch method of the inputs' sinks
// (sflow.Sink).
type Engine struct {
	mu   sync.Mutex
	c    *compiled
	fire func(Firing)
	seed uint64

	pool    pool
	index   table
	supp    map[key]int64 // suppressed until (unix ns)
	psupp   map[key]int64 // partial evidence suppressed until (unix ns)
	servers map[key]int64 // learned servers: exempt until (unix ns)

	epoch        int64 // unix ns of sub-window 0
	epochSet     bool
	sweptBucket  uint32
	evictedBatch uint64
	lastTracked  int
	items        []item // scratch: the current batch's work
	sink         uint64 // keeps the prefetching loads alive

	mTracked   prometheus.Gauge
	mFirings   *prometheus.CounterVec
	mEvictions prometheus.Counter
	ruleFired  []prometheus.Counter // by rule index
}

// New returns an engine for cfg. fire is called synchronously, with the
// engine's lock held, for every firing: it must be cheap and must not call
// the Engine (hand the Firing to a buffered channel, with a non-blocking
// send or one that cannot block the sFlow readers for long). The metrics
// are registered with reg when it is not nil.
func New(cfg Config, fire func(Firing), reg prometheus.Registerer) (*Engine, error) {
	if fire == nil {
		return nil, errors.New("fanout: nil fire function")
	}
	c, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("detector config: %w", err)
	}
	e := &Engine{
		c:       c,
		fire:    fire,
		seed:    rand.Uint64(),
		supp:    make(map[key]int64),
		psupp:   make(map[key]int64),
		servers: make(map[key]int64),
		mTracked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtbh_detector_tracked_sources",
			Help: "Tracked (source address, fan-out rule) pairs.",
		}),
		mFirings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtbh_detector_firings_total",
			Help: "Fan-out rule firings (a source crossing a rule's thresholds).",
		}, []string{"rule"}),
		mEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rtbh_detector_evictions_total",
			Help: "Tracked sources evicted (least recently seen first) to stay within max_tracked_sources.",
		}),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{e.mTracked, e.mFirings, e.mEvictions} {
			if err := reg.Register(col); err != nil {
				return nil, fmt.Errorf("register detector metrics: %w", err)
			}
		}
	}
	e.index.init(0)
	e.bindRules()
	return e, nil
}

func (e *Engine) bindRules() {
	e.ruleFired = e.ruleFired[:0]
	for i := range e.c.rules {
		e.ruleFired = append(e.ruleFired, e.mFirings.WithLabelValues(e.c.rules[i].Name))
	}
}

// HandleFlows processes a batch at the configured clock's time. The
// caller keeps the slice: the engine copies what it keeps.
func (e *Engine) HandleFlows(flows []domain.Flow) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.handle(flows, e.c.now().UnixNano())
}

// HandleFlowsAt processes a batch as if received at now. Times may go
// backwards a little between batches (several sockets); such samples count
// in the newest sub-window of the sources they touch.
func (e *Engine) HandleFlowsAt(flows []domain.Flow, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.handle(flows, now.UnixNano())
}

func (e *Engine) handle(samples []domain.Flow, now int64) {
	b := e.bucketOf(now)
	e.expire(now)
	if b != e.sweptBucket {
		e.sweptBucket = b
		for _, m := range []map[key]int64{e.supp, e.psupp, e.servers} {
			for k, until := range m {
				if until <= now {
					delete(m, k)
				}
			}
		}
	}
	// Three passes over the batch so that the cache misses of many
	// samples overlap instead of following one another: select the
	// matching (sample, rule) pairs and touch their index slots, touch the
	// entries those slots point to, then update. The first two passes are
	// only hints; the third alone decides.
	items := e.selectItems(samples)
	e.prefetchEntries(items)
	for _, it := range items {
		e.update(&samples[it.sample], it, now, b)
	}
	e.items = items[:0]
	e.flushMetrics()
}

func (e *Engine) bucketOf(now int64) uint32 {
	g := e.c.granule
	if !e.epochSet {
		e.epochSet = true
		e.epoch = now - now%g
	}
	d := now - e.epoch
	if d < 0 {
		return 0
	}
	return uint32(d / g)
}

// item is one (sample, rule) pair that has to update state.
type item struct {
	sample int32
	rule   uint8
	hash   uint32
}

// selectItems filters the batch: protocol and port of some rule, source
// in the subscriber space and not in never_blackhole nor in the rule's
// exemptions; or, for rules that learn servers, a destination in the
// subscriber space reached from outside it (a client connecting to a
// subscriber's port: state keyed by the destination, serverBit set).
func (e *Engine) selectItems(samples []domain.Flow) []item {
	items := e.items[:0]
	for i := range samples {
		s := &samples[i]
		var pi int
		switch s.Protocol {
		case ProtocolTCP:
			pi = 0
		case ProtocolUDP:
			pi = 1
		default:
			continue
		}
		port := s.DstPort
		if s.Fragment || e.c.ports[pi][port>>6]&(1<<(port&63)) == 0 || !s.Dst.IsValid() {
			continue
		}
		src := s.Src.Unmap()
		if !e.c.subs.Contains(src) {
			if e.c.servers {
				items = e.selectInbound(items, i, s, port)
			}
			continue
		}
		if e.c.never.Contains(src) {
			continue
		}
		a := src.As16()
		for ri := range e.c.rules {
			r := &e.c.rules[ri]
			if r.proto != s.Protocol || !r.hasPort(port) || r.checkEx && r.exempt.Contains(src) {
				continue
			}
			items = append(items, item{sample: int32(i), rule: uint8(ri), hash: keyHash(&a, uint8(ri), e.seed)})
		}
	}
	// A tight loop keeps many slot loads in flight at once.
	var sink uint64
	slots, mask := e.index.slots, e.index.mask
	for _, it := range items {
		sink += slots[it.hash&mask]
	}
	e.sink += sink
	return items
}

// selectInbound adds the server-learning items of a sample from outside
// the subscriber space to a subscriber's port.
func (e *Engine) selectInbound(items []item, i int, s *domain.Flow, port uint16) []item {
	dst := s.Dst.Unmap()
	if !e.c.subs.Contains(dst) {
		return items
	}
	a := dst.As16()
	for ri := range e.c.rules {
		r := &e.c.rules[ri]
		if !r.SkipServers || r.proto != s.Protocol || !r.hasPort(port) {
			continue
		}
		rb := uint8(ri) | serverBit
		items = append(items, item{sample: int32(i), rule: rb, hash: keyHash(&a, rb, e.seed)})
	}
	return items
}

// serverBit in a state key's rule byte marks server-learning state: the
// key's address is a subscriber receiving connections, its destinations
// are the distinct outside clients.
const (
	serverBit = 0x80
	ruleMask  = 0x7f
)

// prefetchEntries touches the entry each item's index slot points to.
func (e *Engine) prefetchEntries(items []item) {
	slots, mask := e.index.slots, e.index.mask
	var sink uint32
	for _, it := range items {
		pos := it.hash & mask
		for probe := 0; probe < 4; probe++ {
			s := slots[pos]
			if s == 0 {
				break
			}
			if uint32(s>>32) == it.hash {
				en := e.pool.ent(uint32(s))
				sink += en.head + uint32(en.dst[0][0]) + en.conns[0] // one load per cache line
				break
			}
			pos = (pos + 1) & mask
		}
	}
	e.sink += uint64(sink)
}

func satAdd(a, b uint32) uint32 {
	if s := a + b; s >= a {
		return s
	}
	return ^uint32(0)
}

func (e *Engine) update(s *domain.Flow, it item, now int64, b uint32) {
	p := &e.pool
	ri := it.rule & ruleMask
	r := &e.c.rules[ri]
	inbound := it.rule&serverBit != 0
	var k key
	src := (*[16]byte)(k[:16])
	var d [16]byte
	if inbound {
		*src, d = s.Dst.Unmap().As16(), s.Src.Unmap().As16()
	} else {
		*src, d = s.Src.Unmap().As16(), s.Dst.Unmap().As16()
	}
	k[16] = it.rule
	rate := max(s.SamplingRate, 1)
	h := it.hash
	var en *entry
	if i := e.index.find(p, h, src, it.rule); i != 0 {
		en = p.ent(i)
		if int32(b-en.head) > 0 {
			// The LRU list is kept at sub-window resolution: an entry
			// moves to the front on its first sample of a sub-window,
			// which keeps the list sorted by newest sub-window.
			p.touch(i, en)
			e.advance(en, now, b)
		}
	} else {
		en = e.newEntry(&k, h, now, b)
	}
	if now > en.last {
		en.last = now
	}
	if inbound {
		if n := e.addDst(en, &d); n >= r.minClients {
			e.learn(int(ri), &k, en, n, now)
		}
		return
	}
	en.rate = rate
	slot := en.head % nBuckets
	en.pkts[slot] = satAdd(en.pkts[slot], rate)
	if s.Protocol == ProtocolTCP && s.TCPFlags&0x12 == 0x02 { // SYN without ACK
		en.conns[slot] = satAdd(en.conns[slot], rate)
	}
	// n x rate bounds the estimate from above: most samples stop here.
	if n := e.addDst(en, &d); n >= r.halfSamples && n*uint64(rate) >= r.halfDest {
		e.check(int(ri), r, &k, en, n, now)
	}
}

// EstimateDestinations estimates how many distinct destinations a source
// really sent to from what the samples show: sampled distinct
// destinations d among s sampled packets at sampling rate n. At most s-d
// of the d destinations were sampled more than once; those are counted
// once each (a destination sampled repeatedly is very likely the only one
// of its kind). Every other one was sampled once, and stands for the n
// destinations like it that an agent sampling 1 in n would have shown one
// of (Horvitz-Thompson with inclusion probability 1/n):
//
//	r = min(d, s-d);  estimate = r + (d-r) x n
//
// At n = 1 the estimate is d, exact. For flows of k packets each it
// estimates the destinations times k, an upper bound: the confidence comes
// from requiring at least Rule.MinSamples distinct sampled destinations,
// which a source that really reached fewer destinations than that can
// never show.
func EstimateDestinations(d, s, n uint64) uint64 {
	s = max(s, d)
	r := min(d, s-d)
	return r + (d-r)*max(n, 1)
}

func (e *Engine) newEntry(k *key, h uint32, now int64, b uint32) *entry {
	p := &e.pool
	if p.count >= e.c.maxTracked {
		e.remove(p.lruTail)
		e.evictedBatch++
	}
	i := p.alloc()
	en := p.ent(i)
	copy(en.src[:], k[:16])
	en.rule = k[16]
	en.head = b
	en.first = now
	en.last = now
	p.pushFront(i, en)
	p.count++
	e.index.insert(h, i)
	return en
}

// remove forgets a linked entry.
func (e *Engine) remove(i uint32) {
	p := &e.pool
	en := p.ent(i)
	e.index.remove(keyHash(&en.src, en.rule, e.seed), i)
	p.unlink(i, en)
	p.release(i)
	p.count--
}

// expire drops the sources idle for a whole window, oldest first.
func (e *Engine) expire(now int64) {
	p := &e.pool
	for p.lruTail != 0 {
		if now-p.ent(p.lruTail).last < e.c.window {
			return
		}
		e.remove(p.lruTail)
	}
}

// advance moves an entry's ring to sub-window b, clearing what aged out.
func (e *Engine) advance(en *entry, now int64, b uint32) {
	if int32(b-en.head) <= 0 {
		return
	}
	if b-en.head >= nBuckets || now-en.last >= e.c.window {
		en.pkts = [nBuckets]uint32{}
		en.conns = [nBuckets]uint32{}
		en.ndst = 0
		if en.big != 0 {
			e.pool.releaseBig(en.big)
			en.big = 0
		}
		en.head = b
		en.first = now
		return
	}
	for x := en.head + 1; x != b+1; x++ {
		s := x % nBuckets
		en.pkts[s] = 0
		en.conns[s] = 0
	}
	if en.big != 0 {
		bs := e.pool.big(en.big)
		bs.advance(en.head, b)
		if bs.count() == 0 {
			e.pool.releaseBig(en.big)
			en.big = 0
		}
	} else {
		b8 := uint8(b)
		for j := 0; j < int(en.ndst); {
			if b8-en.dage[j] >= nBuckets {
				last := int(en.ndst) - 1
				en.dst[j], en.dage[j] = en.dst[last], en.dage[last]
				en.ndst--
				continue
			}
			j++
		}
	}
	en.head = b
}

// addDst records destination d in the entry's newest sub-window and
// returns the distinct destinations in the window.
func (e *Engine) addDst(en *entry, d *[16]byte) uint64 {
	if en.big == 0 {
		h8 := uint8(en.head)
		n := int(en.ndst)
		for j := 0; j < n; j++ {
			if en.dst[j] == *d {
				en.dage[j] = h8
				return uint64(n)
			}
		}
		if n < inlineDsts {
			en.dst[n] = *d
			en.dage[n] = h8
			en.ndst++
			return uint64(n + 1)
		}
		e.promote(en)
	}
	bs := e.pool.big(en.big)
	bs.add(hashAddr(d, e.seed), en.head)
	bs.addExample(d)
	return bs.count()
}

// promote moves the inline destinations to a new overflow record.
func (e *Engine) promote(en *entry) {
	en.big = e.pool.allocBig()
	bs := e.pool.big(en.big)
	for j := 0; j < int(en.ndst); j++ {
		bs.w[j] = hashAddr(&en.dst[j], e.seed)
		bs.age[j] = en.dage[j]
		bs.addExample(&en.dst[j])
	}
	bs.n = en.ndst
	en.ndst = 0
}

func (e *Engine) check(ri int, r *rule, k *key, en *entry, n uint64, now int64) {
	var pk uint64
	for _, v := range en.pkts {
		pk += uint64(v)
	}
	rate := uint64(max(en.rate, 1))
	samples := max(pk/rate, n)
	est := EstimateDestinations(n, samples, rate)
	kind := Fired
	switch {
	case n >= r.minSamples && est >= r.minDest && pk >= r.MinPackets:
	case n >= r.halfSamples && est >= r.halfDest && pk >= r.halfPackets && r.Action == ActionBlackhole:
		kind = Partial
	default:
		return
	}
	// Suppressions first: they end most calls (a source past the
	// thresholds checks again on every sample).
	if kind == Partial {
		if until, ok := e.psupp[*k]; ok && until > now {
			return
		}
	}
	if until, ok := e.supp[*k]; ok && until > now {
		return
	}
	if r.SkipServers && e.serving(ri, k, now) {
		return
	}
	if kind == Partial {
		e.psupp[*k] = now + e.c.window
	} else {
		e.supp[*k] = now + e.c.window
	}
	f := Firing{
		Kind:                kind,
		Rule:                r.Name,
		RuleIndex:           ri,
		Action:              r.Action,
		Protocol:            r.proto,
		DstPorts:            r.DstPorts,
		TTL:                 r.TTL,
		Source:              netip.AddrFrom16(en.src).Unmap(),
		Destinations:        est,
		SampledDestinations: n,
		Samples:             samples,
		Exact:               true,
		Packets:             pk,
		Window:              time.Duration(e.c.window),
		FirstSeen:           time.Unix(0, en.first),
		LastSeen:            time.Unix(0, en.last),
		At:                  time.Unix(0, now),
	}
	for _, v := range en.conns {
		f.Connections += uint64(v)
	}
	e.examples(&f, en)
	if kind == Fired {
		r.firedBatch++
	}
	e.fire(f)
}

// examples fills f's example destinations (newest first) and whether its
// sampled count is exact.
func (e *Engine) examples(f *Firing, en *entry) {
	if en.big != 0 {
		bs := e.pool.big(en.big)
		f.Exact = !bs.sketch
		for j := 0; j < int(bs.nex); j++ {
			x := (int(bs.exNext) - 1 - j + 2*numExamples) % numExamples
			f.Examples[j] = netip.AddrFrom16(bs.ex[x]).Unmap()
		}
		f.ExampleCount = int(bs.nex)
		return
	}
	for j := 0; j < int(en.ndst); j++ {
		f.Examples[j] = netip.AddrFrom16(en.dst[j]).Unmap()
	}
	f.ExampleCount = int(en.ndst)
}

// serving reports whether the source of the outbound key k is a server for
// rule ri: learned (within server memory), or being learned — it received
// a connection on the rule's ports from outside within the window, so
// firing now could blackhole a server whose clients have not all been
// sampled yet. Zombies receive no connections on the ports they spray.
func (e *Engine) serving(ri int, k *key, now int64) bool {
	if until, ok := e.servers[*k]; ok && until > now {
		return true
	}
	rb := uint8(ri) | serverBit
	src := (*[16]byte)(k[:16])
	if i := e.index.find(&e.pool, keyHash(src, rb, e.seed), src, rb); i != 0 {
		return now-e.pool.ent(i).last < e.c.window
	}
	return false
}

// learn records that the subscriber of the server-learning key k
// received connections from n distinct outside clients: a server for rule
// ri. It fires ServerLearned when the server is new, and as a refresh at
// most once per window while it keeps serving.
func (e *Engine) learn(ri int, k *key, en *entry, n uint64, now int64) {
	sk := *k
	sk[16] = uint8(ri)
	prev, known := e.servers[sk]
	isNew := !known || prev <= now
	if !isNew && now+e.c.memory-prev < e.c.window {
		return
	}
	if isNew && len(e.servers) >= e.c.maxTracked {
		return // bounded like the tracked sources
	}
	e.servers[sk] = now + e.c.memory
	r := &e.c.rules[ri]
	f := Firing{
		Kind:                ServerLearned,
		Rule:                r.Name,
		RuleIndex:           ri,
		Action:              r.Action,
		Protocol:            r.proto,
		DstPorts:            r.DstPorts,
		Source:              netip.AddrFrom16(en.src).Unmap(),
		Destinations:        n,
		SampledDestinations: n,
		Exact:               true,
		NewServer:           isNew,
		Window:              time.Duration(e.c.window),
		FirstSeen:           time.Unix(0, en.first),
		LastSeen:            time.Unix(0, en.last),
		At:                  time.Unix(0, now),
	}
	e.examples(&f, en)
	e.fire(f)
}

// LoadServers remembers servers learned earlier (kept in the store), each
// until its LastSeen plus the server memory. Servers of rules that are not
// configured are ignored.
func (e *Engine) LoadServers(servers []domain.Server) {
	e.mu.Lock()
	defer e.mu.Unlock()
	byName := make(map[string]int, len(e.c.rules))
	for ri := range e.c.rules {
		byName[e.c.rules[ri].Name] = ri
	}
	for _, s := range servers {
		ri, ok := byName[s.Rule]
		if !ok || !s.Address.IsValid() {
			continue
		}
		var k key
		a := s.Address.Unmap().As16()
		copy(k[:16], a[:])
		k[16] = uint8(ri)
		e.servers[k] = max(e.servers[k], s.LastSeen.UnixNano()+e.c.memory)
	}
}

func (e *Engine) flushMetrics() {
	if n := e.pool.count; n != e.lastTracked {
		e.lastTracked = n
		e.mTracked.Set(float64(n))
	}
	if e.evictedBatch != 0 {
		e.mEvictions.Add(float64(e.evictedBatch))
		e.evictedBatch = 0
	}
	for i := range e.c.rules {
		if r := &e.c.rules[i]; r.firedBatch != 0 {
			e.ruleFired[i].Add(float64(r.firedBatch))
			r.firedBatch = 0
		}
	}
}

// Suppress keeps src from firing rule (every rule when rule is "") until
// the given time, e.g. for as long as the blackhole the lead decided on.
// It replaces any earlier suppression of the pair; a zero until lifts it.
// It reports whether rule names a configured rule (or is ""). After every
// firing the engine itself suppresses the pair for one window.
func (e *Engine) Suppress(src netip.Addr, rule string, until time.Time) bool {
	src = src.Unmap()
	if !src.IsValid() {
		return false
	}
	var k key
	a := src.As16()
	copy(k[:16], a[:])
	e.mu.Lock()
	defer e.mu.Unlock()
	found := rule == ""
	for ri := range e.c.rules {
		if rule != "" && e.c.rules[ri].Name != rule {
			continue
		}
		found = true
		k[16] = uint8(ri)
		if until.IsZero() {
			delete(e.supp, k)
		} else {
			e.supp[k] = until.UnixNano()
		}
	}
	return found
}

// Stats returns a snapshot of the engine's state.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{Tracked: e.pool.count, Overflow: e.pool.nbig, Suppressed: len(e.supp), Servers: len(e.servers)}
}

// CheckConfig reports whether New or Reconfigure would refuse cfg,
// changing nothing (a reload checks every component before applying any).
func CheckConfig(cfg Config) error {
	if _, err := compile(cfg); err != nil {
		return fmt.Errorf("detector config: %w", err)
	}
	return nil
}

// Reconfigure applies a new configuration (SIGHUP). State is kept for the
// rules whose name, protocol and ports are unchanged (their thresholds,
// exemptions, action and TTL may change), minus the sources the new
// configuration no longer tracks; a new window drops all state.
// Suppressions follow their rule by name. On error nothing changes.
func (e *Engine) Reconfigure(cfg Config) error {
	nc, err := compile(cfg)
	if err != nil {
		return fmt.Errorf("detector config: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.c
	p := &e.pool

	byName := make(map[string]int, len(nc.rules))
	for j := range nc.rules {
		byName[nc.rules[j].Name] = j
	}
	keep := make([]int, len(old.rules)) // old rule index -> new, -1 = drop state
	for i := range old.rules {
		keep[i] = -1
		if j, ok := byName[old.rules[i].Name]; ok && nc.granule == old.granule && old.rules[i].sameTraffic(&nc.rules[j]) {
			keep[i] = j
		}
	}

	// Remap or drop the tracked sources, then rebuild the index.
	for i := p.lruHead; i != 0; {
		en := p.ent(i)
		next := en.next
		src := netip.AddrFrom16(en.src).Unmap()
		inbound := en.rule&serverBit != 0
		j := keep[en.rule&ruleMask]
		switch {
		case j < 0 || !nc.subs.Contains(src):
			e.remove(i)
		case inbound && !nc.rules[j].SkipServers:
			e.remove(i)
		case !inbound && (nc.never.Contains(src) || nc.rules[j].exempt.Contains(src)):
			e.remove(i)
		default:
			en.rule = uint8(j) | en.rule&serverBit
		}
		i = next
	}
	e.index.init(p.count)
	for i := p.lruHead; i != 0; i = p.ent(i).next {
		en := p.ent(i)
		e.index.insert(keyHash(&en.src, en.rule, e.seed), i)
	}
	for p.count > nc.maxTracked {
		e.remove(p.lruTail)
		e.evictedBatch++
	}
	if nc.granule != old.granule {
		e.epochSet = false
	}

	remap := func(m map[key]int64) map[key]int64 {
		out := make(map[key]int64, len(m))
		for k, until := range m {
			if j, ok := byName[old.rules[k[16]].Name]; ok {
				k[16] = uint8(j)
				out[k] = until
			}
		}
		return out
	}
	e.supp, e.psupp, e.servers = remap(e.supp), remap(e.psupp), remap(e.servers)

	e.c = nc
	e.bindRules()
	e.flushMetrics()
	return nil
}
