package heap

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ReapStats says what Reap recovered.
type ReapStats struct {
	Locks   int // allocator locks taken over from dead holders
	Slots   int // dead processes' cache slots emptied and freed
	Objects int // objects those slots held, now in the central pools
	Owned   int // objects dead processes owned (AllocOwned), freed
}

// Reap recovers what dead processes left in the allocator: it takes over every
// allocator lock a dead process holds (finishing its critical section) and
// releases it, and empties every cache slot whose owner is dead into the central
// pools, freeing the slot, and frees the objects a dead process owned
// (AllocOwned). Allocation does the same lazily — a waiter takes over
// a dead holder's lock, a process claiming a cache slot drains a dead owner's —
// so Reap is for a survivor that wants it done now; BindOwner (mcs.Attach) runs
// it.
func (h *Heap) Reap() (ReapStats, error) {
	var st ReapStats
	var errs error
	for rec := range h.lockRecords() {
		v := atomic.LoadUint64(h.Uint64(rec))
		if v == 0 || !lockWordValid(v) {
			continue
		}
		if o, err := h.decodeIdent(v); err != nil || h.liveness(o) != Dead {
			continue
		}
		before := h.load(rec + lrTakeovers)
		id, err := h.lock(rec)
		if err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		h.unlock(rec, id)
		if h.load(rec+lrTakeovers) != before {
			st.Locks++
		}
	}
	me := h.allocator().id.Load().word
	for i := range uint64(h.hdr.Params.Caches) {
		off := h.hdr.CacheOff + i*cacheSlotSize
		w := h.Uint64(off + csOwner)
		o := atomic.LoadUint64(w)
		if o == 0 || !h.ownerDead(o) || !atomic.CompareAndSwapUint64(w, o, me) {
			continue
		}
		k, err := h.drain(off)
		errs = errors.Join(errs, err)
		atomic.CompareAndSwapUint64(w, me, 0)
		st.Slots++
		st.Objects += k
	}
	for s := range h.hdr.Params.MaxProcs {
		if live, _ := h.OwnerLiveness(s); live == 0 || OwnerDead(live) {
			n, err := h.reapOwned(s)
			st.Owned += n
			errs = errors.Join(errs, err)
		}
	}
	return st, errs
}

// lockRecords yields the offsets of the allocator's lock records: the page lock,
// then the classes'.
func (h *Heap) lockRecords() func(yield func(uint64) bool) {
	return func(yield func(uint64) bool) {
		if !yield(h.hdr.AllocOff + asPageLock) {
			return
		}
		for c := range numClasses {
			if !yield(h.classState(c, csLock)) {
				return
			}
		}
	}
}

// ownerDead reports whether o, a cache slot's owner word, names a process known
// to be gone, or nothing valid.
func (h *Heap) ownerDead(o uint64) bool {
	if o&0xffff != 0 {
		return true
	}
	who, err := h.decodeIdent(o)
	return err != nil || h.liveness(who) == Dead
}

// drain returns every object in the cache slot at slot to the central pools and
// reports how many it returned.
func (h *Heap) drain(slot uint64) (int, error) {
	total := 0
	var errs error
	for c := range numClasses {
		k, err := h.drainClass(c, slot+cacheSlotHead+uint64(c)*cacheClassSize)
		total += k
		errs = errors.Join(errs, err)
	}
	return total, errs
}

// drainClass empties the class-c stack at cc onto the class's free list in one
// logged step. It runs under the class lock, whose taking finishes a dead
// holder's refill or flush of this very stack first. The top object, if its
// allocated bit is set, was in flight when the owner died (Alloc had marked it
// and not popped it, or Free had pushed it and not cleared it): it is free.
// Objects that are not this class's, or that are allocated below the top, are
// dropped and reported.
func (h *Heap) drainClass(c int, cc uint64) (int, error) {
	rec := h.classState(c, csLock)
	id, err := h.lock(rec)
	if err != nil {
		return 0, err
	}
	defer h.unlock(rec, id)
	n := atomic.LoadUint32(h.Uint32(cc + ccCount))
	var bad error
	if n > cacheDepth {
		bad = fmt.Errorf("%w: cache stack at %#x holds %d objects, at most %d; dropped", ErrCorruptHeap, cc, n, cacheDepth)
		n = 0
	}
	var r redo
	head, k := h.load(h.classState(c, csFreeHead)), 0
	for i := range n {
		off := *h.Uint64(cc + ccEntries + uint64(i)*8)
		if oc, ok := h.slabObject(off); !ok || oc != c {
			bad = errors.Join(bad, fmt.Errorf("%w: cache stack at %#x holds %#x, no %d-byte object; dropped", ErrCorruptHeap, cc, off, classSizes[c]))
			continue
		}
		w, bit := h.objBits(off)
		if atomic.LoadUint64(w)&bit != 0 {
			if i != n-1 {
				bad = errors.Join(bad, fmt.Errorf("%w: cache stack at %#x holds allocated object %#x; dropped", ErrCorruptHeap, cc, off))
				continue
			}
			atomic.AndUint64(w, ^bit) // in flight: ours to free
		}
		*h.Uint64(off) = head
		head = off
		k++
	}
	if n == 0 && bad == nil {
		return 0, nil
	}
	if k > 0 {
		r.add(redoStore64, h.classState(c, csFreeHead), head)
		r.add(redoStore64, h.classState(c, csFreeCount), h.load(h.classState(c, csFreeCount))+uint64(k))
	}
	r.add(redoStore32, cc+ccCount, 0)
	crash("drain", "locked")
	h.commit(rec, &r, "drain")
	return k, bad
}

// slabObject reports whether off is the start of an object in a slab, and its
// class.
func (h *Heap) slabObject(off uint64) (int, bool) {
	if !h.inPages(off) {
		return 0, false
	}
	return slabObjectIn(off, atomic.LoadUint32(h.pageEntry(off/PageSize)))
}

// slabObjectIn is slabObject for an offset in the pages whose page map entry is e.
func slabObjectIn(off uint64, e uint32) (int, bool) {
	page, c := off/PageSize, int(e>>24&0x3f)
	if e&pmKindMask != pmSlab || c >= numClasses || uint64(e&0xffffff) > page {
		return 0, false
	}
	rel := off - (page-uint64(e&0xffffff))*PageSize
	return c, rel%classSizes[c] == 0 && rel/classSizes[c] < objectsPerSlab(c)
}
