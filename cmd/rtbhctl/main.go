package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// Exit statuses.
const (
	exitOK      = 0
	exitRefused = 1
	exitUsage   = 2
)

// run is main without the process: it returns the exit status. SIGINT and
// SIGTERM end a watch cleanly.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdout, stderr)
}

// globals are the flags every command accepts.
type globals struct {
	addr    string
	token   string
	tls     bool
	ca      string
	cert    string
	key     string
	json    bool
	timeout time.Duration

	tokenFromEnv bool // token came from $RTBH_TOKEN
}

// register defines the global flags on fs, with the values already in g
// as defaults.
func (g *globals) register(fs *pflag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "rtbhd gRPC `address`")
	fs.StringVar(&g.token, "token", g.token, "bearer `token` (default $RTBH_TOKEN); sent in plaintext only to a loopback --addr")
	fs.BoolVar(&g.tls, "tls", g.tls, "use TLS, verifying rtbhd's certificate against the system CA roots")
	fs.StringVar(&g.ca, "ca", g.ca, "PEM `file` of the CA that signed rtbhd's certificate, instead of the system roots (enables TLS)")
	fs.StringVar(&g.cert, "cert", g.cert, "PEM client certificate `file` for mTLS (enables TLS; needs --key)")
	fs.StringVar(&g.key, "key", g.key, "PEM client key `file` for --cert")
	fs.BoolVar(&g.json, "json", g.json, "print results as protobuf JSON")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline of each request (not of watch)")
}

// usageError is a mistake in the command line: exit 2 with usage text.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// cli is one invocation.
type cli struct {
	g      globals
	stdout io.Writer
	stderr io.Writer
	stdin  io.Reader // --file -
	conn   *grpc.ClientConn
}

// stdin is what --file - reads (tests replace it).
var stdin io.Reader = os.Stdin

// command is one subcommand: setup defines its flags on fs and returns
// the function that runs it with the positional arguments.
type command struct {
	name     string
	synopsis string
	nargs    int // exact number of positional arguments; -1: the command checks
	setup    func(fs *pflag.FlagSet) func(ctx context.Context, c *cli, args []string) error
}

// newFlagSet is a pflag set that reports errors to the caller and prints
// nothing by itself.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, stdin: stdin, g: globals{
		addr:    "127.0.0.1:50051",
		timeout: 30 * time.Second,
	}}
	// The global flags before the command: parsing stops at the command
	// name, whose own flags are not known yet.
	top := newFlagSet("rtbhctl")
	top.SetInterspersed(false)
	c.g.register(top)
	if err := top.Parse(longFlags(top, args, false)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			c.usage(stdout, top)
			return exitOK
		}
		return c.usageFail(err, top)
	}
	if top.NArg() == 0 {
		return c.usageFail(usagef("no command given"), top)
	}
	name := top.Arg(0)
	if name == "help" {
		c.usage(stdout, top)
		return exitOK
	}
	cmd, ok := findCommand(name)
	if !ok {
		return c.usageFail(usagef("unknown command %q", name), top)
	}
	// The command's flags and, again, the global ones (the same flags,
	// so what was parsed before the command stays), anywhere among the
	// arguments. After "--" everything is an argument.
	fs := newFlagSet("rtbhctl " + name)
	runCmd := cmd.setup(fs)
	fs.AddFlagSet(top)
	if err := fs.Parse(longFlags(fs, top.Args()[1:], true)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			c.commandUsage(stdout, cmd, fs)
			return exitOK
		}
		return c.commandUsageFail(err, cmd, fs)
	}
	pos := fs.Args()
	if c.g.token == "" {
		c.g.token = os.Getenv("RTBH_TOKEN")
		c.g.tokenFromEnv = c.g.token != ""
	}
	if cmd.nargs >= 0 && len(pos) != cmd.nargs {
		return c.commandUsageFail(usagef("%s takes %d argument(s), got %d", name, cmd.nargs, len(pos)), cmd, fs)
	}
	if err := c.connect(); err != nil {
		return c.commandUsageFail(err, cmd, fs)
	}
	defer c.conn.Close()
	err := runCmd(ctx, c, pos)
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return c.commandUsageFail(err, cmd, fs)
	}
	if st, ok := status.FromError(err); ok {
		fmt.Fprintf(stderr, "rtbhctl: %s: %s\n", code.Code(st.Code()).String(), st.Message())
		return exitRefused
	}
	fmt.Fprintf(stderr, "rtbhctl: %v\n", err)
	return exitRefused
}

func findCommand(name string) (command, bool) {
	for _, c := range commandTable() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// longFlags rewrites the single-dash long flags that earlier rtbhctl
// (Go's flag package) accepted, -addr x or -ttl=1h, into pflag's --addr x
// and --ttl=1h, so existing scripts keep working; rtbhctl has no
// one-letter flags, and -h stays pflag's help. Flag values and everything
// after "--" are left alone, and so, unless interspersed, is everything
// from the first argument on.
func longFlags(fs *pflag.FlagSet, args []string, interspersed bool) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			if !interspersed {
				return append(out, args[i:]...)
			}
			out = append(out, a)
			continue
		}
		if a[1] != '-' && len(a) > 2 {
			a = "-" + a
		}
		out = append(out, a)
		if name, ok := strings.CutPrefix(a, "--"); ok && !strings.Contains(name, "=") {
			if f := fs.Lookup(name); f != nil && f.NoOptDefVal == "" && i+1 < len(args) {
				i++
				out = append(out, args[i]) // the flag's value, even if it starts with "-"
			}
		}
	}
	return out
}

// connect sets up the (lazy) client connection. It refuses, before any
// connection is made, to send a token in plaintext to anything but a
// loopback address.
func (c *cli) connect() error {
	g := &c.g
	loopback := isLoopbackTarget(g.addr)
	var creds credentials.TransportCredentials
	if g.tls || g.ca != "" || g.cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if g.ca != "" {
			pem, err := os.ReadFile(g.ca)
			if err != nil {
				return usagef("reading --ca: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return usagef("reading --ca %s: no PEM certificate", g.ca)
			}
			tc.RootCAs = pool
		} else {
			pool, err := x509.SystemCertPool()
			if err != nil {
				return usagef("--tls: loading the system CA roots: %v (name a CA file with --ca)", err)
			}
			tc.RootCAs = pool
		}
		if g.cert != "" || g.key != "" {
			if g.cert == "" || g.key == "" {
				return usagef("--cert and --key go together")
			}
			kp, err := tls.LoadX509KeyPair(g.cert, g.key)
			if err != nil {
				return usagef("loading --cert/--key: %v", err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		creds = credentials.NewTLS(tc)
	} else {
		if g.key != "" {
			return usagef("--key needs --cert")
		}
		if g.token != "" && !loopback {
			from := "--token"
			if g.tokenFromEnv {
				from = "$RTBH_TOKEN"
			}
			return usagef("refusing to send the token (%s) in plaintext to %s, which is not a loopback address: "+
				"use --tls (system CA roots) or --ca FILE (rtbhd's CA), or reach rtbhd on a loopback address", from, g.addr)
		}
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvBytes))}
	if g.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{token: g.token, requireTLS: !loopback}))
	}
	conn, err := grpc.NewClient(g.addr, opts...)
	if err != nil {
		return usagef("--addr %q: %v", g.addr, err)
	}
	c.conn = conn
	return nil
}

// bearerToken is the per-RPC credential "authorization: Bearer <token>".
// gRPC itself refuses to send it over a connection without transport
// security when requireTLS is set, as it is for non-loopback targets.
type bearerToken struct {
	token      string
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearerToken) RequireTransportSecurity() bool { return b.requireTLS }

// isLoopbackTarget reports whether the gRPC target (host:port, or a
// resolver URL such as dns:///host:port) names a loopback address:
// 127.0.0.0/8, ::1 or the name localhost. A Unix socket (unix:PATH)
// counts too: it never leaves the host either. Anything unparsable is
// not loopback.
func isLoopbackTarget(target string) bool {
	// As grpc.NewClient does: a URL with a registered resolver scheme, or
	// else a plain endpoint for the default (dns) resolver.
	endpoint := target
	if u, err := url.Parse(target); err == nil && u.Scheme != "" && resolver.Get(u.Scheme) != nil {
		switch u.Scheme {
		case "unix", "unix-abstract":
			return true
		}
		endpoint = u.Path
		if endpoint == "" {
			endpoint = u.Opaque
		}
		endpoint = strings.TrimPrefix(endpoint, "/")
	}
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}

// callCtx adds, unless streaming, the deadline. The token travels as
// per-RPC credentials of the connection.
func (c *cli) callCtx(ctx context.Context, stream bool) (context.Context, context.CancelFunc) {
	if stream || c.g.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.g.timeout)
}

func (c *cli) usageFail(err error, top *pflag.FlagSet) int {
	fmt.Fprintf(c.stderr, "rtbhctl: %v\n\n", err)
	c.usage(c.stderr, top)
	return exitUsage
}

func (c *cli) commandUsageFail(err error, cmd command, fs *pflag.FlagSet) int {
	fmt.Fprintf(c.stderr, "rtbhctl: %v\n\n", err)
	c.commandUsage(c.stderr, cmd, fs)
	return exitUsage
}

func (c *cli) usage(w io.Writer, top *pflag.FlagSet) {
	fmt.Fprintf(w, "usage: rtbhctl [global flags] COMMAND [flags] ARGS\n\ncommands:\n")
	for _, cmd := range commandTable() {
		fmt.Fprintf(w, "  rtbhctl %s\n", cmd.synopsis)
	}
	fmt.Fprintf(w, "\nglobal flags (before or after the command):\n%s", top.FlagUsages())
	fmt.Fprintf(w, "\nexit status: 0 success, 1 request refused, 2 usage error\n")
}

func (c *cli) commandUsage(w io.Writer, cmd command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "usage: rtbhctl %s\n\nflags (global ones included, before or after arguments):\n%s", cmd.synopsis, fs.FlagUsages())
}

// oneLine flattens text for a table cell and cuts it at n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
