package detector

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// scoreboard is report scoring: for each reported address, the newest
// report of each reporter. An address's score is the sum of the trust of
// the distinct reporters whose newest report lies within the report window.
// It is not safe for concurrent use: the Manager's mutex guards it.
type scoreboard map[netip.Addr]map[string]reportMark

type reportMark struct {
	trust    float64
	at       time.Time // newest observed_at from this reporter
	operator bool
}

// mark remembers the newest report of reporter about a.
func (s scoreboard) mark(a netip.Addr, reporter string, trust float64, at time.Time, operator bool) {
	rs := s[a]
	if rs == nil {
		rs = make(map[string]reportMark, 1)
		s[a] = rs
	}
	if old, ok := rs[reporter]; !ok || at.After(old.at) {
		rs[reporter] = reportMark{trust: trust, at: at, operator: operator}
	}
}

// score is the sum of the trust of the distinct reporters of a within
// window of now.
func (s scoreboard) score(a netip.Addr, now time.Time, window time.Duration) float64 {
	var sum float64
	for _, r := range s[a] {
		if now.Sub(r.at) <= window {
			sum += r.trust
		}
	}
	return sum
}

// reporters names, sorted, the reporters that count in a's score, and
// whether one of them is an operator.
func (s scoreboard) reporters(a netip.Addr, now time.Time, window time.Duration) (names []string, operator bool) {
	for name, r := range s[a] {
		if now.Sub(r.at) <= window {
			names = append(names, name)
			operator = operator || r.operator
		}
	}
	slices.Sort(names)
	return names, operator
}

// parts returns the reporters that count in a's score with their trust.
func (s scoreboard) parts(a netip.Addr, now time.Time, window time.Duration) []domain.ScorePart {
	var out []domain.ScorePart
	for name, r := range s[a] {
		if now.Sub(r.at) <= window {
			out = append(out, domain.ScorePart{Reporter: name, Trust: r.trust, ObservedAt: r.at})
		}
	}
	slices.SortFunc(out, func(x, y domain.ScorePart) int { return strings.Compare(x.Reporter, y.Reporter) })
	return out
}

// prune forgets reports that fell out of the window.
func (s scoreboard) prune(now time.Time, window time.Duration) {
	for a, rs := range s {
		for name, r := range rs {
			if now.Sub(r.at) > window {
				delete(rs, name)
			}
		}
		if len(rs) == 0 {
			delete(s, a)
		}
	}
}

// reaches reports whether score is at threshold, allowing for rounding in
// sums of fractional trust (ten reports of 0.1 reach 1.0).
func reaches(score, threshold float64) bool { return score >= threshold-1e-9 }
