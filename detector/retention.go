package detector

import (
	"context"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
)

// RetainEvery is how often store.retention is applied (also once at start).
const RetainEvery = time.Hour

// SetRetention changes store.retention (config reload); 0 keeps everything.
func (m *Manager) SetRetention(d time.Duration) {
	m.mu.Lock()
	m.retention = d
	m.mu.Unlock()
}

// retain applies the retention at once and then every RetainEvery until
// ctx ends.
func (m *Manager) retain(ctx context.Context) {
	t := time.NewTicker(RetainEvery)
	defer t.Stop()
	for {
		m.pruneStore(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneStore deletes the stored rows older than the retention, keeping
// those of active blackholes. A failure is logged and retried on the next
// pass: it loses nothing and the decision path does not depend on it.
func (m *Manager) pruneStore(ctx context.Context) {
	m.mu.Lock()
	keep := m.retention
	m.mu.Unlock()
	if keep <= 0 || !m.leads() {
		return
	}
	before := m.now().Add(-keep)
	n, err := m.db.Prune(ctx, before, 0)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Error("applying store.retention failed; retrying in an hour", "err", err, "reports", n.Reports, "evidence", n.Evidence, "audit", n.Audit)
		}
		return
	}
	if n != (domain.Pruned{}) {
		m.log.Info("store.retention applied", "before", before.UTC().Format(time.RFC3339), "reports", n.Reports, "evidence", n.Evidence, "audit", n.Audit)
	}
}
