// Package heap owns kflex's shared heap: a file of size S = 2^k mapped by every
// attached process at an address aligned to S, with guard regions on both sides,
// and the allocator that all of them (and later extensions) use.
//
// Layer 1 (heap, translate, rseq, bytecode): it stands on layer 0 (futex, vm)
// alone.
//
// # Views
//
// Each process maps the heap at its own S-aligned base, so a pointer p from any
// view becomes a pointer into view B by (p & (S-1)) | baseB: one mask and one or,
// which is also the SFI guard of extension code. Pointers stored inside the heap
// use the canonical view (Header.CanonBase); package translate converts.
//
// # Layout
//
// Every region is page-aligned and follows from the creation Params alone
// (Params.layout), so the header records both and a reader checks that they agree:
//
//	offset 0            header (one page): magic "KFLEXHP\0", version, S, canonical
//	                    base, creation parameters, region offsets, CRC-32C;
//	                    at 512, NumRoots mutable root words for applications
//	Layout.OwnerOff     owner table: MaxProcs records of 64 bytes (package mcs)
//	Layout.NodeOff      MCS queue nodes: MaxProcs × NodesPerProc × 64 bytes (mcs)
//	Layout.LockDirOff   lock directories: MaxProcs × LockDirPerProc u64 entries,
//	                    the lock words each slot's process uses (owner.go, mcs)
//	Layout.AllocOff     allocator state: the page lock's record (lock word and
//	                    redo log), page counters, per class a lock record
//	                    and the class's pool
//	Layout.CacheOff     allocator cache slots: an owner (slot + generation),
//	                    per class a count and a stack
//	Layout.PageMapOff   one u32 per page: free, slab page, large run head, other
//	Layout.ObjBitsOff   one bit per 8-byte granule: an allocated object starts here
//	Layout.FreeBitsOff  one bit per page: the page is free
//	Layout.PagesOff     pages handed out by the allocator, up to S
//
// The file is sparse: metadata pages that are never written cost nothing.
//
// # Death of a process inside the allocator
//
// An allocator lock names its holder (owner slot and generation, mutex.go); a
// waiter that finds the holder dead takes the lock over and replays the
// holder's committed redo log (redo.go), so a process killed at any
// instruction of a critical section leaves nothing half done. The fast paths
// order their two stores so that a killed process leaves at most its cache
// stack's top object "in flight", which draining frees. A process's cache
// slots are owned by its owner slot and generation; Reap, or the next claimer,
// returns a dead owner's objects to the central pools. mcs.Attach tells the
// heap its owner slot (BindOwner); a process that never attaches allocates
// under its PID, and nothing it leaves behind at death can be recovered.
// Inspect and Check read all of it without a lock; crash.go names the points
// where the tests kill.
//
// # Lifetimes
//
// A Heap is one process's mapping. Close flushes this process's allocator
// caches back to the shared pools and unmaps; the file lives on until it is
// removed (or, for a memfd, until the last process holding it closes it).
package heap
