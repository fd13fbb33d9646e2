package heap

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"
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

// Allocator state at Layout.AllocOff: the page lock's record (mutex.go), the
// page counters, then per size class a lock record and the class's pool.
const (
	asPageLock     = 0                // lock record
	asFreePages    = lockRecSize + 0  // u64
	asRover        = lockRecSize + 8  // u64: page index where the next search starts
	asLargeRuns    = lockRecSize + 16 // u64
	asLargePages   = lockRecSize + 24 // u64
	asClasses      = lockRecSize + 64 // numClasses × classStateSz
	allocStateSize = asClasses + numClasses*classStateSz

	csLock       = 0                // lock record
	csFreeHead   = lockRecSize + 0  // u64: offset of the first free object, 0 if none
	csFreeCount  = lockRecSize + 8  // u64
	csCarved     = lockRecSize + 16 // u64: objects ever carved from slabs
	csCarveNext  = lockRecSize + 24 // u64: next object to carve in the current slab
	csCarveEnd   = lockRecSize + 32 // u64: end of the current slab's objects
	csSlabs      = lockRecSize + 40 // u64: slabs carved from (counted when first carved)
	csSpare      = lockRecSize + 48 // u64: a slab the page allocator gave the class, not yet carved
	classStateSz = lockRecSize + 64
)

// Cache slots at Layout.CacheOff: an owner word (an identity as in the lock
// word, mutex.go; 0 when free), then per class a count and a stack of object
// offsets.
const (
	cacheDepth     = 64 // objects a slot holds per class
	cacheBatch     = 32 // objects moved per refill or flush
	csOwner        = 0  // u64
	ccCount        = 0  // u32
	ccEntries      = 8  // [cacheDepth]u64
	cacheClassSize = ccEntries + cacheDepth*8
	cacheSlotHead  = 64
	cacheSlotSize  = (cacheSlotHead + numClasses*cacheClassSize + cacheLine - 1) &^ (cacheLine - 1)
)

// allocator is the process-local handle on the heap's allocator: this process's
// identity, which cache slots it claimed, and which are idle.
type allocator struct {
	h       *Heap
	id      atomic.Pointer[identity]
	idle    sync.Pool // *cacheSlot
	mu      sync.Mutex
	slots   []*cacheSlot
	noSlots atomic.Bool // every slot in the heap is taken: use the central pools
	owned   owned       // this process's owned objects (owned.go)
}

// cacheSlot is one claimed cache slot; a goroutine owns it between get and put.
type cacheSlot struct {
	off  uint64 // of the slot in the heap
	idle atomic.Bool
}

// pin returns this process's identity, counted as in use until unlock.
func (a *allocator) pin() *identity {
	for {
		id := a.id.Load()
		id.held.Add(1)
		if a.id.Load() == id {
			return id
		}
		id.held.Add(-1)
	}
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
	h.allocOnce.Do(func() {
		a := &allocator{h: h}
		a.id.Store(&identity{word: unattachedIdent()})
		h.alloc = a
	})
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
	if n-1 >= cacheDepth { // empty (or garbage)
		var err error
		if n, err = h.refill(c, cc, n); err != nil {
			return 0, err
		}
	}
	n--
	off := *h.Uint64(cc + ccEntries + uint64(n)*8)
	// Mark it allocated before popping it: a process killed in between leaves it
	// on the stack with its bit set, which the reaper reads as "in flight".
	w, bit := h.objBits(off)
	old := atomic.OrUint64(w, bit)
	atomic.StoreUint32(count, n)
	if old&bit != 0 {
		return 0, fmt.Errorf("%w: free object %#x is marked allocated", ErrCorruptHeap, off)
	}
	return off, nil
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
		c, ok := slabObjectIn(off, e)
		if !ok {
			break
		}
		w, bit := h.objBits(off)
		if atomic.LoadUint64(w)&bit == 0 {
			return fmt.Errorf("%w: offset %#x", ErrDoubleFree, off)
		}
		return h.freeSmall(c, off, w, bit)
	case pmFree:
		return fmt.Errorf("%w: offset %#x is in a free page", ErrDoubleFree, off)
	}
	return fmt.Errorf("%w: offset %#x", ErrInvalidPointer, off)
}

// freeSmall pushes the object at off, whose allocated bit is bit of *w, onto a
// cache stack, and then clears the bit: a process killed in between leaves it
// on the stack with its bit set, which the reaper reads as "in flight". The
// clear is also what catches two frees racing: the loser takes its push back.
func (h *Heap) freeSmall(c int, off uint64, w *uint64, bit uint64) error {
	a := h.allocator()
	s := a.get()
	if s == nil {
		return h.freeDirect(c, off, w, bit)
	}
	defer a.put(s)
	cc := s.off + cacheSlotHead + uint64(c)*cacheClassSize
	count := h.Uint32(cc + ccCount)
	n := atomic.LoadUint32(count)
	if n >= cacheDepth {
		var err error
		if n, err = h.flush(c, cc, n, cacheBatch); err != nil {
			return err
		}
	}
	*h.Uint64(cc + ccEntries + uint64(n)*8) = off
	atomic.StoreUint32(count, n+1)
	if atomic.AndUint64(w, ^bit)&bit == 0 {
		atomic.StoreUint32(count, n)
		return fmt.Errorf("%w: offset %#x", ErrDoubleFree, off)
	}
	return nil
}

// refill moves up to cacheBatch objects of class c from the central pool into
// the cache stack at cc, whose count n should be zero, and returns how many it
// moved: at least one, or an error.
func (h *Heap) refill(c int, cc uint64, n uint32) (uint32, error) {
	if n != 0 {
		return 0, fmt.Errorf("%w: cache stack at %#x holds %d objects, at most %d", ErrCorruptHeap, cc, n, cacheDepth)
	}
	_, got, err := h.popCentral(c, cc, cacheBatch)
	if err == nil && got == 0 {
		err = fmt.Errorf("%w: no slab for %d-byte objects", ErrOutOfMemory, classSizes[c])
	}
	return uint32(got), err
}

func (h *Heap) allocDirect(c int) (uint64, error) {
	off, got, err := h.popCentral(c, 0, 1)
	if err == nil && got == 0 {
		err = fmt.Errorf("%w: no slab for %d-byte objects", ErrOutOfMemory, classSizes[c])
	}
	return off, err
}

// popCentral takes up to want objects of class c from the class's free list,
// then its current slab, then a new slab, in one logged step. With cc set, they
// go onto that (empty) cache stack; with cc zero (want 1), the one object is
// marked allocated and returned. It returns the first object and how many it
// took: fewer than want only when the heap is out of pages.
func (h *Heap) popCentral(c int, cc uint64, want int) (first uint64, n int, err error) {
	rec := h.classState(c, csLock)
	id, err := h.lock(rec)
	if err != nil {
		return 0, 0, err
	}
	defer h.unlock(rec, id)
	var r redo
	take := func(off uint64) {
		if n == 0 {
			first = off
		}
		if cc != 0 {
			*h.Uint64(cc + ccEntries + uint64(n)*8) = off // above the count: nobody reads it yet
		}
		n++
	}
	head, count := h.load(h.classState(c, csFreeHead)), h.load(h.classState(c, csFreeCount))
	if head != 0 && !h.inPages(head) {
		return 0, 0, fmt.Errorf("%w: %d-byte class's free list starts at %#x", ErrCorruptHeap, classSizes[c], head)
	}
	for n < want && head != 0 {
		next := *h.Uint64(head)
		if next != 0 && !h.inPages(next) || count == 0 {
			// A use after free wrote over the link. Drop the rest of the list
			// rather than hand out memory that is not ours.
			fmt.Fprintf(os.Stderr, "kflex heap %s: free list of class %d corrupt at %#x; %d objects dropped\n",
				h.name, classSizes[c], head, count)
			next, count = 0, 1
		}
		take(head)
		head = next
		count--
	}
	if n > 0 {
		r.add(redoStore64, h.classState(c, csFreeHead), head)
		r.add(redoStore64, h.classState(c, csFreeCount), count)
	}
	if n < want {
		if err := h.carve(c, want, &r, take, &n); err != nil {
			return 0, 0, err
		}
	}
	if n == 0 {
		return 0, 0, nil
	}
	op := "refill"
	if cc != 0 {
		r.add(redoStore32, cc+ccCount, uint64(n))
	} else {
		op = "direct-alloc"
		w, bit := h.objBits(first)
		if atomic.LoadUint64(w)&bit != 0 {
			err = fmt.Errorf("%w: free object %#x is marked allocated", ErrCorruptHeap, first)
		}
		r.add(redoSetBits, h.offsetOf(w), bit)
	}
	crash(op, "locked")
	h.commit(rec, &r, op)
	return first, n, err
}

// carve adds to r the carving of objects from class c's current slab, or from
// a new one (at most one new slab per step), passing each to take until *n reaches want.
func (h *Heap) carve(c int, want int, r *redo, take func(uint64), n *int) error {
	size := classSizes[c]
	next, end := h.load(h.classState(c, csCarveNext)), h.load(h.classState(c, csCarveEnd))
	carved, slabs := h.load(h.classState(c, csCarved)), h.load(h.classState(c, csSlabs))
	if next > end || end-next > slabBytes || next != 0 && !h.inPages(next) || end > h.hdr.Size {
		return fmt.Errorf("%w: %d-byte class carves [%#x, %#x)", ErrCorruptHeap, size, next, end)
	}
	for switched := false; ; switched = true {
		for *n < want && next+size <= end {
			take(next)
			next += size
			carved++
		}
		if *n == want || switched {
			break
		}
		spare, err := h.spareSlab(c)
		if err != nil {
			return err
		}
		if spare == 0 {
			break
		}
		next, end = spare, spare+objectsPerSlab(c)*size
		slabs++
		r.add(redoStore64, h.classState(c, csSpare), 0)
		r.add(redoStore64, h.classState(c, csCarveEnd), end)
		r.add(redoStore64, h.classState(c, csSlabs), slabs)
	}
	r.add(redoStore64, h.classState(c, csCarveNext), next)
	r.add(redoStore64, h.classState(c, csCarved), carved)
	return nil
}

// spareSlab returns class c's spare slab, first asking the page allocator for
// one if there is none: the page allocator's own logged step stores it in the
// spare word, so a slab is never taken from the pages without a class holding
// it. It returns 0 when the heap is out of pages.
func (h *Heap) spareSlab(c int) (uint64, error) {
	spare := h.load(h.classState(c, csSpare))
	if spare != 0 {
		if !h.inPages(spare) || spare%PageSize != 0 || atomic.LoadUint32(h.pageEntry(spare/PageSize)) != pmSlab|uint32(c)<<24 {
			return 0, fmt.Errorf("%w: %d-byte class's spare slab %#x is no slab of its", ErrCorruptHeap, classSizes[c], spare)
		}
		return spare, nil
	}
	spare, _, err := h.allocPages(slabPages, pmSlab|uint32(c)<<24, h.classState(c, csSpare), "slab")
	return spare, err
}

// flush moves k objects from the top of the cache stack at cc, which holds n,
// to class c's free list and returns the new count.
func (h *Heap) flush(c int, cc uint64, n, k uint32) (uint32, error) {
	if n > cacheDepth {
		return 0, fmt.Errorf("%w: cache stack at %#x holds %d objects, at most %d", ErrCorruptHeap, cc, n, cacheDepth)
	}
	rec := h.classState(c, csLock)
	id, err := h.lock(rec)
	if err != nil {
		return 0, err
	}
	defer h.unlock(rec, id)
	left := n - k
	for i := left; i < n; i++ {
		if off := *h.Uint64(cc + ccEntries + uint64(i)*8); !h.inPages(off) {
			return 0, fmt.Errorf("%w: cache stack at %#x holds %#x", ErrCorruptHeap, cc, off)
		}
	}
	var r redo
	head := h.load(h.classState(c, csFreeHead))
	for i := left; i < n; i++ {
		off := *h.Uint64(cc + ccEntries + uint64(i)*8)
		*h.Uint64(off) = head // the object is free and ours: nobody reads its link yet
		head = off
	}
	r.add(redoStore64, h.classState(c, csFreeHead), head)
	r.add(redoStore64, h.classState(c, csFreeCount), h.load(h.classState(c, csFreeCount))+uint64(k))
	r.add(redoStore32, cc+ccCount, uint64(left))
	crash("flush", "locked")
	h.commit(rec, &r, "flush")
	return left, nil
}

// freeDirect pushes one object onto class c's free list and clears its
// allocated bit (bit of *w) in one logged step; the clear comes first, so two
// racing frees find each other.
func (h *Heap) freeDirect(c int, off uint64, w *uint64, bit uint64) error {
	rec := h.classState(c, csLock)
	id, err := h.lock(rec)
	if err != nil {
		return err
	}
	defer h.unlock(rec, id)
	var r redo
	r.add(redoClearBit, h.offsetOf(w), bit)
	*h.Uint64(off) = h.load(h.classState(c, csFreeHead))
	r.add(redoStore64, h.classState(c, csFreeHead), off)
	r.add(redoStore64, h.classState(c, csFreeCount), h.load(h.classState(c, csFreeCount))+1)
	crash("direct-free", "locked")
	if err := h.commit(rec, &r, "direct-free"); err != nil {
		return fmt.Errorf("offset %#x: %w", off, err)
	}
	return nil
}

// allocPages takes a run of n free pages under the page lock, its first page's
// map entry head (a large run's or a slab's), in one logged step. If dest is
// set, the step also stores the run's offset there. It returns the run's offset,
// or false when no run is free.
func (h *Heap) allocPages(n uint64, head uint32, dest uint64, op string) (uint64, bool, error) {
	rec := h.hdr.AllocOff + asPageLock
	id, err := h.lock(rec)
	if err != nil {
		return 0, false, err
	}
	defer h.unlock(rec, id)
	as := h.hdr.AllocOff
	rover, free := h.load(as+asRover), h.load(as+asFreePages)
	first, last := h.firstPage(), h.pages()
	rover = min(max(rover, first), last)
	p, ok := h.findRun(n, rover, last)
	if !ok {
		p, ok = h.findRun(n, first, min(rover+n, last))
	}
	if !ok {
		return 0, false, nil
	}
	if free < n {
		return 0, false, fmt.Errorf("%w: %d free pages counted, a free run of %d found", ErrCorruptHeap, free, n)
	}
	var r redo
	r.add(redoRunUse, p, n|uint64(head)<<32)
	r.add(redoStore64, as+asFreePages, free-n)
	r.add(redoStore64, as+asRover, p+n)
	if head&pmKindMask == pmLarge {
		r.add(redoStore64, as+asLargeRuns, h.load(as+asLargeRuns)+1)
		r.add(redoStore64, as+asLargePages, h.load(as+asLargePages)+n)
	}
	if dest != 0 {
		r.add(redoStore64, dest, p*PageSize)
	}
	crash(op, "locked")
	h.commit(rec, &r, op)
	return p * PageSize, true, nil
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
	if n > pmValueMask {
		return 0, fmt.Errorf("%w: %d pages", ErrBadSize, n)
	}
	off, ok, err := h.allocPages(n, pmLarge|uint32(n), 0, "large")
	if err == nil && !ok {
		err = fmt.Errorf("%w: no run of %d free pages", ErrOutOfMemory, n)
	}
	return off, err
}

// freeLarge returns the run headed by page, whose map entry was e, in one logged
// step. Under the page lock the entry must still be e: of two racing frees of
// the same run, the second finds it free.
func (h *Heap) freeLarge(page uint64, e uint32) error {
	n := uint64(e & pmValueMask)
	if n == 0 || n > h.pages()-page {
		return fmt.Errorf("%w: page %d heads a run of %d pages", ErrCorruptHeap, page, n)
	}
	rec := h.hdr.AllocOff + asPageLock
	id, err := h.lock(rec)
	if err != nil {
		return err
	}
	defer h.unlock(rec, id)
	if atomic.LoadUint32(h.pageEntry(page)) != e {
		return fmt.Errorf("%w: page run at %#x", ErrDoubleFree, page*PageSize)
	}
	as := h.hdr.AllocOff
	var r redo
	r.add(redoRunFree, page, n)
	r.add(redoStore64, as+asFreePages, h.load(as+asFreePages)+n)
	r.add(redoStore64, as+asLargeRuns, h.load(as+asLargeRuns)-1)
	r.add(redoStore64, as+asLargePages, h.load(as+asLargePages)-n)
	crash("unlarge", "locked")
	h.commit(rec, &r, "unlarge")
	return nil
}

func (h *Heap) load(off uint64) uint64 { return atomic.LoadUint64(h.Uint64(off)) }

// offsetOf is the heap offset of a word returned by Uint64.
func (h *Heap) offsetOf(w *uint64) uint64 {
	return uint64(uintptr(unsafe.Pointer(w)) - uintptr(h.m.base))
}

// inPages reports whether off is an 8-byte aligned offset in the allocator's pages.
func (h *Heap) inPages(off uint64) bool {
	return off >= h.hdr.PagesOff && off < h.hdr.Size && off%8 == 0
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
	h, me := a.h, a.id.Load().word
	for i := range uint64(h.hdr.Params.Caches) {
		off := h.hdr.CacheOff + i*cacheSlotSize
		w := h.Uint64(off + csOwner)
		o := atomic.LoadUint64(w)
		if o != 0 && !h.ownerDead(o) || !atomic.CompareAndSwapUint64(w, o, me) {
			continue
		}
		if o != 0 {
			// A dead process's slot: its objects go back to the central pools
			// before the slot serves this process.
			h.drain(off)
		}
		s := &cacheSlot{off: off}
		a.slots = append(a.slots, s)
		return s
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
	h, me := a.h, a.id.Load().word
	for _, s := range a.slots {
		h.drain(s.off)
		atomic.CompareAndSwapUint64(h.Uint64(s.off+csOwner), me, 0)
	}
	a.slots = nil
}
