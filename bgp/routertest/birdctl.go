package routertest

import (
	"bufio"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// RouteCounter counts the speaker's routes in BIRD over one long-lived
// connection to BIRD's control socket: a sample costs one CLI command and
// no process start (birdc takes several milliseconds to start), so a test
// can sample a table of 20,000 routes every few milliseconds. Not safe for
// concurrent use.
type RouteCounter struct {
	conn net.Conn
	r    *bufio.Reader
}

// RouteCounter connects to BIRD's control socket. Close it when done.
func (b *BIRD) RouteCounter() (*RouteCounter, error) {
	conn, err := net.DialTimeout("unix", b.ctl, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connecting to BIRD's control socket: %w", err)
	}
	c := &RouteCounter{conn: conn, r: bufio.NewReader(conn)}
	if _, err := c.reply(); err != nil { // the "0001 BIRD ... ready." greeting
		conn.Close()
		return nil, err
	}
	return c, nil
}

var (
	birdImported = regexp.MustCompile(`(?m)^\s+Routes:\s+(\d+) imported`)
	birdTotal    = regexp.MustCompile(`Total: (\d+) of \d+ routes`)
)

// Count returns the number of routes from the speaker that BIRD holds in
// its IPv4 and IPv6 channels, stale routes (kept through a graceful
// restart) included, from the channels' counters in `show protocols all`:
// BIRD answers it in tens of microseconds, where walking a table of 20,000
// routes (TableCount) takes milliseconds of BIRD's single thread, time it
// would not spend applying updates. When BIRD shows no counters (the
// protocol is down, e.g. after its restart timer ran out), it counts the
// tables instead.
func (c *RouteCounter) Count() (int, error) {
	n, ok, err := c.CountOf(ProtocolName)
	if err != nil || ok {
		return n, err
	}
	return c.TableCount()
}

// CountOf is Count for the BGP protocol named proto, from its channels'
// counters only; ok is false when BIRD shows none (the protocol is down).
func (c *RouteCounter) CountOf(proto string) (n int, ok bool, err error) {
	out, err := c.command("show protocols all " + proto)
	if err != nil {
		return 0, false, err
	}
	ms := birdImported.FindAllStringSubmatch(out, -1)
	if len(ms) != 2 {
		return 0, false, nil
	}
	for _, m := range ms {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n, true, nil
}

// TableCount counts the speaker's routes in master4 and master6 by walking
// the tables (`show route count`), stale routes included.
func (c *RouteCounter) TableCount() (int, error) {
	out, err := c.command("show route count table master4 table master6 protocol " + ProtocolName)
	if err != nil {
		return 0, err
	}
	m := birdTotal.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unexpected BIRD route count reply %q", out)
	}
	return strconv.Atoi(m[1])
}

var birdNetworks = regexp.MustCompile(`Total: \d+ of \d+ routes for (\d+) networks`)

// Networks counts the distinct prefixes in master4 and master6, from any
// protocol (static routes included): what the router can forward on,
// whichever session taught it.
func (c *RouteCounter) Networks() (int, error) {
	out, err := c.command("show route count table master4 table master6")
	if err != nil {
		return 0, err
	}
	m := birdNetworks.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unexpected BIRD route count reply %q", out)
	}
	return strconv.Atoi(m[1])
}

func (c *RouteCounter) command(cmd string) (string, error) {
	if err := c.conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := c.conn.Write([]byte(cmd + "\n")); err != nil {
		return "", fmt.Errorf("writing to BIRD's control socket: %w", err)
	}
	return c.reply()
}

// reply reads one CLI reply: lines "NNNN-text" or " text" continue it, a
// line "NNNN text" ends it; codes 8xxx and 9xxx are errors.
func (c *RouteCounter) reply() (string, error) {
	var sb strings.Builder
	for range 1000 {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return sb.String(), fmt.Errorf("reading BIRD's control socket: %w", err)
		}
		sb.WriteString(line)
		if len(line) >= 5 && line[4] == ' ' && isDigits(line[:4]) {
			if line[0] == '8' || line[0] == '9' {
				return sb.String(), fmt.Errorf("BIRD: %s", strings.TrimSpace(line[5:]))
			}
			return sb.String(), nil
		}
	}
	return sb.String(), fmt.Errorf("BIRD reply too long: %q", sb.String())
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Close closes the connection.
func (c *RouteCounter) Close() error { return c.conn.Close() }

// CountWatch samples BIRD's count of the speaker's routes (both families)
// in the background, as often as a ticker of the given interval allows.
type CountWatch struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	mu    sync.Mutex
	stats CountStats
}

// CountStats is what a CountWatch saw.
type CountStats struct {
	Samples int
	Min     int       // lowest count seen (-1: no sample)
	MinAt   time.Time // when the lowest count was first seen
	Last    int       // the latest count
	// Below counts the samples under the threshold given to WatchCount;
	// FirstBelow and LastBelow are the first and last of them.
	Below                 int
	FirstBelow, LastBelow time.Time
	// MaxGap is the longest time between the starts of two samples; Gaps
	// are all of them, in order.
	MaxGap time.Duration
	Gaps   []time.Duration
	Err    error // the first error; sampling stops at an error
}

// GapsOver returns the number of gaps between samples longer than d.
func (st CountStats) GapsOver(d time.Duration) int {
	n := 0
	for _, g := range st.Gaps {
		if g > d {
			n++
		}
	}
	return n
}

// WatchCount starts sampling every interval, for at most maxDuration; it
// is stopped by Stop or when the test ends. Samples with fewer than
// threshold routes are counted in CountStats.Below.
func (b *BIRD) WatchCount(t testing.TB, interval, maxDuration time.Duration, threshold int) *CountWatch {
	t.Helper()
	c, err := b.RouteCounter()
	if err != nil {
		t.Fatal(err)
	}
	w := &CountWatch{stop: make(chan struct{}), done: make(chan struct{}), stats: CountStats{Min: -1, Last: -1}}
	go func() {
		defer close(w.done)
		defer c.Close()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		deadline := time.NewTimer(maxDuration)
		defer deadline.Stop()
		var prev time.Time
		for {
			start := time.Now()
			n, err := c.Count()
			w.mu.Lock()
			st := &w.stats
			if err != nil {
				st.Err = err
				w.mu.Unlock()
				return
			}
			st.Samples++
			st.Last = n
			if st.Min < 0 || n < st.Min {
				st.Min, st.MinAt = n, start
			}
			if n < threshold {
				if st.Below == 0 {
					st.FirstBelow = start
				}
				st.Below++
				st.LastBelow = start
			}
			if !prev.IsZero() {
				gap := start.Sub(prev)
				st.Gaps = append(st.Gaps, gap)
				st.MaxGap = max(st.MaxGap, gap)
			}
			prev = start
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-deadline.C:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { w.Stop() })
	return w
}

// Stats returns what the watch has seen so far.
func (w *CountWatch) Stats() CountStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.stats
	st.Gaps = slices.Clone(st.Gaps)
	return st
}

// Stop stops sampling (idempotent) and returns the statistics.
func (w *CountWatch) Stop() CountStats {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
	return w.Stats()
}

// SampleEvery is the longest gap between two samples that the restart
// tests accept for most samples (CheckNeverBelow).
const SampleEvery = 20 * time.Millisecond

// CheckNeverBelow logs what a CountWatch saw (times relative to since) and
// fails the test when BIRD ever held fewer than want routes, when
// sampling failed, or when more than 5% of the gaps between samples were
// longer than SampleEvery (the sampling would then be too coarse to prove
// anything). The watch asks every few milliseconds; a few longer gaps
// happen when BIRD is busy applying a burst of updates (it answers its
// CLI between them) or the machine is loaded, and are logged.
func CheckNeverBelow(t testing.TB, name string, st CountStats, want int, since time.Time) {
	t.Helper()
	rel := func(at time.Time) time.Duration { return at.Sub(since).Round(time.Millisecond) }
	slow := st.GapsOver(SampleEvery)
	t.Logf("%s: %d samples over %s, min %d of %d, %d gaps over %s, longest %s", name, st.Samples,
		time.Since(since).Round(time.Millisecond), st.Min, want, slow, SampleEvery, st.MaxGap.Round(time.Millisecond))
	if st.Err != nil {
		t.Errorf("%s: sampling BIRD's routes: %v", name, st.Err)
	}
	if st.Min < want {
		t.Errorf("%s: BIRD held %d of %d routes (first at +%s); %d samples below %d, from +%s to +%s",
			name, st.Min, want, rel(st.MinAt), st.Below, want, rel(st.FirstBelow), rel(st.LastBelow))
	}
	if slow*20 > len(st.Gaps) {
		t.Errorf("%s: %d of %d gaps between samples were over %s: sampling too coarse", name, slow, len(st.Gaps), SampleEvery)
	}
}

// GracefulRestartCaps is what BIRD says the speaker's OPEN announced about
// graceful restart (RFC 4724) and long-lived graceful restart (RFC 9494).
type GracefulRestartCaps struct {
	RestartTime int      // seconds; -1 = no graceful restart capability
	Recovery    bool     // the Restart State bit ("Restart recovery")
	Preserved   []string // families with the Forwarding State bit: "ipv4", "ipv6"
	LLStaleTime int      // seconds; -1 = no LLGR capability
	LLPreserved []string // LLGR families with the F bit
}

// NeighborGracefulRestart reads the speaker's graceful restart
// capabilities from `show protocols all` (the current or last session).
func (b *BIRD) NeighborGracefulRestart() (GracefulRestartCaps, error) {
	out, err := b.Birdc("show protocols all " + ProtocolName)
	if err != nil {
		return GracefulRestartCaps{}, err
	}
	return parseNeighborGR(out), nil
}

func parseNeighborGR(out string) GracefulRestartCaps {
	caps := GracefulRestartCaps{RestartTime: -1, LLStaleTime: -1}
	_, nbr, ok := strings.Cut(out, "Neighbor capabilities\n")
	if !ok {
		return caps
	}
	capIndent := -1 // the indentation of capability names; attributes are deeper
	capability := ""
	for _, line := range strings.Split(nbr, "\n") {
		l := strings.TrimSpace(line)
		if l == "" {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " \t"))
		if capIndent < 0 {
			capIndent = indent
		}
		if indent < capIndent {
			break // "Session:", the end of the capabilities
		}
		if indent == capIndent {
			capability = l
			switch l {
			case "Graceful restart":
				caps.RestartTime = 0
			case "Long-lived graceful restart":
				caps.LLStaleTime = 0
			}
			continue
		}
		key, val, _ := strings.Cut(l, ":")
		val = strings.TrimSpace(val)
		switch capability + "/" + key {
		case "Graceful restart/Restart time":
			caps.RestartTime, _ = strconv.Atoi(val)
		case "Graceful restart/Restart recovery":
			caps.Recovery = true
		case "Graceful restart/AF preserved":
			caps.Preserved = strings.Fields(val)
		case "Long-lived graceful restart/LL stale time":
			caps.LLStaleTime, _ = strconv.Atoi(val)
		case "Long-lived graceful restart/AF preserved":
			caps.LLPreserved = strings.Fields(val)
		}
	}
	return caps
}

var birdRestartTimer = regexp.MustCompile(`(?m)^\s+Restart timer:\s+([0-9.]+)/`)

// RestartTimer returns how long BIRD will keep the speaker's stale routes
// while the session is down in graceful restart (its "Restart timer");
// ok is false when no restart timer runs.
func (b *BIRD) RestartTimer() (left time.Duration, ok bool, err error) {
	out, err := b.Birdc("show protocols all " + ProtocolName)
	if err != nil {
		return 0, false, err
	}
	m := birdRestartTimer.FindStringSubmatch(out)
	if m == nil {
		return 0, false, nil
	}
	secs, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false, fmt.Errorf("BIRD restart timer %q: %w", m[1], err)
	}
	return time.Duration(secs * float64(time.Second)), true, nil
}

// WaitRouteCount waits until BIRD holds exactly n routes from its BGP
// peers, by its channel counters and in its tables, failing the test after
// timeout.
func (b *BIRD) WaitRouteCount(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	c, err := b.RouteCounter()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got, table int
	if !testkit.Poll(timeout, func() bool {
		if got, err = c.Count(); err != nil || got != n {
			return false
		}
		table, err = c.TableCount()
		return err == nil && table == n
	}) {
		t.Fatalf("BIRD holds %d routes (%d in its tables, err %v), want %d", got, table, err, n)
	}
}
