package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// commandTable lists the commands in the order of the usage text.
func commandTable() []command {
	return []command{
		{name: "add", synopsis: "add [--ttl 1h] [--flowspec tcp/25] --reason TEXT (PREFIX | --file FILE)   add or extend blackholes (--flowspec: FlowSpec filters instead; FILE: one prefix a line, # comments, - = stdin)", nargs: -1, setup: setupAdd},
		{name: "remove", synopsis: "remove [--flowspec tcp/25] [--reason TEXT] (PREFIX | --file FILE)   withdraw blackholes (or that FlowSpec filter) now", nargs: -1, setup: setupRemove},
		{name: "list", synopsis: "list [--within CIDR] [--origin O]      active blackholes and filters (O ending in ':' matches a prefix: detector:)", setup: setupList},
		{name: "watch", synopsis: "watch                                  the active set, then every change", setup: setupWatch},
		{name: "neighbors", synopsis: "neighbors                              BGP sessions", setup: setupNeighbors},
		{name: "offender", synopsis: "offender ADDRESS                       evidence and reports for one address", nargs: 1, setup: setupOffender},
		{name: "offenders", synopsis: "offenders [--shadow|--servers] [--limit N]  recent detector catches (--shadow: action log rules only; --servers: learned servers)", setup: setupOffenders},
		{name: "audit", synopsis: "audit [--prefix P] [--actor A] [--since 24h] [--until T] [--limit N]   the audit log, newest first", setup: setupAudit},
		{name: "report", synopsis: "report [--kind spam] [--count N] [--evidence TEXT] ADDRESS   submit one report", nargs: 1, setup: setupReport},
	}
}

func setupAdd(fs *pflag.FlagSet) func(context.Context, *cli, []string) error {
	ttl := fs.Duration("ttl", 0, "how long the blackhole lasts (default: policy.default_ttl)")
	reason := fs.String("reason", "", "why, for the audit log (required)")
	flowspec := fs.String("flowspec", "", "add a FlowSpec filter instead of a route: drop only PROTO/PORTS from PREFIX (tcp/25, udp/53,5353, tcp/25,465-587)")
	file := fs.String("file", "", "add every prefix of this `file` (one a line, # comments; - = stdin), in batches")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := fileOrPrefix("add", *file, args); err != nil {
			return err
		}
		if strings.TrimSpace(*reason) == "" {
			return usagef("add needs --reason")
		}
		match, err := flowspecFlag(*flowspec)
		if err != nil {
			return err
		}
		var ttlpb *durationpb.Duration
		if fs.Changed("ttl") {
			ttlpb = durationpb.New(*ttl)
		}
		if *file != "" {
			return c.addFile(ctx, *file, ttlpb, *reason, match)
		}
		req := &rtbhv1.AddBlackholeRequest{Prefix: args[0], Reason: *reason, Ttl: ttlpb, Flowspec: match}
		ctx, cancel := c.callCtx(ctx, false)
		defer cancel()
		resp, err := rtbhv1.NewBlackholeServiceClient(c.conn).AddBlackhole(ctx, req)
		if err != nil {
			return err
		}
		if c.g.json {
			return c.printJSON(resp)
		}
		verb := "added"
		if resp.Existed {
			verb = "already active, now"
		}
		b := resp.Blackhole
		_, err = fmt.Fprintf(c.stdout, "%s %s: origin %s, expires %s (in %s)\n", verb, entryName(b.GetPrefix(), b.GetFlowspec()), b.GetOrigin(), rfc3339(b.GetExpiresAt()), remaining(b.GetExpiresAt()))
		return err
	}
}

func setupRemove(fs *pflag.FlagSet) func(context.Context, *cli, []string) error {
	reason := fs.String("reason", "", "why, for the audit log")
	flowspec := fs.String("flowspec", "", "remove the FlowSpec filter with this match (tcp/25) instead of the route")
	file := fs.String("file", "", "remove every prefix of this `file` (one a line, # comments; - = stdin), in batches")
	return func(ctx context.Context, c *cli, args []string) error {
		if err := fileOrPrefix("remove", *file, args); err != nil {
			return err
		}
		match, err := flowspecFlag(*flowspec)
		if err != nil {
			return err
		}
		if *file != "" {
			if match != nil {
				return usagef("remove: --flowspec is for one PREFIX, not with --file")
			}
			return c.removeFile(ctx, *file, *reason)
		}
		ctx, cancel := c.callCtx(ctx, false)
		defer cancel()
		resp, err := rtbhv1.NewBlackholeServiceClient(c.conn).RemoveBlackhole(ctx, &rtbhv1.RemoveBlackholeRequest{Prefix: args[0], Reason: *reason, Flowspec: match})
		if err != nil {
			return err
		}
		if c.g.json {
			return c.printJSON(resp)
		}
		_, err = fmt.Fprintf(c.stdout, "removed %s\n", entryName(args[0], match))
		return err
	}
}

func setupList(fs *pflag.FlagSet) func(context.Context, *cli, []string) error {
	within := fs.String("within", "", "only entries inside this `CIDR`")
	origin := fs.String("origin", "", "only entries of this `origin` (ending in ':': of origins starting with it)")
	return func(ctx context.Context, c *cli, _ []string) error {
		// Every page, one after the other (rtbhd pages by 10,000).
		all := &rtbhv1.ListBlackholesResponse{}
		var tw *tabwriter.Writer
		if !c.g.json {
			tw = table(c.stdout, "PREFIX", "FLOWSPEC", "ORIGIN", "CREATED", "EXPIRES", "TTL", "REASON")
		}
		err := c.listAll(ctx, *within, *origin, func(page []*rtbhv1.Blackhole) error {
			if c.g.json {
				all.Blackholes = append(all.Blackholes, page...)
				return nil
			}
			for _, b := range page {
				row(tw, b.Prefix, matchText(b.Flowspec), b.Origin, rfc3339(b.CreatedAt), rfc3339(b.ExpiresAt), remaining(b.ExpiresAt), oneLine(b.Reason, 60))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if c.g.json {
			return c.printJSON(all)
		}
		return tw.Flush()
	}
}

// fileOrPrefix checks that cmd got either one PREFIX or --file.
func fileOrPrefix(cmd, file string, args []string) error {
	switch {
	case file != "" && len(args) > 0:
		return usagef("%s: give either PREFIX or --file, not both", cmd)
	case file == "" && len(args) != 1:
		return usagef("%s takes 1 argument(s), got %d", cmd, len(args))
	}
	return nil
}

var eventNames = map[rtbhv1.EventType]string{
	rtbhv1.EventType_EVENT_TYPE_SNAPSHOT: "active",
	rtbhv1.EventType_EVENT_TYPE_ADDED:    "added",
	rtbhv1.EventType_EVENT_TYPE_EXTENDED: "extended",
	rtbhv1.EventType_EVENT_TYPE_REMOVED:  "removed",
	rtbhv1.EventType_EVENT_TYPE_EXPIRED:  "expired",
}

func setupWatch(*pflag.FlagSet) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, _ []string) error {
		ctx, cancel := c.callCtx(ctx, true)
		defer cancel()
		stream, err := rtbhv1.NewBlackholeServiceClient(c.conn).WatchBlackholes(ctx, &rtbhv1.WatchBlackholesRequest{})
		if err != nil {
			return err
		}
		const format = "%-20s  %-8s  %-22s  %-24s  %-20s  %-12s  %s\n"
		if !c.g.json {
			fmt.Fprintf(c.stdout, format, "TIME", "EVENT", "PREFIX", "ORIGIN", "EXPIRES", "ACTOR", "REASON")
		}
		snapshot := 0
		for {
			ev, err := stream.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return nil // interrupted by the user
				}
				return err
			}
			if c.g.json {
				if err := c.writeJSON(ev, false); err != nil {
					return err
				}
				continue
			}
			switch ev.Type {
			case rtbhv1.EventType_EVENT_TYPE_SNAPSHOT_END:
				fmt.Fprintf(c.stdout, "-- %d active; watching for changes --\n", snapshot)
				continue
			case rtbhv1.EventType_EVENT_TYPE_SNAPSHOT:
				snapshot++
			}
			name, ok := eventNames[ev.Type]
			if !ok {
				name = ev.Type.String()
			}
			b := ev.Blackhole
			if _, err := fmt.Fprintf(c.stdout, format, time.Now().UTC().Format(time.RFC3339), name, entryName(b.GetPrefix(), b.GetFlowspec()), b.GetOrigin(),
				rfc3339(b.GetExpiresAt()), dash(ev.Actor), oneLine(b.GetReason(), 60)); err != nil {
				return err
			}
		}
	}
}

func setupNeighbors(*pflag.FlagSet) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, _ []string) error {
		ctx, cancel := c.callCtx(ctx, false)
		defer cancel()
		resp, err := rtbhv1.NewStatusServiceClient(c.conn).ListNeighbors(ctx, &rtbhv1.ListNeighborsRequest{})
		if err != nil {
			return err
		}
		if c.g.json {
			return c.printJSON(resp)
		}
		tw := table(c.stdout, "ADDRESS", "PORT", "ASN", "ROLE", "STATE", "SINCE", "ROUTES", "FLOWSPEC")
		for _, n := range resp.Neighbors {
			fs := "-"
			if n.Flowspec {
				fs = fmt.Sprint(n.FlowspecSent)
			}
			row(tw, n.Address, fmt.Sprint(n.Port), fmt.Sprint(n.Asn), n.Role, n.State, rfc3339(n.StateSince), fmt.Sprint(n.RoutesSent), fs)
		}
		return tw.Flush()
	}
}

func setupOffender(*pflag.FlagSet) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		ctx, cancel := c.callCtx(ctx, false)
		defer cancel()
		resp, err := rtbhv1.NewStatusServiceClient(c.conn).GetOffender(ctx, &rtbhv1.GetOffenderRequest{Address: args[0]})
		if err != nil {
			return err
		}
		if c.g.json {
			return c.printJSON(resp)
		}
		o := resp.Offender
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "address\t%s\n", o.Address)
		fmt.Fprintf(tw, "report score\t%g\n", o.Score)
		for _, p := range o.ScoreParts {
			fmt.Fprintf(tw, "  from %s\t%g (observed %s)\n", p.Reporter, p.Trust, rfc3339(p.ObservedAt))
		}
		for _, s := range o.Servers {
			fmt.Fprintf(tw, "learned server\t%s: %d outside clients, first seen %s, last seen %s\n", s.Rule, s.Clients, rfc3339(s.FirstSeen), rfc3339(s.LastSeen))
		}
		fmt.Fprintf(tw, "detector offenses\t%d\n", o.Offenses)
		if b := o.Blackhole; b != nil {
			what := "blackhole"
			if b.Flowspec != nil {
				what = "flowspec filter"
			}
			fmt.Fprintf(tw, "%s\t%s, origin %s, expires %s (in %s)\n", what, entryName(b.Prefix, b.Flowspec), b.Origin, rfc3339(b.ExpiresAt), remaining(b.ExpiresAt))
		} else {
			fmt.Fprintf(tw, "blackhole\tnone\n")
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "\nevidence (%d):\n", len(o.Evidence))
		if len(o.Evidence) > 0 {
			tw = table(c.stdout, "RECORDED", "RULE", "ACTION", "PROTO", "PORTS", "DESTINATIONS", "PACKETS", "CONNECTIONS", "WINDOW", "FIRST SEEN", "LAST SEEN", "EXAMPLES")
			for _, e := range o.Evidence {
				row(tw, rfc3339(e.RecordedAt), e.Rule, e.Action, e.Protocol, joinPorts(e.DstPorts), fmt.Sprint(e.DistinctDestinations),
					fmt.Sprint(e.EstimatedPackets), fmt.Sprint(e.EstimatedConnections), e.Window.AsDuration().String(),
					rfc3339(e.FirstSeen), rfc3339(e.LastSeen), oneLine(strings.Join(e.ExampleDestinations, ","), 60))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		fmt.Fprintf(c.stdout, "\nreports (%d):\n", len(o.Reports))
		if len(o.Reports) > 0 {
			tw = table(c.stdout, "RECEIVED", "REPORTER", "TRUST", "KIND", "COUNT", "OBSERVED", "EVIDENCE")
			for _, r := range o.Reports {
				row(tw, rfc3339(r.ReceivedAt), r.Reporter, fmt.Sprintf("%g", r.Trust), r.Kind, fmt.Sprint(r.Count), rfc3339(r.ObservedAt), oneLine(r.Evidence, 60))
			}
			return tw.Flush()
		}
		return nil
	}
}

func setupOffenders(fs *pflag.FlagSet) func(context.Context, *cli, []string) error {
	shadow := fs.Bool("shadow", false, "only offenders caught by shadow rules (action: log)")
	servers := fs.Bool("servers", false, "list the learned servers (detector.skip_servers) instead")
	limit := fs.Uint("limit", 100, "at most this many, most recent first")
	return func(ctx context.Context, c *cli, _ []string) error {
		if *shadow && *servers {
			return usagef("--shadow and --servers exclude each other")
		}
		ctx, cancel := c.callCtx(ctx, false)
		defer cancel()
		resp, err := rtbhv1.NewStatusServiceClient(c.conn).ListOffenders(ctx, &rtbhv1.ListOffendersRequest{ShadowOnly: *shadow, Servers: *servers, Limit: uint32(*limit)})
		if err != nil {
			return err
		}
		if c.g.json {
			return c.printJSON(resp)
		}
		if *servers {
			tw := table(c.stdout, "ADDRESS", "RULE", "CLIENTS", "FIRST SEEN", "LAST SEEN")
			for _, s := range resp.Servers {
				row(tw, s.Address, s.Rule, fmt.Sprint(s.Clients), rfc3339(s.FirstSeen), rfc3339(s.LastSeen))
			}
			return tw.Flush()
		}
		tw := table(c.stdout, "RECORDED", "ADDRESS", "RULE", "ACTION", "DESTINATIONS", "PACKETS")
		for _, o := range resp.Offenders {
			row(tw, rfc3339(o.RecordedAt), o.Address, o.Rule, o.Action, fmt.Sprint(o.DistinctDestinations), fmt.Sprint(o.EstimatedPackets))
		}
		return tw.Flush()
	}
}

func setupReport(fs *pflag.FlagSet) func(context.Context, *cli, []string) error {
	kind := fs.String("kind", "spam", "what was seen")
	count := fs.Uint64("count", 1, "how many times")
	evidence := fs.String("evidence", "", "free text: log lines, message ids, headers")
	observed := fs.String("observed", "", "when it was seen, RFC 3339 (default now)")
	return func(ctx context.Context, c *cli, args []string) error {
		r := &rtbhv1.Report{Address: args[0], Kind: *kind, Count: *count, Evidence: *evidence}
		if *observed != "" {
			t, err := time.Parse(time.RFC3339, *observed)
			if err != nil {
				return usagef("--observed: %v", err)
			}
			r.ObservedAt = timestamppb.New(t)
		}
		ctx, cancel := c.callCtx(ctx, false)
		defer cancel()
		resp, err := rtbhv1.NewReportServiceClient(c.conn).SubmitReports(ctx, &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{r}})
		if err != nil {
			return err
		}
		if c.g.json {
			if err := c.printJSON(resp); err != nil {
				return err
			}
		} else if resp.Accepted > 0 {
			fmt.Fprintf(c.stdout, "report on %s accepted\n", args[0])
		}
		if len(resp.Rejected) > 0 {
			return status.Errorf(codes.InvalidArgument, "report rejected: %s", resp.Rejected[0].Reason)
		}
		return nil
	}
}

// printJSON prints one protojson document, indented.
func (c *cli) printJSON(m proto.Message) error { return c.writeJSON(m, true) }

// writeJSON prints m as protojson followed by a newline: indented, or on
// one line. protojson's whitespace is deliberately unstable; it is
// normalised here so that output is the same from run to run.
func (c *cli) writeJSON(m proto.Message, indent bool) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	var buf bytes.Buffer
	if indent {
		err = json.Indent(&buf, b, "", "  ")
	} else {
		err = json.Compact(&buf, b)
	}
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err = c.stdout.Write(buf.Bytes())
	return err
}

func table(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row(tw, header...)
	return tw
}

func row(tw *tabwriter.Writer, cells ...string) {
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

func rfc3339(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// remaining is the TTL left until ts, to the second.
func remaining(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	d := time.Until(ts.AsTime()).Round(time.Second)
	if d <= 0 {
		return "expired"
	}
	return d.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinPorts(ps []uint32) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}
