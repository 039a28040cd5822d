package postgres

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
)

// A connection whose peer is gone without a FIN or RST (a network
// partition, a host that lost power) looks alive to TCP for a long time:
// Linux sends its first keepalive probe after two hours, and data that is
// never acknowledged is retransmitted for about fifteen minutes. For the
// leader that is a lock nobody can take: its session advisory lock is
// held by a PostgreSQL backend that waits for a client that is no longer
// there, and no instance expires entries, fuses reports or applies the
// retention meanwhile. So a dead peer is noticed within about
// deadPeerAfter:
//
//   - by rtbhd, on every store connection: the dialer's keepalives and
//     TCP_USER_TIMEOUT, and a bounded liveness check on the listener;
//   - by the server, on the listener's session (the one that holds the
//     lock): tcp_keepalives_* and, from PostgreSQL 12, tcp_user_timeout
//     for the notifications it cannot deliver. They are SET after
//     connecting rather than sent as startup parameters, which a
//     connection pooler in front of the pool's connections may refuse; a
//     DSN that sets them keeps its own values.
const (
	keepaliveIdle     = 5 * time.Second
	keepaliveInterval = 2 * time.Second
	keepaliveCount    = 3
	// deadPeerAfter bounds how long unacknowledged data may wait.
	deadPeerAfter = keepaliveIdle + keepaliveCount*keepaliveInterval
)

// detectDeadPeers makes c's connections notice a dead server.
func detectDeadPeers(c *pgconn.Config) {
	d := &net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepaliveIdle, Interval: keepaliveInterval, Count: keepaliveCount},
		Control: func(network, _ string, rc syscall.RawConn) error {
			if network != "tcp" && network != "tcp4" && network != "tcp6" {
				return nil // a unix socket
			}
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(deadPeerAfter.Milliseconds()))
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	c.DialFunc = d.DialContext
}

// serverDetectsDeadPeer has the server end conn's session when rtbhd is
// gone (see above). tcp_user_timeout is new in PostgreSQL 12: an error
// setting it is ignored, the keepalives still apply.
func serverDetectsDeadPeer(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, deadPeerAfter)
	defer cancel()
	set := conn.Config().RuntimeParams
	for _, p := range []struct {
		name  string
		value int
	}{
		{"tcp_keepalives_idle", int(keepaliveIdle.Seconds())},
		{"tcp_keepalives_interval", int(keepaliveInterval.Seconds())},
		{"tcp_keepalives_count", keepaliveCount},
	} {
		if _, ok := set[p.name]; ok {
			continue
		}
		if _, err := conn.Exec(ctx, "SET "+p.name+" = "+strconv.Itoa(p.value)); err != nil {
			return fmt.Errorf("setting %s: %w", p.name, err)
		}
	}
	if _, ok := set["tcp_user_timeout"]; !ok {
		conn.Exec(ctx, "SET tcp_user_timeout = "+strconv.Itoa(int(deadPeerAfter.Milliseconds())))
	}
	return nil
}
