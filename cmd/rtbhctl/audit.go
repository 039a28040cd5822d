package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// auditPageSize is how many rows rtbhctl audit asks for per call.
const auditPageSize = 1000

func setupAudit(fs *pflag.FlagSet) func(context.Context, *cli, []string) error {
	prefix := fs.String("prefix", "", "only rows about this prefix or prefixes inside it")
	actor := fs.String("actor", "", "only rows of this actor (client name, detector:<rule>, reports, expiry)")
	since := fs.String("since", "", "only rows at or after this: a duration back from now (24h) or an RFC 3339 time")
	until := fs.String("until", "", "only rows before this: a duration back from now or an RFC 3339 time")
	limit := fs.Int("limit", 0, "stop after this many rows (0 = all)")
	return func(ctx context.Context, c *cli, _ []string) error {
		now := time.Now()
		req := &rtbhv1.ListAuditRequest{Prefix: *prefix, Actor: *actor, PageSize: auditPageSize}
		var err error
		if req.Since, err = timeFlag("since", *since, now); err != nil {
			return err
		}
		if req.Until, err = timeFlag("until", *until, now); err != nil {
			return err
		}
		if *limit < 0 {
			return usagef("--limit: %d is negative", *limit)
		}
		client := rtbhv1.NewAuditServiceClient(c.conn)
		all := &rtbhv1.ListAuditResponse{}
		var tw *tabwriter.Writer
		if !c.g.json {
			tw = table(c.stdout, "ID", "AT", "ACTOR", "ACTION", "PREFIX", "ORIGIN", "REASON", "DETAIL")
		}
		n := 0
		for {
			if *limit > 0 {
				req.PageSize = uint32(min(auditPageSize, *limit-n))
			}
			cctx, cancel := c.callCtx(ctx, false)
			resp, err := client.ListAudit(cctx, req)
			cancel()
			if err != nil {
				return err
			}
			for _, e := range resp.Entries {
				if c.g.json {
					all.Entries = append(all.Entries, e)
				} else {
					row(tw, fmt.Sprint(e.Id), rfc3339(e.At), e.Actor, e.Action, dash(e.Prefix), dash(e.Origin), oneLine(e.Reason, 50), oneLine(e.Detail, 50))
				}
			}
			n += len(resp.Entries)
			if resp.NextPageToken == "" || (*limit > 0 && n >= *limit) {
				break
			}
			req.PageToken = resp.NextPageToken
		}
		if c.g.json {
			return c.printJSON(all)
		}
		return tw.Flush()
	}
}

// timeFlag reads --since/--until: "" (unset), a duration back from now, or
// an RFC 3339 time.
func timeFlag(name, v string, now time.Time) (*timestamppb.Timestamp, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return nil, usagef("--%s: %s is negative (a duration back from now)", name, v)
		}
		return timestamppb.New(now.Add(-d)), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, usagef("--%s: %q is neither a duration (24h) nor an RFC 3339 time (2026-12-01T10:00:00Z)", name, v)
	}
	return timestamppb.New(t), nil
}
