package sflow

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// datagramReader reads datagrams in batches into buffers it owns.
type datagramReader interface {
	// readBatch blocks until at least one datagram is available and
	// returns how many it read (at most the batch size).
	readBatch() (int, error)
	// datagram returns the i-th datagram of the last batch, its UDP
	// source address and, when the kernel attached it, the socket's
	// drop counter (SO_RXQ_OVFL). A payload as long as the buffer
	// (DatagramSize+1) means the datagram was truncated.
	datagram(i int) (payload []byte, src netip.Addr, drops uint32, haveDrops bool)
	// close makes a readBatch in progress or to come return
	// net.ErrClosed. Any goroutine may call it.
	close()
	// release closes the socket. It is called by the reading goroutine
	// once it no longer reads.
	release()
}

// xnetReader reads with golang.org/x/net's ReadBatch (recvmmsg on
// Linux). It allocates the source address of every datagram; the raw
// recvmmsg reader is used instead where available.
type xnetReader struct {
	conn *net.UDPConn
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
}

func newXnetReader(conn *net.UDPConn, batch, size int) *xnetReader {
	r := &xnetReader{conn: conn, pc: ipv4.NewPacketConn(conn), msgs: make([]ipv4.Message, batch)}
	bufs := make([]byte, batch*size)
	oob := make([]byte, batch*oobSize)
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{bufs[i*size : (i+1)*size : (i+1)*size]}
		r.msgs[i].OOB = oob[i*oobSize : (i+1)*oobSize : (i+1)*oobSize]
	}
	return r
}

func (r *xnetReader) readBatch() (int, error) { return r.pc.ReadBatch(r.msgs, 0) }

func (r *xnetReader) datagram(i int) ([]byte, netip.Addr, uint32, bool) {
	m := &r.msgs[i]
	var src netip.Addr
	if ua, ok := m.Addr.(*net.UDPAddr); ok {
		src = ua.AddrPort().Addr().Unmap()
	}
	d, ok := dropCounter(m.OOB[:m.NN])
	return m.Buffers[0][:m.N], src, d, ok
}

func (r *xnetReader) close()   { r.conn.Close() }
func (r *xnetReader) release() { r.conn.Close() }
