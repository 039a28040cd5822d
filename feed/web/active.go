package web

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
)

// Watcher is the decision path's watch stream (detector.Manager.Watch):
// the active set, then every change, until ctx ends or the watcher falls
// too far behind (the channel closes).
type Watcher interface {
	Watch(ctx context.Context) ([]domain.Blackhole, <-chan detector.Event)
}

// subBuffer is how many changes an event stream may fall behind before it
// is closed (the browser reconnects and reloads the page's live part).
const subBuffer = 1024

// activeView mirrors the active set from one watch stream of the decision
// path, so that a page does not copy and sort the whole set (the list is
// sorted again only after a change, and only when a page asks), and fans
// the changes out to the console's event streams. Entries are immutable
// once stored: the sorted list is shared by readers, who copy it before
// sorting it another way.
type activeView struct {
	src Watcher

	mu     sync.Mutex
	byKey  map[domain.Key]*domain.Blackhole
	sorted []*domain.Blackhole // by prefix; nil = to be rebuilt
	ready  chan struct{}       // closed once the first snapshot is in
	subs   map[chan detector.Event]struct{}
}

func newActiveView(src Watcher) *activeView {
	return &activeView{src: src, byKey: map[domain.Key]*domain.Blackhole{}, ready: make(chan struct{}),
		subs: map[chan detector.Event]struct{}{}}
}

// resync is sent to the event streams when the view was rebuilt from a
// new snapshot (its own watch fell behind): pages reload their live part.
var resync = detector.Event{}

// run follows the watch stream until ctx ends.
func (v *activeView) run(ctx context.Context) {
	first := true
	for ctx.Err() == nil {
		began := time.Now()
		snap, events := v.src.Watch(ctx)
		v.reset(snap)
		if first {
			close(v.ready)
			first = false
		} else {
			v.publish(resync)
		}
		for ev := range events {
			v.apply(ev)
		}
		// Dropped for falling behind (a burst of changes): watch again,
		// but not in a tight loop.
		if time.Since(began) < time.Second {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	v.mu.Lock()
	for ch := range v.subs {
		close(ch)
		delete(v.subs, ch)
	}
	v.mu.Unlock()
}

func (v *activeView) reset(snap []domain.Blackhole) {
	v.mu.Lock()
	defer v.mu.Unlock()
	clear(v.byKey)
	entries := slices.Clone(snap) // one allocation, not one per entry
	sorted := make([]*domain.Blackhole, len(entries))
	for i := range entries {
		b := &entries[i]
		v.byKey[b.Key()] = b
		sorted[i] = b
	}
	if !slices.IsSortedFunc(sorted, byPrefix) {
		slices.SortFunc(sorted, byPrefix)
	}
	v.sorted = sorted
}

// byPrefix orders by (prefix, match): a route before the filters on its prefix.
func byPrefix(a, b *domain.Blackhole) int { return a.Key().Compare(b.Key()) }

func (v *activeView) apply(ev detector.Event) {
	v.mu.Lock()
	b := ev.Blackhole
	switch ev.Type {
	case detector.EventAdded, detector.EventExtended:
		v.byKey[b.Key()] = &b
	case detector.EventRemoved, detector.EventExpired:
		delete(v.byKey, b.Key())
	}
	v.sorted = nil
	v.mu.Unlock()
	v.publish(ev)
}

// publish hands ev to every event stream; one that is too far behind is
// closed.
func (v *activeView) publish(ev detector.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for ch := range v.subs {
		select {
		case ch <- ev:
		default:
			close(ch)
			delete(v.subs, ch)
		}
	}
}

// subscribe returns a channel of later changes, closed when the stream
// falls behind or the view stops; cancel ends it.
func (v *activeView) subscribe() (<-chan detector.Event, func()) {
	ch := make(chan detector.Event, subBuffer)
	v.mu.Lock()
	v.subs[ch] = struct{}{}
	v.mu.Unlock()
	return ch, func() {
		v.mu.Lock()
		if _, ok := v.subs[ch]; ok {
			delete(v.subs, ch)
			close(ch)
		}
		v.mu.Unlock()
	}
}

// list returns the active set sorted by prefix. The slice and the entries
// are shared: do not modify them.
func (v *activeView) list(ctx context.Context) ([]*domain.Blackhole, error) {
	select {
	case <-v.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sorted == nil {
		s := make([]*domain.Blackhole, 0, len(v.byKey))
		for _, b := range v.byKey {
			s = append(s, b)
		}
		slices.SortFunc(s, byPrefix)
		v.sorted = s
	}
	return v.sorted, nil
}
