package main

// TestSFlowLoad measures the whole-program sFlow target of PERFORMANCE.md:
// rtbhd's CPU time (user+system, all threads) per flow sample sent, with
// 20,000 datagrams/s x 7 samples on loopback, and the same for goflow2
// v2.2.6 on the same datagrams when its binary can be built here.
//
//	go test -count=1 -v -run TestSFlowLoad ./cmd/rtbhd -rtbh.sflowload=10s
//
// It is a measurement: it asserts nothing about timing, only that loss stays
// under 1% (a sanity check that the figures mean something).

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

var (
	sflowLoad        = flag.Duration("rtbh.sflowload", 0, "run TestSFlowLoad for this long per program (e.g. 10s)")
	sflowLoadRate    = flag.Int("rtbh.sflowload.rate", 20000, "TestSFlowLoad: sFlow datagrams per second (7 samples each)")
	sflowLoadGoflow2 = flag.Bool("rtbh.sflowload.goflow2", true, "TestSFlowLoad: also measure goflow2 v2.2.6 if it can be built")
	sflowLoadProfile = flag.String("rtbh.sflowload.cpuprofile", "", "TestSFlowLoad: write a 5 s CPU profile of rtbhd, taken mid-run, to this file")
)

const (
	loadSamplesPerDatagram = 7
	loadMaxHeader          = 112 // bytes of each sampled header
	loadSources            = 50000
	loadAgents             = 4    // one UDP socket and sequence space per agent
	loadDatagramsPerAgent  = 5000 // pool: 4 x 5,000 datagrams = 140,000 samples
	loadSamplingRate       = 1000
)

// loadAgent is one simulated sFlow agent: its socket and a pool of
// pre-built datagrams that is cycled through. Before each send the
// datagram's sequence number, uptime, flow sample sequence numbers and
// sample pools are rewritten in place, so the stream stays consistent (no
// apparent loss or restarts) however many times the pool is reused.
type loadAgent struct {
	conn    *net.UDPConn
	dgs     [][]byte
	samples [][]int // offsets of each datagram's flow samples
	next    int
	seq     uint32 // datagram sequence
	fseq    uint32 // flow sample sequence (one data source per agent)
	pool    uint32
}

// sFlow v5 with an IPv4 agent: version, address type, address, sub-agent,
// sequence, uptime, sample count.
const (
	offSeq     = 16
	offUptime  = 20
	offSamples = 28
)

func (a *loadAgent) send(uptimeMS uint32) error {
	i := a.next
	a.next = (i + 1) % len(a.dgs)
	dg := a.dgs[i]
	a.seq++
	binary.BigEndian.PutUint32(dg[offSeq:], a.seq)
	binary.BigEndian.PutUint32(dg[offUptime:], uptimeMS)
	for _, o := range a.samples[i] {
		a.fseq++
		a.pool += loadSamplingRate
		binary.BigEndian.PutUint32(dg[o+8:], a.fseq)
		binary.BigEndian.PutUint32(dg[o+20:], a.pool)
	}
	_, err := a.conn.Write(dg)
	return err
}

// sampleOffsets returns the offset of each sample (its format word) in an
// sFlow v5 datagram with an IPv4 agent.
func sampleOffsets(t *testing.T, dg []byte) []int {
	t.Helper()
	if len(dg) < offSamples || binary.BigEndian.Uint32(dg[4:]) != 1 {
		t.Fatalf("generated datagram is not sFlow v5 with an IPv4 agent")
	}
	n := int(binary.BigEndian.Uint32(dg[24:]))
	offs := make([]int, 0, n)
	o := offSamples
	for range n {
		if o+8 > len(dg) {
			t.Fatalf("generated datagram truncated")
		}
		if f := binary.BigEndian.Uint32(dg[o:]); f != sflowtest.FormatFlowSample {
			t.Fatalf("generated sample format %d, want a flow sample", f)
		}
		offs = append(offs, o)
		o += 8 + int(binary.BigEndian.Uint32(dg[o+4:]))
	}
	if o != len(dg) {
		t.Fatalf("generated datagram: samples end at %d of %d bytes", o, len(dg))
	}
	return offs
}

// loadTraffic describes the generated mix: 50,000 sources (3/4 IPv4 in
// 10.0.0.0/16, 1/4 IPv6 in 2001:db8:1::/48), of which those below 32,768
// are subscribers; web (tcp/443) and DNS (udp/53) mostly, some tcp/25 to the
// ISP's two MTAs, and 30 zombies (20 IPv4 in 198.51.100.0/24, 10 IPv6)
// sending tcp/25 to hundreds of mail servers, which the smtp-fanout rule
// should catch. Frames are Ethernet, a quarter of them with an 802.1Q tag
// (some QinQ).
const loadSubscribers = `"10.0.0.0/17", "2001:db8:1::/49", "198.51.100.192/26"`

func loadPacket(r *rand.Rand) sflowtest.Packet {
	i := r.IntN(loadSources)
	var src netip.Addr
	v6 := i%4 == 3
	if v6 {
		src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, byte(i >> 8), byte(i), 15: 1})
	} else {
		src = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	dst := func(n int) netip.Addr {
		if v6 {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 0, byte(n >> 8), byte(n), 15: 1})
		}
		return netip.AddrFrom4([4]byte{203, 0, byte(113 + n>>8), byte(n)})
	}
	p := sflowtest.Packet{Src: src, SrcPort: uint16(32768 + r.IntN(28000))}
	switch x := r.IntN(100); {
	case x < 55: // web
		p.Protocol, p.DstPort, p.Dst = sflowtest.ProtoTCP, 443, dst(r.IntN(400))
		p.TCPFlags, p.PayloadLen = sflowtest.TCPAck, []int{0, 40, 600, 1400}[r.IntN(4)]
	case x < 85: // DNS
		p.Protocol, p.DstPort, p.Dst, p.PayloadLen = sflowtest.ProtoUDP, 53, dst(r.IntN(2)), 40+r.IntN(60)
	case x < 90: // other TCP: mail submission
		p.Protocol, p.DstPort, p.Dst = sflowtest.ProtoTCP, 587, dst(500)
		p.TCPFlags, p.PayloadLen = sflowtest.TCPAck, 200
	case x < 95: // tcp/25 to the ISP's MTAs
		p.Protocol, p.DstPort, p.Dst = sflowtest.ProtoTCP, 25, dst(600+r.IntN(2))
		p.TCPFlags, p.PayloadLen = sflowtest.TCPAck, 300
	default: // a zombie: tcp/25 SYNs to many mail servers
		z := r.IntN(30)
		if z < 20 {
			p.Src = netip.AddrFrom4([4]byte{198, 51, 100, byte(200 + z)})
			p.Dst = netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(250))})
		} else {
			p.Src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, byte(z), 15: 1})
			p.Dst = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xee, 0, 0, byte(r.IntN(250)), 15: 1})
		}
		p.Protocol, p.DstPort, p.TCPFlags = sflowtest.ProtoTCP, 25, sflowtest.TCPSyn
	}
	switch x := r.IntN(100); {
	case x < 20:
		p.VLANs = []uint16{uint16(100 + r.IntN(50))}
	case x < 25:
		p.VLANs, p.VLANTPIDs = []uint16{uint16(200 + r.IntN(10)), uint16(100 + r.IntN(50))},
			[]uint16{sflowtest.TPID8021AD, sflowtest.TPID8021Q}
	}
	return p
}

// buildLoadAgents pre-generates every agent's datagram pool (not yet
// connected).
func buildLoadAgents(t *testing.T) ([]*loadAgent, int) {
	r := rand.New(rand.NewPCG(1, 2))
	agents := make([]*loadAgent, loadAgents)
	bytes := 0
	pkts := make([]sflowtest.Packet, loadSamplesPerDatagram)
	for a := range agents {
		s := sflowtest.NewStream(netip.AddrFrom4([4]byte{192, 0, 2, byte(11 + a)}), loadSamplingRate)
		s.MaxHeader = loadMaxHeader
		s.InputIf, s.OutputIf = 7, 8
		ag := &loadAgent{dgs: make([][]byte, loadDatagramsPerAgent), samples: make([][]int, loadDatagramsPerAgent)}
		for i := range ag.dgs {
			for j := range pkts {
				pkts[j] = loadPacket(r)
			}
			dg := s.Datagram(pkts...)
			ag.dgs[i] = append([]byte(nil), dg...)
			ag.samples[i] = sampleOffsets(t, ag.dgs[i])
			if len(ag.samples[i]) != loadSamplesPerDatagram {
				t.Fatalf("datagram holds %d samples, want %d", len(ag.samples[i]), loadSamplesPerDatagram)
			}
			if got := binary.BigEndian.Uint32(ag.dgs[i][offSeq:]); got != s.Sequence() {
				t.Fatalf("sequence at offset %d = %d, want %d", offSeq, got, s.Sequence())
			}
			bytes += len(dg)
		}
		agents[a] = ag
	}
	return agents, bytes
}

// cpuTime returns the CPU time pid has used so far: the sum of the first
// field of /proc/PID/task/*/schedstat (ns on CPU, every thread alive now)
// and utime+stime of /proc/PID/stat (whole process including exited
// threads, at 100 Hz), and the number of times its threads were switched
// onto a CPU (third schedstat field: wake-ups, roughly).
func cpuTime(t *testing.T, pid int) (sched time.Duration, stat time.Duration, slices int64) {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no schedstat for pid %d: %v", pid, err)
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // thread gone
		}
		f := strings.Fields(string(b))
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		n, _ := strconv.ParseInt(f[2], 10, 64)
		sched += time.Duration(ns)
		slices += n
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // f[0] is field 3 (state)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // getconf CLK_TCK on Linux
	stat = time.Duration(utime+stime) * time.Second / clkTck
	return sched, stat, slices
}

// loadTarget is a collector under test.
type loadTarget struct {
	name    string
	pid     int
	addr    string         // UDP host:port
	samples func() float64 // flow samples it has decoded so far
	during  func()         // called in a goroutine once a quarter of the load is sent
}

type loadResult struct {
	datagrams   int
	elapsed     time.Duration
	samplesSent int
	received    float64
	sched, stat time.Duration
	slices      int64         // times the collector's threads got a CPU
	senderCPU   time.Duration // this test process (sender and metric polls)
}

func (r loadResult) rate() float64 { return float64(r.datagrams) / r.elapsed.Seconds() }
func (r loadResult) nsPerSample() float64 {
	return float64(r.sched.Nanoseconds()) / float64(r.samplesSent)
}
func (r loadResult) loss() float64 { return 1 - r.received/float64(r.samplesSent) }

// runLoad sends the datagram pools to target at rate datagrams/s for d, paced
// against a schedule checked every millisecond, then waits for the
// collector to drain and returns its CPU time over the run.
func runLoad(t *testing.T, target loadTarget, agents []*loadAgent, rate int, d time.Duration) loadResult {
	t.Helper()
	for _, a := range agents {
		c, err := net.Dial("udp", target.addr)
		if err != nil {
			t.Fatal(err)
		}
		a.conn = c.(*net.UDPConn)
		a.conn.SetWriteBuffer(4 << 20)
	}
	defer func() {
		for _, a := range agents {
			a.conn.Close()
		}
	}()
	uptimeStart := time.Now()
	uptime := func() uint32 { return uint32(time.Since(uptimeStart).Milliseconds()) + 1000 }

	// Warm-up: a few datagrams, so the collector is surely listening and
	// every agent is known, then take the baselines.
	for range 5 {
		for _, a := range agents {
			if err := a.send(uptime()); err != nil {
				t.Fatal(err)
			}
		}
	}
	warm := float64(5 * len(agents) * loadSamplesPerDatagram)
	if !testkit.Poll(10*time.Second, func() bool { return target.samples() >= warm }) {
		t.Fatalf("%s: warm-up samples not decoded within 10 s (have %.0f of %.0f)", target.name, target.samples(), warm)
	}
	base := target.samples()
	sched0, stat0, slices0 := cpuTime(t, target.pid)
	self0, _, _ := cpuTime(t, os.Getpid())

	total := int(float64(rate) * d.Seconds())
	sent := 0
	start := time.Now()
	during := target.during
	hardStop := start.Add(d + d/5 + time.Second) // bound in time if the sender falls behind
	tick := time.NewTicker(time.Millisecond)
	for sent < total {
		now := time.Now()
		if now.After(hardStop) {
			t.Logf("%s: sender stopped at the time bound after %d of %d datagrams", target.name, sent, total)
			break
		}
		due := min(total, int(now.Sub(start).Seconds()*float64(rate)))
		up := uptime()
		for ; sent < due; sent++ {
			if err := agents[sent%len(agents)].send(up); err != nil {
				t.Fatalf("%s: send: %v", target.name, err)
			}
		}
		if during != nil && sent >= total/4 {
			go during()
			during = nil
		}
		if sent < total {
			<-tick.C
		}
	}
	elapsed := time.Since(start)
	tick.Stop()

	// Drain: until everything sent is counted or the count has not moved
	// for 500 ms, at most 5 s. Ask at most every 100 ms: the collector's CPU
	// time is being measured, and answering costs some.
	want := base + float64(sent*loadSamplesPerDatagram)
	last, moved := target.samples(), time.Now()
	testkit.Poll(5*time.Second, testkit.AtMostEvery(100*time.Millisecond, func() bool {
		if now := target.samples(); now != last {
			last, moved = now, time.Now()
		}
		return last >= want || time.Since(moved) >= 500*time.Millisecond
	}))
	sched1, stat1, slices1 := cpuTime(t, target.pid)
	self1, _, _ := cpuTime(t, os.Getpid())
	return loadResult{datagrams: sent, elapsed: elapsed, samplesSent: sent * loadSamplesPerDatagram,
		received: last - base, sched: sched1 - sched0, stat: stat1 - stat0, slices: slices1 - slices0,
		senderCPU: self1 - self0}
}

// udpDrops sums the kernel's drop counters (last column of /proc/net/udp
// and udp6) of the sockets bound to port: datagrams that found the
// receive buffer full.
func udpDrops(port int) float64 {
	var sum float64
	suffix := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 13 || !strings.HasSuffix(fs[1], suffix) {
				continue
			}
			v, _ := strconv.ParseFloat(fs[len(fs)-1], 64)
			sum += v
		}
	}
	return sum
}

func logLoad(t *testing.T, name string, r loadResult, extra string) {
	t.Helper()
	t.Logf("%-8s %8.0f datagrams/s achieved (%d in %s), %d samples sent, CPU %5.0f ns/sample sent (schedstat; /proc stat %.0f; per sample decoded %.0f), loss %.3f%%; %.2f CPU switches-in per datagram; sender %.0f%% of a CPU%s",
		name, r.rate(), r.datagrams, r.elapsed.Round(time.Millisecond), r.samplesSent, r.nsPerSample(),
		float64(r.stat.Nanoseconds())/float64(r.samplesSent), float64(r.sched.Nanoseconds())/r.received, 100*r.loss(),
		float64(r.slices)/float64(r.datagrams), 100*r.senderCPU.Seconds()/r.elapsed.Seconds(), extra)
}

// metricValue sums every sample of a metric family in Prometheus text.
func metricValue(text, name string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if len(rest) == 0 || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

func TestSFlowLoad(t *testing.T) {
	d := *sflowLoad
	if d == 0 {
		t.Skip("sFlow load measurement: run with -rtbh.sflowload=10s")
	}
	rate := *sflowLoadRate
	agents, poolBytes := buildLoadAgents(t)
	t.Logf("pool: %d datagrams x %d samples (%d KiB, %.0f bytes/datagram), %d sources, sampling 1:%d; load %d datagrams/s for %s",
		loadAgents*loadDatagramsPerAgent, loadSamplesPerDatagram, poolBytes>>10,
		float64(poolBytes)/float64(loadAgents*loadDatagramsPerAgent), loadSources, loadSamplingRate, rate, d)

	// rtbhd with the default smtp-fanout rule (no rules key).
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.LogLevel = "warn"
	cfg.Subscribers = loadSubscribers
	dm := startDaemon(t, cfg)
	target := loadTarget{
		name: "rtbhd",
		pid:  dm.cmd.Process.Pid,
		addr: fmt.Sprintf("127.0.0.1:%d", cfg.SFlowPort),
		samples: func() float64 {
			return metricValue(dm.metrics(), "rtbh_sflow_samples_total")
		},
	}
	if path := *sflowLoadProfile; path != "" {
		target.during = func() {
			secs := max(1, min(5, int(d.Seconds()/2)))
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", cfg.MetricsPort, secs))
			if err != nil {
				t.Logf("cpu profile: %v", err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(path)
			if err != nil {
				t.Logf("cpu profile: %v", err)
				return
			}
			defer f.Close()
			if _, err := io.Copy(f, resp.Body); err != nil {
				t.Logf("cpu profile: %v", err)
			}
		}
	}
	r := runLoad(t, target, agents, rate, d)
	m := dm.metrics()
	logLoad(t, "rtbhd", r, fmt.Sprintf("; socket drops %.0f (kernel %.0f), lost datagrams %.0f, decode errors %.0f, firings %.0f, blackholes %.0f, tracked sources %.0f, rcvbuf %.0f",
		metricValue(m, "rtbh_sflow_socket_drops_total"), udpDrops(cfg.SFlowPort), metricValue(m, "rtbh_sflow_lost_datagrams_total"),
		metricValue(m, "rtbh_sflow_decode_errors_total"), metricValue(m, "rtbh_detector_firings_total"),
		metricValue(m, "rtbh_blackholes_active"), metricValue(m, "rtbh_detector_tracked_sources"),
		metricValue(m, "rtbh_sflow_receive_buffer_bytes")))
	if r.loss() > 0.01 {
		t.Errorf("rtbhd lost %.2f%% of the samples, want < 1%%", 100*r.loss())
	}
	if *sflowLoadProfile != "" {
		t.Logf("rtbhd CPU profile: %s (go tool pprof -top %s %s)", *sflowLoadProfile, rtbhdBin, *sflowLoadProfile)
	}
	dm.stop()

	if !*sflowLoadGoflow2 {
		return
	}
	bin := buildGoflow2(t)
	if bin == "" {
		return
	}
	udp, httpPort := testkit.FreePort(t, loopback), testkit.FreePort(t, loopback)
	gf := exec.Command(bin, "-listen", fmt.Sprintf("sflow://127.0.0.1:%d", udp), "-addr", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"-format", "bin", "-transport", "file", "-transport.file", "/dev/null", "-loglevel", "warn")
	var gfLog strings.Builder
	gf.Stdout, gf.Stderr = &gfLog, &gfLog
	if err := gf.Start(); err != nil {
		t.Fatalf("starting goflow2: %v", err)
	}
	gfExited := make(chan struct{})
	go func() { gf.Wait(); close(gfExited) }()
	t.Cleanup(func() {
		select {
		case <-gfExited:
		default:
			gf.Process.Kill()
			<-gfExited
		}
		if t.Failed() {
			t.Logf("goflow2 output:\n%s", gfLog.String())
		}
	})
	gfMetrics := func() string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if !testkit.Poll(10*time.Second, func() bool { return gfMetrics() != "" }) {
		t.Fatalf("goflow2 metrics not up within 10 s:\n%s", gfLog.String())
	}
	g := runLoad(t, loadTarget{
		name: "goflow2",
		pid:  gf.Process.Pid,
		addr: fmt.Sprintf("127.0.0.1:%d", udp),
		samples: func() float64 {
			return metricValue(gfMetrics(), "goflow2_flow_process_sf_samples_total")
		},
	}, agents, rate, d)
	gm := gfMetrics()
	logLoad(t, "goflow2", g, fmt.Sprintf("; socket drops (kernel) %.0f, dropped %.0f, decoder errors %.0f",
		udpDrops(udp), metricValue(gm, "goflow2_flow_dropped_packets_total"), metricValue(gm, "goflow2_flow_decoder_error_total")))
	if g.loss() > 0.01 { // goflow2 is only the yardstick: note it, do not fail rtbh's test
		t.Logf("note: goflow2 lost %.2f%% of the samples; its figure is then per sample sent, not per sample handled", 100*g.loss())
	}
	t.Logf("rtbhd / goflow2 CPU per sample: %.3f (goflow2 costs %.1fx rtbhd)", r.nsPerSample()/g.nsPerSample(), g.nsPerSample()/r.nsPerSample())
}

var goflow2Version = regexp.MustCompile(`github\.com/netsampler/goflow2/v2 (v\S+)`)

// buildGoflow2 builds goflow2's command from a copy of its module (the
// version in go.mod, v2.2.6) in a temporary directory outside the repo: its
// own go.mod and go.sum bring the modules its command needs and rtbh's
// go.mod lacks. It returns "" (after logging why) when that fails.
func buildGoflow2(t *testing.T) string {
	t.Helper()
	version := "v2.2.6"
	if b, err := os.ReadFile("../../go.mod"); err == nil {
		if m := goflow2Version.FindSubmatch(b); m != nil {
			version = string(m[1])
		}
	}
	tmp := t.TempDir()
	goCmd := func(dir string, args ...string) (stdout, stderr []byte, err error) {
		var o, e strings.Builder
		c := exec.Command("go", args...)
		c.Dir = dir
		c.Env = append(os.Environ(), "GOFLAGS=-mod=mod -buildvcs=false", "GOWORK=off")
		c.Stdout, c.Stderr = &o, &e
		err = c.Run()
		return []byte(o.String()), []byte(e.String()), err
	}
	// The module is usually in the cache already (rtbh's go.mod requires
	// it); "go mod download" outside any module only fills the cache.
	out, stderr, err := goCmd(tmp, "mod", "download", "-json", "github.com/netsampler/goflow2/v2@"+version)
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); err == nil {
		err = jerr
	}
	if err != nil || mod.Dir == "" {
		t.Logf("goflow2 %s: module not available (%v %s):\n%s%s\nskipping the comparison", version, err, mod.Error, out, stderr)
		return ""
	}
	src := filepath.Join(tmp, "goflow2-src")
	if err := os.CopyFS(src, os.DirFS(mod.Dir)); err != nil {
		t.Logf("goflow2: copying %s: %v; skipping the comparison", mod.Dir, err)
		return ""
	}
	bin := filepath.Join(tmp, "goflow2")
	start := time.Now()
	if _, stderr, err := goCmd(src, "build", "-o", bin, "./cmd/goflow2"); err != nil {
		t.Logf("goflow2 %s: its binary cannot be built here (%v):\n%s\nskipping the comparison", version, err, stderr)
		return ""
	}
	t.Logf("built goflow2 %s in %s", version, time.Since(start).Round(100*time.Millisecond))
	return bin
}
