package sflow

import (
	"net"
	"net/netip"
	"testing"

	"github.com/rtbh/rtbh/feed/sflow/sflowtest"
)

// TestReceivePathNoAllocs proves the whole receive path (recvmmsg batch,
// source address, decode) allocates nothing per datagram, for the default
// reader and the poller one.
func TestReceivePathNoAllocs(t *testing.T) {
	t.Run("default", func(t *testing.T) { testReceivePathNoAllocs(t, newReader) })
	t.Run("poll", func(t *testing.T) {
		testReceivePathNoAllocs(t, func(conn *net.UDPConn, batch, size int) (datagramReader, error) {
			return newPollReader(conn, batch, size)
		})
	})
}

func testReceivePathNoAllocs(t *testing.T, newReader func(*net.UDPConn, int, int) (datagramReader, error)) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, err := newReader(conn, 16, DefaultDatagramSize+1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.release()
	tx, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	s := sflowtest.NewStream(netip.MustParseAddr("192.0.2.1"), 10)
	pkts := []sflowtest.Packet{{Src: netip.MustParseAddr("100.64.0.1"), Dst: netip.MustParseAddr("198.51.100.1"),
		Protocol: sflowtest.ProtoTCP, SrcPort: 1, DstPort: 25}}
	var d Decoder
	out := make([]Sample, MaxSamples(DefaultDatagramSize))
	got := 0
	round := func() {
		for range 4 {
			if _, err := tx.Write(s.Datagram(pkts...)); err != nil {
				t.Fatal(err)
			}
		}
		for read := 0; read < 4; {
			n, err := r.readBatch()
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				payload, src, _, _ := r.datagram(i)
				if src != netip.MustParseAddr("127.0.0.1") {
					t.Fatalf("source %v", src)
				}
				k, err := d.Decode(payload, out)
				if err != nil {
					t.Fatal(err)
				}
				got += k
			}
			read += n
		}
	}
	round() // the agent's state is allocated once
	if allocs := testing.AllocsPerRun(50, round); allocs != 0 {
		t.Errorf("%v allocs per 4 datagrams, want 0", allocs)
	}
	if got != 4*52 { // AllocsPerRun runs once more to warm up
		t.Errorf("decoded %d samples, want %d", got, 4*52)
	}
}
