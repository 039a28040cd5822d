package detector

import (
	"container/heap"
	"slices"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// activeSet is the set of active entries (blackhole routes and FlowSpec
// filters, keyed by prefix and match) and their order of expiry. It
// is not safe for concurrent use: the Manager's mutex guards it.
//
// The expiry heap may hold stale items (left by extensions and removals);
// they are skipped when reached and compacted away once they outnumber the
// live ones.
type activeSet struct {
	byKey  map[domain.Key]domain.Blackhole
	expiry expiryHeap
}

func newActiveSet() *activeSet {
	return &activeSet{byKey: make(map[domain.Key]domain.Blackhole)}
}

// reset replaces the whole set.
func (s *activeSet) reset(bs []domain.Blackhole) {
	clear(s.byKey)
	s.expiry = s.expiry[:0]
	for _, b := range bs {
		s.byKey[b.Key()] = b
		s.expiry = append(s.expiry, expiryItem{b.ExpiresAt, b.Key()})
	}
	heap.Init(&s.expiry)
}

func (s *activeSet) len() int { return len(s.byKey) }

func (s *activeSet) get(k domain.Key) (domain.Blackhole, bool) {
	b, ok := s.byKey[k]
	return b, ok
}

// put adds b or replaces the entry of its key (an extension).
func (s *activeSet) put(b domain.Blackhole) {
	s.byKey[b.Key()] = b
	heap.Push(&s.expiry, expiryItem{b.ExpiresAt, b.Key()})
	s.compact()
}

func (s *activeSet) delete(k domain.Key) { delete(s.byKey, k) }

// sorted returns the entries sorted by prefix, then match.
func (s *activeSet) sorted() []domain.Blackhole { return sortedByPrefix(s.byKey) }

// sortedByPrefix returns the entries of m sorted by prefix, then match (a
// route before the filters on its prefix).
func sortedByPrefix(m map[domain.Key]domain.Blackhole) []domain.Blackhole {
	out := make([]domain.Blackhole, 0, len(m))
	for _, b := range m {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b domain.Blackhole) int { return a.Key().Compare(b.Key()) })
	return out
}

// keys returns the active entries' keys in no particular order.
func (s *activeSet) keys() []domain.Key {
	out := make([]domain.Key, 0, len(s.byKey))
	for k := range s.byKey {
		out = append(out, k)
	}
	return out
}

// filtersByAge returns the keys of the active FlowSpec filters, oldest
// first (by created_at, then key): the order they were first announced
// in, so that after a restart BGP admits the same filters within a
// neighbor's max_flowspec as before and a router holding them as stale
// never sees a different set beside them.
func (s *activeSet) filtersByAge() []domain.Key {
	var bs []domain.Blackhole
	for k, b := range s.byKey {
		if k.IsFilter() {
			bs = append(bs, b)
		}
	}
	slices.SortFunc(bs, func(a, b domain.Blackhole) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return a.Key().Compare(b.Key())
	})
	out := make([]domain.Key, len(bs))
	for i, b := range bs {
		out[i] = b.Key()
	}
	return out
}

// next returns the earliest expiry, dropping stale heap items.
func (s *activeSet) next() (time.Time, bool) {
	for len(s.expiry) > 0 {
		it := s.expiry[0]
		if s.live(it) {
			return it.at, true
		}
		heap.Pop(&s.expiry)
	}
	return time.Time{}, false
}

// popDue removes from the expiry order and returns the next entry whose
// expiry is at or before now; the caller ends it.
func (s *activeSet) popDue(now time.Time) (domain.Blackhole, bool) {
	at, ok := s.next()
	if !ok || at.After(now) {
		return domain.Blackhole{}, false
	}
	it := heap.Pop(&s.expiry).(expiryItem)
	return s.byKey[it.key], true
}

// compact drops stale heap items once they outnumber the live ones.
func (s *activeSet) compact() {
	if len(s.expiry) < 2*len(s.byKey)+1024 {
		return
	}
	live := s.expiry[:0]
	for _, it := range s.expiry {
		if s.live(it) {
			live = append(live, it)
		}
	}
	s.expiry = live
	heap.Init(&s.expiry)
}

// live reports whether it is the current expiry of an active entry.
func (s *activeSet) live(it expiryItem) bool {
	b, ok := s.byKey[it.key]
	return ok && b.ExpiresAt.Equal(it.at)
}

type expiryItem struct {
	at  time.Time
	key domain.Key
}

type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
