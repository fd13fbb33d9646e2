package mcs

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
)

// dirWords is what owner slot s's lock directory lists, entry by entry.
func dirWords(h *heap.Heap, s uint32) []uint64 {
	var offs []uint64
	for i := range uint32(heap.LockDirPerProc) {
		if e := atomic.LoadUint64(h.Uint64(h.LockDirEntry(s, i))); e != 0 {
			offs = append(offs, e&dirOffMask)
		}
	}
	return offs
}

// TestLockDirectory: Mutex lists a word once; Detach empties the process's
// entries and a Mutex made after it lists nothing; a slot's next occupant
// keeps the entries of a dead occupant's locks that nobody has taken over
// yet, and drops the others.
func TestLockDirectory(t *testing.T) {
	w := newWorld(t, 1<<20)
	offs := w.locks(t, 3)
	p, err := Attach(w.h)
	require.NoError(t, err)
	for range 2 {
		for _, off := range offs[:2] {
			_, err := p.Mutex(off)
			require.NoError(t, err)
		}
	}
	assert.Equal(t, offs[:2], dirWords(w.h, p.Slot()), "each word once")
	require.NoError(t, p.Detach())
	_, err = p.Mutex(offs[2])
	require.NoError(t, err)
	assert.Empty(t, dirWords(w.h, p.Slot()), "emptied at Detach, and nothing listed after it")

	// A child lists two words, holds the first and dies; the second it
	// never took.
	c := w.startLocker(t, offs[0], actHold)
	require.Equal(t, "held", c.line(t))
	listed := dirWords(w.h, c.slot)
	require.Equal(t, []uint64{offs[0]}, listed)
	atomic.StoreUint64(w.h.Uint64(w.h.LockDirEntry(c.slot, 1)), dirEntry(1, offs[1])) // as if it had listed offs[1] too
	c.kill()
	require.True(t, WaitDeath(w.h, c.slot, 5*time.Second))
	assert.Equal(t, 1, Reap(w.h))
	assert.Equal(t, []uint64{offs[0], offs[1]}, dirWords(w.h, c.slot), "Reap writes no directory")
	offsAll, _ := DirectoryLocks(w.h)
	assert.Contains(t, offsAll, offs[0], "the dead holder's lock, listed after the reap")

	next, err := Attach(w.h)
	require.NoError(t, err)
	defer next.Detach()
	require.Equal(t, c.slot, next.Slot(), "the dead child's slot, reused")
	assert.Equal(t, []uint64{offs[0]}, dirWords(w.h, c.slot), "its held lock stays listed; the other goes")
	m := mutex(t, next, offs[0])
	require.ErrorIs(t, m.Lock(), ErrOwnerDied)
	m.Consistent()
	m.Unlock()
	assert.Equal(t, []uint64{offs[0], offs[0]}, dirWords(w.h, c.slot), "listed by the new occupant too")
	require.NoError(t, next.Detach())
	assert.Equal(t, []uint64{offs[0]}, dirWords(w.h, c.slot), "Detach empties only its own entries")
}

// TestCheckLocksLegalStates: states a heap is legally in pass CheckLocks: a
// lock a cancelled extension abandoned (owner 0xffff) with a waiter queued; a
// node whose process died setting it up, before it named a lock; and a
// listed word whose object was freed and holds other data now.
func TestCheckLocksLegalStates(t *testing.T) {
	sc := newScene(t, true) // held, a waiter of ours queued
	w, off := sc.w, sc.off
	require.NoError(t, w.p.Abandon(w.h.Base()+off, w.p.Held()))
	assert.Empty(t, CheckLocks(w.h), "an abandoned lock, queued on")
	require.ErrorIs(t, result(t, sc.first), ErrOwnerDied)

	n := w.p.node(w.p.Slot()*w.h.Header().NodesPerProc + 5)
	atomic.StoreUint32(n.state(), nodeWaiting) // set up, lock not yet named
	assert.Empty(t, CheckLocks(w.h), "a node never queued")
	atomic.StoreUint32(n.state(), nodeFree)

	atomic.StoreUint64(w.h.Uint64(off), 1) // the object freed, the word reused for data
	assert.Empty(t, CheckLocks(w.h), "a listed word that holds data now")
	atomic.StoreUint64(w.h.Uint64(off), 0)
}

// TestCloseWhileAttached: closing a heap while a process is attached to it
// (here, or a serve.Runtime's) changes nothing and says so (heap.ErrInUse);
// unmapped, the heap used to fault the process at its next access (seen as
// a SIGSEGV in Runtime.Close after the heap's Close). After Detach, Close
// unmaps it.
func TestCloseWhileAttached(t *testing.T) {
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 1 << 20}})
	require.NoError(t, err)
	p, err := Attach(h)
	require.NoError(t, err)
	off, err := h.Alloc(8)
	require.NoError(t, err)
	*h.Uint64(off) = 0
	require.ErrorIs(t, h.Close(), heap.ErrInUse)
	m := mutex(t, p, off)
	require.NoError(t, m.Lock(), "the heap is still mapped")
	m.Unlock()
	require.NoError(t, p.Detach())
	require.NoError(t, h.Close())
	require.NoError(t, h.Close(), "a second Close is harmless")
}
