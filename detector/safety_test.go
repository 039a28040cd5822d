package detector

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// Protected infrastructure that a reload or a restart adds withdraws the
// active entries it covers, as never_blackhole does, and the audit log
// says why.
func TestNewProtectionAppliesToActive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	rp := ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour}
	f := newFixture(t, path, testPolicy(), rp)
	ctx := context.Background()
	for _, p := range []string{"198.51.100.40", "198.51.100.41", "198.51.100.42"} {
		if _, _, err := f.m.Add(ctx, Request{Prefix: pfx(p), Actor: "noc"}); err != nil {
			t.Fatal(err)
		}
	}
	f.announced("198.51.100.40/32", "198.51.100.41/32", "198.51.100.42/32")

	// Reload: 198.51.100.40 is now a BGP neighbor.
	pol := testPolicy()
	protect := []Protected{{pfx("198.51.100.40"), "BGP neighbor"}}
	pol.Protected = NewProtection(protect)
	f.m.SetPolicy(pol, rp)
	f.announced("198.51.100.41/32", "198.51.100.42/32")
	if _, _, err := f.m.Add(ctx, Request{Prefix: pfx("198.51.100.40"), Actor: "noc"}); KindOf(err) != KindPolicy ||
		err.Error() != "protected: BGP neighbor 198.51.100.40" {
		t.Fatalf("Add of the new neighbor = %v, want KindPolicy protected: BGP neighbor 198.51.100.40", err)
	}
	f.close()

	// Restart with a config whose sFlow agents cover 198.51.100.41.
	pol.Protected = NewProtection(append(protect, Protected{pfx("198.51.100.40/31"), "sFlow agent"}))
	f2 := newFixture(t, path, pol, rp)
	f2.announced("198.51.100.42/32")
	for p, why := range map[string]string{
		"198.51.100.40/32": "protected: BGP neighbor 198.51.100.40",
		"198.51.100.41/32": "198.51.100.41/32 is inside protected: sFlow agent 198.51.100.40/31",
	} {
		log, err := f2.db.AuditLog(ctx, p, 0)
		if err != nil || len(log) == 0 {
			t.Fatalf("audit of %s: %v, %v", p, log, err)
		}
		if last := log[len(log)-1]; last.Actor != "policy" || last.Action != "remove" || last.Reason != why {
			t.Errorf("audit of the withdrawal of %s = %+v, want actor policy, action remove, reason %q", p, last, why)
		}
	}
	if got := f2.m.Active(); len(got) != 1 || got[0].Prefix != pfx("198.51.100.42") {
		t.Fatalf("active after the restart = %v, want only 198.51.100.42/32", got)
	}
}
