package main

// Tests that run the real rtbhd binary (and rtbhctl) as processes: start-up,
// signals, kill -9 durability, and the end-to-end path to real routers.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/rtbh/rtbh/bgp/routertest"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// Binaries built once by TestMain.
var (
	rtbhdBin   string
	rtbhctlBin string
)

func TestMain(m *testing.M) {
	routertest.RunBareSpeakerIfAsked() // TestRoutePathCPU's yardstick is this binary, re-executed
	dir, err := os.MkdirTemp("", "rtbhd-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rtbhdBin = filepath.Join(dir, "rtbhd")
	rtbhctlBin = filepath.Join(dir, "rtbhctl")
	for bin, pkg := range map[string]string{rtbhdBin: ".", rtbhctlBin: "../rtbhctl"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	testToken    = "operator-secret-token"
	partnerToken = "partner-secret-token"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

var loopback = netip.MustParseAddr("127.0.0.1")

// daemonConfig is the template data of a test rtbhd config.
type daemonConfig struct {
	DB          string
	BGPAddr     string
	BGPPort     int
	APIPort     int
	MetricsPort int
	SFlowPort   int
	Neighbors   string // YAML list items, indented 4 spaces
	Extra       string // more top-level YAML
	MaxActive   int
	Threshold   float64
	Rate        int
	Token       string
	Partner     string
	Subscribers string
	Rules       string
	LogLevel    string // rtbhd --log-level; "" = debug
	Never       string // policy.never_blackhole items; "" = "198.51.100.53"
	MaxTracked  int    // reports.max_tracked_addresses; 0 = the default
	Store       string // the store section's keys, indented 2 spaces; "" = path: DB (SQLite)
}

var configTemplate = template.Must(template.New("cfg").Parse(`store:
{{- if .Store}}
{{.Store}}
{{- else}}
  path: {{.DB}}
{{- end}}
bgp:
  asn: 64500
  router_id: 192.0.2.254
  listen_address: {{.BGPAddr}}
  listen_port: {{.BGPPort}}
  neighbors:
{{- if .Neighbors}}
{{.Neighbors}}
{{- else}} []
{{- end}}
policy:
  own_prefixes: ["198.51.100.0/24", "2001:db8::/32"]
  never_blackhole: [{{if .Never}}{{.Never}}{{else}}"198.51.100.53"{{end}}]
  max_active: {{.MaxActive}}
  default_ttl: 1h
  max_ttl: 168h
sflow:
  listen: 127.0.0.1:{{.SFlowPort}}
detector:
  subscriber_prefixes: [{{.Subscribers}}]
  window: 10m
{{- if .Rules}}
  rules:
{{.Rules}}
{{- end}}
reports:
  window: 24h
  threshold: {{.Threshold}}
  ttl: 6h
{{- if .MaxTracked}}
  max_tracked_addresses: {{.MaxTracked}}
{{- end}}
api:
  listen: 127.0.0.1:{{.APIPort}}
  clients:
    - name: noc
      role: operator
      token_sha256: "{{.Token}}"
      rate: {{.Rate}}
    - name: isp-b
      role: partner
      token_sha256: "{{.Partner}}"
      prefixes: ["203.0.113.0/24"]
      trust: 0.5
      rate: {{.Rate}}
metrics:
  listen: 127.0.0.1:{{.MetricsPort}}
{{.Extra}}`))

type daemon struct {
	t       testing.TB
	cfg     daemonConfig
	cfgPath string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	logMu   *sync.Mutex
	exited  chan error
}

// newDaemonConfig fills a config with fresh ports in dir. With
// RTBH_TEST_STORE=postgres the store is a database on a throwaway
// PostgreSQL of the test's own (see postgresStore in ha_test.go).
func newDaemonConfig(t testing.TB, dir string) daemonConfig {
	return daemonConfig{
		DB: filepath.Join(dir, "rtbhd.db"), BGPAddr: "127.0.0.1", BGPPort: testkit.FreePort(t, loopback),
		APIPort: testkit.FreePort(t, loopback), MetricsPort: testkit.FreePort(t, loopback), SFlowPort: testkit.FreePort(t, loopback),
		MaxActive: 200000, Threshold: 1.0, Rate: 100000, Token: sha(testToken), Partner: sha(partnerToken),
		Subscribers: `"198.51.100.0/24"`, Store: testStore(t),
	}
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// writeConfig renders cfg (with never_blackhole items never, if not "")
// into path.
func writeConfig(t testing.TB, path string, cfg daemonConfig, never string) {
	t.Helper()
	if never != "" {
		cfg.Never = never
	}
	var buf bytes.Buffer
	if err := configTemplate.Execute(&buf, cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startDaemon writes cfg and starts rtbhd, waiting until /healthz says ok.
func startDaemon(t testing.TB, cfg daemonConfig) *daemon {
	t.Helper()
	path := filepath.Join(filepath.Dir(cfg.DB), "rtbhd.yaml")
	writeConfig(t, path, cfg, "")
	d := &daemon{t: t, cfg: cfg, cfgPath: path, log: &bytes.Buffer{}, logMu: &sync.Mutex{}, exited: make(chan error, 1)}
	level := cfg.LogLevel
	if level == "" {
		level = "debug"
	}
	d.cmd = exec.Command(rtbhdBin, "--config", path, "--log-level", level, "--pprof")
	d.cmd.Stderr = syncWriter{d.logMu, d.log}
	d.cmd.Stdout = syncWriter{d.logMu, d.log}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("rtbhd log:\n%s", d.logs())
		}
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", cfg.MetricsPort)
	healthy := testkit.Poll(20*time.Second, func() bool {
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("rtbhd exited during start-up: %v\n%s", err, d.logs())
		default:
		}
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if !healthy {
		t.Fatalf("rtbhd not healthy after 20 s:\n%s", d.logs())
	}
	return d
}

func (d *daemon) logs() string {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	return d.log.String()
}

func (d *daemon) apiAddr() string { return fmt.Sprintf("127.0.0.1:%d", d.cfg.APIPort) }

// kill9 kills rtbhd with SIGKILL and waits for it to be gone.
func (d *daemon) kill9() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		d.t.Fatal(err)
	}
	<-d.exited
}

// stop sends SIGTERM and expects a clean exit 0.
func (d *daemon) stop() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	select {
	case err := <-d.exited:
		if err != nil {
			d.t.Fatalf("rtbhd exit after SIGTERM: %v\n%s", err, d.logs())
		}
	case <-time.After(15 * time.Second):
		d.t.Fatalf("rtbhd did not exit within 15 s of SIGTERM\n%s", d.logs())
	}
}

// metric returns the first value of a metric line starting with name.
func (d *daemon) metrics() string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", d.cfg.MetricsPort))
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String()
}

type clients struct {
	conn *grpc.ClientConn
	bh   rtbhv1.BlackholeServiceClient
	rep  rtbhv1.ReportServiceClient
	st   rtbhv1.StatusServiceClient
}

func dial(t testing.TB, addr, token string) clients {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(token)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return clients{conn, rtbhv1.NewBlackholeServiceClient(conn), rtbhv1.NewReportServiceClient(conn),
		rtbhv1.NewStatusServiceClient(conn)}
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

var _ = metadata.Pairs

// rtbhctl runs the CLI against d and returns stdout, stderr and the exit code.
func rtbhctl(t testing.TB, d *daemon, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(rtbhctlBin, append([]string{"--addr", d.apiAddr()}, args...)...)
	cmd.Env = append(os.Environ(), "RTBH_TOKEN="+testToken)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestCheckFlag(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	var buf bytes.Buffer
	configTemplate.Execute(&buf, newDaemonConfig(t, dir))
	os.WriteFile(good, buf.Bytes(), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("bgp:\n  asn: 64500\n  routerid: 1.2.3.4\n  neighbors: []\npolicy:\n  default_ttl: 1 hour\n"), 0o600)

	out, err := exec.Command(rtbhdBin, "--config", good, "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("--check of a good config: %v\n%s", err, out)
	}
	out, err = exec.Command(rtbhdBin, "--config", bad, "--check").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("--check of a bad config: err = %v, want exit 1\n%s", err, out)
	}
	for _, key := range []string{"bgp.routerid", "bgp.router_id", "policy.default_ttl"} {
		if !strings.Contains(string(out), key) {
			t.Errorf("--check output does not name %s:\n%s", key, out)
		}
	}
	// The daemon refuses to start with the same errors.
	out2, err := exec.Command(rtbhdBin, "--config", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !bytes.Equal(out, out2) {
		t.Fatalf("daemon with a bad config: err = %v\n%s\nwant the --check output:\n%s", err, out2, out)
	}
}

// Everything acknowledged before a kill -9 is there after restart, under a
// concurrent load of AddBlackhole and SubmitReports.
func TestKill9KeepsEverythingAcknowledged(t *testing.T) {
	cfg := newDaemonConfig(t, t.TempDir())
	cfg.Threshold = 2 // operator reports alone do not blackhole here
	d := startDaemon(t, cfg)
	c := dial(t, d.apiAddr(), testToken)

	var (
		mu       sync.Mutex
		added    []string
		reported []string
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if w%2 == 0 {
					p := fmt.Sprintf("10.%d.%d.%d", w, i/256%256, i%256)
					if _, err := c.bh.AddBlackhole(ctx, &rtbhv1.AddBlackholeRequest{Prefix: p, Reason: "load"}); err == nil {
						mu.Lock()
						added = append(added, p+"/32")
						mu.Unlock()
					}
					continue
				}
				var reps []*rtbhv1.Report
				for j := range 10 {
					reps = append(reps, &rtbhv1.Report{Address: fmt.Sprintf("172.%d.%d.%d", 16+w, i%256, j)})
				}
				if resp, err := c.rep.SubmitReports(ctx, &rtbhv1.SubmitReportsRequest{Reports: reps}); err == nil && resp.Accepted == 10 {
					mu.Lock()
					for _, r := range reps {
						reported = append(reported, r.Address)
					}
					mu.Unlock()
				}
			}
		}()
	}
	// Kill in the middle of the load: once hundreds of each are acknowledged
	// (five times the floor below), with all workers still sending.
	testkit.WaitFor(t, 8*time.Second, "500 adds and 500 reports acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(added) >= 500 && len(reported) >= 500
	})
	d.kill9()
	close(stop)
	wg.Wait()
	if len(added) < 100 || len(reported) < 100 {
		t.Fatalf("load too small to mean anything: %d adds, %d reports acknowledged", len(added), len(reported))
	}
	t.Logf("acknowledged before kill -9: %d adds, %d reports", len(added), len(reported))

	d2 := startDaemon(t, cfg)
	c2 := dial(t, d2.apiAddr(), testToken)
	list, err := c2.bh.ListBlackholes(context.Background(), &rtbhv1.ListBlackholesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, b := range list.Blackholes {
		have[b.Prefix] = true
	}
	for _, p := range added {
		if !have[p] {
			t.Fatalf("acknowledged blackhole %s lost after kill -9 (%d active)", p, len(have))
		}
	}
	for i, a := range reported {
		if i%7 != 0 { // a sample is enough: each GetOffender is a round trip
			continue
		}
		o, err := c2.st.GetOffender(context.Background(), &rtbhv1.GetOffenderRequest{Address: a})
		if err != nil || len(o.Offender.Reports) == 0 {
			t.Fatalf("acknowledged report about %s lost after kill -9: %v", a, err)
		}
	}
	d2.stop()
}
