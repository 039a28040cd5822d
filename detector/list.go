package detector

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/rtbh/rtbh/detector/domain"
)

// ListKey is an entry's place in List's order: by address (IPv4 first),
// then prefix length, then FlowSpec match ("" for a route). A page ends at
// a key and the next page starts after it, so paging is stable while
// entries come and go.
type ListKey struct {
	Prefix netip.Prefix
	Match  string
}

// KeyOf returns b's ListKey.
func KeyOf(b domain.Blackhole) ListKey { return ListKey{Prefix: b.Prefix, Match: b.Match} }

func compareKeys(a, b ListKey) int {
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c
	}
	if c := a.Prefix.Bits() - b.Prefix.Bits(); c != 0 {
		return c
	}
	return strings.Compare(a.Match, b.Match)
}

// ListQuery selects a page of the committed active set.
type ListQuery struct {
	// Within, when valid, keeps only entries inside it (or equal to it).
	Within netip.Prefix
	// Origin, when set, keeps only entries of this origin, or of origins
	// starting with it when it ends in ":" ("detector:").
	Origin string
	// After, when set, starts the page after this key (the last key of the
	// previous page).
	After *ListKey
	// Limit is the page size (at least 1).
	Limit int
	// Visible, when set, keeps only the entries it accepts (a partner's
	// view).
	Visible func(domain.Blackhole) bool
}

// matchesOrigin reports whether origin passes the filter o.
func matchesOrigin(o, origin string) bool {
	if o == "" {
		return true
	}
	if strings.HasSuffix(o, ":") {
		return strings.HasPrefix(origin, o)
	}
	return origin == o
}

// List returns one page of the committed active blackholes (what Active
// returns), in ListKey order, and whether more may follow. The sorted view
// is built once per change to the committed set, so paging through it
// costs one sort, not one per page; a Within query touches only the
// entries inside it.
func (m *Manager) List(q ListQuery) (page []domain.Blackhole, more bool) {
	limit := max(q.Limit, 1)
	m.cmu.Lock()
	defer m.cmu.Unlock()
	view := m.sortedView()
	start := 0
	if q.Within.IsValid() {
		w := q.Within.Masked()
		start, _ = slices.BinarySearchFunc(view, w.Addr(), func(b domain.Blackhole, a netip.Addr) int {
			return b.Prefix.Addr().Compare(a)
		})
		q.Within = w
	}
	if q.After != nil {
		i, found := slices.BinarySearchFunc(view, *q.After, func(b domain.Blackhole, k ListKey) int {
			return compareKeys(KeyOf(b), k)
		})
		if found {
			i++
		}
		start = max(start, i)
	}
	for _, b := range view[start:] {
		if q.Within.IsValid() {
			if !q.Within.Contains(b.Prefix.Addr()) {
				break // past the entries inside Within: they are contiguous in this order
			}
			if b.Prefix.Bits() < q.Within.Bits() {
				continue // covers more than Within
			}
		}
		if !matchesOrigin(q.Origin, b.Origin) || (q.Visible != nil && !q.Visible(b)) {
			continue
		}
		if len(page) == limit {
			return page, true
		}
		page = append(page, b)
	}
	return page, false
}

// sortedView returns the committed view in ListKey order, sorting it if
// it changed since the last call; m.cmu must be held. The slice is shared:
// callers copy what they keep.
func (m *Manager) sortedView() []domain.Blackhole {
	if m.listView == nil {
		v := make([]domain.Blackhole, 0, len(m.committed))
		for _, b := range m.committed {
			v = append(v, b)
		}
		slices.SortFunc(v, func(a, b domain.Blackhole) int { return compareKeys(KeyOf(a), KeyOf(b)) })
		m.listView = v
	}
	return m.listView
}
