package app

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtbh/rtbh/cmd/rtbhd/internal/config"
	"github.com/rtbh/rtbh/store"
	"github.com/rtbh/rtbh/store/postgres"
)

// openTimeout bounds connecting to PostgreSQL and migrating at start.
const openTimeout = 30 * time.Second

// openStore opens the store that store.driver names and registers the
// store and instance metrics.
func (a *App) openStore() error {
	cfg := a.cfg
	logger := a.log.With("component", "store")
	switch cfg.Store.Driver {
	case config.DriverPostgres:
		pc, err := postgresConfig(cfg)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
		defer cancel()
		pg, err := postgres.Open(ctx, pc, logger)
		if err != nil {
			return err
		}
		a.db, a.pg = pg, pg
		pg.ObserveCommits(a.observeCommit())
	default:
		db, err := store.Open(cfg.Store.Path, logger)
		if err != nil {
			return err
		}
		db.SetInstance(cfg.HA.Instance)
		db.ObserveCommits(a.observeCommit())
		a.db = db
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "rtbh_instance_info",
		Help:        "This rtbhd: its ha.instance (label ha_instance: Prometheus owns \"instance\") and store.driver.",
		ConstLabels: prometheus.Labels{"ha_instance": cfg.HA.Instance, "driver": cfg.Store.Driver},
	})
	info.Set(1)
	a.reg.MustRegister(info,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rtbh_store_up",
			Help: "Whether the store works (PostgreSQL: reachable, listener connected, writes committing): 1 yes, 0 = announcing the last known set.",
		}, func() float64 {
			if a.storeUp() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rtbh_store_leader",
			Help: "Whether this instance does the once-only work (expiry, report fusion, retention): 1 yes; always 1 on SQLite.",
		}, func() float64 {
			if a.pg == nil || a.pg.Leader() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rtbh_store_sync_lag_seconds",
			Help: "How long ago this instance last knew it had applied every change committed through any instance (0 = following live; always 0 on SQLite).",
		}, func() float64 {
			if a.pg == nil {
				return 0
			}
			return a.pg.SyncLag().Seconds()
		}))
	return nil
}

// observeCommit registers rtbh_store_commit_seconds and returns what
// feeds it. Every acknowledged write waits for one group commit (and for
// the one before it, when it arrives during a commit), so a store whose
// commits have a slow tail gives the API that tail: this histogram tells
// a slow disk (fsync) or database from a slow rtbhd.
func (a *App) observeCommit() func(time.Duration) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "rtbh_store_commit_seconds",
		Help:    "Time of each group commit of the store, from its begin until durable (SQLite: WAL fsync; PostgreSQL: COMMIT acknowledged).",
		Buckets: []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1},
	})
	a.reg.MustRegister(h)
	return func(d time.Duration) { h.Observe(d.Seconds()) }
}

// storeUp reports whether the store works; SQLite is in-process: up while
// open (its write failures answer UNAVAILABLE one by one).
func (a *App) storeUp() bool { return a.pg == nil || a.pg.Up() }

// postgresConfig is the store config of store.driver postgres; the
// password comes from store.password_file, else the DSN or PGPASSWORD
// (which the driver reads).
func postgresConfig(cfg *config.Config) (postgres.Config, error) {
	pc := postgres.Config{DSN: cfg.Store.DSN, Instance: cfg.HA.Instance}
	if f := cfg.Store.PasswordFile; f != "" {
		pw, err := config.ReadPassword(f)
		if err != nil {
			return pc, fmt.Errorf("store.password_file: %w", err)
		}
		pc.Password = pw
	}
	return pc, nil
}
