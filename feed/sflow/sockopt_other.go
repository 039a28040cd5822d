//go:build !linux

package sflow

import "net"

var oobSize = 0

func setReceiveBuffer(conn *net.UDPConn, size int) (int, error) {
	if err := conn.SetReadBuffer(size); err != nil {
		return 0, err
	}
	return size, nil
}

func enableDropCounter(*net.UDPConn) error { return nil }

func dropCounter([]byte) (uint32, bool) { return 0, false }
