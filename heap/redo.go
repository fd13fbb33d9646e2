package heap

import (
	"fmt"
	"sync/atomic"
)

// Every allocator critical section is one redo-logged step, so that a process
// killed anywhere inside leaves a state the next holder can finish:
//
//  1. Under the lock, the holder computes the whole change, reading only. It may
//     write where nobody looks: cache entries above the stack's count, and the
//     link words of objects it is about to push onto a free list.
//  2. It writes the change as redo entries into the lock record's log, then
//     publishes their number (the commit, one atomic store).
//  3. It applies the entries, then clears the number, then unlocks.
//
// A waiter that takes the lock over from a dead holder (mutex.go) applies a
// committed log again. Every entry is idempotent (a store, a bit set or
// cleared, a page run marked), so it does not matter how much of it the holder
// applied; and before the commit nothing visible changed. The stores are
// atomic, so on arm64 too the entries are visible before the commit and the
// commit before any applied store.
//
// A redo entry is two words: kind<<56 | heap offset, then a value.
const (
	redoStore64  = 1 // *u64(off) = val
	redoStore32  = 2 // *u32(off) = val
	redoSetBits  = 3 // *u64(off) |= val
	redoClearBit = 4 // *u64(off) &^= val; first entry of a free: it detects a double free
	redoRunUse   = 5 // pages [off, off+val&0xffffffff) leave the free bitmap; page map from val>>32
	redoRunFree  = 6 // pages [off, off+val) become free

	redoMax     = (lockRecSize - lrLog) / 16
	redoKindBit = 56
)

var redoKinds = [...]string{"", "store64", "store32", "set bits", "clear bit", "use pages", "free pages"}

// redo is a log being built, in process memory, before its commit.
type redo struct {
	n int
	e [redoMax][2]uint64
}

func (r *redo) add(kind, off, val uint64) {
	if r.n == redoMax {
		panic("heap: redo log overflow")
	}
	r.e[r.n] = [2]uint64{kind<<redoKindBit | off, val}
	r.n++
}

// commit writes r into the log of the lock record at rec, commits and applies it,
// and clears the log. op names the critical section for crash points. If r
// opens with redoClearBit and the bit is already clear, the rest is not applied
// and commit reports a double free.
func (h *Heap) commit(rec uint64, r *redo, op string) error {
	log := rec + lrLog
	for i := range r.n {
		atomic.StoreUint64(h.Uint64(log+uint64(i)*16), r.e[i][0])
		atomic.StoreUint64(h.Uint64(log+uint64(i)*16+8), r.e[i][1])
	}
	crash(op, "logged")
	atomic.StoreUint64(h.Uint64(rec+lrLogLen), uint64(r.n))
	crash(op, "committed")
	var err error
	for i := range r.n {
		if i == 0 && r.e[0][0]>>redoKindBit == redoClearBit {
			at, bit := r.e[0][0]&(1<<redoKindBit-1), r.e[0][1]
			if atomic.AndUint64(h.Uint64(at), ^bit)&bit == 0 {
				err = fmt.Errorf("%w: object bit %#x of word %#x already clear", ErrDoubleFree, bit, at)
				break
			}
			continue
		}
		h.apply(r.e[i])
		if i == r.n/2 {
			crash(op, "applying")
		}
	}
	crash(op, "applied")
	atomic.StoreUint64(h.Uint64(rec+lrLogLen), 0)
	crash(op, "cleared")
	return err
}

// apply performs one (validated) redo entry.
func (h *Heap) apply(e [2]uint64) {
	off, val := e[0]&(1<<redoKindBit-1), e[1]
	switch e[0] >> redoKindBit {
	case redoStore64:
		atomic.StoreUint64(h.Uint64(off), val)
	case redoStore32:
		atomic.StoreUint32(h.Uint32(off), uint32(val))
	case redoSetBits:
		atomic.OrUint64(h.Uint64(off), val)
	case redoClearBit:
		atomic.AndUint64(h.Uint64(off), ^val)
	case redoRunUse:
		head := uint32(val >> 32)
		for i := range val & 0xffffffff {
			p := off + i
			atomic.AndUint64(h.freeBits(p), ^(uint64(1) << (p % 64)))
			atomic.StoreUint32(h.pageEntry(p), runEntry(head, i))
		}
	case redoRunFree:
		for i := range val {
			p := off + i
			atomic.StoreUint32(h.pageEntry(p), pmFree)
			atomic.OrUint64(h.freeBits(p), 1<<(p%64))
		}
	}
}

// runEntry is the page map entry of page i of a run whose first page has head.
func runEntry(head uint32, i uint64) uint32 {
	switch {
	case i == 0:
		return head
	case head&pmKindMask == pmSlab:
		return head + uint32(i)
	}
	return pmOther
}

// runHeadValid reports whether head is the page map entry of the first page of
// an n-page run: a large run of n pages, or a slab's first page.
func runHeadValid(head uint32, n uint64) bool {
	switch head & pmKindMask {
	case pmLarge:
		return uint64(head&pmValueMask) == n
	case pmSlab:
		return n == slabPages && head&0xffffff == 0 && head>>24&0x3f < numClasses
	}
	return false
}

// readLog returns the committed redo entries of the lock record at rec, checking
// that each names a kind and a place the allocator's critical sections write.
func (h *Heap) readLog(rec uint64) ([][2]uint64, error) {
	n := atomic.LoadUint64(h.Uint64(rec + lrLogLen))
	if n > redoMax {
		return nil, fmt.Errorf("%w: redo log at %#x: length %d, at most %d", ErrCorruptHeap, rec+lrLogLen, n, redoMax)
	}
	es := make([][2]uint64, n)
	for i := range es {
		at := rec + lrLog + uint64(i)*16
		es[i] = [2]uint64{atomic.LoadUint64(h.Uint64(at)), atomic.LoadUint64(h.Uint64(at + 8))}
		if err := h.checkRedo(es[i]); err != nil {
			return nil, fmt.Errorf("%w: redo entry %d at %#x: %v", ErrCorruptHeap, i, at, err)
		}
	}
	return es, nil
}

func (h *Heap) checkRedo(e [2]uint64) error {
	kind, off, val := e[0]>>redoKindBit, e[0]&(1<<redoKindBit-1), e[1]
	in := func(lo, n, align uint64) bool { return off >= lo && off+align <= lo+n && off%align == 0 }
	alloc := func() bool { return in(h.hdr.AllocOff, allocStateSize, 8) }
	bits := func() bool { return in(h.hdr.ObjBitsOff, h.hdr.FreeBitsOff-h.hdr.ObjBitsOff, 8) }
	var ok bool
	switch kind {
	case redoStore64:
		ok = alloc()
	case redoStore32:
		ok = in(h.hdr.CacheOff, uint64(h.hdr.Params.Caches)*cacheSlotSize, 4)
	case redoSetBits, redoClearBit:
		ok = bits()
	case redoRunUse, redoRunFree:
		n := val
		if kind == redoRunUse {
			n &= 0xffffffff
		}
		if off < h.firstPage() || n == 0 || n > h.pages()-off {
			return fmt.Errorf("%s: pages [%d, +%d) outside [%d, %d)", redoKinds[kind], off, n, h.firstPage(), h.pages())
		}
		if head := uint32(val >> 32); kind == redoRunUse && !runHeadValid(head, n) {
			return fmt.Errorf("%s: page map entry %#x cannot head a run of %d pages", redoKinds[kind], head, n)
		}
		return nil
	default:
		return fmt.Errorf("kind %d unknown", kind)
	}
	if !ok {
		return fmt.Errorf("%s: offset %#x is not an allocator word it may write", redoKinds[kind], off)
	}
	return nil
}

// replay applies a committed log of the lock record at rec and clears it.
func (h *Heap) replay(rec uint64) error {
	es, err := h.readLog(rec)
	if err != nil || len(es) == 0 {
		return err
	}
	for _, e := range es {
		h.apply(e)
	}
	atomic.StoreUint64(h.Uint64(rec+lrLogLen), 0)
	return nil
}
