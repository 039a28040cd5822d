package detector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// MaxBatchItems is the most items one AddBatch or RemoveBatch may carry
// (SPEC "Bulk and scale": 10,000 a call).
const MaxBatchItems = 10000

// Accepted is one accepted item of a batch.
type Accepted struct {
	Index     int // in the request, from 0
	Blackhole domain.Blackhole
	Change    Change // for adds
}

// Refused is one refused item of a batch: Err is the refusal (a *Error)
// the single call would have returned for it.
type Refused struct {
	Index int
	Err   error
}

// groupSubmitter is a Store that can commit many writes as one unit, all
// or nothing (SubmitAll of store.DB and of store/postgres.DB). A Store
// without it gets a batch's writes submitted one by one: each is still
// atomic and in order, and the call waits for all of them, but they may
// land in different transactions.
type groupSubmitter interface {
	SubmitAll(ws []*domain.Write) func() error
}

// errBatchTooLarge refuses a batch above MaxBatchItems.
func errBatchTooLarge(n int) error {
	return refuse(KindInvalid, "%d items in one call, at most %d", n, MaxBatchItems)
}

// AddBatch is Add for many requests: each is decided exactly as Add
// decides it (decideAdd, in request order, under one hold of the lock, so
// a later item sees the earlier ones — max_active counts them), the refused
// ones are returned with their index, and the accepted ones are written in
// one store commit (each with its own audit row) before AddBatch returns.
// Watchers and BGP see them once that commit is durable. A store failure
// fails the whole call and acknowledges none of it.
func (m *Manager) AddBatch(ctx context.Context, reqs []Request) ([]Accepted, []Refused, error) {
	return m.decideBatch(len(reqs), "blackholes", func(i int, now time.Time, sc *scratch) (decision, error) {
		return m.decideAdd(reqs[i], now, sc)
	})
}

// RemoveBatch is Remove for many requests, decided one by one as Remove
// decides (checkRemove, then decideRemove) and committed together as
// AddBatch commits. A prefix named twice is refused the second time
// (NOT_FOUND: the first already removed it).
func (m *Manager) RemoveBatch(ctx context.Context, reqs []RemoveRequest) ([]Accepted, []Refused, error) {
	return m.decideBatch(len(reqs), "removals", func(i int, now time.Time, sc *scratch) (decision, error) {
		if err := checkRemove(reqs[i]); err != nil {
			return decision{}, err
		}
		return m.decideRemove(reqs[i], now, sc)
	})
}

// decideBatch decides n items with decide, in order, under one hold of the
// lock, lists the refusals with their index, and writes the accepted ones
// in one store unit before it returns. An error that is not a refusal
// stops the batch with nothing written; a store failure acknowledges none
// of it.
func (m *Manager) decideBatch(n int, what string, decide func(i int, now time.Time, sc *scratch) (decision, error)) ([]Accepted, []Refused, error) {
	if n > MaxBatchItems {
		return nil, nil, errBatchTooLarge(n)
	}
	var (
		accepted = make([]Accepted, 0, n)
		refused  []Refused
		ds       = make([]decision, 0, n)
	)
	m.mu.Lock()
	if m.stale {
		m.mu.Unlock()
		return nil, nil, errRecovering
	}
	now := m.now().UTC()
	sc := newScratch(n)
	for i := range n {
		d, err := decide(i, now, sc)
		if err != nil {
			if KindOf(err) == 0 { // not a refusal: nothing of the batch was decided wrongly, but stop
				m.mu.Unlock()
				return nil, nil, err
			}
			refused = append(refused, Refused{Index: i, Err: err})
			continue
		}
		ds = append(ds, d)
		accepted = append(accepted, Accepted{Index: i, Blackhole: d.b, Change: d.change})
	}
	wait := m.submitBatch(ds)
	m.mu.Unlock()
	if err := wait(); err != nil {
		m.writeFailed(err)
		return nil, nil, fmt.Errorf("recording %d %s: %w", len(ds), what, err)
	}
	return accepted, refused, nil
}

// submitBatch submits the decisions' writes as one unit and returns the
// function that waits for it. m.mu must be held.
func (m *Manager) submitBatch(ds []decision) func() error {
	if len(ds) == 0 {
		return func() error { return nil }
	}
	g, ok := m.db.(groupSubmitter)
	if !ok {
		waits := make([]func() error, len(ds))
		for i, d := range ds {
			waits[i] = m.submit(d.w, m.applyFunc(d))
		}
		return func() error {
			var errs []error
			for _, wait := range waits {
				errs = append(errs, wait())
			}
			return errors.Join(errs...)
		}
	}
	ws := make([]*domain.Write, len(ds))
	for i, d := range ds {
		ws[i] = d.w
	}
	apply := func() { m.applyBatch(ds) }
	f := &inflight{wait: g.SubmitAll(ws), apply: apply}
	m.cmu.Lock()
	m.unsettled = append(m.unsettled, f)
	m.cmu.Unlock()
	return func() error { return m.settle(f) }
}

// applyBatch applies a committed batch's decisions in order, as
// applyDecision would one by one, but hands their events to the watchers
// and their route changes to the route queue all at once. m.cmu must be
// held.
func (m *Manager) applyBatch(ds []decision) {
	routes := make([]routeChange, 0, len(ds))
	evs := make([]Event, 0, len(ds))
	for i := range ds {
		d := &ds[i]
		if d.ev == 0 {
			continue
		}
		ev := d.event()
		m.commitView(ev)
		evs = append(evs, ev)
		if d.hasRoute {
			routes = append(routes, d.routeChange())
		}
	}
	m.watchers.broadcastAll(evs)
	m.routeQ.push(routes...)
}
