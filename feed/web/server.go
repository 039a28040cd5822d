package web

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/feed/api"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// DefaultSessionTTL is how long a login lasts (SPEC.md: 12 h).
const DefaultSessionTTL = 12 * time.Hour

// Config configures the console (the web section of the config).
type Config struct {
	// Listen is the TCP address; plaintext only on a loopback address.
	Listen string
	// TLSCert and TLSKey are PEM files of the certificate and key.
	TLSCert, TLSKey string
	// SessionTTL is how long a session lasts (default 12 h).
	SessionTTL time.Duration
}

func (c Config) tlsEnabled() bool { return c.TLSCert != "" || c.TLSKey != "" }

// History is what the charts read: the store implements it.
type History interface {
	// ActiveHistory returns the number of active blackholes at from,
	// from+step, ... to.
	ActiveHistory(ctx context.Context, from, to time.Time, step time.Duration) ([]domain.Count, error)
	// DetectionsPerHour returns the detections recorded in each hour from
	// from's to to's.
	DetectionsPerHour(ctx context.Context, from, to time.Time) ([]domain.Count, error)
}

// Server is the web console.
type Server struct {
	cfg     Config
	api     *api.Server
	view    *activeView
	hist    History
	log     *slog.Logger
	tls     *tls.Config
	pages   map[string]*template.Template
	ss      *sessions
	handler http.Handler

	requests *prometheus.CounterVec
	streams  prometheus.Gauge

	mu   sync.Mutex
	lis  net.Listener
	http *http.Server
	// base is every request's parent context: cancelled when Serve stops,
	// which ends the live-update streams.
	base   context.Context
	cancel context.CancelFunc
}

// Check validates cfg as New does, loading the TLS files (rtbhd --check).
func Check(cfg Config) error {
	_, err := prepare(cfg)
	return err
}

func prepare(cfg Config) (*tls.Config, error) {
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("web.listen: %w", err)
	}
	switch {
	case cfg.TLSCert != "" && cfg.TLSKey == "":
		return nil, errors.New("web.tls.key: required with web.tls.cert")
	case cfg.TLSKey != "" && cfg.TLSCert == "":
		return nil, errors.New("web.tls.cert: required with web.tls.key")
	case !cfg.tlsEnabled() && !api.IsLoopback(cfg.Listen):
		return nil, fmt.Errorf("web.listen: %q is not a loopback address: plaintext HTTP is refused, set web.tls.cert and web.tls.key", cfg.Listen)
	case !cfg.tlsEnabled():
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("loading web.tls.cert/key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// New builds the console over the API's console methods, the decision
// path's watch stream (the view of the active set the pages list) and the
// store's history, and starts following the watch stream; it opens no
// socket (see Listen). Close (or the end of Serve) stops it.
func New(cfg Config, a *api.Server, active Watcher, hist History, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if a == nil || active == nil {
		return nil, errors.New("creating web console: nil API server or watcher")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	tc, err := prepare(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating web console: %w", err)
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, fmt.Errorf("creating web console: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, api: a, view: newActiveView(active), hist: hist, log: logger, tls: tc, pages: pages, ss: newSessions(cfg.SessionTTL),
		base: base, cancel: cancel,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rtbh_web_requests_total",
			Help: "Web console requests by page and HTTP status code.",
		}, []string{"page", "code"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rtbh_web_live_streams",
			Help: "Open live-update (server-sent events) streams of the web console.",
		}),
	}
	if reg != nil {
		sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rtbh_web_sessions",
			Help: "Logged-in web console sessions.",
		}, func() float64 { return float64(s.ss.count()) })
		for _, c := range []prometheus.Collector{s.requests, s.streams, sessions} {
			if err := reg.Register(c); err != nil {
				cancel()
				return nil, fmt.Errorf("registering web metrics: %w", err)
			}
		}
	}
	s.handler = s.routes()
	go s.view.run(base)
	return s, nil
}

// Close stops following the watch stream and ends the event streams (Serve
// does it when it returns).
func (s *Server) Close() { s.cancel() }

// Handler is the console's HTTP handler (tests serve it themselves).
func (s *Server) Handler() http.Handler { return s.handler }

// Listen opens the TCP socket. Call it before Serve.
func (s *Server) Listen() error {
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening for the web console on %s: %w", s.cfg.Listen, err)
	}
	s.mu.Lock()
	s.lis = lis
	s.mu.Unlock()
	return nil
}

// Addr is the listening address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.Addr()
}

// Serve answers requests until ctx is done, then ends the live streams
// and gives requests in flight up to 5 s.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	lis := s.lis
	s.mu.Unlock()
	if lis == nil {
		return errors.New("serving the web console: Listen was not called")
	}
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.tls != nil {
		hs.TLSConfig = s.tls
		lis = tls.NewListener(lis, s.tls)
	}
	s.log.Info("web console listening", "addr", lis.Addr().String(), "tls", s.tls != nil)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	select {
	case err := <-errc:
		s.cancel()
		return fmt.Errorf("serving the web console: %w", err)
	case <-ctx.Done():
	}
	s.cancel() // ends the event streams, which never go idle
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if err != nil {
		hs.Close()
	}
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) {
		return fmt.Errorf("serving the web console: %w", e)
	}
	return nil
}

// httpStatus maps a gRPC status of the API to an HTTP status code.
func httpStatus(err error) int {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.FailedPrecondition:
		return http.StatusUnprocessableEntity
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.NotFound:
		return http.StatusNotFound
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// message is the refusal's message without the gRPC wrapping.
func message(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

// statusRecorder remembers the status code for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets the event stream through the recorder.
func (w *statusRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument counts requests of page and sets the security headers.
func (s *Server) instrument(page string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		rec := &statusRecorder{ResponseWriter: w}
		h(rec, r)
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		s.requests.WithLabelValues(page, strconv.Itoa(rec.code)).Inc()
	})
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.Handle("GET /static/", s.instrument("static", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		files.ServeHTTP(w, r)
	}))
	mux.Handle("GET /login", s.instrument("login", s.loginPage))
	mux.Handle("POST /login", s.instrument("login", s.login))
	mux.Handle("POST /logout", s.instrument("logout", s.form(s.logout)))
	mux.Handle("GET /{$}", s.instrument("blackholes", s.page(s.blackholes)))
	mux.Handle("POST /blackholes", s.instrument("add", s.form(s.add)))
	mux.Handle("POST /blackholes/remove", s.instrument("remove", s.form(s.remove)))
	mux.Handle("GET /offenders", s.instrument("offenders", s.page(s.offenders)))
	mux.Handle("GET /offenders/{address}", s.instrument("offender", s.page(s.offender)))
	mux.Handle("GET /neighbors", s.instrument("neighbors", s.page(s.neighbors)))
	mux.Handle("GET /audit", s.instrument("audit", s.page(s.audit)))
	mux.Handle("GET /charts", s.instrument("charts", s.page(s.charts)))
	mux.Handle("GET /events", s.instrument("events", s.page(s.events)))
	mux.Handle("/", s.instrument("other", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, nil, http.StatusNotFound, "no such page: "+r.URL.Path)
	}))
	// Browsers say where a request comes from (Sec-Fetch-Site, Origin): a
	// cross-origin POST is refused (403) before any handler, login
	// included; the csrf token covers clients that send neither.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.WithLabelValues("cross-origin", "403").Inc()
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
	}))
	return cop.Handler(mux)
}

// page runs h for a logged-in session; without one a browser is sent to
// the login page.
func (s *Server) page(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess := s.ss.get(r)
		if sess == nil {
			if r.URL.Path == "/events" {
				http.Error(w, "not logged in", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		h(w, r, sess)
	}
}

// form runs h for a POST of a logged-in session with the right csrf
// token: 401 without a session, 403 without the token or with a wrong one.
func (s *Server) form(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			s.fail(w, r, nil, http.StatusBadRequest, "bad form: "+err.Error())
			return
		}
		sess := s.ss.get(r)
		if sess == nil {
			s.fail(w, r, nil, http.StatusUnauthorized, "not logged in (or the session expired): log in again")
			return
		}
		if !sess.csrfOK(r) {
			s.fail(w, r, sess, http.StatusForbidden, "missing or wrong csrf token: reload the page and try again")
			return
		}
		h(w, r, sess)
	}
}
