package fanout

import (
	"encoding/binary"
	"unsafe"
)

// Tracked-source state: a slice-backed pool of entries in fixed-size
// chunks (growing never copies), an intrusive doubly linked LRU list
// through the pool, and a pool of overflow records for the few sources
// with many destinations. Index 0 is the nil link in both pools.

const (
	nBuckets   = 10 // sub-windows per window
	inlineDsts = 3  // destinations kept in the entry itself

	chunkBits  = 12
	chunkSize  = 1 << chunkBits
	maxEntries = 1<<31 - chunkSize

	bigChunkBits = 8 // overflow records are rare: grow their pool in small steps
	bigChunkSize = 1 << bigChunkBits
)

// key identifies a (source, rule) pair in the suppression map: the
// 16-byte form of the (unmapped) source address, then the rule index
// (with serverBit set for server-learning state).
type key [17]byte

// entry is one tracked (source, rule) pair: 192 bytes, three cache lines
// (the pool's chunks are page-aligned): identity, links and times in the
// first, destinations in the second, the per-sub-window counters across
// the second and third.
type entry struct {
	src        [16]byte
	rule       uint8
	ndst       uint8             // inline destinations in use
	dage       [inlineDsts]uint8 // low byte of each inline destination's last sub-window
	_          [3]byte
	head       uint32 // sub-window of the newest bucket
	big        uint32 // overflow record, 0 = none
	prev, next uint32 // LRU list, head = most recently seen
	first      int64  // unix ns of the first sample of this episode
	last       int64  // unix ns of the latest sample
	rate       uint32 // sampling rate of the latest sample (Σ rates / rate = sampled packets)
	_          [4]byte
	dst        [inlineDsts][16]byte // inline destinations (offset 64)
	pkts       [nBuckets]uint32     // estimated packets per sub-window (saturating)
	conns      [nBuckets]uint32     // estimated connection attempts per sub-window
}

// The layout above is deliberate; keep it at three cache lines.
var _ [192 - unsafe.Sizeof(entry{})]struct{}
var _ [unsafe.Sizeof(entry{}) - 192]struct{}
var _ [unsafe.Offsetof(entry{}.dst) - 64]struct{}

// pool is the storage of the tracked sources and their overflow records.
type pool struct {
	ents    [][]entry
	nents   uint32 // slots handed out so far, including the nil slot 0
	free    uint32 // free list through entry.next
	count   int    // live entries
	lruHead uint32
	lruTail uint32

	bigs  [][]bigState
	nbigs uint32
	bfree uint32
	nbig  int // live overflow records
}

func (p *pool) ent(i uint32) *entry { return &p.ents[i>>chunkBits][i&(chunkSize-1)] }

func (p *pool) big(i uint32) *bigState { return &p.bigs[i>>bigChunkBits][i&(bigChunkSize-1)] }

// alloc returns a zeroed, unlinked entry slot.
func (p *pool) alloc() uint32 {
	if i := p.free; i != 0 {
		en := p.ent(i)
		p.free = en.next
		*en = entry{}
		return i
	}
	if p.nents == 0 {
		p.nents = 1 // slot 0 is the nil link
	}
	i := p.nents
	if int(i>>chunkBits) == len(p.ents) {
		p.ents = append(p.ents, make([]entry, chunkSize))
	}
	p.nents++
	return i
}

// release puts an unlinked entry back on the free list.
func (p *pool) release(i uint32) {
	en := p.ent(i)
	if en.big != 0 {
		p.releaseBig(en.big)
		en.big = 0
	}
	en.prev = 0
	en.next = p.free
	p.free = i
}

func (p *pool) allocBig() uint32 {
	p.nbig++
	if i := p.bfree; i != 0 {
		b := p.big(i)
		p.bfree = b.free
		b.reset()
		b.free = 0
		return i
	}
	if p.nbigs == 0 {
		p.nbigs = 1
	}
	i := p.nbigs
	if int(i>>bigChunkBits) == len(p.bigs) {
		p.bigs = append(p.bigs, make([]bigState, bigChunkSize))
	}
	p.nbigs++
	return i
}

func (p *pool) releaseBig(i uint32) {
	p.nbig--
	b := p.big(i)
	b.free = p.bfree
	p.bfree = i
}

func (p *pool) pushFront(i uint32, en *entry) {
	en.prev = 0
	en.next = p.lruHead
	if p.lruHead != 0 {
		p.ent(p.lruHead).prev = i
	} else {
		p.lruTail = i
	}
	p.lruHead = i
}

func (p *pool) unlink(i uint32, en *entry) {
	if en.prev != 0 {
		p.ent(en.prev).next = en.next
	} else {
		p.lruHead = en.next
	}
	if en.next != 0 {
		p.ent(en.next).prev = en.prev
	} else {
		p.lruTail = en.prev
	}
	en.prev, en.next = 0, 0
}

// touch moves an entry to the head of the LRU list.
func (p *pool) touch(i uint32, en *entry) {
	if p.lruHead == i {
		return
	}
	p.unlink(i, en)
	p.pushFront(i, en)
}

// table maps (source, rule) to entry indices: open addressing with linear
// probing and backward-shift deletion, at most half full. A slot packs the
// low 32 bits of the key's hash (which also give its home position) above
// the entry index; 0 is an empty slot. A lookup costs one cache line of
// the table plus the entry itself, which the caller reads anyway.
type table struct {
	slots []uint64
	mask  uint32
	n     int
}

const minTableSize = 1024

func (t *table) init(size int) {
	n := minTableSize
	for n < 2*size {
		n *= 2
	}
	t.slots = make([]uint64, n)
	t.mask = uint32(n - 1)
	t.n = 0
}

// keyHash hashes a (source, rule) key.
func keyHash(src *[16]byte, rule uint8, seed uint64) uint32 {
	hi := binary.LittleEndian.Uint64(src[:8])
	lo := binary.LittleEndian.Uint64(src[8:])
	return uint32(fmix64(lo ^ fmix64(hi^seed^uint64(rule)<<56)))
}

// find returns the entry of the key with hash h, or 0.
func (t *table) find(p *pool, h uint32, src *[16]byte, rule uint8) uint32 {
	for pos := h & t.mask; ; pos = (pos + 1) & t.mask {
		s := t.slots[pos]
		if s == 0 {
			return 0
		}
		if uint32(s>>32) == h {
			i := uint32(s)
			if en := p.ent(i); en.src == *src && en.rule == rule {
				return i
			}
		}
	}
}

// insert adds entry i under hash h; the key must not be present.
func (t *table) insert(h uint32, i uint32) {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	pos := h & t.mask
	for t.slots[pos] != 0 {
		pos = (pos + 1) & t.mask
	}
	t.slots[pos] = uint64(h)<<32 | uint64(i)
	t.n++
}

func (t *table) grow() {
	old := t.slots
	t.slots = make([]uint64, 2*len(old))
	t.mask = uint32(len(t.slots) - 1)
	for _, s := range old {
		if s == 0 {
			continue
		}
		pos := uint32(s>>32) & t.mask
		for t.slots[pos] != 0 {
			pos = (pos + 1) & t.mask
		}
		t.slots[pos] = s
	}
}

// remove deletes entry i, stored under hash h.
func (t *table) remove(h uint32, i uint32) {
	pos := h & t.mask
	for uint32(t.slots[pos]) != i {
		pos = (pos + 1) & t.mask
	}
	// Backward shift: move later members of the cluster whose home is not
	// cyclically in (pos, j] into the hole.
	for j := pos; ; {
		j = (j + 1) & t.mask
		s := t.slots[j]
		if s == 0 {
			break
		}
		home := uint32(s>>32) & t.mask
		if pos <= j && pos < home && home <= j || pos > j && (pos < home || home <= j) {
			continue
		}
		t.slots[pos] = s
		pos = j
	}
	t.slots[pos] = 0
	t.n--
}
