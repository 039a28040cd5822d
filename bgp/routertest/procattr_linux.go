package routertest

import "syscall"

// procAttr puts a router in its own process group and kills it when the
// test binary dies, so that no router outlives a crashed test.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
