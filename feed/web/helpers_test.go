package web

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/feed/api"
	"github.com/rtbh/rtbh/store"
)

const (
	opToken      = "noc-token"
	partnerToken = "isp-b-token"
)

func testLogger() *slog.Logger {
	if os.Getenv("RTBH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// env is the real thing minus sockets for BGP peers: SQLite in a temp
// dir, an embedded GoBGP speaker, the decision path, the API server (its
// console methods; no gRPC listener needed) and the console over
// httptest.
type env struct {
	db      *store.DB
	manager *detector.Manager
	api     *api.Server
	web     *Server
	srv     *httptest.Server
}

type envOpts struct {
	maxActive   int
	partnerRate float64            // isp-b's api rate; 0 = 1000
	preload     []domain.Blackhole // written to the store before the manager starts
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	logger := testLogger()
	db, err := store.Open(filepath.Join(t.TempDir(), "rtbhd.db"), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if len(o.preload) > 0 {
		var waits []func() error
		for i := range o.preload {
			b := o.preload[i]
			waits = append(waits, db.Submit(&domain.Write{At: b.CreatedAt, Op: domain.BlackholeInsert, Blackhole: b,
				Audit: []domain.AuditEntry{{Actor: "loader", Action: "add", Prefix: b.Prefix.String(), Origin: b.Origin, Reason: b.Reason}}}))
		}
		for _, w := range waits {
			if err := w(); err != nil {
				t.Fatal(err)
			}
		}
	}
	sp, err := bgp.New(bgp.Config{ASN: 64500, RouterID: netip.MustParseAddr("192.0.2.254"),
		NextHopV4: netip.MustParseAddr("192.0.2.1"), NextHopV6: netip.MustParseAddr("100::1")}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if o.maxActive == 0 {
		o.maxActive = 10000
	}
	if o.partnerRate == 0 {
		o.partnerRate = 1000
	}
	m, err := detector.NewManager(detector.Config{
		Policy: detector.Policy{
			OwnPrefixes:    []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
			NeverBlackhole: domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("198.51.100.53/32")}),
			MaxActive:      o.maxActive, DefaultTTL: time.Hour, MaxTTL: 168 * time.Hour,
			MinPrefixLenV4: 24, MinPrefixLenV6: 64,
		},
		Reports: detector.ReportPolicy{Window: 24 * time.Hour, Threshold: 1.0, TTL: 6 * time.Hour},
	}, db, sp, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		sp.Close()
	})
	a, err := api.New(api.Config{Listen: "127.0.0.1:0", Clients: []api.Client{
		{Name: "noc", Role: api.RoleOperator, TokenSHA256: sha256.Sum256([]byte(opToken)), HasToken: true, Rate: 1000},
		{Name: "isp-b", Role: api.RolePartner, TokenSHA256: sha256.Sum256([]byte(partnerToken)), HasToken: true, Rate: o.partnerRate,
			Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Trust: 0.5},
	}}, m, nil, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetAuditReader(db)
	w, err := New(Config{Listen: "127.0.0.1:0"}, a, m, db, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	srv := httptest.NewServer(w.Handler())
	t.Cleanup(srv.Close)
	return &env{db: db, manager: m, api: a, web: w, srv: srv}
}

func (e *env) partnerPrefixes() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects (the tests look at them).
type browser struct {
	t    testing.TB
	base string
	c    *http.Client
}

func (e *env) browser(t testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: e.srv.URL, c: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) get(path string) (int, string, *http.Response) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp
}

func (b *browser) post(path string, form url.Values) (int, string, *http.Response) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.base+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp
}

func (b *browser) login(token string) {
	b.t.Helper()
	code, body, resp := b.post("/login", url.Values{"token": {token}})
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		b.t.Fatalf("login: %d %q", code, body)
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the session's csrf token from a page's form.
func (b *browser) csrf() string {
	b.t.Helper()
	_, body, _ := b.get("/")
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("no csrf field on /: %s", body)
	}
	return m[1]
}

var alertRE = regexp.MustCompile(`(?s)<div class="alert" role="alert">(.*?)</div>`)

func alertOf(body string) string {
	m := alertRE.FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}
