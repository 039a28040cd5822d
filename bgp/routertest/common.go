package routertest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Route is one route as a router holds it (its best path).
type Route struct {
	Prefix netip.Prefix
	// NextHop is the BGP next hop (BGP.next_hop / nexthops[0]).
	NextHop netip.Addr
	// Blackhole is true when the router resolved the route to a discard
	// (BIRD: "blackhole"; FRR without zebra cannot tell and leaves it false).
	Blackhole        bool
	Origin           string   // "IGP", "EGP", "Incomplete"
	ASPath           string   // "64500"
	Communities      []string // sorted, numeric: "65535:666"
	LargeCommunities []string // sorted: "64500:666:0"
	// Stale is true while the router keeps the route through a graceful
	// restart of the speaker. Only FRR reports it (BIRD 2.0 does not show it).
	Stale bool
	// Raw is the router's output for this route.
	Raw string
}

// HasCommunity reports whether r carries community c ("65535:666").
func (r Route) HasCommunity(c string) bool { return slices.Contains(r.Communities, c) }

// HasLargeCommunity reports whether r carries large community c.
func (r Route) HasLargeCommunity(c string) bool { return slices.Contains(r.LargeCommunities, c) }

// Family selects an address family.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// requireBinary skips the test (fails it when CI is set) if path is not an
// executable file.
func requireBinary(t testing.TB, path, pkg string) {
	t.Helper()
	if st, err := os.Stat(path); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return
	}
	if p, err := exec.LookPath(path); err == nil && p != "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found: install the Debian package %s (CI must run the router tests)", path, pkg)
	}
	t.Skipf("%s not found: install the Debian package %s to run this test", path, pkg)
}

// shortTempDir makes a temporary directory with a short path (Unix socket
// paths are limited to 108 bytes; t.TempDir paths can be longer). It is
// removed by t.Cleanup.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("creating temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// process is a router process run in the foreground under our control.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProcess(t testing.TB, name string, logPath string, args ...string) *process {
	t.Helper()
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("opening %s: %v", logPath, err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("starting %s: %v", strings.Join(args, " "), err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after 5 s, to the process (group).
func (p *process) stop() {
	if !p.running() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// dumpOnFailure logs the named files when the test has failed.
func dumpOnFailure(t testing.TB, name string, files ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			if len(b) > 64<<10 {
				b = append([]byte("...\n"), b[len(b)-64<<10:]...)
			}
			t.Logf("%s %s:\n%s", name, f, b)
		}
	})
}

func run(timeout time.Duration, args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
		<-done
		return string(out), fmt.Errorf("%s: timed out after %s", strings.Join(args, " "), timeout)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// wellKnown maps community names routers print to their values.
var wellKnown = map[string]string{
	"blackhole":           "65535:666",
	"no-export":           "65535:65281",
	"noexport":            "65535:65281",
	"no-advertise":        "65535:65282",
	"noadvertise":         "65535:65282",
	"local-as":            "65535:65283",
	"no-export-subconfed": "65535:65283",
	"no-peer":             "65535:65284",
	"nopeer":              "65535:65284",
	"graceful-shutdown":   "65535:0",
	"gshut":               "65535:0",
	"accept-own":          "65535:1",
	"llgr-stale":          "65535:6",
	"no-llgr":             "65535:7",
}
