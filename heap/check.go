package heap

import (
	"fmt"
	"math/bits"
	"sync/atomic"
)

// CheckSummary is what Check found in a consistent heap.
type CheckSummary struct {
	Size       uint64 `json:"size"`
	Pages      uint64 `json:"pages"`
	FreePages  uint64 `json:"free_pages"`
	LargeRuns  uint64 `json:"large_runs"`
	LargePages uint64 `json:"large_pages"`
	Slabs      uint64 `json:"slabs"`
	Live       uint64 `json:"live_objects"` // small objects allocated
	Free       uint64 `json:"free_objects"` // on the classes' free lists
	Cached     uint64 `json:"cached_objects"`
	Caches     int    `json:"caches"`      // cache slots with an owner
	DeadCaches int    `json:"dead_caches"` // of dead processes: Reap empties them
	Recover    int    `json:"recover"`     // locks of dead holders: taking them over finishes their step
}

func (s CheckSummary) String() string {
	return fmt.Sprintf("ok: %d of %d pages free, %d large runs (%d pages), %d slabs: %d live objects, %d free, %d cached in %d slots (%d of dead processes); %d allocator locks held by dead processes",
		s.FreePages, s.Pages, s.LargeRuns, s.LargePages, s.Slabs, s.Live, s.Free, s.Cached, s.Caches, s.DeadCaches, s.Recover)
}

// checker reads the heap as recovery would leave it: the committed redo logs of
// dead holders applied, over the heap's own words.
type checker struct {
	h    *Heap
	over map[uint64]uint64
	sum  CheckSummary
	seen map[uint64]bool // objects on a free list or in a cache
	// per class: slab starts, and objects in flight at the top of a dead cache
	slabs    [numClasses][]uint64
	carvings [numClasses]carving
	inFlight map[uint64]bool
}

func (k *checker) u64(off uint64) uint64 {
	if v, ok := k.over[off]; ok {
		return v
	}
	return atomic.LoadUint64(k.h.Uint64(off))
}

func (k *checker) u32(off uint64) uint32 {
	if v, ok := k.over[off]; ok {
		return uint32(v)
	}
	return atomic.LoadUint32(k.h.Uint32(off))
}

// overlay applies a validated redo entry to the checker's view.
func (k *checker) overlay(e [2]uint64) {
	h := k.h
	off, val := e[0]&(1<<redoKindBit-1), e[1]
	switch e[0] >> redoKindBit {
	case redoStore64, redoStore32:
		k.over[off] = val
	case redoSetBits:
		k.over[off] = k.u64(off) | val
	case redoClearBit:
		k.over[off] = k.u64(off) &^ val
	case redoRunUse, redoRunFree:
		n, head := val, uint32(0)
		if e[0]>>redoKindBit == redoRunUse {
			n, head = val&0xffffffff, uint32(val>>32)
		}
		for i := range n {
			p := off + i
			fb := h.hdr.FreeBitsOff + p/64*8
			if head != 0 {
				k.over[h.hdr.PageMapOff+p*4] = uint64(runEntry(head, i))
				k.over[fb] = k.u64(fb) &^ (1 << (p % 64))
			} else {
				k.over[h.hdr.PageMapOff+p*4] = pmFree
				k.over[fb] = k.u64(fb) | 1<<(p%64)
			}
		}
	}
}

// Check verifies the owner table and the allocator's invariants: owner slots'
// liveness words, live slots' PIDs and owned-object registries parse; lock
// words and redo logs parse and no live process holds a lock; the page map
// agrees with the free bitmap and the page counters; each class's slabs,
// carving position and counters agree; free lists stay inside their class's
// carved objects, are acyclic and as long as counted; cache slots have valid
// owners and hold their class's objects; and every carved object is either
// allocated (its bit set) or in exactly one free list or cache, with no object
// bit set anywhere else. A dead holder's committed step is checked as applied
// and a dead cache's in-flight top object as free: what recovery will do.
// Check takes no lock and is meant for a heap no live process is changing. The
// error names the first violation (a *FieldError). The lock queues' node
// table is mcs's to check (mcs.CheckLocks).
func (h *Heap) Check() (CheckSummary, error) {
	k := &checker{h: h, over: map[uint64]uint64{}, seen: map[uint64]bool{}, inFlight: map[uint64]bool{}}
	k.sum.Size = h.hdr.Size
	for _, step := range []func() error{k.owners, k.locks, k.pageMap, k.classes, k.caches, k.objects} {
		if err := step(); err != nil {
			return CheckSummary{}, err
		}
	}
	return k.sum, nil
}

// owners checks every owner slot's record (checkOwner).
func (k *checker) owners() error {
	for s := range k.h.hdr.Params.MaxProcs {
		if err := k.h.checkOwner(s, true); err != nil {
			return err
		}
	}
	return nil
}

func (k *checker) locks() error {
	for rec := range k.h.lockRecords() {
		l, log, err := k.h.inspectLock(rec)
		if err != nil {
			return err
		}
		if !l.Held {
			continue
		}
		if l.Liveness != Dead {
			return fieldErr(rec, l.Name+" lock word", "held by %s (%s): the heap is in use", l.Holder, l.State)
		}
		k.sum.Recover++
		for _, e := range log {
			k.overlay(e)
		}
	}
	return nil
}

func (k *checker) pageMap() error {
	h := k.h
	first, n := h.firstPage(), h.pages()
	k.sum.Pages = n - first
	free := func(p uint64) bool { return k.u64(h.hdr.FreeBitsOff+p/64*8)&(1<<(p%64)) != 0 }
	entry := func(p uint64) uint32 { return k.u32(h.hdr.PageMapOff + p*4) }
	field := func(p uint64) string { return fmt.Sprintf("page map entry of page %d", p) }
	for p := uint64(0); p < n; {
		e := entry(p)
		switch {
		case p < first:
			if e != pmOther || free(p) {
				return fieldErr(h.hdr.PageMapOff+p*4, field(p), "metadata page reads %#x, free %v", e, free(p))
			}
			p++
			continue
		case free(p) != (e == pmFree):
			return fieldErr(h.hdr.PageMapOff+p*4, field(p), "%#x, but the free bitmap says free %v", e, free(p))
		}
		run := uint64(1)
		switch e & pmKindMask {
		case pmFree:
			k.sum.FreePages++
		case pmLarge:
			run = uint64(e & pmValueMask)
			k.sum.LargeRuns++
			k.sum.LargePages += run
		case pmSlab:
			c := int(e >> 24 & 0x3f)
			if !runHeadValid(e, slabPages) {
				return fieldErr(h.hdr.PageMapOff+p*4, field(p), "%#x: not the first page of a slab", e)
			}
			run = slabPages
			k.slabs[c] = append(k.slabs[c], p*PageSize)
		default:
			return fieldErr(h.hdr.PageMapOff+p*4, field(p), "rest of a run outside any run")
		}
		if run == 0 || run > n-p {
			return fieldErr(h.hdr.PageMapOff+p*4, field(p), "%#x: run of %d pages past the end", e, run)
		}
		for i := uint64(1); i < run; i++ {
			if entry(p+i) != runEntry(e, i) || free(p+i) {
				return fieldErr(h.hdr.PageMapOff+(p+i)*4, field(p+i), "%#x, free %v, inside the run at page %d", entry(p+i), free(p+i), p)
			}
		}
		p += run
	}
	as := h.hdr.AllocOff
	for _, c := range []struct {
		off        uint64
		name       string
		want, have uint64
	}{
		{as + asFreePages, "free pages", k.sum.FreePages, k.u64(as + asFreePages)},
		{as + asLargeRuns, "large runs", k.sum.LargeRuns, k.u64(as + asLargeRuns)},
		{as + asLargePages, "large pages", k.sum.LargePages, k.u64(as + asLargePages)},
	} {
		if c.want != c.have {
			return fieldErr(c.off, c.name+" counter", "%d, the page map says %d", c.have, c.want)
		}
	}
	return nil
}

// carving is, per class, the slab being carved and how far: objects of
// other slabs are all carved, except the spare's.
type carving struct{ cur, next, spare uint64 }

func (k *checker) carving(c int) (carving, error) {
	h, size := k.h, classSizes[c]
	st := func(f uint64) uint64 { return h.classState(c, f) }
	name := fmt.Sprintf("class %d", size)
	next, end, spare := k.u64(st(csCarveNext)), k.u64(st(csCarveEnd)), k.u64(st(csSpare))
	slabs, carved := k.u64(st(csSlabs)), k.u64(st(csCarved))
	isSlab := func(s uint64) bool {
		for _, x := range k.slabs[c] {
			if x == s {
				return true
			}
		}
		return false
	}
	have := uint64(len(k.slabs[c]))
	if spare != 0 {
		if !isSlab(spare) {
			return carving{}, fieldErr(st(csSpare), name+" spare slab", "%#x is no slab of the class", spare)
		}
		have--
	}
	if slabs != have {
		return carving{}, fieldErr(st(csSlabs), name+" slab counter", "%d, the page map has %d", slabs, have)
	}
	if slabs == 0 {
		if next != 0 || end != 0 || carved != 0 {
			return carving{}, fieldErr(st(csCarveNext), name+" carving", "[%#x, %#x), %d carved, without a slab", next, end, carved)
		}
		return carving{spare: spare}, nil
	}
	cur := end - objectsPerSlab(c)*size
	if end < objectsPerSlab(c)*size || !isSlab(cur) || cur == spare || next < cur || next > end || (next-cur)%size != 0 {
		return carving{}, fieldErr(st(csCarveNext), name+" carving", "[%#x, %#x) is not within one of its slabs", next, end)
	}
	if want := (slabs-1)*objectsPerSlab(c) + (next-cur)/size; carved != want {
		return carving{}, fieldErr(st(csCarved), name+" carved counter", "%d, its slabs say %d", carved, want)
	}
	return carving{cur: cur, next: next, spare: spare}, nil
}

// object reports whether off is a carved object of class c.
func (k *checker) object(c int, cv carving, off uint64) bool {
	if !k.h.inPages(off) {
		return false
	}
	page := off / PageSize
	e := k.u32(k.h.hdr.PageMapOff + page*4)
	if e&pmKindMask != pmSlab || int(e>>24&0x3f) != c || uint64(e&0xffffff) > page {
		return false
	}
	start := (page - uint64(e&0xffffff)) * PageSize
	rel := off - start
	if rel%classSizes[c] != 0 || rel/classSizes[c] >= objectsPerSlab(c) || start == cv.spare {
		return false
	}
	return start != cv.cur || off < cv.next
}

func (k *checker) bit(off uint64) bool {
	g := off / 8
	return k.u64(k.h.hdr.ObjBitsOff+g/64*8)&(1<<(g%64)) != 0
}

func (k *checker) classes() error {
	h := k.h
	for c := range numClasses {
		cv, err := k.carving(c)
		if err != nil {
			return err
		}
		k.carvings[c] = cv
		k.sum.Slabs += uint64(len(k.slabs[c]))
		name := fmt.Sprintf("class %d free list", classSizes[c])
		count, at := k.u64(h.classState(c, csFreeCount)), h.classState(c, csFreeHead)
		off, i := k.u64(at), uint64(0)
		for ; off != 0; i++ {
			switch {
			case i == count:
				return fieldErr(at, name, "longer than its count %d", count)
			case !k.object(c, cv, off):
				return fieldErr(at, name, "entry %d: %#x is no carved object of the class", i, off)
			case k.seen[off]:
				return fieldErr(at, name, "entry %d: %#x is listed twice (a cycle, or a double free)", i, off)
			case k.bit(off):
				return fieldErr(at, name, "entry %d: %#x is marked allocated", i, off)
			}
			k.seen[off] = true
			k.sum.Free++
			at, off = off, k.u64(off)
		}
		if i != count {
			return fieldErr(h.classState(c, csFreeCount), name, "%d entries, counted %d", i, count)
		}
	}
	return nil
}

func (k *checker) caches() error {
	h := k.h
	for i := range uint64(h.hdr.Params.Caches) {
		slot := h.hdr.CacheOff + i*cacheSlotSize
		o := k.u64(slot + csOwner)
		dead := false
		if o != 0 {
			who, err := h.decodeIdent(o)
			if o&0xffff != 0 || err != nil {
				return fieldErr(slot+csOwner, fmt.Sprintf("cache slot %d owner", i), "%#x names no process", o)
			}
			dead = h.liveness(who) == Dead
			k.sum.Caches++
			if dead {
				k.sum.DeadCaches++
			}
		}
		for c := range numClasses {
			cc := slot + cacheSlotHead + uint64(c)*cacheClassSize
			name := fmt.Sprintf("cache slot %d class %d", i, classSizes[c])
			n := uint64(k.u32(cc + ccCount))
			if n > cacheDepth || o == 0 && n != 0 {
				return fieldErr(cc+ccCount, name+" count", "%d (owner %#x), at most %d", n, o, cacheDepth)
			}
			for j := range n {
				off := k.u64(cc + ccEntries + j*8)
				switch {
				case !k.object(c, k.carvings[c], off):
					return fieldErr(cc+ccEntries+j*8, name+" entry", "%#x is no carved object of the class", off)
				case k.seen[off]:
					return fieldErr(cc+ccEntries+j*8, name+" entry", "%#x is free twice", off)
				case k.bit(off) && !(dead && j == n-1):
					return fieldErr(cc+ccEntries+j*8, name+" entry", "%#x is marked allocated", off)
				case k.bit(off):
					k.inFlight[off] = true
				}
				k.seen[off] = true
				k.sum.Cached++
			}
		}
	}
	return nil
}

// objects checks that every carved object is allocated or free, once, and that
// no object bit is set anywhere else.
func (k *checker) objects() error {
	h := k.h
	set := uint64(0)
	for c := range numClasses {
		size := classSizes[c]
		for _, s := range k.slabs[c] {
			for off := s; off+size <= s+objectsPerSlab(c)*size; off += size {
				if !k.object(c, k.carvings[c], off) {
					continue
				}
				allocated := k.bit(off)
				if allocated {
					set++
				}
				if allocated == k.seen[off] && !k.inFlight[off] {
					what := "neither allocated nor on any free list or cache (leaked)"
					if allocated {
						what = "allocated and free at once"
					}
					return fieldErr(off, fmt.Sprintf("class %d object", size), "%s", what)
				}
				if allocated && !k.seen[off] {
					k.sum.Live++
				}
			}
		}
	}
	total := uint64(0)
	for w := h.hdr.ObjBitsOff; w < h.hdr.FreeBitsOff; w += 8 {
		total += uint64(bits.OnesCount64(k.u64(w)))
	}
	if total != set {
		return fieldErr(h.hdr.ObjBitsOff, "object bitmap", "%d bits set, %d of them at carved objects", total, set)
	}
	return nil
}
