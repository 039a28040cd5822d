package detector

import (
	"context"
	"log/slog"
	"sync"
)

// watchBuffer is how many events a watcher may fall behind before it is
// dropped (its channel closed) so that one slow client cannot stall rtbh.
const watchBuffer = 65536

// shrinkAbove is the capacity above which a watcher's emptied queue is
// let go rather than kept for reuse, so that memory taken by a burst is
// returned once the watcher has caught up.
const shrinkAbove = 1024

// watcher is one open watch: the events not yet handed to its reader wait
// in a queue that grows as needed (up to watchBuffer) and is drained by the
// watcher's own goroutine (pump) into ch, which is unbuffered. An idle
// watcher holds no event buffer at all: a stream costs its goroutine and a
// few words, not watchBuffer events (about 10 MB) allocated up front.
type watcher struct {
	ch   chan Event    // unbuffered; closed by pump when it returns
	wake chan struct{} // capacity 1: the queue has events
	stop chan struct{} // closed when the watcher is removed or dropped

	mu      sync.Mutex
	queue   []Event // events for the reader, oldest first
	pending int     // events queued or taken by pump and not yet received
	stopped bool
}

// watchers fans changes out to the open watch streams. It is not safe for
// concurrent use: the Manager's committed-view mutex (cmu) guards it, so that a watcher's
// snapshot and its first event are taken in one critical section.
type watchers struct {
	log *slog.Logger
	set map[*watcher]struct{}
}

func newWatchers(log *slog.Logger) *watchers {
	return &watchers{log: log, set: make(map[*watcher]struct{})}
}

// add registers a watcher; the caller runs its pump.
func (ws *watchers) add() *watcher {
	w := &watcher{ch: make(chan Event), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	ws.set[w] = struct{}{}
	return w
}

// remove unregisters w and stops its pump, unless it was already dropped.
func (ws *watchers) remove(w *watcher) {
	if _, ok := ws.set[w]; ok {
		delete(ws.set, w)
		w.halt()
	}
}

// broadcast queues ev for every watcher, dropping those that fell more
// than watchBuffer events behind.
func (ws *watchers) broadcast(ev Event) {
	for w := range ws.set {
		if !w.push(ev) {
			ws.log.Warn("dropping a watcher that fell too far behind", "buffered", watchBuffer)
			ws.remove(w)
		}
	}
}

// broadcastAll is broadcast of each of evs in order, one lock and one
// wake-up per watcher.
func (ws *watchers) broadcastAll(evs []Event) {
	if len(evs) == 0 {
		return
	}
	for w := range ws.set {
		if !w.pushAll(evs) {
			ws.log.Warn("dropping a watcher that fell too far behind", "buffered", watchBuffer)
			ws.remove(w)
		}
	}
}

// pushAll is push of each of evs in order: it queues those that fit and
// reports false when one did not (push would have refused it).
func (w *watcher) pushAll(evs []Event) bool {
	w.mu.Lock()
	n := min(len(evs), watchBuffer-w.pending)
	if n > 0 {
		w.queue = append(w.queue, evs[:n]...)
		w.pending += n
	}
	w.mu.Unlock()
	if n > 0 {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return n == len(evs)
}

// push queues ev; it reports false when w is watchBuffer events behind.
func (w *watcher) push(ev Event) bool {
	w.mu.Lock()
	if w.pending >= watchBuffer {
		w.mu.Unlock()
		return false
	}
	w.queue = append(w.queue, ev)
	w.pending++
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// halt stops the pump (which then closes ch) and lets the queue go: a
// dropped watcher's reader gets no more events, it must watch again.
func (w *watcher) halt() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.stopped = true
		w.queue = nil
		close(w.stop)
	}
}

// pump hands the queued events to ch in order until ctx ends or the
// watcher is removed or dropped, then closes ch.
func (w *watcher) pump(ctx context.Context) {
	defer close(w.ch)
	var batch []Event
	for {
		w.mu.Lock()
		if w.stopped {
			w.mu.Unlock()
			return
		}
		// Swap the queue with the drained batch, keeping one buffer for
		// each side while the watcher is busy.
		batch, w.queue = w.queue, batch[:0]
		w.mu.Unlock()
		for i := range batch {
			select {
			case <-w.stop: // a dropped watcher gets nothing more
				return
			default:
			}
			select {
			case w.ch <- batch[i]:
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			}
			batch[i] = Event{} // let its strings go
			w.mu.Lock()
			w.pending--
			w.mu.Unlock()
		}
		if cap(batch) > shrinkAbove {
			batch = nil
		}
		select {
		case <-w.wake:
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}
