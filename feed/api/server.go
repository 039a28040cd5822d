package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// Backend is the decision path the API writes through (detector.Manager).
type Backend interface {
	Add(ctx context.Context, req detector.Request) (domain.Blackhole, detector.Change, error)
	Remove(ctx context.Context, req detector.RemoveRequest) (domain.Blackhole, error)
	// Active returns the active blackholes sorted by prefix.
	Active() []domain.Blackhole
	// AddBatch and RemoveBatch decide each request as Add and Remove do and
	// commit the accepted ones together.
	AddBatch(ctx context.Context, reqs []detector.Request) ([]detector.Accepted, []detector.Refused, error)
	RemoveBatch(ctx context.Context, reqs []detector.RemoveRequest) ([]detector.Accepted, []detector.Refused, error)
	// List returns one page of the active blackholes and whether more follow.
	List(q detector.ListQuery) ([]domain.Blackhole, bool)
	// Watch returns the active set and a channel of later changes. The
	// channel is closed when ctx ends or the watcher falls too far behind.
	Watch(ctx context.Context) ([]domain.Blackhole, <-chan detector.Event)
	SubmitReports(ctx context.Context, who detector.Reporter, reports []detector.Report) (accepted int, rejected []detector.Rejected, err error)
	// Offender returns what is recorded about addr (with its report score
	// and its parts) and its blackhole when active (else nil).
	Offender(ctx context.Context, addr netip.Addr) (domain.Offender, *domain.Blackhole, error)
	// Offenders returns the most recent detector evidence, newest first.
	Offenders(ctx context.Context, shadowOnly bool, limit int) ([]domain.Evidence, error)
	// Servers returns the learned servers remembered now.
	Servers(ctx context.Context) ([]domain.Server, error)
}

// Neighbor is one BGP session as shown by ListNeighbors.
type Neighbor struct {
	Address    string
	ASN        uint32
	Role       string // border or peer
	State      string // idle, connect, active, opensent, openconfirm, established
	RoutesSent uint64
	StateSince time.Time
	Port       uint16
	// FlowSpec: the neighbor has flowspec: true; FlowSpecSent is the
	// number of FlowSpec filters advertised to it.
	FlowSpec     bool
	FlowSpecSent uint64
}

// NeighborLister returns the configured BGP neighbors and their state.
type NeighborLister func(ctx context.Context) ([]Neighbor, error)

// shutdownTimeout bounds the graceful stop before in-flight calls are cut.
const shutdownTimeout = 5 * time.Second

// Server is rtbhd's gRPC API server.
type Server struct {
	cfg       Config
	backend   Backend
	neighbors NeighborLister
	logger    *slog.Logger
	metrics   *metrics
	clients   *registry
	audit     AuditReader // ListAudit's source (SetAuditReader)

	grpc   *grpc.Server
	health *health.Server

	mu       sync.Mutex
	lis      net.Listener
	stopping chan struct{} // closed when Serve begins to stop: ends watch streams
}

// Check validates cfg as New does, including loading the TLS files,
// without building a server (for rtbhd --check).
func Check(cfg Config) error {
	_, _, err := prepare(cfg)
	return err
}

// prepare applies defaults, validates cfg and loads its TLS configuration
// (nil when plaintext).
func prepare(cfg Config) (Config, *tls.Config, error) {
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return cfg, nil, err
	}
	if !cfg.tlsEnabled() {
		return cfg, nil, nil
	}
	tc, err := serverTLS(cfg)
	return cfg, tc, err
}

// New checks cfg and builds a server; it opens no socket (see Listen).
// Plaintext on a non-loopback listen address is refused here.
func New(cfg Config, backend Backend, neighbors NeighborLister, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if backend == nil {
		return nil, errors.New("creating API server: nil backend")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, tc, err := prepare(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating API server: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("creating API server: %w", err)
	}
	s := &Server{
		cfg:       cfg,
		backend:   backend,
		neighbors: neighbors,
		logger:    logger,
		metrics:   m,
		clients:   newRegistry(cfg.Clients),
		health:    health.NewServer(),
		stopping:  make(chan struct{}),
	}
	opts := append(s.interceptorChain(),
		grpc.InTapHandle(s.tapAuthenticate),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentStreams)),
		// Calls run on a pool of long-lived goroutines whose stacks have
		// already grown, instead of a new goroutine per call that grows its
		// stack again (runtime.newstack/copystack were ~10% of rtbhd's CPU
		// under 20 AddBlackhole calls in flight). When all are busy, gRPC
		// starts a goroutine for the call as before.
		grpc.NumStreamWorkers(streamWorkers),
		grpc.MaxRecvMsgSize(cfg.MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	s.grpc = grpc.NewServer(opts...)
	rtbhv1.RegisterBlackholeServiceServer(s.grpc, &blackholeService{s: s})
	rtbhv1.RegisterReportServiceServer(s.grpc, &reportService{s: s})
	rtbhv1.RegisterStatusServiceServer(s.grpc, &statusService{s: s})
	rtbhv1.RegisterAuditServiceServer(s.grpc, &auditService{s: s})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	return s, nil
}

// streamWorkers is the size of the pool of goroutines that run calls.
const streamWorkers = 64

// serverTLS loads the server key pair and, when set, the client CA.
// Client certificates are optional at the handshake (token clients also
// use TLS), but one that is sent must verify against the client CA and be
// valid now, or the handshake fails.
func serverTLS(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("loading api.tls.cert/key: %w", err)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.NoClientCert,
	}
	if cfg.ClientCA != "" {
		pem, err := os.ReadFile(cfg.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("reading api.tls.client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading api.tls.client_ca %s: no PEM certificate", cfg.ClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// Listen opens the TCP socket. Call it before Serve.
func (s *Server) Listen() error {
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening for gRPC on %s: %w", s.cfg.Listen, err)
	}
	s.mu.Lock()
	s.lis = lis
	s.mu.Unlock()
	return nil
}

// Addr returns the listening address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.Addr()
}

// Serve answers calls until ctx is done, then stops: watch streams end
// with UNAVAILABLE, in-flight unary calls get up to 5 s to finish (so an
// acknowledged write is always committed), then the rest are cut.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	lis := s.lis
	s.mu.Unlock()
	if lis == nil {
		return errors.New("serving gRPC: Listen was not called")
	}
	s.logger.Info("gRPC API listening", "addr", lis.Addr().String(), "tls", s.cfg.tlsEnabled(), "mtls", s.cfg.ClientCA != "")
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	select {
	case err := <-errc:
		s.stop()
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("serving gRPC: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	s.stop()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	t := time.NewTimer(shutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.logger.Warn("gRPC graceful stop timed out, closing remaining calls", "timeout", shutdownTimeout)
		s.grpc.Stop()
		<-done
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("serving gRPC: %w", err)
	}
	return nil
}

// Close releases a server whether or not it was served: its call workers
// and any calls still open (Serve, once ctx is done, stops gracefully by
// itself first). Closing twice is harmless.
func (s *Server) Close() {
	s.stop()
	s.grpc.Stop()
}

// stop marks the server as stopping: health turns NOT_SERVING and watch
// streams end.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopping:
	default:
		close(s.stopping)
		s.health.Shutdown()
	}
}

// SetClients replaces the client table (config reload). Clients that keep
// their name keep their token bucket (with the new rate). Open watch
// streams of a client that is removed, or whose credentials (token,
// cert_name), role or prefixes change, end at once with UNAUTHENTICATED;
// those of unchanged clients stay open. Unary calls in flight finish with
// the identity they started with.
func (s *Server) SetClients(clients []Client) error {
	if err := CheckClients(clients); err != nil {
		return err
	}
	s.clients.set(clients)
	return nil
}

// CheckClients reports whether SetClients would refuse clients, changing
// nothing (a reload checks every component before applying any).
func CheckClients(clients []Client) error {
	if err := validateClients(clients); err != nil {
		return fmt.Errorf("reloading API clients: %w", err)
	}
	return nil
}
