package fanout

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/axiomhq/hyperloglog"

	"github.com/rtbh/rtbh/detector/domain"
)

// TestDistinctAccuracy checks the exact range and the sketch's error
// against its documented bound (relative standard error ≈ 1.04/√128 ≈ 9%),
// next to the library a user would otherwise reach for (axiomhq
// hyperloglog at the same precision) in the same run.
func TestDistinctAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const trials = 200
	for _, n := range []int{1, 20, 63, 64, 65, 100, 300, 1000, 10000} {
		var sumErr, sumSq, axSq float64
		tr := trials
		if n >= 10000 {
			tr = trials / 2
		}
		for trial := 0; trial < tr; trial++ {
			seed := rng.Uint64()
			var s bigState
			ax, _ := hyperloglog.NewSketch(hllP, false)
			for i := 0; i < n; i++ {
				var a [16]byte
				for j := range a {
					a[j] = byte(rng.Uint32())
				}
				h := hashAddr(&a, seed)
				s.add(h, 5)
				s.add(h, 5) // repeats do not count
				ax.Insert(a[:])
			}
			got := float64(s.count())
			if n <= exactCap && got != float64(n) {
				t.Fatalf("n=%d: count %v, want exact", n, got)
			}
			rel := (got - float64(n)) / float64(n)
			sumErr += rel
			sumSq += rel * rel
			axRel := (float64(ax.Estimate()) - float64(n)) / float64(n)
			axSq += axRel * axRel
		}
		bias, rmse := sumErr/float64(tr), math.Sqrt(sumSq/float64(tr))
		axRMSE := math.Sqrt(axSq / float64(tr))
		t.Logf("n=%6d: bias %+.3f, relative RMSE %.3f (axiomhq p=%d: %.3f), %d trials", n, bias, rmse, hllP, axRMSE, tr)
		// Bounds: the RMSE near its expected ~0.09, the bias within four
		// standard errors of the mean of tr trials.
		if maxBias := 4 * 0.1 / math.Sqrt(float64(tr)); n > exactCap && (rmse > 0.12 || math.Abs(bias) > maxBias) {
			t.Errorf("n=%d: bias %+.3f, RMSE %.3f outside bounds (%.3f, 0.12)", n, bias, rmse, maxBias)
		}
	}
}

// TestSketchSlides drives the sketch through the engine: destinations age
// out of the sketch one sub-window at a time.
func TestSketchSlides(t *testing.T) {
	cfg := testConfig()
	cfg.Rules[0].MinDestinations = 1 << 30
	e, _, _ := newEngine(t, cfg)
	src := netip.MustParseAddr("10.8.8.8")
	batch := func(from, to int) []domain.Flow {
		var b []domain.Flow
		for i := from; i < to; i++ {
			b = append(b, smtp(src, nthDst(i), 1))
		}
		return b
	}
	within := func(got uint64, want, tol float64) bool {
		return math.Abs(float64(got)-want) <= tol*want
	}
	e.HandleFlowsAt(batch(0, 2000), t0)
	if n, _ := e.distinctOf(src, 0); !within(n, 2000, 0.3) {
		t.Errorf("after 2000: %d", n)
	}
	e.HandleFlowsAt(batch(2000, 3000), t0.Add(5*time.Minute))
	if n, _ := e.distinctOf(src, 0); !within(n, 3000, 0.3) {
		t.Errorf("after 3000 in the window: %d", n)
	}
	e.HandleFlowsAt(batch(3000, 3001), t0.Add(10*time.Minute))
	if n, _ := e.distinctOf(src, 0); !within(n, 1001, 0.3) {
		t.Errorf("after the first 2000 aged out: %d, want ~1001", n)
	}
	e.HandleFlowsAt(batch(3001, 3002), t0.Add(15*time.Minute))
	if n, _ := e.distinctOf(src, 0); n != 2 {
		t.Errorf("after all but two aged out: %d, want 2", n)
	}
	if st := e.Stats(); st.Overflow != 0 {
		// Back to two destinations: the overflow record is still in use
		// (the sketch is not converted back), which is fine; it is freed
		// when the source goes quiet.
		t.Logf("overflow records: %d", st.Overflow)
	}
	e.HandleFlowsAt(nil, t0.Add(30*time.Minute))
	if st := e.Stats(); st.Overflow != 0 || st.Tracked != 0 {
		t.Errorf("stats after idling: %+v", st)
	}
}
