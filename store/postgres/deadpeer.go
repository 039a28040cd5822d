package postgres

import (
	"context"
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
// retention meanwhile. So every connection of the store notices a dead
// peer within about deadPeerAfter, on both sides:
//
//   - the server side, through the session's tcp_keepalives_* (sent in
//     the startup packet; a DSN that sets them keeps its own values) and,
//     on the listener connection, tcp_user_timeout (PostgreSQL 12 and
//     later) for the notifications it cannot deliver;
//   - the client side, through the dialer's keepalives and TCP_USER_TIMEOUT,
//     and a bounded liveness check on the listener connection.
const (
	keepaliveIdle     = 5 * time.Second
	keepaliveInterval = 2 * time.Second
	keepaliveCount    = 3
	// deadPeerAfter bounds how long unacknowledged data may wait.
	deadPeerAfter = keepaliveIdle + keepaliveCount*keepaliveInterval
)

// detectDeadPeers configures c as above.
func detectDeadPeers(c *pgconn.Config) {
	for k, v := range map[string]time.Duration{"tcp_keepalives_idle": keepaliveIdle, "tcp_keepalives_interval": keepaliveInterval} {
		if _, set := c.RuntimeParams[k]; !set {
			c.RuntimeParams[k] = strconv.Itoa(int(v.Seconds()))
		}
	}
	if _, set := c.RuntimeParams["tcp_keepalives_count"]; !set {
		c.RuntimeParams["tcp_keepalives_count"] = strconv.Itoa(keepaliveCount)
	}
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

// serverUserTimeout asks the server to drop the session when data it
// sends stays unacknowledged for deadPeerAfter. PostgreSQL before 12 has
// no tcp_user_timeout: its keepalives still apply, so an error is ignored.
func serverUserTimeout(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(ctx, deadPeerAfter)
	defer cancel()
	conn.Exec(ctx, "SET tcp_user_timeout = "+strconv.Itoa(int(deadPeerAfter.Milliseconds())))
}
