package sflowtest

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// WritePcap writes pkts as Ethernet frames (full length, zero payload) to
// a new pcap file at path, 1 ms apart.
func WritePcap(path string, pkts []Packet) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating pcap: %w", err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return fmt.Errorf("writing pcap header: %w", err)
	}
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var frame []byte
	for i, p := range pkts {
		frame = AppendEthernet(frame[:0], p)
		ci := gopacket.CaptureInfo{
			Timestamp:     start.Add(time.Duration(i) * time.Millisecond),
			CaptureLength: len(frame),
			Length:        len(frame),
		}
		if err := w.WritePacket(ci, frame); err != nil {
			f.Close()
			return fmt.Errorf("writing pcap packet %d: %w", i, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing pcap: %w", err)
	}
	return nil
}

// TrailerSrc is the source address of the trailer packets that
// WritePmacctPcap appends; samples from it are not part of the test data.
var TrailerSrc = netip.MustParseAddr("192.0.2.254")

// trailerLen is how many trailer packets follow the test packets: more
// than fit one sfprobe datagram at any sampling rate used in tests.
const trailerLen = 256

// WritePmacctPcap writes pkts followed by trailer packets (UDP from
// TrailerSrc to port 9). pmacct's sfprobe sends a full datagram only when
// the next sample arrives and drops what it holds on SIGINT, so without a
// trailer the last samples of the test data would never be exported.
// Ignore samples whose Src is TrailerSrc.
func WritePmacctPcap(path string, pkts []Packet) error {
	all := make([]Packet, 0, len(pkts)+trailerLen)
	all = append(all, pkts...)
	for i := range trailerLen {
		all = append(all, Packet{
			Src: TrailerSrc, Dst: netip.MustParseAddr("192.0.2.253"),
			Protocol: ProtoUDP, SrcPort: uint16(10000 + i), DstPort: 9,
		})
	}
	return WritePcap(path, all)
}

// PmacctConfig configures a pmacctd sFlow exporter run.
type PmacctConfig struct {
	Pcap         string         // pcap file to replay (required)
	Collector    netip.AddrPort // where to send sFlow (required)
	SamplingRate int            // 1 in N packets; 0 = 1
	AgentIP      netip.Addr     // agent address in the datagrams; default 192.0.2.11
	IfIndex      int            // sfprobe_ifindex; default 7
	SnapLen      int            // bytes of each packet captured; default 128
}

// Pmacct is a running pmacctd.
type Pmacct struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	err    error
	config string
}

// PmacctPath returns the path of pmacctd, or "" when it is not installed.
func PmacctPath() string {
	if p, err := exec.LookPath("pmacctd"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/pmacctd", "/usr/local/sbin/pmacctd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// StartPmacct starts pmacctd with the sfprobe plugin replaying cfg.Pcap
// towards cfg.Collector. When pmacctd is missing the test fails if the
// CI environment variable is set, and is skipped otherwise. The process
// is stopped (SIGINT) when the test ends, if not stopped before.
func StartPmacct(t testing.TB, cfg PmacctConfig) *Pmacct {
	t.Helper()
	bin := PmacctPath()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("pmacctd not found (Debian package pmacct); required in CI")
		}
		t.Skip("pmacctd not found: install the Debian package pmacct to run this test")
	}
	if cfg.SamplingRate <= 0 {
		cfg.SamplingRate = 1
	}
	if !cfg.AgentIP.IsValid() {
		cfg.AgentIP = netip.MustParseAddr("192.0.2.11")
	}
	if cfg.IfIndex == 0 {
		cfg.IfIndex = 7
	}
	if cfg.SnapLen == 0 {
		cfg.SnapLen = 128
	}
	conf := fmt.Sprintf(`daemonize: false
pcap_savefile: %s
pcap_savefile_wait: true
plugins: sfprobe[sf]
sfprobe_receiver[sf]: %s
sfprobe_agentip[sf]: %s
sfprobe_direction[sf]: in
sfprobe_ifindex[sf]: %d
sampling_rate[sf]: %d
snaplen: %d
`, cfg.Pcap, cfg.Collector, cfg.AgentIP, cfg.IfIndex, cfg.SamplingRate, cfg.SnapLen)
	path := filepath.Join(t.TempDir(), "pmacctd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatalf("writing pmacctd config: %v", err)
	}
	p := &Pmacct{out: &syncBuffer{}, done: make(chan struct{}), config: conf}
	p.cmd = exec.Command(bin, "-f", path)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting pmacctd: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stopping pmacctd: %v\n%s", err, p.Output())
		}
	})
	return p
}

// Stop sends SIGINT to pmacctd (its process group: the plugin runs as a
// child) and waits for it to exit, killing it after 10 s.
func (p *Pmacct) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return errors.New("pmacctd did not exit within 10 s of SIGINT; killed")
	}
}

// Exited reports whether pmacctd has exited, and its error.
func (p *Pmacct) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Output returns what pmacctd has written to stdout and stderr.
func (p *Pmacct) Output() string { return p.out.String() }

// RunPmacct replays pcap (written by WritePcap or WritePmacctPcap)
// through pmacctd towards collector at 1 in samplingRate and returns once
// pmacctd has read the whole file (at most 30 s). Its exporter may still
// be sending then: wait for what should arrive, with a deadline (with
// WritePmacctPcap, the first trailer sample to arrive means that every
// test sample has been sent). pmacctd is stopped when the test ends; Stop
// it before to be sure that it sends nothing more.
func RunPmacct(t testing.TB, pcap string, collector netip.AddrPort, samplingRate int) *Pmacct {
	t.Helper()
	p := StartPmacct(t, PmacctConfig{Pcap: pcap, Collector: collector, SamplingRate: samplingRate})
	if err := p.WaitRead(30 * time.Second); err != nil {
		t.Fatalf("%v; output:\n%s", err, p.Output())
	}
	return p
}

// WaitRead waits until pmacctd reports it has read the whole pcap file.
func (p *Pmacct) WaitRead(timeout time.Duration) error {
	var exited bool
	var err error
	read := testkit.Poll(timeout, func() bool {
		if strings.Contains(p.Output(), "finished reading PCAP capture file") {
			return true
		}
		exited, err = p.Exited()
		return exited
	})
	switch {
	case exited:
		return fmt.Errorf("pmacctd exited before reading the pcap: %v", err)
	case !read:
		return fmt.Errorf("pmacctd did not finish reading the pcap within %v", timeout)
	}
	return nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
