package store

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rtbh/rtbh/detector/domain"
)

// bulkBatch is n inserts (or ends) of 10.9.0.0, 10.9.0.1, ... with text
// that JSON must carry exactly: quotes, backslashes, control characters,
// non-ASCII; every 5th write has a second audit row.
func bulkBatch(n int, op domain.BlackholeOp, at time.Time) []*domain.Write {
	texts := []string{`plain`, `"quoted" \ back\slash`, "tab\tnew\nline\r\x01\x1f", "ünïcødé ☃ \u2028", ""}
	ws := make([]*domain.Write, n)
	for i := range ws {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 32)
		s := texts[i%len(texts)]
		b := domain.Blackhole{Prefix: p, Origin: "operator:" + s, Reason: "r " + s, CreatedAt: at, ExpiresAt: at.Add(time.Duration(i+1) * time.Minute)}
		if i%3 == 0 {
			b.Match = "tcp/25"
		}
		a := domain.AuditEntry{Actor: "a" + s, Action: "add", Prefix: p.String(), Origin: b.Origin, Reason: b.Reason, Detail: "d " + s}
		w := &domain.Write{Op: op, Blackhole: b, At: at.Add(time.Duration(i)), Audit: []domain.AuditEntry{a}}
		if op == domain.BlackholeEnd {
			w.EndReason = "removed " + s
			w.Audit[0].Action = "remove"
		}
		if i%5 == 0 {
			w.Audit = append(w.Audit, domain.AuditEntry{Actor: "second", Action: "note", Prefix: p.String(), Instance: "other"})
		}
		ws[i] = w
	}
	return ws
}

// A batch written in bulk leaves exactly the rows that the same writes
// committed one by one (row by row) leave.
func TestSubmitAllBulkSameAsRowByRow(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	bulk := openTest(t, filepath.Join(t.TempDir(), "bulk.db"))
	single := openTest(t, filepath.Join(t.TempDir(), "single.db"))
	for _, db := range []*DB{bulk, single} {
		db.SetInstance("me")
	}
	const n = 300
	for _, op := range []domain.BlackholeOp{domain.BlackholeInsert, domain.BlackholeEnd} {
		if err := bulk.SubmitAll(bulkBatch(n, op, at))(); err != nil {
			t.Fatal(err)
		}
		for _, w := range bulkBatch(n, op, at) {
			if err := single.Commit(w); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Half of them added again, so that there are active entries to compare.
	if err := bulk.SubmitAll(bulkBatch(n/2, domain.BlackholeInsert, at.Add(time.Hour)))(); err != nil {
		t.Fatal(err)
	}
	for _, w := range bulkBatch(n/2, domain.BlackholeInsert, at.Add(time.Hour)) {
		if err := single.Commit(w); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`SELECT id, prefix, "match", origin, reason, created_at, expires_at, coalesce(ended_at, -1), coalesce(end_reason, 'NULL') FROM blackholes ORDER BY id`,
		`SELECT id, at, actor, action, prefix, origin, reason, detail, instance FROM audit ORDER BY id`,
	} {
		dump := func(db *DB) []string {
			rows, err := db.r.QueryContext(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			cols, _ := rows.Columns()
			var out []string
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				var sb strings.Builder
				for _, v := range vals {
					switch v := v.(type) {
					case []byte:
						sb.WriteString("text:" + string(v) + "|")
					default:
						sb.WriteString(strings.TrimSpace(strings.ReplaceAll(cmp.Diff(nil, v), "\n", " ")) + "|")
					}
				}
				out = append(out, sb.String())
			}
			return out
		}
		got, want := dump(bulk), dump(single)
		if len(got) < n {
			t.Fatalf("%s: %d rows", q, len(got))
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("%s: bulk differs from row by row (-row by row +bulk):\n%s", q, d)
		}
	}
}

// A bulk run that fails is written again row by row: the batch fails with
// the failing write's own error and leaves nothing behind.
func TestSubmitAllBulkFailureNamesTheWrite(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	db := openTest(t, filepath.Join(t.TempDir(), "rtbh.db"))
	seed := bulkBatch(40, domain.BlackholeInsert, at)
	if err := db.SubmitAll(seed[30:31])(); err != nil { // 10.9.0.30 is active
		t.Fatal(err)
	}
	if err := db.SubmitAll(seed[:30])(); err != nil {
		t.Fatal(err)
	}
	count := func() (active, audit int) {
		a, err := db.ActiveBlackholes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l, err := db.AuditLog(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(a), len(l)
	}
	a0, l0 := count()
	// Inserts 30..39: 30 is already active.
	err := db.SubmitAll(bulkBatch(40, domain.BlackholeInsert, at)[30:])()
	if err == nil || !strings.Contains(err.Error(), "inserting blackhole 10.9.0.30/32 flowspec tcp/25") {
		t.Fatalf("err = %v, want the insert of 10.9.0.30/32 flowspec tcp/25 named", err)
	}
	// Ends of 0..39: 31 is not active.
	err = db.SubmitAll(bulkBatch(40, domain.BlackholeEnd, at))()
	if err == nil || !strings.Contains(err.Error(), "ending blackhole 10.9.0.31/32") {
		t.Fatalf("err = %v, want the end of 10.9.0.31/32 named", err)
	}
	// The same prefix ended twice in one run.
	ends := bulkBatch(20, domain.BlackholeEnd, at)
	ends[15] = ends[4]
	err = db.SubmitAll(ends)()
	if err == nil || !strings.Contains(err.Error(), "ending blackhole 10.9.0.4/32") {
		t.Fatalf("err = %v, want the second end of 10.9.0.4/32 named", err)
	}
	if a, l := count(); a != a0 || l != l0 {
		t.Fatalf("after the failed batches: %d active, %d audit rows; want %d, %d (unchanged)", a, l, a0, l0)
	}
	// Text that JSON cannot carry unchanged (invalid UTF-8, NUL) is written
	// row by row, exactly.
	odd := bulkBatch(30, domain.BlackholeInsert, at.Add(time.Hour))
	for i, w := range odd {
		w.Blackhole.Prefix = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 8, 0, byte(i)}), 32)
		w.Audit[0].Prefix = w.Blackhole.Prefix.String()
	}
	odd[3].Blackhole.Reason = "bad \xff utf-8"
	odd[20].Audit[0].Detail = "nul \x00 inside"
	if err := db.SubmitAll(odd)(); err != nil {
		t.Fatal(err)
	}
	var reason, detail string
	if err := db.r.QueryRowContext(ctx, `SELECT reason FROM blackholes WHERE prefix = '10.8.0.3/32'`).Scan(&reason); err != nil || reason != odd[3].Blackhole.Reason {
		t.Fatalf("reason %q (%v), want %q", reason, err, odd[3].Blackhole.Reason)
	}
	if err := db.r.QueryRowContext(ctx, `SELECT detail FROM audit WHERE prefix = ? AND actor LIKE 'a%'`, odd[20].Audit[0].Prefix).Scan(&detail); err != nil || detail != odd[20].Audit[0].Detail {
		t.Fatalf("detail %q (%v), want %q", detail, err, odd[20].Audit[0].Detail)
	}
}
