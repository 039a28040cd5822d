package postgres

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
	"github.com/rtbh/rtbh/store/postgres/pgtest"
)

// nsLink is one veth link between this namespace and a test namespace.
type nsLink struct {
	host, peer netip.Addr // this side's address, the namespace side's
	peerIf     string     // the namespace side's interface
}

// testNetns creates a network namespace joined to this one by two veth
// links, each its own /24 in 198.18.0.0/15 (RFC 2544's benchmarking
// range, never routed), and removes it (and the links) when the test
// ends. It needs root and iproute2.
func testNetns(t *testing.T) (string, [2]nsLink) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("iproute2 (ip) missing and CI is set: %v", err)
		}
		t.Skipf("iproute2 (ip) missing: %v", err)
	}
	id := os.Getpid() % 1000000
	name := fmt.Sprintf("rtbhpg%d", id)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		// A capability of the machine (a container without CAP_SYS_ADMIN),
		// not a missing package.
		t.Skipf("this machine does not allow network namespaces: ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ip("-n", name, "link", "set", "lo", "up")
	var links [2]nsLink
	for i := range links {
		net3 := byte(2*(id%64) + i)
		l := nsLink{host: netip.AddrFrom4([4]byte{198, 18, net3, 2}), peer: netip.AddrFrom4([4]byte{198, 18, net3, 1}),
			peerIf: fmt.Sprintf("rtbh%dn%d", id, i)}
		hostIf := fmt.Sprintf("rtbh%dh%d", id, i)
		ip("link", "add", hostIf, "type", "veth", "peer", "name", l.peerIf, "netns", name)
		t.Cleanup(func() { exec.Command("ip", "link", "del", hostIf).Run() })
		ip("addr", "add", l.host.String()+"/24", "dev", hostIf)
		ip("link", "set", hostIf, "up")
		ip("-n", name, "addr", "add", l.peer.String()+"/24", "dev", l.peerIf)
		ip("-n", name, "link", "set", l.peerIf, "up")
		links[i] = l
	}
	return name, links
}

// After a network partition cuts the leader off, PostgreSQL drops its
// session — and with it the leadership lock — within seconds, and another
// instance takes the leadership: without keepalives on the store's
// connections the lock stayed with the dead session for about two hours
// (Linux's first keepalive probe), and no instance expired entries. The
// partitioned instance gives the leadership up by itself too.
//
// PostgreSQL runs in a network namespace of the test's, reached by instance
// a over one veth link and by b over another; the partition is a's link
// going down on the server's side: no FIN, no RST, nothing more arrives.
func TestLeaderLockFreedAfterPartition(t *testing.T) {
	ns, links := testNetns(t)
	srv := pgtest.StartWith(t, pgtest.Options{Netns: ns, Listen: []netip.Addr{links[0].peer, links[1].peer},
		Clients: netip.MustParsePrefix("198.18.0.0/15")})
	dsnA := srv.NewDatabase(t)
	dsnB := strings.Replace(dsnA, links[0].peer.String(), links[1].peer.String(), 1)
	a, b := open(t, dsnA, "a"), open(t, dsnB, "b")
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { a.Follow(ctx, nopFollower{}) })
	testkit.WaitFor(t, 15*time.Second, "a to lead", a.Leader)
	wg.Go(func() { b.Follow(ctx, nopFollower{}) })
	testkit.WaitFor(t, 15*time.Second, "b to follow", b.Up)
	if b.Leader() {
		t.Fatal("b leads beside a")
	}

	if out, err := exec.Command("ip", "-n", ns, "link", "set", links[0].peerIf, "down").CombinedOutput(); err != nil {
		t.Fatalf("cutting a off: %v\n%s", err, out)
	}
	start := time.Now()
	bound := 3 * deadPeerAfter // detection on the server side, then b's next try (every second)
	var aGone time.Duration
	testkit.WaitFor(t, bound, "b to take the leadership after a was cut off", func() bool {
		if aGone == 0 && !a.Leader() {
			aGone = time.Since(start)
		}
		return b.Leader()
	})
	t.Logf("a cut off: b leads after %v; a gave the leadership up after %v (dead peers noticed after about %v)",
		time.Since(start).Round(100*time.Millisecond), aGone.Round(100*time.Millisecond), deadPeerAfter)
	testkit.WaitFor(t, bound, "a to give the leadership up", func() bool { return !a.Leader() })
	cancel()
	wg.Wait()
	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * deadPeerAfter):
		t.Error("closing the partitioned instance's store hangs")
	}
}

// hangingFollower's Sync hangs (ignoring its context, as a stopped
// process would) once hang is set, until release is closed.
type hangingFollower struct {
	nopFollower
	hang    *atomic.Bool
	release chan struct{}
}

func (f hangingFollower) Sync(ctx context.Context, fetch func(context.Context) (domain.Changes, error)) error {
	if f.hang.Load() {
		<-f.release
		return nil
	}
	return f.nopFollower.Sync(ctx, fetch)
}

// A leader that hangs while its connection stays up (stopped, stuck on a
// disk: TCP keepalives still answered) is replaced after hungAfter: another
// instance ends its idle session, which frees the lock. A live leader is
// never replaced, however busy its own notifications keep it; the hung
// one, once it wakes, gives the leadership up and follows.
func TestHungLeaderReplaced(t *testing.T) {
	a, b := twoInstances(t, pgtest.Start(t), "a", "b")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	hang := &atomic.Bool{}
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	wg.Go(func() { a.Follow(ctx, hangingFollower{hang: hang, release: release}) })
	testkit.WaitFor(t, 15*time.Second, "a to lead", a.Leader)
	wg.Go(func() { b.Follow(ctx, nopFollower{}) })
	testkit.WaitFor(t, 15*time.Second, "b to follow", b.Up)

	// Busy, not hung: a commits every 100 ms for longer than hungAfter,
	// so its listener wakes for notifications of its own (which need no
	// sync, and so no query) more often than it would idle.
	now := time.Now().UTC()
	for i := 0; time.Since(now) < hungAfter+3*time.Second; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 7, byte(i >> 8), byte(i)}), 32).String()
		if err := a.Commit(add(bh(p, now.Add(time.Hour)), "noc")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // pacing the writes, not waiting for a condition
		if !a.Leader() || b.Leader() {
			t.Fatalf("after %v of a's writes: a leads %v, b leads %v; want a", time.Since(now).Round(time.Second), a.Leader(), b.Leader())
		}
	}

	// Hung: a's next sync never returns.
	hang.Store(true)
	if err := b.Commit(add(bh("10.8.0.1/32", now.Add(time.Hour)), "noc")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testkit.WaitFor(t, hungAfter+15*time.Second, "b to replace the hung leader", b.Leader)
	t.Logf("a hung: b leads after %v (hungAfter %v)", time.Since(start).Round(100*time.Millisecond), hungAfter)
	close(release)
	testkit.WaitFor(t, 15*time.Second, "a to give the leadership up once awake", func() bool { return !a.Leader() && a.Up() })
	if !b.Leader() {
		t.Fatal("b lost the leadership when a woke up")
	}
}
