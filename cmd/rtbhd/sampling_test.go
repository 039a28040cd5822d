package main

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

// Each agent's sampling rate is a metric; rtbhd records it in the store,
// logs a warning when a rule cannot be expected to catch a zombie at that
// rate, and rtbhd --check (here beside the running daemon) prints the same
// warning and still accepts the file.
func TestCheckWarnsAboutSparseSampling(t *testing.T) {
	cfg := newDaemonConfig(t, t.TempDir())
	d := startDaemon(t, cfg)
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", cfg.SFlowPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	web := sflowtest.Packet{Src: netip.MustParseAddr("198.51.100.160"), Dst: netip.MustParseAddr("203.0.113.80"),
		Protocol: sflowtest.ProtoTCP, SrcPort: 40000, DstPort: 443, TCPFlags: sflowtest.TCPAck}
	sparse := sflowtest.NewStream(netip.MustParseAddr("192.0.2.81"), 8192)
	dense := sflowtest.NewStream(netip.MustParseAddr("192.0.2.82"), 2048)
	for _, s := range []*sflowtest.Stream{sparse, dense} {
		if _, err := conn.Write(s.Datagram(web)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "both agents' sampling rates in the metrics", func() bool {
		m := d.metrics()
		return strings.Contains(m, `rtbh_sflow_agent_sampling_rate{agent="192.0.2.81"} 8192`) &&
			strings.Contains(m, `rtbh_sflow_agent_sampling_rate{agent="192.0.2.82"} 2048`)
	})
	var out string
	testkit.WaitFor(t, 20*time.Second, "rtbhd --check to warn about agent 192.0.2.81", func() bool {
		b, err := exec.Command(rtbhdBin, "--config", d.cfgPath, "--check").CombinedOutput()
		if err != nil {
			t.Fatalf("--check beside the daemon: %v\n%s", err, b)
		}
		out = string(b)
		return strings.Contains(out, "warning: agent 192.0.2.81")
	})
	want := "at 1:8192 a zombie at 1 SMTP connection/s (12 packets/s) leaves ~0.9 sampled packets in the 10m0s window, fewer than min_samples 3"
	if !strings.Contains(out, want) || strings.Contains(out, "192.0.2.82") || !strings.Contains(out, "configuration is valid") {
		t.Errorf("--check output:\n%s\nwant a warning for 192.0.2.81 only (%q), and the file accepted", out, want)
	}
	if logs := d.logs(); !strings.Contains(logs, "sampling too sparse for a detector rule") || !strings.Contains(logs, "agent=192.0.2.81") {
		t.Errorf("no warning for 192.0.2.81 in rtbhd's log")
	}
}
