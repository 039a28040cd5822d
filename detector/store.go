package detector

import (
	"context"
	"net/netip"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// Store is what the decision path needs from storage. The Manager owns this
// interface; store.DB (SQLite) implements it, and so can any other backend
// with the same semantics:
//
//   - Submit queues w and returns a function that waits for its outcome
//     (called exactly once). Writes are applied in the order they were
//     submitted, each atomically; a nil outcome means w is durable, an
//     error that nothing of w is. An error that may pass (disk full, I/O
//     error, lock timeout, closed store, or a write that does not fit the
//     stored state after an earlier failure) is
//     domain.ErrStoreUnavailable (errors.Is).
//   - ActiveBlackholes returns every entry not ended when last written,
//     including those whose expires_at has passed (the Manager expires them).
//   - Prune deletes reports, evidence and audit rows older than before, in
//     batches of at most batch rows, keeping the rows of active blackholes
//     (store.retention).
type Store interface {
	Submit(w *domain.Write) func() error
	ActiveBlackholes(ctx context.Context) ([]domain.Blackhole, error)
	ReportsSince(ctx context.Context, since time.Time) ([]domain.Report, error)
	Offenses(ctx context.Context, addr netip.Addr) (int, error)
	Offender(ctx context.Context, addr netip.Addr, limit int) (domain.Offender, error)
	RecentEvidence(ctx context.Context, shadowOnly bool, limit int) ([]domain.Evidence, error)
	Servers(ctx context.Context, since time.Time) ([]domain.Server, error)
	Prune(ctx context.Context, before time.Time, batch int) (domain.Pruned, error)
}

// commit submits w and waits until it is durable.
func commit(s Store, w *domain.Write) error { return s.Submit(w)() }
