package detector

import (
	"log/slog"
)

// watchBuffer is how many events a watcher may fall behind before it is
// dropped (its channel closed) so that one slow client cannot stall rtbh.
const watchBuffer = 65536

type watcher struct{ ch chan Event }

// watchers fans changes out to the open watch streams. It is not safe for
// concurrent use: the Manager's mutex guards it, so that a watcher's
// snapshot and its first event are taken in one critical section.
type watchers struct {
	log *slog.Logger
	set map[*watcher]struct{}
}

func newWatchers(log *slog.Logger) *watchers {
	return &watchers{log: log, set: make(map[*watcher]struct{})}
}

func (ws *watchers) add() *watcher {
	w := &watcher{ch: make(chan Event, watchBuffer)}
	ws.set[w] = struct{}{}
	return w
}

// remove closes w's channel unless it was already dropped.
func (ws *watchers) remove(w *watcher) {
	if _, ok := ws.set[w]; ok {
		delete(ws.set, w)
		close(w.ch)
	}
}

// broadcast sends ev to every watcher, dropping those that fell behind.
func (ws *watchers) broadcast(ev Event) {
	for w := range ws.set {
		select {
		case w.ch <- ev:
		default:
			ws.log.Warn("dropping a watcher that fell too far behind", "buffered", watchBuffer)
			ws.remove(w)
		}
	}
}
