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
//
// It holds at most max addresses (reports.max_tracked_addresses; 0 = no
// bound): marking an address beyond that forgets the least recently
// reported one. A forgotten address's reports stay in the store but no
// longer count until it is reported again (or rtbhd restarts and reloads
// the window's reports). It is not safe for concurrent use: the Manager's
// mutex guards it.
type scoreboard struct {
	max        int
	addrs      map[netip.Addr]int32 // address -> index in ents
	ents       []scoreEntry
	free       []int32 // unused indices of ents
	head, tail int32   // LRU: head is the most recently reported; -1 = none
	evicted    uint64  // addresses forgotten for max
}

// scoreEntry is one tracked address. Most addresses have one reporter: it
// is kept inline, further ones in more. Entries live in one slice linked by
// index (no allocation per address beyond the map's), about 100 bytes each.
type scoreEntry struct {
	addr       netip.Addr
	prev, next int32
	reporter   string // "" = the entry is unused
	mark       reportMark
	more       map[string]reportMark
}

type reportMark struct {
	trust    float64
	at       time.Time // newest observed_at from this reporter
	operator bool
}

func newScoreboard(max int) *scoreboard {
	return &scoreboard{max: max, addrs: make(map[netip.Addr]int32), head: -1, tail: -1}
}

// reset forgets every address.
func (s *scoreboard) reset() {
	clear(s.addrs)
	s.ents, s.free, s.head, s.tail = s.ents[:0], s.free[:0], -1, -1
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
		s.drop(s.tail)
		s.evicted++
	}
}

func (s *scoreboard) unlink(i int32) {
	e := &s.ents[i]
	if e.prev >= 0 {
		s.ents[e.prev].next = e.next
	} else {
		s.head = e.next
	}
	if e.next >= 0 {
		s.ents[e.next].prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (s *scoreboard) pushFront(i int32) {
	e := &s.ents[i]
	e.prev, e.next = -1, s.head
	if s.head >= 0 {
		s.ents[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}

// drop forgets the address of entry i.
func (s *scoreboard) drop(i int32) {
	s.unlink(i)
	delete(s.addrs, s.ents[i].addr)
	s.ents[i] = scoreEntry{}
	s.free = append(s.free, i)
}

// each calls f for every reporter of a.
func (s *scoreboard) each(a netip.Addr, f func(name string, r reportMark)) {
	i, ok := s.addrs[a]
	if !ok {
		return
	}
	e := &s.ents[i]
	f(e.reporter, e.mark)
	for name, r := range e.more {
		f(name, r)
	}
}

// mark remembers the newest report of reporter about a and makes a the
// most recently reported address.
func (s *scoreboard) mark(a netip.Addr, reporter string, trust float64, at time.Time, operator bool) {
	m := reportMark{trust: trust, at: at, operator: operator}
	i, ok := s.addrs[a]
	if !ok {
		if n := len(s.free); n > 0 {
			i, s.free = s.free[n-1], s.free[:n-1]
		} else {
			s.ents = append(s.ents, scoreEntry{})
			i = int32(len(s.ents) - 1)
		}
		s.ents[i] = scoreEntry{addr: a, reporter: reporter, mark: m}
		s.addrs[a] = i
		s.pushFront(i)
		s.evict()
		return
	}
	if s.head != i {
		s.unlink(i)
		s.pushFront(i)
	}
	e := &s.ents[i]
	if e.reporter == reporter {
		if at.After(e.mark.at) {
			e.mark = m
		}
		return
	}
	if old, ok := e.more[reporter]; !ok || at.After(old.at) {
		if e.more == nil {
			e.more = make(map[string]reportMark, 1)
		}
		e.more[reporter] = m
	}
}

// score is the sum of the trust of the distinct reporters of a within
// window of now.
func (s *scoreboard) score(a netip.Addr, now time.Time, window time.Duration) float64 {
	var sum float64
	s.each(a, func(_ string, r reportMark) {
		if now.Sub(r.at) <= window {
			sum += r.trust
		}
	})
	return sum
}

// reporters names, sorted, the reporters that count in a's score, and
// whether one of them is an operator.
func (s *scoreboard) reporters(a netip.Addr, now time.Time, window time.Duration) (names []string, operator bool) {
	s.each(a, func(name string, r reportMark) {
		if now.Sub(r.at) <= window {
			names = append(names, name)
			operator = operator || r.operator
		}
	})
	slices.Sort(names)
	return names, operator
}

// parts returns the reporters that count in a's score with their trust.
func (s *scoreboard) parts(a netip.Addr, now time.Time, window time.Duration) []domain.ScorePart {
	var out []domain.ScorePart
	s.each(a, func(name string, r reportMark) {
		if now.Sub(r.at) <= window {
			out = append(out, domain.ScorePart{Reporter: name, Trust: r.trust, ObservedAt: r.at})
		}
	})
	slices.SortFunc(out, func(x, y domain.ScorePart) int { return strings.Compare(x.Reporter, y.Reporter) })
	return out
}

// prune forgets reports that fell out of the window.
func (s *scoreboard) prune(now time.Time, window time.Duration) {
	for _, i := range s.addrs {
		e := &s.ents[i]
		for name, r := range e.more {
			if now.Sub(r.at) > window {
				delete(e.more, name)
			}
		}
		if now.Sub(e.mark.at) > window {
			// Promote a remaining reporter inline, or forget the address.
			if len(e.more) == 0 {
				s.drop(i)
				continue
			}
			for name, r := range e.more {
				e.reporter, e.mark = name, r
				delete(e.more, name)
				break
			}
		}
		if len(e.more) == 0 {
			e.more = nil
		}
	}
}

// reaches reports whether score is at threshold, allowing for rounding in
// sums of fractional trust (ten reports of 0.1 reach 1.0).
func reaches(score, threshold float64) bool { return score >= threshold-1e-9 }
