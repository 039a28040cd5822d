package detector

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rtbh/rtbh/detector/domain"
)

// Limits on one report's fields.
const (
	maxKindLen     = 64
	maxEvidenceLen = 64 << 10
	// futureSlack is how far in the future observed_at may lie (clock skew).
	futureSlack = 5 * time.Minute
)

// OperatorTrust is the weight of an operator's report.
const OperatorTrust = 1.0

// SubmitReports validates and stores a batch of reports from who. Valid
// reports are committed together; invalid ones are listed in rejected with
// their index. Every address whose score (the sum of the trust of the
// distinct reporters within the report window) reaches the threshold is then
// blackholed with origin "reports" through Add.
func (m *Manager) SubmitReports(ctx context.Context, who Reporter, reports []Report) (int, []Rejected, error) {
	now := m.now().UTC()
	valid := make([]domain.Report, 0, len(reports))
	var rejected []Rejected
	for i, r := range reports {
		sr, err := checkReport(r, now)
		if err != nil {
			rejected = append(rejected, Rejected{Index: i, Reason: err.Error()})
			continue
		}
		sr.Reporter, sr.Trust, sr.ReceivedAt, sr.Operator = who.Name, who.Trust, now, who.Operator
		valid = append(valid, sr)
	}
	if len(valid) == 0 {
		return 0, rejected, nil
	}
	detail := fmt.Sprintf("%d reports", len(valid))
	if len(valid) == 1 {
		detail = fmt.Sprintf("1 report: %s %s x%d", valid[0].Address, valid[0].Kind, valid[0].Count)
	}
	audit := domain.AuditEntry{Actor: who.Name, Action: "report", Detail: detail}
	if len(valid) == 1 {
		audit.Prefix = domain.HostPrefix(valid[0].Address).String()
	}
	if err := commit(m.db, &domain.Write{At: now, Reports: valid, Audit: []domain.AuditEntry{audit}}); err != nil {
		return 0, nil, fmt.Errorf("storing reports: %w", err)
	}

	m.mu.Lock()
	for _, r := range valid {
		m.scores.mark(r.Address, who.Name, who.Trust, r.ObservedAt, who.Operator)
	}
	m.mu.Unlock()
	addrs := make([]netip.Addr, 0, len(valid))
	for _, r := range valid {
		addrs = append(addrs, r.Address)
	}
	m.fuse(ctx, addrs, now)
	return len(valid), rejected, nil
}

// fuse blackholes, with origin "reports", every address of addrs whose
// score reaches reports.threshold with at least reports.min_reporters
// distinct reporters (one operator suffices), unless it is active already.
func (m *Manager) fuse(ctx context.Context, addrs []netip.Addr, now time.Time) {
	if !m.leads() {
		return // the leader fuses (sync.go)
	}
	type hit struct {
		addr   netip.Addr
		score  float64
		reason string
	}
	var hits []hit
	m.mu.Lock()
	rp := m.reports
	seen := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if seen[a] {
			continue
		}
		seen[a] = true
		if _, active := m.active.get(domain.Key{Prefix: domain.HostPrefix(a)}); active {
			continue
		}
		s := m.scores.score(a, now, rp.Window)
		if !reaches(s, rp.Threshold) {
			continue
		}
		names, operator := m.scores.reporters(a, now, rp.Window)
		if !operator && len(names) < rp.MinReporters {
			continue
		}
		hits = append(hits, hit{a, s, ClipReason(fmt.Sprintf("report score %.2f >= %.2f from %s",
			s, rp.Threshold, strings.Join(names, ", ")))})
	}
	m.mu.Unlock()

	for _, h := range hits {
		_, _, err := m.Add(ctx, Request{Prefix: domain.HostPrefix(h.addr), TTL: rp.TTL, Origin: domain.OriginReports, Actor: domain.OriginReports, Reason: h.reason})
		if err != nil {
			// The reports are stored; policy (never_blackhole, max_active...)
			// decided against the blackhole. That is not the reporter's error.
			m.log.Warn("reported address not blackholed", "address", h.addr, "score", h.score, "err", err)
		}
	}
}

func checkReport(r Report, now time.Time) (domain.Report, error) {
	var sr domain.Report
	if strings.TrimSpace(r.Address) == "" {
		return sr, fmt.Errorf("address is required")
	}
	p, err := domain.ParsePrefix(r.Address)
	if err != nil {
		return sr, fmt.Errorf("address: %v", err)
	}
	if !p.IsSingleIP() {
		return sr, fmt.Errorf("address: %s is not a single address", p)
	}
	sr.Address = p.Addr()
	sr.Kind = r.Kind
	if sr.Kind == "" {
		sr.Kind = "spam"
	}
	if len(sr.Kind) > maxKindLen || !utf8.ValidString(sr.Kind) || strings.ContainsFunc(sr.Kind, func(c rune) bool { return c < ' ' }) {
		return sr, fmt.Errorf("kind: must be printable text of at most %d bytes", maxKindLen)
	}
	sr.ObservedAt = r.ObservedAt.UTC()
	if r.ObservedAt.IsZero() {
		sr.ObservedAt = now
	}
	if sr.ObservedAt.After(now.Add(futureSlack)) {
		return sr, fmt.Errorf("observed_at %s is in the future", sr.ObservedAt.Format(time.RFC3339))
	}
	sr.Count = r.Count
	if sr.Count > math.MaxInt64 {
		return sr, fmt.Errorf("count %d is too large (at most %d)", sr.Count, int64(math.MaxInt64))
	}
	if sr.Count == 0 {
		sr.Count = 1
	}
	if len(r.Evidence) > maxEvidenceLen || !utf8.ValidString(r.Evidence) || strings.IndexByte(r.Evidence, 0) >= 0 {
		return sr, fmt.Errorf("evidence: must be UTF-8 text without NUL bytes, of at most %d bytes", maxEvidenceLen)
	}
	sr.Evidence = r.Evidence
	return sr, nil
}

// Score returns the current report score of a.
func (m *Manager) Score(a netip.Addr) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scores.score(a, m.now(), m.reports.Window)
}

// ScoreParts returns the reporters that count in a's score now, with their
// trust, sorted by reporter.
func (m *Manager) ScoreParts(a netip.Addr) []domain.ScorePart {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scores.parts(a, m.now(), m.reports.Window)
}

// pruneScores forgets reports that fell out of the window.
func (m *Manager) pruneScores() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.scores.prune(m.now(), m.reports.Window)
}

// Offender returns what is known about a: evidence and reports from the
// store, the current report score and its parts, whether it is a learned
// server, and its active blackhole (nil if none).
func (m *Manager) Offender(ctx context.Context, a netip.Addr) (domain.Offender, *domain.Blackhole, error) {
	a = a.Unmap()
	o, err := m.db.Offender(ctx, a, 100)
	if err != nil {
		return o, nil, fmt.Errorf("reading offender %s: %w", a, err)
	}
	servers, err := m.Servers(ctx)
	if err != nil {
		return o, nil, err
	}
	for _, s := range servers {
		if s.Address == a {
			o.Servers = append(o.Servers, s)
		}
	}
	// Its route if it has one, else its first FlowSpec filter.
	var bh *domain.Blackhole
	if es := m.OnPrefix(domain.HostPrefix(a)); len(es) > 0 {
		bh = &es[0]
	}
	m.mu.Lock()
	now := m.now()
	o.Score = m.scores.score(a, now, m.reports.Window)
	o.ScoreParts = m.scores.parts(a, now, m.reports.Window)
	m.mu.Unlock()
	return o, bh, nil
}

// Offenders returns the most recent detector evidence, optionally only that
// of shadow rules (action log).
func (m *Manager) Offenders(ctx context.Context, shadowOnly bool, limit int) ([]domain.Evidence, error) {
	return m.db.RecentEvidence(ctx, shadowOnly, limit)
}

// trackedAddresses is how many reported addresses have scores in memory.
func (m *Manager) trackedAddresses() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scores.len()
}
