package detector

import (
	"container/list"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// scoreboard is report scoring: for each reported address, the newest
// report of each reporter. An address's score is the sum of the trust of
// the distinct reporters whose newest report lies within the report window.
//
// It holds at most max addresses (reports.max_tracked_addresses; 0 = no
// bound): marking an address beyond that forgets the least recently
// reported one. A forgotten address's reports stay in the store but no
// longer count until it is reported again (or rtbhd restarts and reloads
// the window's reports). It is not safe for concurrent use: the Manager's
// mutex guards it.
type scoreboard struct {
	max     int
	addrs   map[netip.Addr]*list.Element // of *tracked
	lru     list.List                    // front: most recently reported
	evicted uint64                       // addresses forgotten for max
}

type tracked struct {
	addr netip.Addr
	rs   map[string]reportMark
}

type reportMark struct {
	trust    float64
	at       time.Time // newest observed_at from this reporter
	operator bool
}

func newScoreboard(max int) *scoreboard {
	s := &scoreboard{max: max, addrs: make(map[netip.Addr]*list.Element)}
	s.lru.Init()
	return s
}

// reset forgets every address.
func (s *scoreboard) reset() {
	clear(s.addrs)
	s.lru.Init()
}

// len is the number of tracked addresses.
func (s *scoreboard) len() int { return len(s.addrs) }

// setMax changes the bound, forgetting the least recently reported
// addresses beyond it.
func (s *scoreboard) setMax(max int) {
	s.max = max
	s.evict()
}

func (s *scoreboard) evict() {
	for s.max > 0 && len(s.addrs) > s.max {
		e := s.lru.Back()
		s.lru.Remove(e)
		delete(s.addrs, e.Value.(*tracked).addr)
		s.evicted++
	}
}

// get returns a's reports, nil if a is not tracked.
func (s *scoreboard) get(a netip.Addr) map[string]reportMark {
	if e := s.addrs[a]; e != nil {
		return e.Value.(*tracked).rs
	}
	return nil
}

// mark remembers the newest report of reporter about a and makes a the
// most recently reported address.
func (s *scoreboard) mark(a netip.Addr, reporter string, trust float64, at time.Time, operator bool) {
	e := s.addrs[a]
	if e == nil {
		e = s.lru.PushFront(&tracked{addr: a, rs: make(map[string]reportMark, 1)})
		s.addrs[a] = e
		s.evict()
	} else {
		s.lru.MoveToFront(e)
	}
	rs := e.Value.(*tracked).rs
	if old, ok := rs[reporter]; !ok || at.After(old.at) {
		rs[reporter] = reportMark{trust: trust, at: at, operator: operator}
	}
}

// score is the sum of the trust of the distinct reporters of a within
// window of now.
func (s *scoreboard) score(a netip.Addr, now time.Time, window time.Duration) float64 {
	var sum float64
	for _, r := range s.get(a) {
		if now.Sub(r.at) <= window {
			sum += r.trust
		}
	}
	return sum
}

// reporters names, sorted, the reporters that count in a's score, and
// whether one of them is an operator.
func (s *scoreboard) reporters(a netip.Addr, now time.Time, window time.Duration) (names []string, operator bool) {
	for name, r := range s.get(a) {
		if now.Sub(r.at) <= window {
			names = append(names, name)
			operator = operator || r.operator
		}
	}
	slices.Sort(names)
	return names, operator
}

// parts returns the reporters that count in a's score with their trust.
func (s *scoreboard) parts(a netip.Addr, now time.Time, window time.Duration) []domain.ScorePart {
	var out []domain.ScorePart
	for name, r := range s.get(a) {
		if now.Sub(r.at) <= window {
			out = append(out, domain.ScorePart{Reporter: name, Trust: r.trust, ObservedAt: r.at})
		}
	}
	slices.SortFunc(out, func(x, y domain.ScorePart) int { return strings.Compare(x.Reporter, y.Reporter) })
	return out
}

// prune forgets reports that fell out of the window.
func (s *scoreboard) prune(now time.Time, window time.Duration) {
	for a, e := range s.addrs {
		rs := e.Value.(*tracked).rs
		for name, r := range rs {
			if now.Sub(r.at) > window {
				delete(rs, name)
			}
		}
		if len(rs) == 0 {
			s.lru.Remove(e)
			delete(s.addrs, a)
		}
	}
}

// reaches reports whether score is at threshold, allowing for rounding in
// sums of fractional trust (ten reports of 0.1 reach 1.0).
func reaches(score, threshold float64) bool { return score >= threshold-1e-9 }
