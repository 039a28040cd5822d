// Command rtbhd is the rtbh route server: it ingests sFlow, takes
// blackhole requests and partner reports over gRPC, keeps its state in
// SQLite and announces blackholes over BGP.
//
//	rtbhd --config FILE [--check] [--log-format text|json] [--log-level info]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rtbh/rtbh/cmd/rtbhd/internal/app"
	"github.com/rtbh/rtbh/cmd/rtbhd/internal/config"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rtbhd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		path      = fs.String("config", "rtbhd.yaml", "configuration `file` (YAML)")
		check     = fs.Bool("check", false, "validate the configuration, print every problem, and exit")
		logFormat = fs.String("log-format", "text", "log format: text or json")
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn or error")
		pprofOn   = fs.Bool("pprof", false, "serve Go profiles under /debug/pprof/ on metrics.listen")
	)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rtbhd --config FILE [--check] [--log-format text|json] [--log-level LEVEL] [--pprof]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rtbhd: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "rtbhd: --log-level: %v\n", err)
		return 2
	}
	opts := &slog.HandlerOptions{Level: level}
	var logger *slog.Logger
	switch *logFormat {
	case "text":
		logger = slog.New(slog.NewTextHandler(stderr, opts))
	case "json":
		logger = slog.New(slog.NewJSONHandler(stderr, opts))
	default:
		fmt.Fprintf(stderr, "rtbhd: --log-format must be text or json, not %q\n", *logFormat)
		return 2
	}

	cfg, err := config.Load(*path)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintf(stderr, "%s: %v\n", *path, e)
			}
		} else {
			fmt.Fprintf(stderr, "rtbhd: %v\n", err)
		}
		return 1
	}
	if err := app.Check(cfg); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "%s: %s\n", *path, line)
		}
		return 1
	}
	if *check {
		// Warnings do not make the file invalid: the rules work, only not
		// at the sampling rates the agents reported.
		warnings, err := app.SamplingWarnings(context.Background(), cfg)
		if err != nil {
			fmt.Fprintf(stderr, "%s: warning: cannot read the agents' sampling rates: %v\n", *path, err)
		}
		for _, w := range warnings {
			fmt.Fprintf(stderr, "%s: warning: %s\n", *path, w)
		}
		fmt.Fprintf(stdout, "%s: configuration is valid\n", *path)
		return 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a, err := app.New(cfg, *path, logger, app.Options{Pprof: *pprofOn, Reload: hup})
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	if err := a.Run(ctx); err != nil {
		logger.Error("stopped with an error", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}
