package detector

import (
	"context"
	"fmt"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// Detected records a rule's evidence (ev.Address is the source; RecordedAt
// is set here) and, unless the rule is in shadow mode (ev.Action "log") or
// the source is already blackholed, blackholes the source host through Add
// with origin detector:<rule>. A rule with action flowspec (ev.Action
// "flowspec") adds a FlowSpec filter of the source host instead, matching
// the rule's protocol and ports (ev.Protocol, ev.DstPorts). The first blackhole lasts ttl; repeat
// offenders get double the previous TTL, up to policy.max_ttl (the count
// lives in the store and survives restarts). It returns the blackhole when
// one is active afterwards.
func (m *Manager) Detected(ctx context.Context, ev domain.Evidence, ttl time.Duration) (*domain.Blackhole, error) {
	src := ev.Address.Unmap()
	host := domain.HostPrefix(src)
	now := m.now().UTC()
	ev.Address, ev.RecordedAt = src, now
	origin := domain.DetectorOrigin(ev.Rule)
	reason := ClipReason(fmt.Sprintf("%s: %d destinations, ~%d packets on %s/%v in %s",
		ev.Rule, ev.DistinctDestinations, ev.EstimatedPackets, ev.Protocol, ev.DstPorts, ev.Window))
	onlyEvidence := func(detail string) error {
		return commit(m.db, &domain.Write{At: now, Evidence: &ev, Audit: []domain.AuditEntry{{
			Actor: origin, Action: "detect", Prefix: host.String(), Origin: origin, Reason: reason, Detail: detail}}})
	}
	if ev.Action == "log" {
		if err := onlyEvidence("shadow rule (action log): nothing announced"); err != nil {
			return nil, fmt.Errorf("recording evidence for %s: %w", src, err)
		}
		return nil, nil
	}
	var match string
	if ev.Action == "flowspec" {
		fm, err := ruleMatch(ev.Protocol, ev.DstPorts)
		if err != nil {
			// The config refuses such a rule; say so rather than announce a route.
			err = refuse(KindInvalid, "rule %s: %v", ev.Rule, err)
			if err2 := onlyEvidence("not filtered: " + err.Error()); err2 != nil {
				return nil, fmt.Errorf("recording evidence for %s: %w", src, err2)
			}
			return nil, err
		}
		match = fm.String()
	}
	if b, ok := m.LookupKey(domain.Key{Prefix: host, Match: match}); ok {
		what := "already blackholed until "
		if match != "" {
			what = "already filtered (flowspec " + match + ") until "
		}
		if err := onlyEvidence(what + b.ExpiresAt.Format(time.RFC3339)); err != nil {
			return nil, fmt.Errorf("recording evidence for %s: %w", src, err)
		}
		return &b, nil
	}
	offenses, err := m.db.Offenses(ctx, src)
	if err != nil {
		return nil, err
	}
	ttl = doubled(ttl, offenses, m.maxTTL())
	b, _, err := m.Add(ctx, Request{Prefix: host, Match: match, TTL: ttl, HasTTL: true, Origin: origin, Actor: origin,
		Reason: ClipReason(fmt.Sprintf("%s (offense %d)", reason, offenses+1)), evidence: &ev, offense: true})
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

// ruleMatch is the FlowSpec match of a rule's protocol and ports.
func ruleMatch(protocol string, ports []uint16) (domain.FlowMatch, error) {
	proto, err := domain.ParseProtocol(protocol)
	if err != nil {
		return domain.FlowMatch{}, err
	}
	rs := make([]domain.PortRange, len(ports))
	for i, p := range ports {
		rs[i] = domain.PortRange{First: p, Last: p}
	}
	return domain.NewFlowMatch(proto, rs)
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
