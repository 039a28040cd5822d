package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// Bulk commands: add --file, remove --file, and list paging through
// everything.

// Sizes of the bulk calls (variables so that tests can make them small).
var (
	// maxBatchItems is what rtbhd takes in one AddBlackholes or
	// RemoveBlackholes call.
	maxBatchItems = 10000
	// maxBatchBytes keeps a batch's message below rtbhd's 4 MiB limit
	// (long reasons make large items).
	maxBatchBytes = 3 << 20
	// listPageSize is the page size list asks for (rtbhd's maximum).
	listPageSize uint32 = 10000
)

// maxRecvBytes is the largest response rtbhctl accepts: a page of 10,000
// entries with 1 KiB reasons is about 11 MB.
const maxRecvBytes = 64 << 20

// fileLine is one prefix of a --file, with its line number (from 1).
type fileLine struct {
	Line   int
	Prefix string
}

// fileReject is a line that was not sent or that rtbhd refused.
type fileReject struct {
	Line   int    `json:"line"`
	Prefix string `json:"prefix"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// readPrefixFile reads one prefix (or bare address) per line; "#" starts a
// comment, to the end of the line; blank lines are skipped. Lines that are
// not a prefix are returned as rejects (code INVALID_ARGUMENT) with their
// line number.
func readPrefixFile(r io.Reader) ([]fileLine, []fileReject, error) {
	var (
		lines []fileLine
		bad   []fileReject
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		if strings.ContainsAny(text, " \t") {
			bad = append(bad, fileReject{Line: n, Prefix: text, Code: "INVALID_ARGUMENT", Reason: "one prefix per line"})
			continue
		}
		if _, err := domain.ParsePrefix(text); err != nil {
			bad = append(bad, fileReject{Line: n, Prefix: text, Code: "INVALID_ARGUMENT", Reason: err.Error()})
			continue
		}
		lines = append(lines, fileLine{Line: n, Prefix: text})
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	return lines, bad, nil
}

// openPrefixFile reads --file: a path, or "-" for stdin.
func openPrefixFile(name string, stdin io.Reader) ([]fileLine, []fileReject, error) {
	if name == "-" {
		return readPrefixFile(stdin)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, usagef("--file: %v", err)
	}
	defer f.Close()
	lines, bad, err := readPrefixFile(f)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return lines, bad, nil
}

// batches cuts items into runs of at most maxBatchItems whose encoded size
// (size of each item) stays under maxBatchBytes.
func batches(n int, size func(i int) int) [][2]int {
	var out [][2]int
	start, bytes := 0, 0
	for i := range n {
		s := size(i) + 8 // field tag and length
		if i > start && (i-start == maxBatchItems || bytes+s > maxBatchBytes) {
			out = append(out, [2]int{start, i})
			start, bytes = i, 0
		}
		bytes += s
	}
	if start < n {
		out = append(out, [2]int{start, n})
	}
	return out
}

// fileSummary is what add --file and remove --file print with --json.
type fileSummary struct {
	Lines    int          `json:"lines"`
	Added    int          `json:"added,omitempty"`
	Removed  int          `json:"removed,omitempty"`
	Rejected []fileReject `json:"rejected"`
}

// errRejected makes the exit status 1 after a summary that lists rejects.
type errRejected struct{ n int }

func (e errRejected) Error() string { return fmt.Sprintf("%d line(s) rejected", e.n) }

func (c *cli) addFile(ctx context.Context, name string, ttl *durationpb.Duration, reason string, match *rtbhv1.FlowSpecMatch) error {
	lines, rejects, err := openPrefixFile(name, c.stdin)
	if err != nil {
		return err
	}
	total := len(lines) + len(rejects)
	items := make([]*rtbhv1.AddBlackholeRequest, len(lines))
	for i, l := range lines {
		items[i] = &rtbhv1.AddBlackholeRequest{Prefix: l.Prefix, Ttl: ttl, Reason: reason, Flowspec: match}
	}
	client := rtbhv1.NewBlackholeServiceClient(c.conn)
	added, refused, err := c.sendBatches(ctx, lines, batches(len(items), func(i int) int { return proto.Size(items[i]) }),
		func(ctx context.Context, b [2]int) (int, []*rtbhv1.RejectedItem, error) {
			resp, err := client.AddBlackholes(ctx, &rtbhv1.AddBlackholesRequest{Items: items[b[0]:b[1]]})
			return len(resp.GetBlackholes()), resp.GetRejected(), err
		})
	rejects = append(rejects, refused...)
	if err != nil {
		return c.partial(err, "added", added, len(lines))
	}
	return c.fileSummary(fileSummary{Lines: total, Added: added, Rejected: rejects}, "added", added)
}

func (c *cli) removeFile(ctx context.Context, name, reason string) error {
	lines, rejects, err := openPrefixFile(name, c.stdin)
	if err != nil {
		return err
	}
	total := len(lines) + len(rejects)
	prefixes := make([]string, len(lines))
	for i, l := range lines {
		prefixes[i] = l.Prefix
	}
	client := rtbhv1.NewBlackholeServiceClient(c.conn)
	removed, refused, err := c.sendBatches(ctx, lines, batches(len(prefixes), func(i int) int { return len(prefixes[i]) }),
		func(ctx context.Context, b [2]int) (int, []*rtbhv1.RejectedItem, error) {
			resp, err := client.RemoveBlackholes(ctx, &rtbhv1.RemoveBlackholesRequest{Prefixes: prefixes[b[0]:b[1]], Reason: reason})
			return int(resp.GetRemoved()), resp.GetRejected(), err
		})
	rejects = append(rejects, refused...)
	if err != nil {
		return c.partial(err, "removed", removed, len(lines))
	}
	return c.fileSummary(fileSummary{Lines: total, Removed: removed, Rejected: rejects}, "removed", removed)
}

// batchesInFlight is how many batch calls rtbhctl keeps open at once, so
// that rtbhd decides and commits one while the next travels and is
// decoded. A prefix listed twice in different batches may be decided in
// either order.
const batchesInFlight = 2

// sendBatches sends every batch of lines with send, batchesInFlight at a
// time, and returns how many items were accepted and the refused ones (by
// line). After a failed call no further batch is sent; the accepted count
// still includes every batch that succeeded (those are committed).
func (c *cli) sendBatches(ctx context.Context, lines []fileLine, bs [][2]int,
	send func(context.Context, [2]int) (int, []*rtbhv1.RejectedItem, error)) (int, []fileReject, error) {
	type result struct {
		n   int
		rej []*rtbhv1.RejectedItem
		err error
	}
	results := make([]result, len(bs))
	sem := make(chan struct{}, batchesInFlight)
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
	)
	for i, b := range bs {
		sem <- struct{}{}
		if failed.Load() {
			results[i].err = errNotSent
			<-sem
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := c.callCtx(ctx, false)
			defer cancel()
			n, rej, err := send(cctx, b)
			if err != nil {
				failed.Store(true)
			}
			results[i] = result{n, rej, err}
		})
	}
	wg.Wait()
	var (
		accepted int
		rejects  []fileReject
		firstErr error
	)
	for i, r := range results {
		if r.err != nil {
			if firstErr == nil && !errors.Is(r.err, errNotSent) {
				firstErr = r.err
			}
			continue
		}
		accepted += r.n
		for _, x := range r.rej {
			l := lines[bs[i][0]+int(x.Index)]
			rejects = append(rejects, fileReject{Line: l.Line, Prefix: l.Prefix, Code: x.Code, Reason: x.Reason})
		}
	}
	return accepted, rejects, firstErr
}

var errNotSent = errors.New("not sent")

// partial reports a call that failed: the batches that succeeded stay
// committed, the ones after the failure were not sent.
func (c *cli) partial(err error, verb string, done, total int) error {
	fmt.Fprintf(c.stderr, "rtbhctl: %s %d of %d prefixes before a call failed; the batches after it were not sent\n", verb, done, total)
	return err
}

// fileSummary prints the summary and the rejects (sorted by line) and
// makes the exit status 1 when anything was rejected.
func (c *cli) fileSummary(s fileSummary, verb string, n int) error {
	slices.SortStableFunc(s.Rejected, func(a, b fileReject) int { return a.Line - b.Line })
	if s.Rejected == nil {
		s.Rejected = []fileReject{}
	}
	if c.g.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "%s %d of %d lines, %d rejected\n", verb, n, s.Lines, len(s.Rejected))
		for _, r := range s.Rejected {
			fmt.Fprintf(c.stderr, "line %d: %s: %s: %s\n", r.Line, r.Prefix, r.Code, r.Reason)
		}
	}
	if len(s.Rejected) > 0 {
		return errRejected{len(s.Rejected)}
	}
	return nil
}

// listAll pages through ListBlackholes with the filters, calling page for
// each page's entries.
func (c *cli) listAll(ctx context.Context, within, origin string, page func([]*rtbhv1.Blackhole) error) error {
	client := rtbhv1.NewBlackholeServiceClient(c.conn)
	req := &rtbhv1.ListBlackholesRequest{Within: within, Origin: origin, PageSize: listPageSize}
	for {
		cctx, cancel := c.callCtx(ctx, false)
		resp, err := client.ListBlackholes(cctx, req)
		cancel()
		if err != nil {
			return err
		}
		if err := page(resp.Blackholes); err != nil {
			return err
		}
		if resp.NextPageToken == "" {
			return nil
		}
		req.PageToken = resp.NextPageToken
	}
}
