package main

// End-to-end tests of the NOC web console in a real headless Chromium
// (Debian's chromium, driven over the DevTools protocol by chromedp)
// against the real rtbhd binary with a real BIRD border router.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// chromiumPath is Debian's chromium; RTBH_CHROMIUM overrides it.
func chromiumPath() string {
	if p := os.Getenv("RTBH_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// requireChromium skips the test without Chromium, and fails it when CI is
// set (CI must run the browser tests), like the router tests.
func requireChromium(t *testing.T) string {
	t.Helper()
	p := chromiumPath()
	if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return p
	}
	if lp, err := exec.LookPath(p); err == nil {
		return lp
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found: install the Debian package chromium (deploy/install-test-deps.sh); CI must run the browser tests", p)
	}
	t.Skipf("%s not found: install the Debian package chromium to run the browser tests", p)
	return ""
}

// artifactsDir is where screenshots go: $RTBH_TEST_ARTIFACTS/<test> if
// set (kept), else a temporary directory.
func artifactsDir(t *testing.T) string {
	dir := t.TempDir()
	if base := os.Getenv("RTBH_TEST_ARTIFACTS"); base != "" {
		dir = filepath.Join(base, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// browser is one isolated browser context (its own cookies) in a headless
// Chromium.
type browser struct {
	t      *testing.T
	ctx    context.Context
	base   string // http://127.0.0.1:port
	shots  string
	prefix string // screenshot file name prefix
}

// startChromium starts a headless Chromium with a fresh profile and returns
// its first browser context.
func startChromium(t *testing.T, base, shots string) *browser {
	t.Helper()
	path := requireChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, base: base, shots: shots}
	// The first run starts the browser: on ctx itself, since cancelling
	// the context of the first run closes it.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return b
}

// isolated returns a new browser context of the same Chromium: no cookies
// shared with b.
func (b *browser) isolated(prefix string) *browser {
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		b.t.Fatalf("opening a browser context: %v", err)
	}
	return &browser{t: b.t, ctx: ctx, base: b.base, shots: b.shots, prefix: prefix}
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// submit runs steps that submit a form and returns the HTTP status of the
// page they load.
func (b *browser) submit(steps ...chromedp.Action[chromedp.Void]) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		b.t.Fatalf("browser: %v", err)
	}
	return resp.Status
}

func eval[T any](b *browser, js string, opts ...chromedp.EvaluateOption) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, opts...))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func (b *browser) has(css string) bool {
	return eval[bool](b, fmt.Sprintf(`document.querySelector(%q) !== null`, css))
}

func (b *browser) text(css string) string {
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, css))
}

// shot saves a full-page screenshot as name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, b.prefix+name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) login(token string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.base+"/login"), chromedp.WaitVisible(chromedp.CSS(`#token`)))
	if b.prefix == "" {
		b.shot("login")
	}
	code := b.submit(chromedp.SendKeys(chromedp.CSS(`#token`), token), chromedp.Submit(chromedp.CSS(`#token`)))
	if code != 200 || !b.has(`#live`) {
		b.t.Fatalf("login: HTTP %d, page %q", code, b.text(`main`))
	}
}

// waitFor polls a condition in the page until timeout; it returns how
// long it took, failing the test at the timeout.
func (b *browser) waitFor(what string, timeout time.Duration, css string, present bool) time.Duration {
	b.t.Helper()
	start := time.Now()
	if !testkit.Poll(timeout, func() bool { return b.has(css) == present }) {
		b.t.Fatalf("%s: not within %s", what, timeout)
	}
	return time.Since(start)
}

func TestWebConsoleInChromium(t *testing.T) {
	shots := artifactsDir(t)
	cfg := newDaemonConfig(t, t.TempDir())
	webPort := testkit.FreePort(t, loopback)
	cfg.Extra = fmt.Sprintf("web:\n  listen: 127.0.0.1:%d\n", webPort)
	// The default rule in shadow mode: it records offenders, announces nothing.
	cfg.Rules = `    - name: smtp-fanout
      protocol: tcp
      dst_ports: [25]
      min_destinations: 20
      min_packets: 1000
      ttl: 1h
      action: log`
	d, bird, _ := routerSetup(t, cfg, false, netip.MustParseAddr("127.0.41.1"), netip.MustParseAddr("127.0.41.2"), netip.Addr{})
	base := fmt.Sprintf("http://127.0.0.1:%d", webPort)
	b := startChromium(t, base, shots)

	// Before logging in, every page leads to the login.
	b.do(chromedp.Navigate(base + "/audit"))
	if loc := eval[string](b, `location.pathname`); loc != "/login" {
		t.Fatalf("/audit without a session shows %s", loc)
	}
	// A wrong token is refused with the reason.
	code := b.submit(chromedp.SendKeys(chromedp.CSS(`#token`), "not-a-token"), chromedp.Submit(chromedp.CSS(`#token`)))
	if code != 401 || !strings.Contains(b.text(`[role="alert"]`), "unknown token") {
		t.Fatalf("wrong token: HTTP %d, alert %q", code, b.text(`[role="alert"]`))
	}
	b.login(testToken)

	// Add through the form: the row appears, the route reaches BIRD.
	own := netip.MustParsePrefix("198.51.100.7/32")
	code = b.submit(
		chromedp.SetValue(chromedp.CSS(`#add-form input[name=prefix]`), "198.51.100.7"),
		chromedp.SetValue(chromedp.CSS(`#add-form input[name=ttl]`), "2h"),
		chromedp.SetValue(chromedp.CSS(`#add-form input[name=reason]`), "zombie from the browser, ticket 4711"),
		chromedp.Click(chromedp.CSS(`#add-form button[type=submit]`)),
	)
	if code != 200 || !b.has(`tr[data-prefix="198.51.100.7/32"]`) {
		t.Fatalf("add: HTTP %d, row present %v", code, b.has(`tr[data-prefix="198.51.100.7/32"]`))
	}
	r := bird.WaitRoute(own, 5*time.Second, nil)
	if !r.Blackhole || !r.HasCommunity("65535:666") {
		t.Fatalf("BIRD route %+v", r)
	}
	if got := b.text(`[role="status"]`); !strings.Contains(got, "198.51.100.7/32") {
		t.Errorf("no notice of the add: %q", got)
	}

	// A refused add shows the policy's reason in role="alert", with a 4xx.
	code = b.submit(
		chromedp.SetValue(chromedp.CSS(`#add-form input[name=prefix]`), "198.51.100.53"),
		chromedp.SetValue(chromedp.CSS(`#add-form input[name=reason]`), "the resolver, by mistake"),
		chromedp.Click(chromedp.CSS(`#add-form button[type=submit]`)),
	)
	alert := b.text(`[role="alert"]`)
	if code != 422 || !strings.Contains(alert, "never_blackhole") || !strings.Contains(alert, "198.51.100.53") {
		t.Fatalf("refused add: HTTP %d, alert %q", code, alert)
	}
	b.shot("refused")

	// A change made with rtbhctl appears in the open page within 2 s.
	b.do(chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`#live`)))
	testkit.WaitFor(t, 5*time.Second, "the live stream to connect", func() bool { return b.has(`#live-status.on`) })
	start := time.Now()
	ctl(t, d, "add", "--reason", "added with rtbhctl", "198.51.100.9")
	b.waitFor("the rtbhctl add in the open page", 2*time.Second, `tr[data-prefix="198.51.100.9/32"]`, true)
	within(t, "rtbhctl add -> row in the open page", start, 2*time.Second)
	ctl(t, d, "add", "--reason", "partner space", "203.0.113.9")
	start = time.Now()
	ctl(t, d, "remove", "--reason", "removed with rtbhctl", "198.51.100.9")
	b.waitFor("the rtbhctl remove in the open page", 2*time.Second, `tr[data-prefix="198.51.100.9/32"]`, false)
	within(t, "rtbhctl remove -> row gone from the open page", start, 2*time.Second)
	testkit.WaitFor(t, 2*time.Second, "203.0.113.9 in the page", func() bool { return b.has(`tr[data-prefix="203.0.113.9/32"]`) })
	b.shot("blackholes")

	// A POST without the csrf token is refused with 403, and decides nothing.
	status := eval[int](b, `fetch("/blackholes", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: "prefix=198.51.100.20&reason=no+csrf"}).then(r => r.status)`, chromedp.EvalAwaitPromise)
	if status != 403 {
		t.Fatalf("POST without csrf: %d, want 403", status)
	}
	if out := ctl(t, d, "list"); strings.Contains(out, "198.51.100.20") {
		t.Fatalf("a POST without csrf added a blackhole:\n%s", out)
	}

	// Remove through the page: the route is withdrawn from BIRD.
	row := `tr[data-prefix="198.51.100.7/32"]`
	code = b.submit(
		chromedp.SetValue(chromedp.CSS(row+` input[name=reason]`), "customer cleaned the PC"),
		chromedp.Click(chromedp.CSS(row+` button[type=submit]`)),
	)
	if code != 200 || b.has(row) {
		t.Fatalf("remove: HTTP %d, row still there %v", code, b.has(row))
	}
	bird.WaitNoRoute(own, 5*time.Second)

	// A shadow catch on /offenders, promoted with one click.
	zombie := sendZombie(t, cfg.SFlowPort, netip.MustParseAddr("198.51.100.77"))
	b.do(chromedp.Navigate(base + "/offenders"))
	testkit.WaitFor(t, 5*time.Second, "the shadow catch on /offenders", func() bool {
		if b.has(`tr[data-address="198.51.100.77"]`) {
			return true
		}
		b.do(chromedp.Reload())
		return false
	})
	if !strings.Contains(b.text(`tr[data-address="198.51.100.77"]`), "shadow") {
		t.Fatalf("offender row %q is not marked shadow", b.text(`tr[data-address="198.51.100.77"]`))
	}
	if _, found, _ := bird.Route(zombie); found {
		t.Fatal("a shadow rule's catch was announced")
	}
	b.shot("offenders")
	code = b.submit(chromedp.Click(chromedp.CSS(`tr[data-address="198.51.100.77"] button[type=submit]`)))
	if code != 200 || !strings.Contains(b.text(`tr[data-address="198.51.100.77"]`), "active") {
		t.Fatalf("promotion: HTTP %d, row %q", code, b.text(`tr[data-address="198.51.100.77"]`))
	}
	bird.WaitRoute(zombie, 5*time.Second, nil)

	// The offender's evidence and reports.
	ctl(t, d, "report", "--evidence", "spam trap hit", "198.51.100.77")
	b.do(chromedp.Navigate(base+"/offenders/198.51.100.77"), chromedp.WaitVisible(chromedp.CSS(`main`)))
	if page := b.text(`main`); !strings.Contains(page, "smtp-fanout") || !strings.Contains(page, "spam trap hit") || !strings.Contains(page, "blackholed") {
		t.Fatalf("offender page:\n%s", page)
	}
	b.shot("offender")

	// Neighbors: BIRD established, with the routes sent.
	b.do(chromedp.Navigate(base + "/neighbors"))
	if nb := b.text(`tr[data-neighbor="127.0.41.2"]`); !strings.Contains(nb, "established") || !strings.Contains(nb, "64501") {
		t.Fatalf("neighbor row %q", nb)
	}
	b.shot("neighbors")

	// The audit page lists the web actions with their actor.
	b.do(chromedp.Navigate(base + "/audit?prefix=198.51.100.7&since=1h"))
	rows := eval[[]string](b, `Array.from(document.querySelectorAll("tr[data-audit-id]")).map(r => r.dataset.actor + " " + r.dataset.action + " " + r.querySelector(".reason").textContent)`)
	if len(rows) != 2 || rows[0] != "noc remove customer cleaned the PC" || rows[1] != "noc add zombie from the browser, ticket 4711" {
		t.Fatalf("audit rows for 198.51.100.7: %q", rows)
	}
	b.do(chromedp.Navigate(base + "/audit"))
	b.shot("audit")

	b.do(chromedp.Navigate(base + "/charts"))
	if !b.has(`svg polyline.line`) || !b.has(`svg rect.bar`) {
		t.Fatalf("charts page lacks its line or bars")
	}
	b.shot("charts")

	// A partner sees only its own space, and no operator pages.
	p := b.isolated("partner-")
	p.login(partnerToken)
	if !p.has(`tr[data-prefix="203.0.113.9/32"]`) || p.has(`tr[data-prefix="198.51.100.77/32"]`) {
		t.Fatalf("partner's list: %q", p.text(`#rows`))
	}
	code = p.submit(
		chromedp.SetValue(chromedp.CSS(`#add-form input[name=prefix]`), "198.51.100.8"),
		chromedp.SetValue(chromedp.CSS(`#add-form input[name=reason]`), "not ours"),
		chromedp.Click(chromedp.CSS(`#add-form button[type=submit]`)),
	)
	if code != 403 || !strings.Contains(p.text(`[role="alert"]`), "198.51.100.8") {
		t.Fatalf("partner outside its space: HTTP %d, alert %q", code, p.text(`[role="alert"]`))
	}
	p.shot("blackholes")
	if code := p.submit(chromedp.Navigate(base + "/audit")); code != 403 {
		t.Fatalf("partner /audit: HTTP %d", code)
	}

	// Logging out ends the session.
	b.do(chromedp.Navigate(base + "/"))
	code = b.submit(chromedp.Click(chromedp.CSS(`header form button`)))
	if loc := eval[string](b, `location.pathname`); code != 200 || loc != "/login" {
		t.Fatalf("logout: HTTP %d at %s", code, loc)
	}
}
