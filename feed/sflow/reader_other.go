//go:build !(linux && (amd64 || arm64 || ppc64le || ppc64 || riscv64 || s390x || loong64 || mips64 || mips64le))

package sflow

import "net"

func newReader(conn *net.UDPConn, batch, size int) (datagramReader, error) {
	return newXnetReader(conn, batch, size), nil
}

func newPollReader(conn *net.UDPConn, batch, size int) (datagramReader, error) {
	return newXnetReader(conn, batch, size), nil
}
