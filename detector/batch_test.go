package detector

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/store"
)

// outcome is what one request came to, for comparing a batch with the
// single calls.
type outcome struct {
	Index  int
	Kind   Kind
	Msg    string
	Entry  string
	Change Change
}

func entryString(b domain.Blackhole) string {
	return fmt.Sprintf("%s %s %q %s %s", b.Prefix, b.Origin, b.Reason, b.CreatedAt.Format(time.RFC3339Nano), b.ExpiresAt.Format(time.RFC3339Nano))
}

// TestAddBatchSameAsSingleCalls runs one mixed batch through AddBatch on
// one Manager and the same requests one by one through Add on another, at
// the same clock: every item must come out the same (entry or refusal kind
// and message), the sets must be equal, and the batch's audit rows are one
// per accepted item.
func TestAddBatchSameAsSingleCalls(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return at }
	pol := testPolicy() // max_active 5
	rp := ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour}
	batch := newFixtureAt(t, filepath.Join(t.TempDir(), "batch.db"), pol, rp, clock)
	single := newFixtureAt(t, filepath.Join(t.TempDir(), "single.db"), pol, rp, clock)
	ctx := context.Background()
	partner := domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")})
	// A partner's entry first, so that the batch takes it over.
	seed := Request{Prefix: pfx("203.0.113.9"), Origin: "partner:p", Actor: "p", Scope: partner, Reason: "seed"}
	for _, f := range []*fixture{batch, single} {
		if _, _, err := f.m.Add(ctx, seed); err != nil {
			t.Fatal(err)
		}
	}
	op := func(p string, ttl time.Duration) Request {
		return Request{Prefix: pfx(p), TTL: ttl, Origin: "operator:noc", Actor: "noc", Reason: "r " + p}
	}
	reqs := []Request{
		op("198.51.100.1", 0),
		{Prefix: netip.MustParsePrefix("198.51.100.7/24"), Origin: "operator:noc", Actor: "noc"}, // host bits
		op("198.51.100.53", 0),   // never_blackhole
		op("198.51.100.0/24", 0), // shorter than the minimum
		{Prefix: pfx("198.51.100.2"), Origin: "partner:p", Actor: "p", Scope: partner}, // outside the partner's scope
		op("198.51.100.1", 2*time.Hour), // the same prefix again: extends the first item
		op("198.51.100.1", time.Minute), // and again, shorter: unchanged
		op("203.0.113.9", 0),            // an operator takes the partner's entry over
		{Prefix: pfx("198.51.100.3"), HasTTL: true, Origin: "operator:noc", Actor: "noc"}, // ttl 0 given
		op("2001:db8::1", 1000*time.Hour),                                                 // clamped to max_ttl
		op("198.51.100.4", 0),
		op("198.51.100.5", 0),           // the 5th active entry
		op("198.51.100.6", 0),           // beyond max_active
		op("198.51.100.4", 3*time.Hour), // extending at the cap is allowed
	}
	acc, ref, err := batch.m.AddBatch(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	var got []outcome
	for _, a := range acc {
		got = append(got, outcome{Index: a.Index, Entry: entryString(a.Blackhole), Change: a.Change})
	}
	for _, r := range ref {
		var e *Error
		if !errors.As(r.Err, &e) {
			t.Fatalf("refusal %d is not a *Error: %v", r.Index, r.Err)
		}
		got = append(got, outcome{Index: r.Index, Kind: e.Kind, Msg: e.Msg})
	}
	var want []outcome
	for i, req := range reqs {
		b, c, err := single.m.Add(ctx, req)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("single add %d: %v", i, err)
			}
			want = append(want, outcome{Index: i, Kind: e.Kind, Msg: e.Msg})
			continue
		}
		want = append(want, outcome{Index: i, Entry: entryString(b), Change: c})
	}
	sortOutcomes := cmp.Transformer("sort", func(os []outcome) map[int]outcome {
		m := map[int]outcome{}
		for _, o := range os {
			m[o.Index] = o
		}
		return m
	})
	if diff := cmp.Diff(want, got, sortOutcomes); diff != "" {
		t.Fatalf("batch differs from single calls (-single +batch):\n%s", diff)
	}
	if len(acc) != 8 || len(ref) != 6 {
		t.Fatalf("accepted %d, refused %d; want 8 and 6", len(acc), len(ref))
	}
	for i := 1; i < len(acc); i++ {
		if acc[i].Index <= acc[i-1].Index {
			t.Fatalf("accepted items out of request order: %v", acc)
		}
	}
	var bs, ss []string
	for _, b := range batch.m.Active() {
		bs = append(bs, entryString(b))
	}
	for _, b := range single.m.Active() {
		ss = append(ss, entryString(b))
	}
	if diff := cmp.Diff(ss, bs); diff != "" {
		t.Fatalf("active sets differ (-single +batch):\n%s", diff)
	}
	batch.announced("198.51.100.1/32", "198.51.100.4/32", "198.51.100.5/32", "203.0.113.9/32", "2001:db8::1/128")
	// One audit row per accepted item (plus the seed's).
	rows, err := batch.db.AuditLog(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+len(acc) {
		t.Fatalf("%d audit rows, want %d (the seed and one per accepted item)", len(rows), 1+len(acc))
	}
	// What is stored after a restart is what the batch acknowledged.
	batch.close()
	db, err := store.Open(batch.path, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stored, err := db.ActiveBlackholes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sts []string
	for _, b := range sortedByPrefix(mapOf(stored)) {
		sts = append(sts, entryString(b))
	}
	if diff := cmp.Diff(bs, sts); diff != "" {
		t.Fatalf("stored set differs from the acknowledged one (-acknowledged +stored):\n%s", diff)
	}
}

func mapOf(bs []domain.Blackhole) map[domain.Key]domain.Blackhole {
	m := make(map[domain.Key]domain.Blackhole, len(bs))
	for _, b := range bs {
		m[b.Key()] = b
	}
	return m
}

// TestRemoveBatch: removals decided one by one as Remove decides, the
// accepted ones committed together, watchers told of each, BGP withdraws
// them; refusals keep their index and kind.
func TestRemoveBatch(t *testing.T) {
	pol := testPolicy()
	pol.MaxActive = 100
	f := newFixture(t, filepath.Join(t.TempDir(), "db"), pol, ReportPolicy{Window: time.Hour, Threshold: 1, TTL: time.Hour})
	ctx := context.Background()
	partner := domain.NewPrefixSet([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")})
	var adds []Request
	for i := 1; i <= 6; i++ {
		adds = append(adds, Request{Prefix: pfx(fmt.Sprintf("203.0.113.%d", i)), Origin: "partner:p", Actor: "p", Scope: partner})
	}
	adds = append(adds, Request{Prefix: pfx("203.0.113.50"), Origin: "operator:noc", Actor: "noc"})
	if _, ref, err := f.m.AddBatch(ctx, adds); err != nil || len(ref) != 0 {
		t.Fatalf("AddBatch: %v, refused %v", err, ref)
	}
	ctxW, stop := context.WithCancel(ctx)
	defer stop()
	_, events := f.m.Watch(ctxW)
	rm := func(p string) RemoveRequest {
		return RemoveRequest{Prefix: pfx(p), Actor: "p", Scope: partner, Owner: "partner:p", Reason: "cleaned"}
	}
	reqs := []RemoveRequest{
		rm("203.0.113.1"),
		rm("203.0.113.99"), // not active
		rm("198.51.100.1"), // outside the partner's scope
		rm("203.0.113.50"), // an operator's entry
		rm("203.0.113.2"),
		rm("203.0.113.1"), // already removed by item 0
		{Prefix: netip.MustParsePrefix("203.0.113.3/24")}, // host bits
		rm("203.0.113.3"),
	}
	acc, ref, err := f.m.RemoveBatch(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	var gotAcc []int
	for _, a := range acc {
		gotAcc = append(gotAcc, a.Index)
	}
	if diff := cmp.Diff([]int{0, 4, 7}, gotAcc); diff != "" {
		t.Fatalf("accepted (-want +got):\n%s", diff)
	}
	gotRef := map[int]Kind{}
	for _, r := range ref {
		gotRef[r.Index] = KindOf(r.Err)
	}
	wantRef := map[int]Kind{1: KindNotFound, 2: KindScope, 3: KindScope, 5: KindNotFound, 6: KindInvalid}
	if diff := cmp.Diff(wantRef, gotRef); diff != "" {
		t.Fatalf("refused (-want +got):\n%s", diff)
	}
	for _, want := range []string{"203.0.113.1/32", "203.0.113.2/32", "203.0.113.3/32"} {
		select {
		case ev := <-events:
			if ev.Type != EventRemoved || ev.Blackhole.Prefix.String() != want {
				t.Fatalf("event %v %s, want removal of %s", ev.Type, ev.Blackhole.Prefix, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no removal event for %s", want)
		}
	}
	f.announced("203.0.113.4/32", "203.0.113.5/32", "203.0.113.6/32", "203.0.113.50/32")
	rows, err := f.db.AuditLog(ctx, "203.0.113.2/32", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[1].Action != "remove" || rows[1].Reason != "cleaned" {
		t.Fatalf("audit of 203.0.113.2 = %+v, want add then remove", rows)
	}
	if _, _, err := f.m.RemoveBatch(ctx, make([]RemoveRequest, MaxBatchItems+1)); KindOf(err) != KindInvalid {
		t.Fatalf("RemoveBatch of %d = %v, want KindInvalid", MaxBatchItems+1, err)
	}
	if _, _, err := f.m.AddBatch(ctx, make([]Request, MaxBatchItems+1)); KindOf(err) != KindInvalid {
		t.Fatalf("AddBatch of %d = %v, want KindInvalid", MaxBatchItems+1, err)
	}
}
