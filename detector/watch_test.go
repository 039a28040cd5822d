package detector

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

func watchEvent(i int) Event {
	a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	return Event{Type: EventAdded, Blackhole: domain.Blackhole{Prefix: domain.HostPrefix(a)}, Actor: "noc"}
}

// A watcher that reads nothing is kept up to watchBuffer events behind and
// dropped (its channel closed, promptly) at the next one; one that reads
// gets every event in order, burst after burst — events broadcast one by
// one or in batches (broadcastAll, as a committed AddBatch hands them on).
func TestWatcherQueue(t *testing.T) {
	t.Run("one by one", func(t *testing.T) { testWatcherQueue(t, false) })
	t.Run("in batches", func(t *testing.T) { testWatcherQueue(t, true) })
}

func testWatcherQueue(t *testing.T, batched bool) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // the pumps end with their watchers
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws := newWatchers(quiet)
	start := func() *watcher {
		w := ws.add()
		go w.pump(ctx)
		return w
	}
	readN := func(w *watcher, from, n int) {
		t.Helper()
		timeout := time.NewTimer(10 * time.Second)
		defer timeout.Stop()
		for i := from; i < from+n; i++ {
			select {
			case ev, ok := <-w.ch:
				if !ok {
					t.Fatalf("channel closed at event %d", i)
				}
				if want := watchEvent(i); ev != want {
					t.Fatalf("event %d = %+v, want %+v", i, ev, want)
				}
			case <-timeout.C:
				t.Fatalf("timed out at event %d", i)
			}
		}
	}

	reader, idle := start(), start()
	for burst := range 2 {
		if batched { // in batches of 10,000: the buffer's end falls inside one
			evs := make([]Event, 0, MaxBatchItems)
			for i := range watchBuffer {
				evs = append(evs, watchEvent(burst*watchBuffer+i))
				if len(evs) == cap(evs) || i == watchBuffer-1 {
					ws.broadcastAll(evs)
					evs = evs[:0]
				}
			}
		} else {
			for i := range watchBuffer {
				ws.broadcast(watchEvent(burst*watchBuffer + i))
			}
		}
		readN(reader, burst*watchBuffer, watchBuffer)
		// The pump counts an event as received once its send returned.
		testkit.WaitFor(t, 5*time.Second, "the reader to be 0 events behind", func() bool {
			reader.mu.Lock()
			defer reader.mu.Unlock()
			return reader.pending == 0
		})
		if burst == 0 {
			// idle is exactly watchBuffer behind: still there.
			if _, ok := ws.set[idle]; !ok {
				t.Fatal("a watcher watchBuffer events behind was dropped")
			}
		}
	}
	if _, ok := ws.set[reader]; !ok {
		t.Fatal("a watcher that kept up was dropped")
	}
	if _, ok := ws.set[idle]; ok {
		t.Fatal("a watcher more than watchBuffer events behind was kept")
	}
	// Dropped: at most the event already in flight, then closed.
	got := 0
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for closed := false; !closed; {
		select {
		case _, ok := <-idle.ch:
			if ok {
				got++
			}
			closed = !ok
		case <-timeout.C:
			t.Fatal("a dropped watcher's channel was not closed")
		}
	}
	if got > 1 {
		t.Fatalf("a dropped watcher still received %d events", got)
	}
	// Ending ctx closes the channel of a watcher in good standing.
	cancel()
	select {
	case _, ok := <-reader.ch:
		if ok {
			t.Fatal("event after the end of ctx")
		}
	case <-timeout.C:
		t.Fatal("the channel was not closed when ctx ended")
	}
}
