package mcs

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/kflex-go/kflex/heap"
)

// The lock directory (heap.LockDirPerProc entries per owner slot) lists the
// lock words a process has a Mutex on, so that heap info can show a lock held
// with nobody queued, which no queue node names: by a process that died in
// its critical section, say. An entry costs one store the first time a
// process makes a Mutex on a word; Lock and Unlock never touch the directory.
//
// An entry is gen<<48 | offset, gen being the low 16 bits of the lister's
// slot generation. Only the slot's occupant writes its directory: Detach
// empties the entries of its own generation (a process that detaches holds
// nothing), and Attach drops those of earlier occupants whose word the
// occupant no longer holds. So a dead process's entries for the locks it died
// holding stay until those locks are taken over, whoever reaps its slot
// meanwhile: Reap never writes a directory, and so never races an occupant.
const (
	dirGenShift = 48
	dirOffMask  = 1<<dirGenShift - 1
)

// dir is this process's view of its slot's lock directory.
type dir struct {
	words  map[uint64]bool // listed
	next   uint32          // the next empty entry
	closed bool            // Detach emptied the directory: list nothing more
}

// dirEntry is the directory entry listing off for a slot's generation gen.
func dirEntry(gen uint32, off uint64) uint64 { return uint64(gen&0xffff)<<dirGenShift | off }

// enter lists the lock word at off in this process's directory, once. With
// the directory full, the word goes unlisted (DirectoryLocks says whose is
// full).
func (p *Process) enter(off uint64) {
	p.dirMu.Lock()
	defer p.dirMu.Unlock()
	if p.dir.closed || p.dir.next >= heap.LockDirPerProc || p.dir.words[off] {
		return
	}
	p.dir.words[off] = true
	atomic.StoreUint64(p.h.Uint64(p.h.LockDirEntry(p.slot, p.dir.next)), dirEntry(p.gen, off))
	p.dir.next++
}

// openDir takes over the slot's directory as its new occupant: earlier
// occupants' entries stay, packed at the front, while the word they name is
// still held by the lister (a dead process's lock nobody has taken over yet);
// the others are dropped.
func (p *Process) openDir() {
	p.dirMu.Lock()
	defer p.dirMu.Unlock()
	hdr := p.h.Header()
	p.dir = dir{words: map[uint64]bool{}}
	for i := range uint32(heap.LockDirPerProc) {
		at := p.h.Uint64(p.h.LockDirEntry(p.slot, i))
		e := atomic.LoadUint64(at)
		if e == 0 {
			continue
		}
		off, gen := e&dirOffMask, uint32(e>>dirGenShift)
		keep := lockOffValid(hdr, off) && gen != p.gen&0xffff
		if keep {
			keep = atomic.LoadUint64(p.h.Uint64(off))&wordHeldMask == held(p.slot, gen)
		}
		if keep && i == p.dir.next {
			p.dir.next++
			continue
		}
		if keep { // moved down: written there before it is cleared here
			atomic.StoreUint64(p.h.Uint64(p.h.LockDirEntry(p.slot, p.dir.next)), e)
			p.dir.next++
		}
		atomic.StoreUint64(at, 0)
	}
}

// closeDir empties this process's entries from its directory as it
// detaches, keeping earlier occupants' (openDir), and lists nothing more.
func (p *Process) closeDir() {
	p.dirMu.Lock()
	defer p.dirMu.Unlock()
	p.dir.closed = true
	for i := range p.dir.next {
		at := p.h.Uint64(p.h.LockDirEntry(p.slot, i))
		if e := atomic.LoadUint64(at); uint32(e>>dirGenShift) == p.gen&0xffff {
			atomic.StoreUint64(at, 0)
		}
	}
}

// DirectoryLocks lists, in offset order and once each, the lock words the
// owner slots' lock directories name (valid ones: 8-byte aligned words in the
// heap's pages), and the slots whose directory is full, so that some of
// their lock words may be missing. It reads each entry once and takes no
// lock. A listed word may since have been freed with the object around it,
// and hold anything.
func DirectoryLocks(h *heap.Heap) (offs []uint64, full []uint32) {
	hdr := h.Header()
	seen := map[uint64]bool{}
	for s := range hdr.MaxProcs {
		n := 0
		for i := range uint32(heap.LockDirPerProc) {
			e := atomic.LoadUint64(h.Uint64(h.LockDirEntry(s, i)))
			if e == 0 {
				continue
			}
			n++
			if off := e & dirOffMask; lockOffValid(hdr, off) && !seen[off] {
				seen[off] = true
				offs = append(offs, off)
			}
		}
		if n == heap.LockDirPerProc {
			full = append(full, s)
		}
	}
	slices.Sort(offs)
	return offs, full
}

// checkDirs verifies that every lock directory entry names a word in the
// pages. What the word holds is not checked: it may have been freed with the
// object around it since it was listed.
func checkDirs(h *heap.Heap) []error {
	hdr := h.Header()
	var errs []error
	for s := range hdr.MaxProcs {
		for i := range uint32(heap.LockDirPerProc) {
			at := h.LockDirEntry(s, i)
			if e := atomic.LoadUint64(h.Uint64(at)); e != 0 && !lockOffValid(hdr, e&dirOffMask) {
				errs = append(errs, &heap.FieldError{Offset: at, Field: fmt.Sprintf("owner slot %d lock directory entry %d", s, i),
					Problem: fmt.Sprintf("%#x: offset %#x is not an 8-byte aligned word in [%#x, %#x)", e, e&dirOffMask, hdr.PagesOff, hdr.Size)})
			}
		}
	}
	return errs
}
