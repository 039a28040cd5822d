package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// publicServices answer without credentials (SPEC.md: reflection and health).
var publicServices = map[string]bool{
	healthpb.Health_ServiceDesc.ServiceName:                    true,
	reflectionv1.ServerReflection_ServiceDesc.ServiceName:      true,
	reflectionv1alpha.ServerReflection_ServiceDesc.ServiceName: true,
}

// roleTable says which roles may call each rtbh.v1 method (SPEC.md's
// table). A method missing here is refused to everyone.
var roleTable = map[string][]string{
	rtbhv1.BlackholeService_AddBlackhole_FullMethodName:     {RoleOperator, RolePartner}, // partner: inside its prefixes
	rtbhv1.BlackholeService_RemoveBlackhole_FullMethodName:  {RoleOperator, RolePartner}, // partner: inside its prefixes
	rtbhv1.BlackholeService_ListBlackholes_FullMethodName:   {RoleOperator, RolePartner},
	rtbhv1.BlackholeService_WatchBlackholes_FullMethodName:  {RoleOperator, RolePartner},
	rtbhv1.BlackholeService_AddBlackholes_FullMethodName:    {RoleOperator, RolePartner}, // per item as AddBlackhole
	rtbhv1.BlackholeService_RemoveBlackholes_FullMethodName: {RoleOperator, RolePartner}, // per item as RemoveBlackhole
	rtbhv1.ReportService_SubmitReports_FullMethodName:       {RoleOperator, RolePartner},
	rtbhv1.StatusService_ListNeighbors_FullMethodName:       {RoleOperator},
	rtbhv1.StatusService_GetOffender_FullMethodName:         {RoleOperator},
	rtbhv1.StatusService_ListOffenders_FullMethodName:       {RoleOperator},
	rtbhv1.AuditService_ListAudit_FullMethodName:            {RoleOperator},
}

// needsCredentials selects the calls that go through auth, role check and
// rate limit: everything but the public services.
var needsCredentials = selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
	return !publicServices[c.Service]
})

// authorize refuses a method the caller's role may not call.
func authorize(ctx context.Context, fullMethod string) error {
	id, err := caller(ctx)
	if err != nil {
		return err
	}
	for _, r := range roleTable[fullMethod] {
		if r == id.Role {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "client %q (role %s) may not call %s", id.Name, id.Role, shortMethod(fullMethod))
}

func roleUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func roleStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// clientLimiter is the ratelimit interceptor's Limiter: the authenticated
// client's own token bucket.
type clientLimiter struct{}

func (clientLimiter) Limit(ctx context.Context) error {
	id, ok := identityFrom(ctx)
	if !ok {
		return errors.New("no client identity")
	}
	if !id.rt.limiter.Allow() {
		return fmt.Errorf("client %q is over its rate of %g requests/s", id.Name, id.Rate)
	}
	return nil
}

// metrics counts every finished call by short method name and code.
type metrics struct {
	requests *prometheus.CounterVec
	watchers prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtbh_api_requests_total",
			Help: "gRPC API calls by method and status code.",
		}, []string{"method", "code"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtbh_api_watch_streams",
			Help: "Open WatchBlackholes streams.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.watchers} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering API metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(fullMethod string, err error) {
	m.requests.WithLabelValues(shortMethod(fullMethod), status.Code(err).String()).Inc()
}

func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	m.observe(info.FullMethod, err)
	return resp, err
}

func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	m.observe(info.FullMethod, err)
	return err
}

// shortMethod returns "AddBlackhole" for "/rtbh.v1.BlackholeService/AddBlackhole".
func shortMethod(fullMethod string) string {
	if i := strings.LastIndexByte(fullMethod, '/'); i >= 0 {
		return fullMethod[i+1:]
	}
	return fullMethod
}

// slogLogger adapts slog to the logging interceptor.
func slogLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// codeToLevel: refusals of credentials, roles and rates are warnings (an
// operator wants to see them); server faults are errors; everything else —
// the access log of ordinary calls — is debug (rtbhd --log-level debug).
func codeToLevel(c codes.Code) logging.Level {
	switch c {
	case codes.Unauthenticated, codes.PermissionDenied, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Unavailable:
		return logging.LevelWarn
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return logging.LevelError
	}
	return logging.LevelDebug
}

// The access log costs a good share of a cheap call (fields, formatting,
// a write): with the logger at debug every call goes through the logging
// interceptor (full); otherwise only calls that end in a code logged at
// warn or error are logged, by callLog, and the others cost nothing.

func (s *Server) accessLogUnary(full grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if s.logger.Enabled(ctx, slog.LevelDebug) {
			return full(ctx, req, info, handler)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		if err != nil {
			s.callLog(ctx, info.FullMethod, "unary", start, err)
		}
		return resp, err
	}
}

func (s *Server) accessLogStream(full grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if s.logger.Enabled(ss.Context(), slog.LevelDebug) {
			return full(srv, ss, info, handler)
		}
		start := time.Now()
		err := handler(srv, ss)
		if err != nil {
			s.callLog(ss.Context(), info.FullMethod, "server_stream", start, err)
		}
		return err
	}
}

// callLog logs a call that failed with a code at warn or error level, with
// the logging interceptor's message and main fields.
func (s *Server) callLog(ctx context.Context, fullMethod, kind string, start time.Time, err error) {
	st := status.Convert(err)
	lvl := slog.Level(codeToLevel(st.Code()))
	if lvl < slog.LevelWarn || !s.logger.Enabled(ctx, lvl) {
		return
	}
	service, method := strings.TrimPrefix(fullMethod, "/"), shortMethod(fullMethod)
	service = strings.TrimSuffix(service, "/"+method)
	attrs := []any{"protocol", "grpc", "grpc.component", "server", "grpc.service", service, "grpc.method", method,
		"grpc.method_type", kind}
	if id, ok := identityFrom(ctx); ok {
		attrs = append(attrs, "client", id.Name)
	}
	attrs = append(attrs, "grpc.code", st.Code().String(), "grpc.error", st.Message(), "grpc.duration", time.Since(start).String())
	s.logger.Log(ctx, lvl, "finished call", attrs...)
}

// interceptorChain builds the server options with every interceptor, in
// the order documented in doc.go.
func (s *Server) interceptorChain() []grpc.ServerOption {
	logger := slogLogger(s.logger)
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(codeToLevel),
		logging.WithDurationField(func(d time.Duration) logging.Fields {
			return logging.Fields{"grpc.duration", d.String()}
		}),
	}
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		s.logger.ErrorContext(ctx, "panic in gRPC handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(
			s.metrics.unary,
			s.accessLogUnary(logging.UnaryServerInterceptor(logger, logOpts...)),
			recovery.UnaryServerInterceptor(recoverOpt),
			selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(s.authenticate), needsCredentials),
			selector.UnaryServerInterceptor(roleUnary, needsCredentials),
			selector.UnaryServerInterceptor(ratelimit.UnaryServerInterceptor(clientLimiter{}), needsCredentials),
		),
		grpc.ChainStreamInterceptor(
			s.metrics.stream,
			s.accessLogStream(logging.StreamServerInterceptor(logger, logOpts...)),
			recovery.StreamServerInterceptor(recoverOpt),
			selector.StreamServerInterceptor(auth.StreamServerInterceptor(s.authenticate), needsCredentials),
			selector.StreamServerInterceptor(roleStream, needsCredentials),
			selector.StreamServerInterceptor(ratelimit.StreamServerInterceptor(clientLimiter{}), needsCredentials),
		),
	}
}
