package config

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// The router snippets in deploy/routers are checked by the routers' own
// parsers. Without the binary the test is skipped, except in CI (CI set),
// where a missing router is a failure: deploy/install-test-deps.sh installs
// them.

func TestBIRDConfigParses(t *testing.T) {
	checkRouterConfig(t, "bird", "-p", "-c", "../../../../deploy/routers/bird2-border.conf")
}

func TestBIRDFlowSpecConfigParses(t *testing.T) {
	checkRouterConfig(t, "bird", "-p", "-c", "../../../../deploy/routers/bird2-flowspec.conf")
}

func TestFRRConfigParses(t *testing.T) {
	checkRouterConfig(t, "vtysh", "--dryrun", "-f", "../../../../deploy/routers/frr-border.conf")
}

func checkRouterConfig(t *testing.T, name string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		// Debian puts bird in /usr/sbin, which is not always on PATH.
		if _, serr := os.Stat("/usr/sbin/" + name); serr == nil {
			bin, err = "/usr/sbin/"+name, nil
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (run deploy/install-test-deps.sh): %v", name, err)
		}
		t.Skipf("%s is not installed (run deploy/install-test-deps.sh)", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
}

// The HA example's routers peer with both route servers.
func TestHARouterConfigsParse(t *testing.T) {
	checkRouterConfig(t, "bird", "-p", "-c", "../../../../deploy/ha/bird2-border.conf")
	checkRouterConfig(t, "vtysh", "--dryrun", "-f", "../../../../deploy/ha/frr-border.conf")
}
