// Package routertest starts real routers — BIRD 2 and FRR's bgpd — on
// loopback addresses for tests, and reads back the routes they hold.
//
// Each router runs in its own temporary directory (config, control socket,
// log) and is stopped by t.Cleanup; when the test failed, the router's
// config and log are printed. When a router binary is missing the test is
// skipped, or fails when the environment variable CI is set: in CI the
// routers must be there (.ci/run installs them).
//
// Routes are read from the routers' own CLIs: `birdc show route all` and
// `vtysh -c "show bgp ... json"`. Communities come back in one form for both,
// "65535:666", and large communities as "64500:666:0".
package routertest
