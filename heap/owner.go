package heap

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kflex-go/kflex/internal/sys/futex"
)

// The owner table, at Layout.OwnerOff, has one OwnerRecordSize-byte record per
// attached process (mcs.Attach claims one and registers its liveness word with
// the kernel):
//
//	offset 0   robust  u64  robust-list entry: next pointer, in the owner's own view
//	offset 8   live    u32  liveness word, a robust futex: the TID of the process's
//	                        designated thread; the kernel sets FUTEX_OWNER_DIED
//	                        (0x40000000) in it when that process dies
//	offset 12  pid     u32
//	offset 16  gen     u32  bumped on every attach to the slot
//	offset 24  since   u64  attach time, Unix nanoseconds
//	offset 32  owned   u64  the process's owned objects (owned.go)
//
// A free slot has live == 0. A slot whose live word has OWNER_DIED set belongs
// to a dead process: it stays reserved until what it held is recovered. The
// layout is here, below the lock, because the allocator's own locks need to
// know whether their holder lives.
const (
	OwnerRobust = 0
	OwnerLive   = 8
	OwnerPID    = 12
	OwnerGen    = 16
	OwnerSince  = 24
)

// OwnerRecord is the heap offset of field (one of the Owner constants) of owner
// slot s's record.
func (h *Heap) OwnerRecord(s uint32, field uint64) uint64 {
	return h.hdr.OwnerOff + uint64(s)*OwnerRecordSize + field
}

// OwnerLiveness reads owner slot s: its liveness word and its generation.
func (h *Heap) OwnerLiveness(s uint32) (live, gen uint32) {
	return atomic.LoadUint32(h.Uint32(h.OwnerRecord(s, OwnerLive))), atomic.LoadUint32(h.Uint32(h.OwnerRecord(s, OwnerGen)))
}

// pidLimit is the kernel's PID_MAX_LIMIT on 64-bit machines: every thread
// and process ID is below it.
const pidLimit = 1 << 22

// validLiveness reports whether w is a value a liveness word takes: 0 (a free
// slot), the TID of a designated thread (FUTEX_WAITERS perhaps set), or the
// dead mark, OWNER_DIED with no TID (the kernel clears the TID as it marks a
// dead thread's word, and mcs's markDead does the same).
func validLiveness(w uint32) bool {
	tid := w & futex.TIDMask
	if w&futex.OwnerDied != 0 {
		return tid == 0
	}
	return w == 0 || tid != 0 && tid < pidLimit
}

// checkOwner checks owner slot s's liveness word, the one field of the record
// that other processes rely on whatever else they are doing (Open checks it);
// full adds what holds on a heap no process is changing (Check): a live
// slot's PID, and the registry of its owned objects.
func (h *Heap) checkOwner(s uint32, full bool) error {
	live := atomic.LoadUint32(h.Uint32(h.OwnerRecord(s, OwnerLive)))
	if !validLiveness(live) {
		return fieldErr(h.OwnerRecord(s, OwnerLive), fmt.Sprintf("owner slot %d liveness word", s),
			"%#x is neither free (0), a thread ID nor the dead mark", live)
	}
	if !full {
		return nil
	}
	if live != 0 && !OwnerDead(live) {
		if pid := atomic.LoadUint32(h.Uint32(h.OwnerRecord(s, OwnerPID))); pid == 0 || pid >= pidLimit {
			return fieldErr(h.OwnerRecord(s, OwnerPID), fmt.Sprintf("owner slot %d PID", s), "%d names no process", pid)
		}
	}
	_, err := h.inspectOwned(s)
	return err
}

// OwnerDead reports whether the occupant of slot s is known to be dead: the
// kernel marked its liveness word.
func OwnerDead(live uint32) bool { return live&futex.OwnerDied != 0 }

// BindOwner tells the allocator that this process holds owner slot slot
// (mcs.Attach calls it once the slot's liveness word is registered with the
// kernel). From then on the allocator names this process by the slot and its
// generation, in the lock words it holds and the cache slots it owns, so that a
// survivor can tell when it dies; cache slots it claimed before are renamed.
// A heap stays bound to its first slot until UnbindOwner. BindOwner then reaps
// what dead processes left in the allocator (Reap); what it cannot reap, on a
// corrupt heap, allocation reports.
func (h *Heap) BindOwner(slot uint32) {
	h.users.Add(1)
	a := h.allocator()
	a.mu.Lock()
	cur := a.id.Load()
	if cur.word>>lwIdentShift&0xffff != identUnattached {
		a.mu.Unlock()
		return
	}
	_, gen := h.OwnerLiveness(slot)
	a.rename(cur, &identity{word: attachedIdent(slot, gen)})
	a.mu.Unlock()
	h.startOwned(slot)
	h.Reap()
}

// UnbindOwner is BindOwner undone, before the process gives slot up
// (mcs.Process.Detach): the allocator names this process by its PID again, and
// UnbindOwner waits until no allocator lock is held under the slot's name, so
// that nobody takes one over from a process that merely detached.
func (h *Heap) UnbindOwner(slot uint32) {
	defer h.users.Add(-1)
	a := h.allocator()
	if s, _, ok := a.boundSlot(); ok && s == slot {
		h.endOwned(slot) // errors: a registry overwritten in the heap, which Check reports
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.id.Load()
	if cur.word>>lwIdentShift&0xffff != uint64(slot)+1 {
		return
	}
	a.rename(cur, &identity{word: unattachedIdent()})
	for cur.held.Load() != 0 { // critical sections take microseconds
		time.Sleep(50 * time.Microsecond)
	}
}

// rename makes next this process's identity and moves the cache slots it owns
// under cur to next. The caller holds a.mu, so no slot is being claimed.
func (a *allocator) rename(cur, next *identity) {
	a.id.Store(next)
	for _, s := range a.slots {
		atomic.CompareAndSwapUint64(a.h.Uint64(s.off+csOwner), cur.word, next.word)
	}
}

// Each owner slot has a lock directory, at Layout.LockDirOff: LockDirPerProc
// u64 entries, each gen<<48 | the heap offset of a lock word the slot's
// process uses (gen: the low 16 bits of the slot's generation when it listed
// it; 0: empty), which heap info shows held, queued or owner-died. Only the
// slot's occupant writes its directory (mcs.Process.Mutex, Detach and
// Attach), each entry with one store, so a kill leaves no half-made entry and
// no reaper races an occupant. An entry outlives a dead occupant: the slot's
// next occupant drops, as it attaches, those whose word its dead lister no
// longer holds.
const LockDirPerProc = 64

// LockDirEntry is the heap offset of entry i of owner slot s's lock
// directory.
func (h *Heap) LockDirEntry(s, i uint32) uint64 {
	return h.hdr.LockDirOff + (uint64(s)*LockDirPerProc+uint64(i))*8
}
