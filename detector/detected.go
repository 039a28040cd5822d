package detector

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/rtbh/rtbh/store"
)

// Detection is a fan-out rule that fired for a source.
type Detection struct {
	Rule     string
	Action   string // blackhole or log (shadow mode)
	Protocol string // tcp or udp
	DstPorts []uint16
	TTL      time.Duration // the rule's first TTL; repeat offenders get it doubled per previous offense

	Source               netip.Addr
	DistinctDestinations uint64
	EstimatedPackets     uint64
	EstimatedConnections uint64
	Window               time.Duration
	FirstSeen, LastSeen  time.Time
	Examples             []netip.Addr
}

// Detected records a rule's evidence and, unless the rule is in shadow mode
// or the source is already blackholed, blackholes the source host through
// Add with origin detector:<rule>. Repeat offenders get double the previous
// TTL, up to policy.max_ttl; the count lives in the store and survives
// restarts. It returns the blackhole when one is active afterwards.
func (m *Manager) Detected(ctx context.Context, d Detection) (*store.Blackhole, error) {
	src := d.Source.Unmap()
	host := netip.PrefixFrom(src, src.BitLen())
	now := m.now().UTC()
	ev := &store.Evidence{
		Address: src, Rule: d.Rule, Action: d.Action, Protocol: d.Protocol, DstPorts: d.DstPorts,
		DistinctDestinations: d.DistinctDestinations, EstimatedPackets: d.EstimatedPackets,
		EstimatedConnections: d.EstimatedConnections, Window: d.Window, FirstSeen: d.FirstSeen, LastSeen: d.LastSeen,
		Examples: d.Examples, RecordedAt: now,
	}
	origin := "detector:" + d.Rule
	reason := fmt.Sprintf("%s: %d destinations, ~%d packets on %s/%v in %s",
		d.Rule, d.DistinctDestinations, d.EstimatedPackets, d.Protocol, d.DstPorts, d.Window)
	onlyEvidence := func(detail string) error {
		return m.db.Commit(&store.Write{At: now, Evidence: ev, Audit: []store.AuditEntry{{
			Actor: origin, Action: "detect", Prefix: host.String(), Origin: origin, Reason: reason, Detail: detail}}})
	}
	if d.Action == "log" {
		if err := onlyEvidence("shadow rule (action log): nothing announced"); err != nil {
			return nil, fmt.Errorf("recording evidence for %s: %w", src, err)
		}
		return nil, nil
	}
	if b, ok := m.Lookup(host); ok {
		if err := onlyEvidence("already blackholed until " + b.ExpiresAt.Format(time.RFC3339)); err != nil {
			return nil, fmt.Errorf("recording evidence for %s: %w", src, err)
		}
		return &b, nil
	}
	offenses, err := m.db.Offenses(ctx, src)
	if err != nil {
		return nil, err
	}
	ttl := doubled(d.TTL, offenses, m.maxTTL())
	b, _, err := m.Add(ctx, Request{Prefix: host, TTL: ttl, HasTTL: true, Origin: origin, Actor: origin,
		Reason: fmt.Sprintf("%s (offense %d)", reason, offenses+1), evidence: ev, offense: true})
	if err != nil {
		if KindOf(err) == 0 {
			return nil, err
		}
		// Refused by policy: keep the evidence, say why.
		if err2 := onlyEvidence("not blackholed: " + err.Error()); err2 != nil {
			return nil, fmt.Errorf("recording evidence for %s: %w", src, err2)
		}
		return nil, err
	}
	return &b, nil
}

// doubled returns ttl doubled once per previous offense, capped at max.
func doubled(ttl time.Duration, offenses int, max time.Duration) time.Duration {
	for i := 0; i < offenses && ttl < max; i++ {
		ttl *= 2
	}
	return min(ttl, max)
}

func (m *Manager) maxTTL() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.policy.MaxTTL
}
