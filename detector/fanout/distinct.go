package fanout

import (
	"math"
	"math/bits"
)

// Distinct-destination counting for sources past the inline capacity: an
// exact set of up to exactCap destination hashes, each stamped with the
// sub-window it was last seen in, then a sliding HyperLogLog: one bank of
// hllM four-bit registers per sub-window, their register-wise maximum over
// the live sub-windows kept up to date incrementally, and the estimate
// recomputed only when that maximum changes.

const (
	exactCap    = 64
	numExamples = 5
	hllP        = 7
	hllM        = 1 << hllP
	hllMaxRho   = 15 // 4-bit registers; saturates only beyond ~hllM<<14 destinations
	bankWords   = hllM * 4 / 64
)

// bigState is the overflow record of a tracked source with more than
// inlineDsts destinations in its window.
type bigState struct {
	// w holds the exact set's hashes (w[:n]) until the source passes
	// exactCap destinations, then the sketch: nBuckets banks of bankWords
	// words, 16 registers per word.
	w      [nBuckets * bankWords]uint64
	age    [exactCap]uint8 // exact: low byte of the sub-window of the last sighting
	merged [hllM]uint8     // sketch: max of each register over the live banks
	hist   [hllMaxRho + 1]uint8
	ex     [numExamples][16]byte // most recent distinct destinations
	n      uint8                 // exact: number of hashes
	nex    uint8
	exNext uint8
	sketch bool
	est    uint32 // sketch: cached estimate
	free   uint32 // next free record, while on the free list
}

func (s *bigState) reset() {
	free := s.free
	*s = bigState{}
	s.free = free
}

func (s *bigState) count() uint64 {
	if s.sketch {
		return uint64(s.est)
	}
	return uint64(s.n)
}

// add records a destination hash seen in sub-window b (the newest).
func (s *bigState) add(h uint64, b uint32) {
	if s.sketch {
		s.sketchAdd(h, b)
		return
	}
	b8 := uint8(b)
	n := int(s.n)
	for j := 0; j < n; j++ {
		if s.w[j] == h {
			s.age[j] = b8
			return
		}
	}
	if n < exactCap {
		s.w[n] = h
		s.age[n] = b8
		s.n++
		return
	}
	s.toSketch(b)
	s.sketchAdd(h, b)
}

// addExample remembers d as one of the most recent distinct destinations.
func (s *bigState) addExample(d *[16]byte) {
	for i := 0; i < int(s.nex); i++ {
		if s.ex[i] == *d {
			return
		}
	}
	s.ex[s.exNext] = *d
	s.exNext = (s.exNext + 1) % numExamples
	if s.nex < numExamples {
		s.nex++
	}
}

// advance ages the state from sub-window from to sub-window to
// (0 < to-from < nBuckets).
func (s *bigState) advance(from, to uint32) {
	if !s.sketch {
		t8 := uint8(to)
		for j := 0; j < int(s.n); {
			if t8-s.age[j] >= nBuckets {
				last := int(s.n) - 1
				s.w[j], s.age[j] = s.w[last], s.age[last]
				s.n--
				continue
			}
			j++
		}
		return
	}
	for b := from + 1; b != to+1; b++ {
		bank := s.w[(b%nBuckets)*bankWords:][:bankWords]
		clear(bank)
	}
	s.remerge()
}

// toSketch converts the exact set to the sketch, each hash going into the
// bank of the sub-window it was last seen in; b is the newest sub-window.
func (s *bigState) toSketch(b uint32) {
	var hs [exactCap]uint64
	var ages [exactCap]uint8
	n := int(s.n)
	copy(hs[:], s.w[:n])
	copy(ages[:], s.age[:n])
	clear(s.w[:])
	s.sketch = true
	s.n = 0
	s.merged = [hllM]uint8{}
	s.hist = [hllMaxRho + 1]uint8{}
	s.hist[0] = hllM
	for j := 0; j < n; j++ {
		s.sketchAdd(hs[j], b-uint32(uint8(b)-ages[j]))
	}
}

func hllSplit(h uint64) (r uint32, rho uint8) {
	r = uint32(h >> (64 - hllP))
	rho = uint8(bits.LeadingZeros64(h<<hllP|1<<(hllP-1))) + 1
	return r, min(rho, hllMaxRho)
}

func (s *bigState) sketchAdd(h uint64, b uint32) {
	r, rho := hllSplit(h)
	wi := (b%nBuckets)*bankWords + r/16
	sh := (r % 16) * 4
	if cur := uint8(s.w[wi]>>sh) & 15; rho > cur {
		s.w[wi] = s.w[wi]&^(15<<sh) | uint64(rho)<<sh
	}
	if old := s.merged[r]; rho > old {
		s.hist[old]--
		s.hist[rho]++
		s.merged[r] = rho
		s.est = uint32(math.Round(ertl(&s.hist)))
	}
}

// remerge recomputes the window maximum of every register after banks
// were cleared.
func (s *bigState) remerge() {
	s.hist = [hllMaxRho + 1]uint8{}
	for wi := 0; wi < bankWords; wi++ {
		var word [16]uint8
		for bank := 0; bank < nBuckets; bank++ {
			v := s.w[bank*bankWords+wi]
			if v == 0 {
				continue
			}
			for k := range word {
				word[k] = max(word[k], uint8(v>>(4*k))&15)
			}
		}
		for k, v := range word {
			s.merged[wi*16+k] = v
			s.hist[v]++
		}
	}
	s.est = uint32(math.Round(ertl(&s.hist)))
}

// ertl is Ertl's improved raw estimator for a HyperLogLog with hllM
// registers of q+1 = hllMaxRho possible non-zero values, from the register
// histogram c (Algorithm 6 of "New cardinality estimation algorithms for
// HyperLogLog sketches", 2017). It needs no empirical bias correction and
// no switch to linear counting.
func ertl(c *[hllMaxRho + 1]uint8) float64 {
	const m = float64(hllM)
	const q = hllMaxRho - 1
	if int(c[0]) == hllM {
		return 0
	}
	z := m * ertlTau(1-float64(c[q+1])/m)
	for k := q; k >= 1; k-- {
		z = 0.5 * (z + float64(c[k]))
	}
	z += m * ertlSigma(float64(c[0])/m)
	return m * m / (2 * math.Ln2) / z
}

func ertlSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		prev := z
		z += x * y
		y += y
		if z == prev {
			return z
		}
	}
}

func ertlTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		prev := z
		y *= 0.5
		z -= (1 - x) * (1 - x) * y
		if z == prev {
			return z / 3
		}
	}
}

// hashAddr is a keyed 64-bit hash of a 16-byte address (murmur3's fmix64
// finaliser applied twice; a bijection of each half, well mixed).
func hashAddr(a *[16]byte, seed uint64) uint64 {
	hi := uint64(a[0])<<56 | uint64(a[1])<<48 | uint64(a[2])<<40 | uint64(a[3])<<32 |
		uint64(a[4])<<24 | uint64(a[5])<<16 | uint64(a[6])<<8 | uint64(a[7])
	lo := uint64(a[8])<<56 | uint64(a[9])<<48 | uint64(a[10])<<40 | uint64(a[11])<<32 |
		uint64(a[12])<<24 | uint64(a[13])<<16 | uint64(a[14])<<8 | uint64(a[15])
	return fmix64(lo ^ fmix64(hi^seed))
}

func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}
