package fanout

import (
	"math/rand/v2"
	"testing"
)

// TestTableAgainstMap drives the index through random inserts and removes
// (with a tiny hash space, so clusters wrap and collide) and checks it
// against a Go map after every step.
func TestTableAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var p pool
	var tb table
	tb.init(0)
	ref := map[[16]byte]uint32{}
	var live [][16]byte
	for step := 0; step < 20000; step++ {
		if len(live) == 0 || rng.IntN(3) != 0 {
			var src [16]byte
			src[15] = byte(rng.IntN(256))
			src[14] = byte(rng.IntN(16))
			if _, ok := ref[src]; ok {
				continue
			}
			i := p.alloc()
			en := p.ent(i)
			en.src = src
			h := keyHash(&src, 0, 99) & 0xff0003ff // few home positions: long clusters
			if tb.find(&p, h, &src, 0) != 0 {
				t.Fatalf("step %d: found a key before inserting it", step)
			}
			tb.insert(h, i)
			ref[src] = i
			live = append(live, src)
		} else {
			j := rng.IntN(len(live))
			src := live[j]
			live[j] = live[len(live)-1]
			live = live[:len(live)-1]
			i := ref[src]
			delete(ref, src)
			tb.remove(keyHash(&src, 0, 99)&0xff0003ff, i)
			p.release(i)
		}
		if step%97 == 0 || step > 19900 {
			if tb.n != len(ref) {
				t.Fatalf("step %d: table holds %d, want %d", step, tb.n, len(ref))
			}
			for src, i := range ref {
				if got := tb.find(&p, keyHash(&src, 0, 99)&0xff0003ff, &src, 0); got != i {
					t.Fatalf("step %d: find = %d, want %d", step, got, i)
				}
			}
		}
	}
}
