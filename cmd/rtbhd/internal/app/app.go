// Package app wires rtbhd together: config -> store -> decision path ->
// BGP, with the sFlow collector and fan-out engine and the gRPC API as
// inputs, and the metrics endpoint. It owns start-up order and the staged
// shutdown.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/cmd/rtbhd/internal/config"
	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/fanout"
	"github.com/rtbh/rtbh/feed/api"
	"github.com/rtbh/rtbh/feed/sflow"
	"github.com/rtbh/rtbh/feed/web"
	"github.com/rtbh/rtbh/store"
	"github.com/rtbh/rtbh/store/postgres"
)

// Store is what rtbhd uses of its store, SQLite (store.DB) or PostgreSQL
// (postgres.DB).
type Store interface {
	detector.Store
	api.AuditReader // ListAudit
	web.History     // the console's charts
	Close() error
}

// firingBuffer is how many detector firings may wait for the decision
// path before new ones are dropped (and counted): the sFlow readers never
// block on SQLite.
const firingBuffer = 4096

// App is a configured rtbhd. New opens the store and builds every
// component; Run listens, serves and shuts down.
type App struct {
	log        *slog.Logger
	cfg        *config.Config
	configPath string

	reg     *prometheus.Registry
	db      Store
	pg      *postgres.DB // db when store.driver is postgres, else nil
	speaker *bgp.Speaker
	manager *detector.Manager
	engine  *fanout.Engine
	// reportTrust is detector.report_trust (float64 bits): the weight of
	// partial detector evidence in report fusion; reloads change it.
	reportTrust atomic.Uint64
	// detectorCfg is the engine's current configuration (reloads change it).
	detectorCfg atomic.Pointer[fanout.Config]
	sflow       *sflow.Collector
	api         *api.Server
	web         *web.Server // nil when web.listen is ""
	metrics     *http.Server

	reloads        <-chan os.Signal
	firings        chan fanout.Firing
	firingsDropped prometheus.Counter
	ready          atomic.Bool
}

// Options are start-up choices that are not part of the config file.
type Options struct {
	// Pprof serves net/http/pprof under /debug/pprof/ on metrics.listen.
	Pprof bool
	// Reload delivers SIGHUP (or any reload request); nil = never. main
	// subscribes before New, so a reload during start-up is not fatal.
	Reload <-chan os.Signal
}

// New builds rtbhd from cfg. configPath is re-read on SIGHUP ("" = no
// reload).
func New(cfg *config.Config, configPath string, logger *slog.Logger, opts Options) (*App, error) {
	logger = logger.With("instance", cfg.HA.Instance)
	a := &App{log: logger, cfg: cfg, configPath: configPath, reg: prometheus.NewRegistry(),
		reloads: opts.Reload, firings: make(chan fanout.Firing, firingBuffer)}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.firingsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rtbh_detector_firings_dropped_total",
		Help: "Detector firings dropped because the decision path was too far behind.",
	})
	a.reg.MustRegister(a.firingsDropped)

	var err error
	ok := false
	defer func() {
		if !ok {
			a.closeStore()
		}
	}()
	if err := a.openStore(); err != nil {
		return nil, err
	}
	if a.speaker, err = bgp.New(bgpConfig(cfg), logger.With("component", "bgp"), a.reg); err != nil {
		return nil, fmt.Errorf("configuring bgp: %w", err)
	}
	if a.manager, err = detector.NewManager(detector.Config{Policy: policy(cfg), Reports: reportPolicy(cfg), ServerMemory: cfg.Detector.ServerMemory,
		Retention: cfg.Store.Retention},
		a.db, a.speaker, logger.With("component", "decide"), a.reg); err != nil {
		return nil, err
	}
	if a.pg != nil {
		a.manager.SetLeadership(a.pg.Leader)
	}
	if a.engine, err = fanout.New(fanoutConfig(cfg), a.fire, a.reg); err != nil {
		return nil, fmt.Errorf("configuring detector: %w", err)
	}
	// Learned servers are remembered across restarts.
	servers, err := a.manager.Servers(context.Background())
	if err != nil {
		return nil, err
	}
	a.engine.LoadServers(servers)
	a.reportTrust.Store(math.Float64bits(cfg.Detector.ReportTrust))
	fc := fanoutConfig(cfg)
	a.detectorCfg.Store(&fc)
	if a.sflow, err = sflow.NewCollector(sflowConfig(cfg),
		a.engine, logger.With("component", "sflow"), a.reg); err != nil {
		return nil, fmt.Errorf("configuring sflow: %w", err)
	}
	if a.api, err = api.New(apiConfig(cfg), a.manager, a.neighbors, logger.With("component", "api"), a.reg); err != nil {
		return nil, fmt.Errorf("configuring api: %w", err)
	}
	a.api.SetAuditReader(a.db)
	if cfg.Web.Listen != "" {
		if a.web, err = web.New(webConfig(cfg), a.api, a.manager, a.db, logger.With("component", "web"), a.reg); err != nil {
			return nil, fmt.Errorf("configuring web: %w", err)
		}
	}
	if cfg.Metrics.Listen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
		mux.HandleFunc("/healthz", a.healthz)
		if opts.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		a.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	ok = true
	return a, nil
}

// Check builds every component's configuration from cfg, as New would,
// without opening the store or any socket, and returns what they refuse.
// The config package names keys for everything it knows; this catches what
// only a component knows (e.g. unreadable TLS files), so that --check and
// the daemon refuse exactly the same files.
func Check(cfg *config.Config) error {
	quiet := slog.New(slog.DiscardHandler)
	var errs []error
	if _, err := bgp.New(bgpConfig(cfg), quiet, nil); err != nil {
		errs = append(errs, fmt.Errorf("bgp: %w", err))
	}
	engine, err := fanout.New(fanoutConfig(cfg), func(fanout.Firing) {}, nil)
	if err != nil {
		errs = append(errs, fmt.Errorf("detector: %w", err))
	}
	if _, err := sflow.NewCollector(sflowConfig(cfg), engine, quiet, nil); err != nil {
		errs = append(errs, fmt.Errorf("sflow: %w", err))
	}
	if err := api.Check(apiConfig(cfg)); err != nil {
		errs = append(errs, fmt.Errorf("api: %w", err))
	}
	if cfg.Web.Listen != "" {
		if err := web.Check(webConfig(cfg)); err != nil {
			errs = append(errs, fmt.Errorf("web: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (a *App) healthz(w http.ResponseWriter, r *http.Request) {
	if !a.ready.Load() {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	if !a.storeUp() {
		http.Error(w, "store unavailable: announcing the last known set", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// fire is the engine's callback: hand off without ever blocking the sFlow
// readers.
func (a *App) fire(f fanout.Firing) {
	select {
	case a.firings <- f:
	default:
		a.firingsDropped.Inc()
	}
}

func (a *App) neighbors(ctx context.Context) ([]api.Neighbor, error) {
	ns, err := a.speaker.Neighbors(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Neighbor, len(ns))
	for i, n := range ns {
		out[i] = api.Neighbor{Address: n.Address.String(), ASN: n.ASN, Role: string(n.Role), State: n.State,
			RoutesSent: uint64(n.RoutesSent), StateSince: n.StateSince, Port: n.Port,
			FlowSpec: n.FlowSpec, FlowSpecSent: uint64(n.FlowSpecSent)}
	}
	return out, nil
}

// Run binds every socket (failing fast on a bad address), serves until ctx
// is done, then shuts down in stages: inputs first (API calls in flight
// finish and commit), then the decision path, then BGP without a Cease, and
// the store last.
func (a *App) Run(ctx context.Context) (err error) {
	defer func() {
		a.api.Close()
		err = errors.Join(err, a.speaker.Close(), a.closeStore())
	}()
	// A stop signal during start-up is a clean stop, not a failure.
	started := func(what string, err error) error {
		if err == nil || ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	// The stored set goes into the RIB before any session opens (Restore
	// before Start): a speaker started with routes opens its sessions in
	// graceful-restart restarting mode (Restart State and Forwarding State
	// bits), so routers keep the routes they held as stale and get all of
	// the set before End-of-RIB.
	if err := started("restoring blackholes", a.manager.Restore(ctx)); err != nil || ctx.Err() != nil {
		return err
	}
	if err := started("starting bgp", a.speaker.Start(ctx)); err != nil || ctx.Err() != nil {
		return err
	}
	if err := a.sflow.Listen(); err != nil {
		return fmt.Errorf("sflow.listen: %w", err)
	}
	if err := a.api.Listen(); err != nil {
		return fmt.Errorf("api.listen: %w", err)
	}
	if a.web != nil {
		if err := a.web.Listen(); err != nil {
			return fmt.Errorf("web.listen: %w", err)
		}
	}
	var metricsL net.Listener
	if a.metrics != nil {
		if metricsL, err = net.Listen("tcp", a.cfg.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
	}

	inputs, stopInputs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopInputs()
	core, stopCore := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCore()

	var mid errgroup.Group
	mid.Go(func() error { return a.manager.Run(core) })
	if a.pg != nil {
		mid.Go(func() error { return a.pg.Follow(core, a.manager) })
	}
	_, events := a.manager.Watch(core)
	mid.Go(func() error { a.decideFirings(core, events); return nil })
	mid.Go(func() error { a.watchSampling(core); return nil })

	// Any input that stops with an error stops everything.
	var in sync.WaitGroup
	failed := make(chan error, 4)
	goInput := func(run func() error) {
		in.Add(1)
		go func() {
			defer in.Done()
			if err := run(); err != nil {
				failed <- err
			}
		}()
	}
	goInput(func() error { return a.sflow.Run(inputs) })
	goInput(func() error { return a.api.Serve(inputs) })
	if a.web != nil {
		goInput(func() error { return a.web.Serve(inputs) })
	}
	if a.metrics != nil {
		goInput(func() error {
			if err := a.metrics.Serve(metricsL); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
	}

	a.ready.Store(true)
	a.log.Info("rtbhd running", "api", a.api.Addr(), "sflow", a.sflow.Addr(), "metrics", a.cfg.Metrics.Listen, "web", a.cfg.Web.Listen,
		"bgp_port", a.cfg.BGP.ListenPort, "neighbors", len(a.cfg.BGP.Neighbors), "active", len(a.manager.Active()))

	var errs []error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-failed:
			a.log.Error("a component failed; stopping", "err", err)
			errs = append(errs, err)
			break loop
		case <-a.reloads:
			a.reload(ctx)
		}
	}
	a.ready.Store(false)
	a.log.Info("shutting down")
	stopInputs()
	if a.metrics != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a.metrics.Shutdown(sctx)
		cancel()
	}
	in.Wait()
	close(failed)
	for err := range failed {
		errs = append(errs, err)
	}
	stopCore()
	errs = append(errs, mid.Wait())
	return errors.Join(errs...)
}

func (a *App) closeStore() error {
	if a.db == nil {
		return nil
	}
	err := a.db.Close()
	a.db = nil
	return err
}

// decideFirings turns detector firings into evidence and blackholes, and
// lifts a source's suppression when its detector blackhole is removed
// early, so that it is caught again if it carries on.
func (a *App) decideFirings(ctx context.Context, events <-chan detector.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				_, events = a.manager.Watch(ctx)
				continue
			}
			if rule, isDetector := domain.DetectorRule(ev.Blackhole.Origin); isDetector && ev.Type == detector.EventRemoved {
				a.engine.Suppress(ev.Blackhole.Prefix.Addr(), rule, time.Time{})
			}
		case f := <-a.firings:
			a.decide(ctx, f)
		}
	}
}

// samplingCheckEvery is how often the agents' sampling rates are checked
// against the rules.
const samplingCheckEvery = 5 * time.Second

// watchSampling records the sampling rate each agent reports when it is
// new or changes (rtbhd --check reads them from the store) and warns, once
// per agent and rate, about rules that rate leaves too few samples for.
func (a *App) watchSampling(ctx context.Context) {
	known := map[netip.Addr]uint32{}
	tick := time.NewTicker(samplingCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var changed []domain.AgentRate
		for _, st := range a.sflow.Agents() {
			if st.SamplingRate == 0 || known[st.Agent] == st.SamplingRate {
				continue
			}
			known[st.Agent] = st.SamplingRate
			changed = append(changed, domain.AgentRate{Agent: st.Agent, SamplingRate: st.SamplingRate, SeenAt: time.Now().UTC()})
			for _, w := range fanout.SamplingWarnings(*a.detectorCfg.Load(), st.SamplingRate) {
				a.log.Warn("sampling too sparse for a detector rule", "agent", st.Agent, "sampling_rate", st.SamplingRate, "warning", w)
			}
		}
		if len(changed) > 0 {
			if err := a.manager.RecordAgents(ctx, changed); err != nil {
				a.log.Error("recording agents' sampling rates failed", "err", err)
			}
		}
	}
}

// SamplingWarnings returns, for rtbhd --check, the rules of cfg that the
// sampling rates the agents reported to this store (by a running or
// earlier rtbhd) cannot serve; see fanout.SamplingWarnings.
func SamplingWarnings(ctx context.Context, cfg *config.Config) ([]string, error) {
	var (
		agents []domain.AgentRate
		err    error
	)
	if cfg.Store.Driver == config.DriverPostgres {
		var pc postgres.Config
		if pc, err = postgresConfig(cfg); err == nil {
			agents, err = postgres.ReadAgents(ctx, pc)
		}
	} else {
		agents, err = store.ReadAgents(ctx, cfg.Store.Path)
	}
	if err != nil {
		return nil, err
	}
	var out []string
	fc := fanoutConfig(cfg)
	for _, ag := range agents {
		for _, w := range fanout.SamplingWarnings(fc, ag.SamplingRate) {
			out = append(out, fmt.Sprintf("agent %s (last seen %s): %s", ag.Agent, ag.SeenAt.Format(time.RFC3339), w))
		}
	}
	return out, nil
}

// decide acts on one firing of the detector engine.
func (a *App) decide(ctx context.Context, f fanout.Firing) {
	switch f.Kind {
	case fanout.ServerLearned:
		s := domain.Server{Address: f.Source, Rule: f.Rule, Clients: f.Destinations, FirstSeen: f.FirstSeen, LastSeen: f.At}
		err := a.manager.LearnServer(ctx, s, f.NewServer)
		if f.NewServer || err != nil {
			a.log.Info("detector learned a server: its rule will not flag it", "rule", f.Rule, "server", f.Source,
				"clients", f.Destinations, "err", err)
		}
		return
	case fanout.Partial:
		trust := math.Float64frombits(a.reportTrust.Load())
		if trust <= 0 {
			return
		}
		err := a.manager.Partial(ctx, a.evidence(f), trust)
		a.log.Info("detector rule at half its thresholds: counts in report fusion", "rule", f.Rule, "source", f.Source,
			"destinations", f.Destinations, "sampled_destinations", f.SampledDestinations, "packets", f.Packets,
			"trust", trust, "err", err)
		return
	}
	b, err := a.manager.Detected(ctx, a.evidence(f), f.TTL)
	level := slog.LevelInfo
	if err != nil && detector.KindOf(err) == 0 {
		level = slog.LevelError
	}
	a.log.Log(ctx, level, "detector rule fired", "rule", f.Rule, "action", f.Action, "source", f.Source,
		"destinations", f.Destinations, "sampled_destinations", f.SampledDestinations, "packets", f.Packets, "err", err)
	if b != nil {
		a.engine.Suppress(f.Source, f.Rule, b.ExpiresAt)
	}
}

// evidence is a firing's evidence as the decision path records it.
func (a *App) evidence(f fanout.Firing) domain.Evidence {
	return domain.Evidence{
		Address: f.Source, Rule: f.Rule, Action: f.Action, Protocol: protocolName(f.Protocol), DstPorts: f.DstPorts,
		DistinctDestinations: f.Destinations, EstimatedPackets: f.Packets, EstimatedConnections: f.Connections,
		Window: f.Window, FirstSeen: f.FirstSeen, LastSeen: f.LastSeen, Examples: f.ExampleAddrs(),
	}
}

// reload re-reads the config file (SIGHUP) and applies the policy, detector,
// reports, BGP policy and API client sections without dropping sessions.
// Keys that need a restart (listen addresses, store path) are reported.
func (a *App) reload(ctx context.Context) {
	if a.configPath == "" {
		return
	}
	cfg, err := config.Load(a.configPath)
	if err != nil {
		a.log.Error("config reload failed; keeping the running config", "err", err)
		return
	}
	// All or nothing: every component checks its part first, and nothing
	// is applied unless all accept it.
	bc, clients, fc := bgpConfig(cfg), apiConfig(cfg).Clients, fanoutConfig(cfg)
	var errs []error
	if err := a.speaker.CheckReconfigure(bc); err != nil {
		errs = append(errs, fmt.Errorf("bgp: %w", err))
	}
	if err := api.CheckClients(clients); err != nil {
		errs = append(errs, fmt.Errorf("api.clients: %w", err))
	}
	if err := fanout.CheckConfig(fc); err != nil {
		errs = append(errs, fmt.Errorf("detector: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		a.log.Error("config reload refused; nothing of it applied, keeping the running config", "err", err)
		return
	}
	// BGP first: after its check it can still fail where GoBGP refuses a
	// call, and then the rest is not applied either.
	if err := a.speaker.Reconfigure(ctx, bc); err != nil {
		a.log.Error("config reload failed applying bgp (bgp may be partly reconfigured); nothing else applied", "err", err)
		return
	}
	if err := a.engine.Reconfigure(fc); err != nil {
		// Checked above: not expected.
		a.log.Error("config reload: detector refused a checked config; bgp applied, nothing else", "err", err)
		return
	}
	a.detectorCfg.Store(&fc)
	if err := a.api.SetClients(clients); err != nil {
		a.log.Error("config reload: api refused checked clients; bgp and detector applied, nothing else", "err", err)
		return
	}
	a.manager.SetPolicy(policy(cfg), reportPolicy(cfg))
	a.manager.SetServerMemory(cfg.Detector.ServerMemory)
	a.manager.SetRetention(cfg.Store.Retention)
	a.reportTrust.Store(math.Float64bits(cfg.Detector.ReportTrust))
	for key, changed := range map[string]bool{
		"store.path":         cfg.Store.Path != a.cfg.Store.Path,
		"store.driver/dsn":   cfg.Store.Driver != a.cfg.Store.Driver || cfg.Store.DSN != a.cfg.Store.DSN || cfg.Store.PasswordFile != a.cfg.Store.PasswordFile,
		"ha.instance":        cfg.HA.Instance != a.cfg.HA.Instance,
		"sflow.listen":       cfg.SFlow.Listen != a.cfg.SFlow.Listen,
		"api.listen":         cfg.API.Listen != a.cfg.API.Listen || cfg.API.TLS != a.cfg.API.TLS,
		"metrics.listen":     cfg.Metrics.Listen != a.cfg.Metrics.Listen,
		"web.listen/tls":     cfg.Web != a.cfg.Web,
		"bgp.listen_address": cfg.BGP.ListenAddress != a.cfg.BGP.ListenAddress || cfg.BGP.ListenPort != a.cfg.BGP.ListenPort,
		"bgp.asn/router_id":  cfg.BGP.ASN != a.cfg.BGP.ASN || cfg.BGP.RouterID != a.cfg.BGP.RouterID,
	} {
		if changed {
			a.log.Warn("config reload: this change needs a restart", "key", key)
		}
	}
	a.cfg = cfg
	a.log.Info("config reloaded", "path", a.configPath)
}

func policy(cfg *config.Config) detector.Policy {
	p := cfg.Policy
	return detector.Policy{OwnPrefixes: p.OwnPrefixes, NeverBlackhole: domain.NewPrefixSet(p.NeverBlackhole),
		Protected: protection(cfg), MaxActive: p.MaxActive,
		DefaultTTL: p.DefaultTTL, MaxTTL: p.MaxTTL, MinPrefixLenV4: p.MinPrefixLenV4, MinPrefixLenV6: p.MinPrefixLenV6}
}

// protection is rtbhd's own infrastructure, which no blackhole may cover
// (SPEC "Safety defaults and limits"): the BGP router id, every neighbor,
// both next hops, the addresses rtbhd listens on (not the wildcards) and
// every sFlow agent entry. bgp.listen_address is protected too, beside the
// SPEC's list: it is the address routers reach rtbhd on.
func protection(cfg *config.Config) *detector.Protection {
	var ps []detector.Protected
	host := func(a netip.Addr, label string) {
		if a.IsValid() && !a.IsUnspecified() {
			ps = append(ps, detector.Protected{Prefix: domain.HostPrefix(a.Unmap()), Label: label})
		}
	}
	host(cfg.BGP.RouterID, "BGP router id")
	for _, n := range cfg.BGP.Neighbors {
		host(n.Address, "BGP neighbor")
	}
	host(cfg.BGP.NextHopV4, "IPv4 next hop")
	host(cfg.BGP.NextHopV6, "IPv6 next hop")
	if a, err := netip.ParseAddr(cfg.BGP.ListenAddress); err == nil {
		host(a, "bgp.listen_address")
	}
	for _, l := range []struct{ key, listen string }{
		{"api.listen", cfg.API.Listen},
		{"metrics.listen", cfg.Metrics.Listen},
		{"sflow.listen", cfg.SFlow.Listen},
		{"web.listen", cfg.Web.Listen},
	} {
		for _, a := range listenAddrs(l.listen) {
			host(a, l.key)
		}
	}
	for _, p := range cfg.SFlow.Agents {
		ps = append(ps, detector.Protected{Prefix: p, Label: "sFlow agent"})
	}
	return detector.NewProtection(ps)
}

// listenAddrs returns the addresses of a host:port listen address: none
// for a wildcard ("", 0.0.0.0, ::) or an unusable value, both loopback
// addresses for localhost.
func listenAddrs(listen string) []netip.Addr {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return nil
	}
	if host == "localhost" {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.IsUnspecified() {
		return nil
	}
	return []netip.Addr{a}
}

func reportPolicy(cfg *config.Config) detector.ReportPolicy {
	return detector.ReportPolicy{Window: cfg.Reports.Window, Threshold: cfg.Reports.Threshold, TTL: cfg.Reports.TTL,
		MinReporters: cfg.Reports.MinReporters, MaxTrackedAddresses: cfg.Reports.MaxTrackedAddresses}
}

func bgpConfig(cfg *config.Config) bgp.Config {
	b := cfg.BGP
	out := bgp.Config{ASN: b.ASN, RouterID: b.RouterID, ListenAddress: b.ListenAddress, ListenPort: int(b.ListenPort),
		NextHopV4: b.NextHopV4, NextHopV6: b.NextHopV6, GracefulRestart: b.GracefulRestart,
		GracefulRestartTime: b.GracefulRestartTime, LongLivedStaleTime: b.LongLivedStaleTime,
		OwnPrefixes: cfg.Policy.OwnPrefixes, DefaultMaxRoutes: cfg.Policy.MaxActive}
	for _, n := range b.Neighbors {
		out.Neighbors = append(out.Neighbors, bgp.Neighbor{Address: n.Address, ASN: n.ASN, Role: bgp.Role(n.Role),
			Port: n.Port, Passive: n.Passive, Multihop: n.Multihop, Password: n.Password,
			Communities: n.Communities, LargeCommunities: n.LargeCommunities, MaxRoutes: n.MaxRoutes,
			FlowSpec: n.FlowSpec, MaxFlowSpec: n.MaxFlowSpec})
	}
	return out
}

func fanoutConfig(cfg *config.Config) fanout.Config {
	d := cfg.Detector
	out := fanout.Config{SubscriberPrefixes: d.SubscriberPrefixes, NeverBlackhole: cfg.Policy.NeverBlackhole,
		Window: d.Window, MaxTrackedSources: d.MaxTrackedSources, ServerMemory: d.ServerMemory}
	for _, r := range d.Rules {
		out.Rules = append(out.Rules, fanout.Rule{Name: r.Name, Protocol: protocolNumber(r.Protocol), DstPorts: r.DstPorts,
			MinDestinations: r.MinDestinations, MinPackets: r.MinPackets, Exempt: r.Exempt, Action: r.Action, TTL: r.TTL,
			MinSamples: r.MinSamples, SkipServers: r.SkipServers, ServerMinClients: r.ServerMinClients})
	}
	return out
}

// protocolNumber and protocolName map the config's protocol names to IP
// protocol numbers and back.
func protocolNumber(name string) uint8 {
	if name == config.ProtocolUDP {
		return fanout.ProtocolUDP
	}
	return fanout.ProtocolTCP
}

func protocolName(n uint8) string {
	if n == fanout.ProtocolUDP {
		return config.ProtocolUDP
	}
	return config.ProtocolTCP
}

func sflowConfig(cfg *config.Config) sflow.Config {
	return sflow.Config{Listen: cfg.SFlow.Listen, Agents: cfg.SFlow.Agents, ReceiveBuffer: cfg.SFlow.ReceiveBuffer}
}

func webConfig(cfg *config.Config) web.Config {
	return web.Config{Listen: cfg.Web.Listen, TLSCert: cfg.Web.TLS.Cert, TLSKey: cfg.Web.TLS.Key}
}

func apiConfig(cfg *config.Config) api.Config {
	out := api.Config{Listen: cfg.API.Listen, TLSCert: cfg.API.TLS.Cert, TLSKey: cfg.API.TLS.Key, ClientCA: cfg.API.TLS.ClientCA}
	for _, c := range cfg.API.Clients {
		out.Clients = append(out.Clients, api.Client{Name: c.Name, Role: c.Role, TokenSHA256: c.TokenSHA256,
			HasToken: c.HasToken, CertName: c.CertName, Prefixes: c.Prefixes, Trust: c.Trust, Rate: c.Rate})
	}
	return out
}
