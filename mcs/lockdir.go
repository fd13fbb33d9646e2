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
// its critical section, say, or one that never came back from it. An entry
// costs one store the first time a process makes a Mutex on a word; Lock and
// Unlock never touch the directory. Extensions' lock words are listed when a
// Go Mutex of any process names them, and while a node queues on them.

// dir is this process's view of its slot's lock directory.
type dir struct {
	words map[uint64]bool // entered, or found no room for
	next  uint32          // the next empty entry
}

// enter lists the lock word at off in this process's directory, once. With
// the directory full, the word goes unlisted (Full says so).
func (p *Process) enter(off uint64) {
	p.dirMu.Lock()
	defer p.dirMu.Unlock()
	if p.dir.words[off] {
		return
	}
	p.dir.words[off] = true
	if p.dir.next < heap.LockDirPerProc {
		atomic.StoreUint64(p.h.Uint64(p.h.LockDirEntry(p.slot, p.dir.next)), off)
		p.dir.next++
	}
}

// clearDir empties owner slot s's lock directory, before the slot is freed.
func clearDir(h *heap.Heap, s uint32) {
	for i := range uint32(heap.LockDirPerProc) {
		atomic.StoreUint64(h.Uint64(h.LockDirEntry(s, i)), 0)
	}
}

// DirectoryLocks lists, in offset order and once each, the lock words the
// owner slots' lock directories name (valid ones: 8-byte aligned words in the
// heap's pages), and the slots whose directory is full, so that some of
// their lock words may be missing. It reads each entry once and takes no
// lock.
func DirectoryLocks(h *heap.Heap) (offs []uint64, full []uint32) {
	hdr := h.Header()
	seen := map[uint64]bool{}
	for s := range hdr.MaxProcs {
		n := 0
		for i := range uint32(heap.LockDirPerProc) {
			off := atomic.LoadUint64(h.Uint64(h.LockDirEntry(s, i)))
			if off == 0 {
				continue
			}
			n++
			if lockOffValid(hdr, off) && !seen[off] {
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

// lockOffValid reports whether off can be a lock word's offset: an 8-byte
// aligned word in the heap's pages.
func lockOffValid(hdr heap.Header, off uint64) bool {
	return off%8 == 0 && off >= hdr.PagesOff && off <= hdr.Size-8
}

// checkDirs verifies the lock directories: every entry names a word in the
// pages, a free slot's directory is empty, and each word named decodes as a
// lock word (checkWord).
func checkDirs(h *heap.Heap, check func(off uint64, field string)) []error {
	hdr := h.Header()
	var errs []error
	for s := range hdr.MaxProcs {
		live, _ := h.OwnerLiveness(s)
		for i := range uint32(heap.LockDirPerProc) {
			at := h.LockDirEntry(s, i)
			off := atomic.LoadUint64(h.Uint64(at))
			field := fmt.Sprintf("owner slot %d lock directory entry %d", s, i)
			switch {
			case off == 0:
			case live == 0:
				errs = append(errs, &heap.FieldError{Offset: at, Field: field, Problem: fmt.Sprintf("%#x, in a free slot's directory (emptied before the slot is freed)", off)})
			case !lockOffValid(hdr, off):
				errs = append(errs, &heap.FieldError{Offset: at, Field: field, Problem: fmt.Sprintf("%#x is not an 8-byte aligned word in [%#x, %#x)", off, hdr.PagesOff, hdr.Size)})
			default:
				check(off, fmt.Sprintf("lock word listed by owner slot %d", s))
			}
		}
	}
	return errs
}
