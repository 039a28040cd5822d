package store

import (
	"database/sql"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// The background checkpointer copies the WAL back into the database while
// the WAL is still far below the 1,000 pages at which SQLite's automatic
// checkpoint would run inside a commit: after 50 small commits the rows
// reach the database file itself (read from a copy of it, without the
// WAL), without another write.
func TestCheckpointInTheBackground(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rtbh.db")
	db := openTest(t, path)
	// Start from an empty WAL (the migrations' pages copied back).
	if _, err := db.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i := range 50 { // a few pages each: far below 1,000
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32).String()
		if err := db.Commit(insertWrite(p, now)); err != nil {
			t.Fatal(err)
		}
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	inFile := func() int {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(copyPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := sql.Open("sqlite3", "file:"+copyPath+"?immutable=1")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var n int
		if err := c.QueryRow("SELECT count(*) FROM blackholes").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var n int
	if !testkit.Poll(5*time.Second, func() bool { n = inFile(); return n == 50 }) {
		t.Fatalf("the database file holds %d of the 50 committed rows: the WAL was not checkpointed", n)
	}
}
