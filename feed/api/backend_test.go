package api

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/store"
)

// Test policy: own space 198.51.100.0/24 and 2001:db8::/32, never
// blackhole 198.51.100.53, IPv4 down to /24, IPv6 down to /64.
func testPolicy() detector.Config {
	return detector.Config{
		Policy: detector.Policy{
			OwnPrefixes:    []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")},
			NeverBlackhole: domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("198.51.100.53/32")}),
			MaxActive:      10000,
			DefaultTTL:     time.Hour,
			MaxTTL:         168 * time.Hour,
			MinPrefixLenV4: 24,
			MinPrefixLenV6: 64,
		},
		Reports: detector.ReportPolicy{Window: 24 * time.Hour, Threshold: 1.0, TTL: 6 * time.Hour},
	}
}

// newBackend is the real decision path: a detector.Manager over SQLite in
// a temporary directory, announcing through an embedded GoBGP speaker with
// no neighbors.
func newBackend(t testing.TB) *detector.Manager {
	return newBackendWith(t, testPolicy())
}

func newBackendWith(t testing.TB, cfg detector.Config) *detector.Manager {
	t.Helper()
	m, _ := newBackendDB(t, cfg)
	return m
}

// newBackendDB is newBackendWith that also returns the store, for checks
// of what was made durable.
func newBackendDB(t testing.TB, cfg detector.Config) (*detector.Manager, *store.DB) {
	t.Helper()
	logger := testLogger(t)
	db, err := store.Open(filepath.Join(t.TempDir(), "rtbhd.db"), logger)
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	sp, err := bgp.New(bgp.Config{
		ASN:       64500,
		RouterID:  netip.MustParseAddr("192.0.2.254"),
		NextHopV4: netip.MustParseAddr("192.0.2.1"),
		NextHopV6: netip.MustParseAddr("100::1"),
	}, logger, nil)
	if err != nil {
		t.Fatalf("creating bgp speaker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := sp.Start(ctx); err != nil {
		t.Fatalf("starting bgp speaker: %v", err)
	}
	m, err := detector.NewManager(cfg, db, sp, logger, nil)
	if err != nil {
		t.Fatalf("creating manager: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager Run: %v", err)
		}
		if err := sp.Close(); err != nil {
			t.Errorf("closing speaker: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("closing store: %v", err)
		}
	})
	return m, db
}
