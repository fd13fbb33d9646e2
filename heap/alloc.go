package heap

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
)

// The allocator lives entirely in the heap, so every attached process (and later
// every extension) allocates from and frees to the same pools:
//
//   - pages: a bitmap of free pages and a page map (one u32 per page) that says
//     what each page is: free, part of a slab of some size class, the head of a
//     large run, or the rest of a run / metadata. A word mutex guards page runs.
//   - classes: per size class, a free list threaded through the free objects and
//     the slab being carved, under the class's word mutex. Only batches move
//     through it.
//   - caches: slots of per-thread stacks of free objects per class, in the heap,
//     so that stats are exact across processes and an extension thread can own
//     one as well. A process claims slots lazily and hands each to one goroutine
//     at a time; the common Alloc and Free touch only that stack.
//   - object bits: one bit per 8-byte granule, set while an object starting there
//     is allocated. Alloc sets and Free clears it with one atomic operation, which
//     is what detects a double free or a pointer into the middle of an object.
//
// Offsets, never addresses, are stored: every view agrees on them.

// Errors the allocator returns. Callers act on ErrOutOfMemory; the others mean a
// caller's bug (or another process's) and leave the heap unchanged.
var (
	ErrOutOfMemory    = errors.New("heap: out of memory")
	ErrDoubleFree     = errors.New("heap: double free")
	ErrInvalidPointer = errors.New("heap: pointer was not returned by Alloc")
	ErrBadSize        = errors.New("heap: bad allocation size")
	ErrCorruptHeap    = errors.New("heap: allocator metadata corrupt")
)

// Page map entries: kind in the top two bits.
const (
	pmFree      = 0 << 30
	pmSlab      = 1 << 30 // bits 24-29: class, bits 0-23: page index within the slab
	pmLarge     = 2 << 30 // bits 0-29: run length in pages
	pmOther     = 3 << 30 // rest of a large run, or metadata: never a valid Free
	pmKindMask  = 3 << 30
	pmValueMask = 1<<30 - 1
)

// Allocator state at Layout.AllocOff.
const (
	asPageLock   = 0  // u32 word mutex for page runs
	asFreePages  = 8  // u64
	asRover      = 16 // u64: page index where the next search starts
	asLargeRuns  = 24 // u64
	asLargePages = 32 // u64
	asClasses    = 64 // numClasses × classStateSize

	csLock         = 0  // u32 word mutex
	csFreeHead     = 8  // u64: offset of the first free object, 0 if none
	csFreeCount    = 16 // u64
	csCarved       = 24 // u64: objects ever carved from slabs
	csCarveNext    = 32 // u64: next object to carve in the current slab
	csCarveEnd     = 40 // u64: end of the current slab's objects
	csSlabs        = 48 // u64
	classStateSz   = 64
	allocStateSize = asClasses + numClasses*classStateSz
)

// Cache slots at Layout.CacheOff: an owner word, then per class a count and a
// stack of object offsets.
const (
	cacheDepth     = 64 // objects a slot holds per class
	cacheBatch     = 32 // objects moved per refill or flush
	ccCount        = 0  // u32
	ccEntries      = 8  // [cacheDepth]u64
	cacheClassSize = ccEntries + cacheDepth*8
	cacheSlotHead  = 64
	cacheSlotSize  = (cacheSlotHead + numClasses*cacheClassSize + cacheLine - 1) &^ (cacheLine - 1)
)

// allocator is the process-local handle on the heap's allocator: which cache
// slots this process claimed, and which are idle.
type allocator struct {
	h       *Heap
	idle    sync.Pool // *cacheSlot
	mu      sync.Mutex
	slots   []*cacheSlot
	noSlots atomic.Bool // every slot in the heap is taken: use the central pools
}

// cacheSlot is one claimed cache slot; a goroutine owns it between get and put.
type cacheSlot struct {
	off  uint64 // of the slot in the heap
	idle atomic.Bool
}

func (h *Heap) pages() uint64 { return h.hdr.Size / PageSize }

func (h *Heap) firstPage() uint64 { return h.hdr.PagesOff / PageSize }

func (h *Heap) pageEntry(page uint64) *uint32 { return h.Uint32(h.hdr.PageMapOff + page*4) }

func (h *Heap) freeBits(page uint64) *uint64 { return h.Uint64(h.hdr.FreeBitsOff + page/64*8) }

func (h *Heap) objBits(off uint64) (*uint64, uint64) {
	g := off / 8
	return h.Uint64(h.hdr.ObjBitsOff + g/64*8), 1 << (g % 64)
}

func (h *Heap) classState(c int, field uint64) uint64 {
	return h.hdr.AllocOff + asClasses + uint64(c)*classStateSz + field
}

// initAllocator lays out a fresh heap's allocator: every page past the metadata
// is free. The file is new and zero, so only non-zero state is written.
func initAllocator(h *Heap) {
	first, n := h.firstPage(), h.pages()
	for p := range first {
		*h.pageEntry(p) = pmOther
	}
	for p := first; p < n; p++ {
		*h.freeBits(p) |= 1 << (p % 64)
	}
	*h.Uint64(h.hdr.AllocOff + asFreePages) = n - first
	*h.Uint64(h.hdr.AllocOff + asRover) = first
}

func (h *Heap) allocator() *allocator {
	h.allocOnce.Do(func() { h.alloc = &allocator{h: h} })
	return h.alloc
}

// Alloc returns the offset of a new object of at least size bytes, 8-byte
// aligned (page aligned above MaxSmall). The memory is not zeroed.
func (h *Heap) Alloc(size uint64) (uint64, error) {
	if size == 0 || size > h.hdr.Size {
		return 0, fmt.Errorf("%w: %d", ErrBadSize, size)
	}
	if size > MaxSmall {
		return h.allocLarge((size + PageSize - 1) / PageSize)
	}
	a := h.allocator()
	c := classOf(size)
	s := a.get()
	if s == nil {
		return h.allocDirect(c)
	}
	defer a.put(s)
	cc := s.off + cacheSlotHead + uint64(c)*cacheClassSize
	count := h.Uint32(cc + ccCount)
	n := atomic.LoadUint32(count)
	if n == 0 {
		n = h.refill(c, cc)
		if n == 0 {
			return 0, fmt.Errorf("%w: no slab for %d-byte objects", ErrOutOfMemory, classSizes[c])
		}
	}
	n--
	off := *h.Uint64(cc + ccEntries + uint64(n)*8)
	atomic.StoreUint32(count, n)
	return off, h.markAllocated(off)
}

func (h *Heap) markAllocated(off uint64) error {
	w, bit := h.objBits(off)
	if atomic.OrUint64(w, bit)&bit != 0 {
		return fmt.Errorf("%w: free object %#x is marked allocated", ErrCorruptHeap, off)
	}
	return nil
}

// Free returns an object to the heap. Offsets that Alloc did not return, and
// objects already free, are reported and change nothing.
func (h *Heap) Free(off uint64) error {
	if off < h.hdr.PagesOff || off >= h.hdr.Size || off%8 != 0 {
		return fmt.Errorf("%w: offset %#x", ErrInvalidPointer, off)
	}
	page := off / PageSize
	e := atomic.LoadUint32(h.pageEntry(page))
	switch e & pmKindMask {
	case pmLarge:
		if off%PageSize != 0 {
			break
		}
		return h.freeLarge(page, e)
	case pmSlab:
		c := int(e >> 24 & 0x3f)
		start := (page - uint64(e&0xffffff)) * PageSize
		if (off-start)%classSizes[c] != 0 || (off-start)/classSizes[c] >= objectsPerSlab(c) {
			break
		}
		w, bit := h.objBits(off)
		if atomic.AndUint64(w, ^bit)&bit == 0 {
			return fmt.Errorf("%w: offset %#x", ErrDoubleFree, off)
		}
		h.freeSmall(c, off)
		return nil
	case pmFree:
		return fmt.Errorf("%w: offset %#x is in a free page", ErrDoubleFree, off)
	}
	return fmt.Errorf("%w: offset %#x", ErrInvalidPointer, off)
}

func (h *Heap) freeSmall(c int, off uint64) {
	a := h.allocator()
	s := a.get()
	if s == nil {
		h.pushCentral(c, []uint64{off})
		return
	}
	defer a.put(s)
	cc := s.off + cacheSlotHead + uint64(c)*cacheClassSize
	count := h.Uint32(cc + ccCount)
	n := atomic.LoadUint32(count)
	if n == cacheDepth {
		n = h.flush(c, cc, cacheBatch)
	}
	*h.Uint64(cc + ccEntries + uint64(n)*8) = off
	atomic.StoreUint32(count, n+1)
}

// refill moves up to cacheBatch objects of class c from the central pool into
// the (empty) cache stack at cc and returns how many it moved.
func (h *Heap) refill(c int, cc uint64) uint32 {
	var buf [cacheBatch]uint64
	got := h.popCentral(c, buf[:])
	for i, off := range buf[:got] {
		*h.Uint64(cc + ccEntries + uint64(i)*8) = off
	}
	atomic.StoreUint32(h.Uint32(cc+ccCount), uint32(got))
	return uint32(got)
}

// flush moves n objects from the top of the cache stack at cc to the central
// pool and returns the new count.
func (h *Heap) flush(c int, cc uint64, n uint32) uint32 {
	count := h.Uint32(cc + ccCount)
	left := atomic.LoadUint32(count) - n
	var buf [cacheDepth]uint64
	for i := range n {
		buf[i] = *h.Uint64(cc + ccEntries + uint64(left+i)*8)
	}
	h.pushCentral(c, buf[:n])
	atomic.StoreUint32(count, left)
	return left
}

func (h *Heap) allocDirect(c int) (uint64, error) {
	var buf [1]uint64
	if h.popCentral(c, buf[:]) == 0 {
		return 0, fmt.Errorf("%w: no slab for %d-byte objects", ErrOutOfMemory, classSizes[c])
	}
	return buf[0], h.markAllocated(buf[0])
}

// popCentral fills out with free objects of class c: first from the class's free
// list, then carved from its current slab, then from a new slab. It returns how
// many it found; fewer than len(out) only when the heap is out of pages.
func (h *Heap) popCentral(c int, out []uint64) int {
	lock := h.Uint32(h.classState(c, csLock))
	lockWord(lock)
	defer unlockWord(lock)
	head, count := h.Uint64(h.classState(c, csFreeHead)), h.Uint64(h.classState(c, csFreeCount))
	n := 0
	for n < len(out) && *head != 0 {
		off := *head
		next := *h.Uint64(off)
		if next != 0 && (next < h.hdr.PagesOff || next >= h.hdr.Size || next%8 != 0) {
			// A use after free wrote over the link. Drop the rest of the list
			// rather than hand out memory that is not ours.
			fmt.Fprintf(os.Stderr, "kflex heap %s: free list of class %d corrupt at %#x; %d objects dropped\n",
				h.name, classSizes[c], off, *count)
			next, *count = 0, 1
		}
		out[n] = off
		n++
		*head = next
		*count--
	}
	size := classSizes[c]
	carve, end := h.Uint64(h.classState(c, csCarveNext)), h.Uint64(h.classState(c, csCarveEnd))
	for n < len(out) {
		if *carve+size > *end {
			start, ok := h.allocPages(slabPages, func(i uint64) uint32 {
				return pmSlab | uint32(c)<<24 | uint32(i)
			})
			if !ok {
				break
			}
			*carve, *end = start, start+objectsPerSlab(c)*size
			*h.Uint64(h.classState(c, csSlabs))++
		}
		out[n] = *carve
		*carve += size
		*h.Uint64(h.classState(c, csCarved))++
		n++
	}
	return n
}

func (h *Heap) pushCentral(c int, objs []uint64) {
	lock := h.Uint32(h.classState(c, csLock))
	lockWord(lock)
	head := h.Uint64(h.classState(c, csFreeHead))
	for _, off := range objs {
		*h.Uint64(off) = *head
		*head = off
	}
	*h.Uint64(h.classState(c, csFreeCount)) += uint64(len(objs))
	unlockWord(lock)
}

// allocPages takes a run of n free pages under the page lock and writes entry(i)
// into the page map for its i-th page. It returns the run's offset.
func (h *Heap) allocPages(n uint64, entry func(i uint64) uint32) (uint64, bool) {
	lock := h.Uint32(h.hdr.AllocOff + asPageLock)
	lockWord(lock)
	defer unlockWord(lock)
	rover := h.Uint64(h.hdr.AllocOff + asRover)
	first, last := h.firstPage(), h.pages()
	p, ok := h.findRun(n, *rover, last)
	if !ok {
		p, ok = h.findRun(n, first, min(*rover+n, last))
	}
	if !ok {
		return 0, false
	}
	for i := range n {
		atomic.AndUint64(h.freeBits(p+i), ^(uint64(1) << ((p + i) % 64)))
		atomic.StoreUint32(h.pageEntry(p+i), entry(i))
	}
	*h.Uint64(h.hdr.AllocOff + asFreePages) -= n
	*rover = p + n
	return p * PageSize, true
}

// findRun finds n consecutive free pages in [lo, hi), skipping whole bitmap words
// that hold no free page.
func (h *Heap) findRun(n, lo, hi uint64) (uint64, bool) {
	run := uint64(0)
	for p := lo; p < hi; {
		w := atomic.LoadUint64(h.freeBits(p)) >> (p % 64)
		if w == 0 {
			run = 0
			p += 64 - p%64
			continue
		}
		if w&1 == 0 {
			run = 0
			p += uint64(bits.TrailingZeros64(w)) // skip to the next free page
			continue
		}
		run++
		if run == n {
			return p + 1 - n, true
		}
		p++
	}
	return 0, false
}

func (h *Heap) allocLarge(n uint64) (uint64, error) {
	off, ok := h.allocPages(n, func(i uint64) uint32 {
		if i == 0 {
			return pmLarge | uint32(n)
		}
		return pmOther
	})
	if !ok {
		return 0, fmt.Errorf("%w: no run of %d free pages", ErrOutOfMemory, n)
	}
	atomic.AddUint64(h.Uint64(h.hdr.AllocOff+asLargeRuns), 1)
	atomic.AddUint64(h.Uint64(h.hdr.AllocOff+asLargePages), n)
	return off, nil
}

func (h *Heap) freeLarge(page uint64, e uint32) error {
	n := uint64(e & pmValueMask)
	// Claim the run: of two racing frees of the same run, one wins.
	if !atomic.CompareAndSwapUint32(h.pageEntry(page), e, pmOther) {
		return fmt.Errorf("%w: page run at %#x", ErrDoubleFree, page*PageSize)
	}
	lock := h.Uint32(h.hdr.AllocOff + asPageLock)
	lockWord(lock)
	for i := range n {
		atomic.StoreUint32(h.pageEntry(page+i), pmFree)
		atomic.OrUint64(h.freeBits(page+i), 1<<((page+i)%64))
	}
	*h.Uint64(h.hdr.AllocOff + asFreePages) += n
	unlockWord(lock)
	atomic.AddUint64(h.Uint64(h.hdr.AllocOff+asLargeRuns), ^uint64(0))
	atomic.AddUint64(h.Uint64(h.hdr.AllocOff+asLargePages), -n)
	return nil
}

// get hands the calling goroutine a cache slot of its own, or nil when every slot
// in the heap is taken by some process.
func (a *allocator) get() *cacheSlot {
	if s, _ := a.idle.Get().(*cacheSlot); s != nil && s.idle.CompareAndSwap(true, false) {
		return s
	}
	// The pool drops its contents at GC time; the slots stay in a.slots.
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.slots {
		if s.idle.CompareAndSwap(true, false) {
			return s
		}
	}
	if a.noSlots.Load() {
		return nil
	}
	h := a.h
	pid := uint32(os.Getpid())
	for i := range uint64(h.hdr.Params.Caches) {
		off := h.hdr.CacheOff + i*cacheSlotSize
		if atomic.CompareAndSwapUint32(h.Uint32(off), 0, pid) {
			s := &cacheSlot{off: off}
			a.slots = append(a.slots, s)
			return s
		}
	}
	a.noSlots.Store(true)
	return nil
}

func (a *allocator) put(s *cacheSlot) {
	s.idle.Store(true)
	a.idle.Put(s)
}

// release flushes every cache slot this process holds back to the central pools
// and gives the slots up. The caller guarantees no Alloc or Free is running.
func (a *allocator) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.h
	for _, s := range a.slots {
		for c := range numClasses {
			cc := s.off + cacheSlotHead + uint64(c)*cacheClassSize
			if n := atomic.LoadUint32(h.Uint32(cc + ccCount)); n > 0 {
				h.flush(c, cc, n)
			}
		}
		atomic.StoreUint32(h.Uint32(s.off), 0)
	}
	a.slots = nil
}
