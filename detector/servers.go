package detector

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// LearnServer records that s is a server for its rule's ports (it received
// connections from s.Clients distinct outside clients): stored, so that a
// restart forgets nothing, and audited once when first learned (isNew).
// Refreshes (the server keeps serving) only move last_seen.
func (m *Manager) LearnServer(ctx context.Context, s domain.Server, isNew bool) error {
	s.Address = s.Address.Unmap()
	w := &domain.Write{At: m.now().UTC(), Servers: []domain.Server{s}}
	if isNew {
		origin := domain.DetectorOrigin(s.Rule)
		w.Audit = []domain.AuditEntry{{Actor: origin, Action: "server", Prefix: domain.HostPrefix(s.Address).String(),
			Origin: origin, Reason: fmt.Sprintf("received connections from %d distinct outside clients", s.Clients),
			Detail: "learned server: not flagged by " + s.Rule + " while remembered"}}
	}
	if err := commit(m.db, w); err != nil {
		return fmt.Errorf("recording server %s: %w", s.Address, err)
	}
	return nil
}

// Servers returns the servers remembered now: last seen within
// detector.server_memory.
func (m *Manager) Servers(ctx context.Context) ([]domain.Server, error) {
	m.mu.Lock()
	since := m.now().Add(-m.serverMemory)
	m.mu.Unlock()
	out, err := m.db.Servers(ctx, since)
	if err != nil {
		return nil, fmt.Errorf("reading learned servers: %w", err)
	}
	return out, nil
}

// SetServerMemory changes how long learned servers are remembered (config
// reload).
func (m *Manager) SetServerMemory(d time.Duration) {
	m.mu.Lock()
	m.serverMemory = d
	m.mu.Unlock()
}

// Partial records a rule's partial evidence about a source — half of the
// rule's thresholds reached — as a report from detector:<rule> with weight
// trust (detector.report_trust), so that it adds up with partner reports in
// report fusion (reports.threshold, reports.min_reporters). The evidence is
// stored with action "partial".
func (m *Manager) Partial(ctx context.Context, ev domain.Evidence, trust float64) error {
	src := ev.Address.Unmap()
	now := m.now().UTC()
	ev.Address, ev.RecordedAt, ev.Action = src, now, "partial"
	origin := domain.DetectorOrigin(ev.Rule)
	reason := fmt.Sprintf("%s: partial evidence, ~%d destinations, ~%d packets on %s/%v in %s",
		ev.Rule, ev.DistinctDestinations, ev.EstimatedPackets, ev.Protocol, ev.DstPorts, ev.Window)
	rep := domain.Report{Address: src, Reporter: origin, Trust: trust, Kind: "detector", ObservedAt: now,
		Count: max(ev.EstimatedPackets, 1), Evidence: reason, ReceivedAt: now}
	audit := domain.AuditEntry{Actor: origin, Action: "detect", Prefix: domain.HostPrefix(src).String(), Origin: origin,
		Reason: reason, Detail: fmt.Sprintf("half of the rule's thresholds: counts in report fusion as a reporter of weight %.2f", trust)}
	if err := commit(m.db, &domain.Write{At: now, Evidence: &ev, Reports: []domain.Report{rep}, Audit: []domain.AuditEntry{audit}}); err != nil {
		return fmt.Errorf("recording partial evidence for %s: %w", src, err)
	}
	m.mu.Lock()
	m.scores.mark(src, origin, trust, now, false)
	m.mu.Unlock()
	m.fuse(ctx, []netip.Addr{src}, now)
	return nil
}

// RecordAgents stores the sampling rates agents report, so that
// rtbhd --check can warn about rules those rates cannot serve.
func (m *Manager) RecordAgents(ctx context.Context, agents []domain.AgentRate) error {
	if err := commit(m.db, &domain.Write{At: m.now().UTC(), Agents: agents}); err != nil {
		return fmt.Errorf("recording agents' sampling rates: %w", err)
	}
	return nil
}
