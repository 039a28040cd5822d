//go:build !linux

package bgp

// tcpMD5Supported is left to GoBGP off Linux.
func tcpMD5Supported() error { return nil }
