package heap

import "sync/atomic"

// Stats describe the allocator's state across every process attached to the heap.
// They are read without stopping allocation, so under concurrent use the figures
// are each exact but not all from the same instant.
type Stats struct {
	Pages      uint64 // allocatable pages
	FreePages  uint64
	LargeRuns  uint64 // live allocations above MaxSmall
	LargePages uint64
	Classes    [numClasses]ClassStats
	// LiveObjects and LiveBytes count allocated objects of every size.
	LiveObjects, LiveBytes uint64
}

// ClassStats describe one size class.
type ClassStats struct {
	Size        uint64
	Slabs       uint64 // slabs carved from the page allocator
	Carved      uint64 // objects ever carved from those slabs
	CentralFree uint64 // in the shared free list
	Cached      uint64 // in per-thread cache slots of any process
	Live        uint64 // allocated: Carved - CentralFree - Cached
}

// Stats reports the allocator's state.
func (h *Heap) Stats() Stats {
	s := Stats{Pages: h.pages() - h.firstPage()}
	as := h.hdr.AllocOff
	s.FreePages = atomic.LoadUint64(h.Uint64(as + asFreePages))
	s.LargeRuns = atomic.LoadUint64(h.Uint64(as + asLargeRuns))
	s.LargePages = atomic.LoadUint64(h.Uint64(as + asLargePages))
	s.LiveObjects, s.LiveBytes = s.LargeRuns, s.LargePages*PageSize
	for c := range numClasses {
		cs := &s.Classes[c]
		cs.Size = classSizes[c]
		lock := h.Uint32(h.classState(c, csLock))
		lockWord(lock)
		cs.Slabs = *h.Uint64(h.classState(c, csSlabs))
		cs.Carved = *h.Uint64(h.classState(c, csCarved))
		cs.CentralFree = *h.Uint64(h.classState(c, csFreeCount))
		unlockWord(lock)
		for i := range uint64(h.hdr.Params.Caches) {
			cc := h.hdr.CacheOff + i*cacheSlotSize + cacheSlotHead + uint64(c)*cacheClassSize
			cs.Cached += uint64(atomic.LoadUint32(h.Uint32(cc + ccCount)))
		}
		cs.Live = cs.Carved - cs.CentralFree - cs.Cached
		s.LiveObjects += cs.Live
		s.LiveBytes += cs.Live * cs.Size
	}
	return s
}
