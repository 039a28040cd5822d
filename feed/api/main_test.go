package api

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it started: servers, watch streams, backends.
// GoBGP's BgpServer.Serve loop never returns after Stop (the speaker in
// the test backends), so it alone is ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/osrg/gobgp/v3/pkg/server.(*BgpServer).Serve"))
}
