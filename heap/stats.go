package heap

import "sync/atomic"

// Stats describe the allocator's state across every process attached to the heap.
// They are read without taking a lock, so under concurrent use the figures are
// each exact but not all from the same instant (a class's Live is then clamped
// at zero).
type Stats struct {
	Pages      uint64                 `json:"pages"` // allocatable pages
	FreePages  uint64                 `json:"free_pages"`
	LargeRuns  uint64                 `json:"large_runs"` // live allocations above MaxSmall
	LargePages uint64                 `json:"large_pages"`
	Classes    [numClasses]ClassStats `json:"classes"`
	// LiveObjects and LiveBytes count allocated objects of every size.
	LiveObjects uint64 `json:"live_objects"`
	LiveBytes   uint64 `json:"live_bytes"`
	// DeadCaches are cache slots whose owner process is dead, and Stranded the
	// objects they hold, until a survivor reaps them (Reap, or a claim of the
	// slot). Stranded objects are counted in the classes' Cached.
	DeadCaches int    `json:"dead_caches"`
	Stranded   uint64 `json:"stranded"`
}

// ClassStats describe one size class.
type ClassStats struct {
	Size        uint64 `json:"size"`
	Slabs       uint64 `json:"slabs"`        // slabs carved from the page allocator
	Carved      uint64 `json:"carved"`       // objects ever carved from those slabs
	CentralFree uint64 `json:"central_free"` // in the shared free list
	Cached      uint64 `json:"cached"`       // in per-thread cache slots of any process
	Live        uint64 `json:"live"`         // allocated: Carved - CentralFree - Cached
}

// Stats reports the allocator's state.
func (h *Heap) Stats() Stats {
	s := Stats{Pages: h.pages() - h.firstPage()}
	as := h.hdr.AllocOff
	s.FreePages = h.load(as + asFreePages)
	s.LargeRuns = h.load(as + asLargeRuns)
	s.LargePages = h.load(as + asLargePages)
	s.LiveObjects, s.LiveBytes = s.LargeRuns, s.LargePages*PageSize
	for c := range numClasses {
		cs := &s.Classes[c]
		cs.Size = classSizes[c]
		cs.Slabs = h.load(h.classState(c, csSlabs))
		cs.Carved = h.load(h.classState(c, csCarved))
		cs.CentralFree = h.load(h.classState(c, csFreeCount))
	}
	for i := range uint64(h.hdr.Params.Caches) {
		slot := h.hdr.CacheOff + i*cacheSlotSize
		o := h.load(slot + csOwner)
		dead := o != 0 && h.ownerDead(o)
		if dead {
			s.DeadCaches++
		}
		for c := range numClasses {
			n := uint64(atomic.LoadUint32(h.Uint32(slot + cacheSlotHead + uint64(c)*cacheClassSize + ccCount)))
			s.Classes[c].Cached += n
			if dead {
				s.Stranded += n
			}
		}
	}
	for c := range numClasses {
		cs := &s.Classes[c]
		if cs.Carved >= cs.CentralFree+cs.Cached {
			cs.Live = cs.Carved - cs.CentralFree - cs.Cached
		}
		s.LiveObjects += cs.Live
		s.LiveBytes += cs.Live * cs.Size
	}
	return s
}
