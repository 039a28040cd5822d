package bgp

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
)

// pipelineDepth is how many GoBGP calls are in flight at once for a batch.
// GoBGP serves every AddPath/DeletePath in one goroutine, one call at a
// time; with a single caller that goroutine sleeps while each result goes
// back and the next request comes in (a few goroutine hand-offs per route).
// Keeping several calls queued removes that idle time: measured 2-3x faster
// for 100k routes on 2 cores.
const pipelineDepth = 8

// forEach calls fn for every prefix, from up to pipelineDepth goroutines
// for large batches. It returns the prefixes for which fn failed (in no
// particular order) and the first error.
func forEach(ctx context.Context, ps []netip.Prefix, fn func(context.Context, netip.Prefix) error) ([]netip.Prefix, error) {
	if len(ps) < 2*pipelineDepth {
		for i, p := range ps {
			if err := ctx.Err(); err != nil {
				return ps[i:], err
			}
			if err := fn(ctx, p); err != nil {
				return ps[i:], err
			}
		}
		return nil, nil
	}
	var (
		next     atomic.Int64
		mu       sync.Mutex
		failed   []netip.Prefix
		firstErr error
		wg       sync.WaitGroup
	)
	for range pipelineDepth {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ps) {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = fn(ctx, ps[i])
				}
				if err != nil {
					mu.Lock()
					failed = append(failed, ps[i])
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return failed, firstErr
}
