// Package pgtest runs a throwaway PostgreSQL cluster for tests: initdb in a
// temporary directory, postgres on a free loopback port, stopped and
// removed when the test ends. As root (which postgres refuses to run as)
// the server runs as the postgres user. The server can be stopped and
// started again on the same data and port (outage tests).
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// BinDir holds initdb and postgres: $RTBH_PG_BIN, else the newest
// /usr/lib/postgresql/VERSION/bin (Debian's postgresql package).
var BinDir = findBinDir()

func findBinDir() string {
	if d := os.Getenv("RTBH_PG_BIN"); d != "" {
		return d
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestV := "/usr/lib/postgresql/15/bin", 0
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err == nil && v > bestV {
			best, bestV = d, v
		}
	}
	return best
}

// Server is a running (or stopped) throwaway PostgreSQL.
type Server struct {
	t      testing.TB
	dir    string
	port   int
	listen []netip.Addr // DSN names the first
	netns  string       // the network namespace postgres runs in, if any
	cred   *syscall.Credential
	mu     sync.Mutex
	cmd    *exec.Cmd
	log    *bytes.Buffer
	done   chan struct{}
	dbs    int
}

// Start creates a cluster and starts PostgreSQL on 127.0.0.1 and a free
// port. It skips the test when the binaries are missing — fails it when CI
// is set, as the router tests do — and fails it when the server does not
// start.
func Start(t testing.TB) *Server { return StartWith(t, Options{}) }

// Options run the server elsewhere than on 127.0.0.1 (StartWith).
type Options struct {
	// Netns is a network namespace (a name under /run/netns, as `ip netns
	// add` makes) to run postgres in; it needs root.
	Netns string
	// Listen is the addresses postgres listens on (default 127.0.0.1);
	// DSN names the first.
	Listen []netip.Addr
	// Clients, when valid, may connect over TCP besides loopback.
	Clients netip.Prefix
}

// StartWith is Start with opts.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	initdb := filepath.Join(BinDir, "initdb")
	if _, err := os.Stat(initdb); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL not installed (%s) and CI is set: run deploy/install-test-deps.sh", initdb)
		}
		t.Skipf("PostgreSQL not installed (%s): run deploy/install-test-deps.sh", initdb)
	}
	dir, err := os.MkdirTemp("", "rtbh-pg")
	if err != nil {
		t.Fatal(err)
	}
	listen := opts.Listen
	if len(listen) == 0 {
		listen = []netip.Addr{netip4Loopback}
	}
	s := &Server{t: t, dir: dir, port: testkit.FreePort(t, netip4Loopback), listen: listen, netns: opts.Netns}
	t.Cleanup(func() { s.Stop(); os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root and there is no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	} else if s.netns != "" {
		t.Fatal("pgtest: a network namespace needs root")
	}
	cmd := s.command(initdb, "-D", s.dataDir(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale", "C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if opts.Clients.IsValid() {
		f, err := os.OpenFile(filepath.Join(s.dataDir(), "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			_, err = fmt.Fprintf(f, "host all all %s trust\n", opts.Clients.Masked())
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			t.Fatalf("allowing %s in pg_hba.conf: %v", opts.Clients, err)
		}
	}
	s.Restart()
	return s
}

var netip4Loopback = netip.MustParseAddr("127.0.0.1")

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

func (s *Server) command(name string, args ...string) *exec.Cmd {
	if s.netns != "" {
		// nsenter joins the namespace as root, then becomes postgres and
		// execs the program (so signals reach it).
		args = append([]string{"--net=/run/netns/" + s.netns, "-S", strconv.Itoa(int(s.cred.Uid)),
			"-G", strconv.Itoa(int(s.cred.Gid)), "--", name}, args...)
		cmd := exec.Command("nsenter", args...)
		cmd.Dir = s.dir
		return cmd
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

func (s *Server) listenAddresses() string {
	as := make([]string, len(s.listen))
	for i, a := range s.listen {
		as[i] = a.String()
	}
	return strings.Join(as, ",")
}

// Port is the server's TCP port.
func (s *Server) Port() int { return s.port }

// Restart starts the server (after Stop) on the same data and port and
// waits until it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		return
	}
	log := &bytes.Buffer{}
	cmd := s.command(filepath.Join(BinDir, "postgres"), "-D", s.dataDir(), "-p", strconv.Itoa(s.port),
		"-c", "listen_addresses="+s.listenAddresses(), "-c", "unix_socket_directories="+s.dir,
		"-c", "max_connections=200", "-c", "fsync=on", "-c", "synchronous_commit=on")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.t.Fatalf("starting postgres: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.log, s.done = cmd, log, done
	s.mu.Unlock()
	ok := testkit.Poll(30*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err != nil {
			return false
		}
		c.Close(ctx)
		return true
	})
	select {
	case <-done:
		ok = false
	default:
	}
	if !ok {
		s.t.Fatalf("postgres did not start:\n%s", s.Log())
	}
}

// Stop stops the server (fast shutdown: clients are disconnected) and
// waits for it to exit. Idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Log returns what postgres wrote to stderr.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// DSN is the URL of database db as the superuser postgres.
func (s *Server) DSN(db string) string {
	return s.DSNOn(s.listen[0], db)
}

// SocketDSN is the keyword/value DSN of database db through the server's
// unix socket.
func (s *Server) SocketDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", s.dir, s.port, db)
}

// DSNOn is DSN through listen address a.
func (s *Server) DSNOn(a netip.Addr, db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", net.JoinHostPort(a.String(), strconv.Itoa(s.port)), db)
}

// NewDatabase creates an empty database and returns its DSN.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	s.dbs++
	name := fmt.Sprintf("rtbh_%d", s.dbs)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("connecting to postgres: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	return s.DSN(name)
}

// CPU returns the CPU time (user + system) the server has used so far: the
// postmaster, its live processes and those that exited.
func (s *Server) CPU() (time.Duration, error) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		return 0, fmt.Errorf("postgres is not running")
	}
	root := cmd.Process.Pid
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	const tick = 10 * time.Millisecond // USER_HZ = 100 on Linux
	var total int64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid ... utime(14) stime(15) cutime(16) cstime(17).
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if pid != root && ppid != root {
			continue
		}
		for _, k := range []int{11, 12} {
			v, _ := strconv.ParseInt(f[k], 10, 64)
			total += v
		}
		if pid == root {
			for _, k := range []int{13, 14} {
				v, _ := strconv.ParseInt(f[k], 10, 64)
				total += v
			}
		}
	}
	return time.Duration(total) * tick, nil
}
