package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
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
	ca      string
	cert    string
	key     string
	json    bool
	timeout time.Duration
}

// register defines the global flags on fs, with the values already in g
// as defaults (so a second FlagSet keeps what the first one parsed).
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "rtbhd gRPC `address`")
	fs.StringVar(&g.token, "token", g.token, "bearer `token` (default $RTBH_TOKEN)")
	fs.StringVar(&g.ca, "ca", g.ca, "PEM `file` of the CA that signed rtbhd's certificate (enables TLS)")
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
	conn   *grpc.ClientConn
}

// command is one subcommand: setup defines its flags on fs and returns
// the function that runs it with the positional arguments.
type command struct {
	name     string
	synopsis string
	nargs    int // exact number of positional arguments
	setup    func(fs *flag.FlagSet) func(ctx context.Context, c *cli, args []string) error
}

func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, g: globals{
		addr:    "127.0.0.1:50051",
		timeout: 30 * time.Second,
	}}
	top := flag.NewFlagSet("rtbhctl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	c.g.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
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
	fs := flag.NewFlagSet("rtbhctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.g.register(fs)
	runCmd := cmd.setup(fs)
	pos, err := parseInterspersed(fs, top.Args()[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.commandUsage(stdout, cmd, fs)
			return exitOK
		}
		return c.commandUsageFail(err, cmd, fs)
	}
	if c.g.token == "" {
		c.g.token = os.Getenv("RTBH_TOKEN")
	}
	if len(pos) != cmd.nargs {
		return c.commandUsageFail(usagef("%s takes %d argument(s), got %d", name, cmd.nargs, len(pos)), cmd, fs)
	}
	if err := c.connect(); err != nil {
		return c.commandUsageFail(err, cmd, fs)
	}
	defer c.conn.Close()
	err = runCmd(ctx, c, pos)
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

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, and returns the positional arguments. After
// "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// connect sets up the (lazy) client connection.
func (c *cli) connect() error {
	creds := insecure.NewCredentials()
	if c.g.ca != "" || c.g.cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.g.ca != "" {
			pem, err := os.ReadFile(c.g.ca)
			if err != nil {
				return usagef("reading --ca: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return usagef("reading --ca %s: no PEM certificate", c.g.ca)
			}
			tc.RootCAs = pool
		}
		if c.g.cert != "" || c.g.key != "" {
			if c.g.cert == "" || c.g.key == "" {
				return usagef("--cert and --key go together")
			}
			kp, err := tls.LoadX509KeyPair(c.g.cert, c.g.key)
			if err != nil {
				return usagef("loading --cert/--key: %v", err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		creds = credentials.NewTLS(tc)
	} else if c.g.key != "" {
		return usagef("--key needs --cert")
	}
	conn, err := grpc.NewClient(c.g.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return usagef("--addr %q: %v", c.g.addr, err)
	}
	c.conn = conn
	return nil
}

// callCtx adds the bearer token and, unless streaming, the deadline.
func (c *cli) callCtx(ctx context.Context, stream bool) (context.Context, context.CancelFunc) {
	if c.g.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.g.token)
	}
	if stream || c.g.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.g.timeout)
}

func (c *cli) usageFail(err error, top *flag.FlagSet) int {
	fmt.Fprintf(c.stderr, "rtbhctl: %v\n\n", err)
	c.usage(c.stderr, top)
	return exitUsage
}

func (c *cli) commandUsageFail(err error, cmd command, fs *flag.FlagSet) int {
	fmt.Fprintf(c.stderr, "rtbhctl: %v\n\n", err)
	c.commandUsage(c.stderr, cmd, fs)
	return exitUsage
}

func (c *cli) usage(w io.Writer, top *flag.FlagSet) {
	fmt.Fprintf(w, "usage: rtbhctl [global flags] COMMAND [flags] ARGS\n\ncommands:\n")
	for _, cmd := range commandTable() {
		fmt.Fprintf(w, "  rtbhctl %s\n", cmd.synopsis)
	}
	fmt.Fprintf(w, "\nglobal flags (before or after the command):\n")
	top.SetOutput(w)
	top.PrintDefaults()
	top.SetOutput(io.Discard)
	fmt.Fprintf(w, "\nexit status: 0 success, 1 request refused, 2 usage error\n")
}

func (c *cli) commandUsage(w io.Writer, cmd command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: rtbhctl %s\n\nflags (global ones included, before or after arguments):\n", cmd.synopsis)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// oneLine flattens text for a table cell and cuts it at n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
