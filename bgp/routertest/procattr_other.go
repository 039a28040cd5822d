//go:build !linux

package routertest

import "syscall"

// procAttr puts a router in its own process group.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
