package heap

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/kflex-go/kflex/internal/sys/futex"
)

// The allocator's locks (the page lock and one per size class) guard its slow
// paths: page runs, and the refill or flush of a whole batch of objects, never a
// single allocation. Each is the first word of a lock record in the allocator
// state:
//
//	offset 0   word       u64  the lock word, below
//	offset 8   takeovers  u64  times the lock was taken over from a dead holder
//	offset 16  loglen     u64  committed redo entries (0: none), redo.go
//	offset 24  log        [redoMax] entries of 16 bytes
//
// The lock word names its holder, so that a waiter can tell whether it lives:
//
//	bits 0-1    state: 0 free, 1 held, 2 held and a waiter may sleep on it
//	            (Drepper's "Futexes are tricky", mutex 3)
//	bits 2-15   zero
//	bits 16-31  holder: its owner slot + 1, or 0xffff for a process that is not
//	            attached (no owner slot)
//	bits 32-63  holder: its owner record's generation, or its PID if unattached
//
// A free lock is all zero. The low 32 bits are the futex word waiters sleep on.
// Bits 16-63 are an identity (see identity below); the owner word of a cache
// slot holds the same 48 bits.
//
// A waiter checks the holder each round: it is dead when its owner record is
// free, has another generation, or carries the kernel's FUTEX_OWNER_DIED. The
// waiter then takes the lock over with one CAS and replays the holder's
// committed redo log before it proceeds (redo.go), so the allocator is
// consistent again whatever instruction the holder died at.
const (
	lockRecSize = 256
	lrWord      = 0
	lrTakeovers = 8
	lrLogLen    = 16
	lrLog       = 24

	lwStateMask  = 0x3
	lwHeld       = 1
	lwSleepers   = 2
	lwReserved   = 0xfffc
	lwIdentShift = 16

	identUnattached = 0xffff // slot field of a process without an owner slot
)

// sleepTimeout bounds each futex sleep: a waiter re-checks the holder's life
// every round, and a lost wake-up costs latency only.
const sleepTimeout = 2 * time.Millisecond

// stuckAfter is how long a waiter lets a holder it cannot declare dead (one
// alive, or an unattached process) keep the lock without any change to the
// word before it gives up with ErrLockStuck. Critical sections take
// microseconds; tests shorten it.
var stuckAfter = 10 * time.Second

// ErrLockStuck reports an allocator lock whose holder neither releases it nor
// can be declared dead.
var ErrLockStuck = errors.New("heap: allocator lock stuck")

// identity is this process's name in allocator lock words and cache slot owner
// words; held counts the allocator locks held under it, so that UnbindOwner can
// wait for them.
type identity struct {
	word uint64 // bits 16-63 as in the lock word; bits 0-15 zero
	held atomic.Int64
}

func attachedIdent(slot, gen uint32) uint64 {
	return uint64(slot+1)<<lwIdentShift | uint64(gen)<<32
}

func unattachedIdent() uint64 {
	return identUnattached<<lwIdentShift | uint64(uint32(os.Getpid()))<<32
}

// Holder is an identity decoded: who holds an allocator lock or owns a cache
// slot.
type Holder struct {
	Attached bool   `json:"attached"`
	Slot     uint32 `json:"slot"` // owner slot, if attached
	Gen      uint32 `json:"gen"`  // owner record generation, if attached
	PID      uint32 `json:"pid"`  // if unattached
}

func (h Holder) String() string {
	if !h.Attached {
		return fmt.Sprintf("unattached pid %d", h.PID)
	}
	return fmt.Sprintf("slot %d gen %d", h.Slot, h.Gen)
}

// decodeIdent decodes bits 16-63 of w; it fails on a slot outside the table.
func (h *Heap) decodeIdent(w uint64) (Holder, error) {
	s := uint32(w>>lwIdentShift) & 0xffff
	switch {
	case s == identUnattached:
		return Holder{PID: uint32(w >> 32)}, nil
	case s == 0 || s > h.hdr.MaxProcs:
		return Holder{}, fmt.Errorf("owner slot field %d outside [1, %d]", s, h.hdr.MaxProcs)
	}
	return Holder{Attached: true, Slot: s - 1, Gen: uint32(w >> 32)}, nil
}

// Liveness is what the owner table says about a holder.
type Liveness int

const (
	Alive   Liveness = iota
	Dead             // its owner record is free, reused, or marked by the kernel
	Unknown          // unattached: nothing records its life
)

func (l Liveness) String() string { return [...]string{"alive", "dead", "unknown"}[l] }

// liveness reads holder o's owner record.
func (h *Heap) liveness(o Holder) Liveness {
	if !o.Attached {
		return Unknown
	}
	live, gen := h.OwnerLiveness(o.Slot)
	if live == 0 || OwnerDead(live) || gen != o.Gen {
		return Dead
	}
	return Alive
}

func lockWordValid(w uint64) bool {
	st := w & lwStateMask
	return w == 0 || (w&lwReserved == 0 && (st == lwHeld || st == lwSleepers))
}

// lock takes the allocator lock whose record is at rec, under this process's
// identity, which it returns for unlock. A dead holder's lock is taken over and
// its redo log replayed. On error the lock is not held.
func (h *Heap) lock(rec uint64) (*identity, error) {
	id := h.allocator().pin()
	if atomic.CompareAndSwapUint64(h.Uint64(rec), 0, id.word|lwHeld) {
		if err := h.lockedClean(rec); err != nil {
			h.unlock(rec, id)
			return nil, err
		}
		return id, nil
	}
	if err := h.lockSlow(rec, id); err != nil {
		id.held.Add(-1)
		return nil, err
	}
	return id, nil
}

// lockedClean checks, just after a normal acquisition, that no redo log is
// left: holders clear theirs before unlocking, takers after replaying.
func (h *Heap) lockedClean(rec uint64) error {
	if n := atomic.LoadUint64(h.Uint64(rec + lrLogLen)); n != 0 {
		return fmt.Errorf("%w: %s is free but holds a redo log of %d entries", ErrCorruptHeap, h.lockName(rec), n)
	}
	return nil
}

func (h *Heap) lockSlow(rec uint64, id *identity) error {
	w := h.Uint64(rec)
	for range 64 {
		if atomic.LoadUint64(w) == 0 && atomic.CompareAndSwapUint64(w, 0, id.word|lwHeld) {
			return h.settle(rec, id, h.lockedClean(rec))
		}
	}
	last, since := uint64(0), time.Now()
	for {
		v := atomic.LoadUint64(w)
		if v == 0 {
			// Taken with the sleepers state: others may still sleep on it.
			if atomic.CompareAndSwapUint64(w, 0, id.word|lwSleepers) {
				return h.settle(rec, id, h.lockedClean(rec))
			}
			continue
		}
		if !lockWordValid(v) {
			return fmt.Errorf("%w: %s word %#x", ErrCorruptHeap, h.lockName(rec), v)
		}
		o, err := h.decodeIdent(v)
		if err != nil {
			return fmt.Errorf("%w: %s word %#x: %v", ErrCorruptHeap, h.lockName(rec), v, err)
		}
		if h.liveness(o) == Dead {
			if err := h.settlePages(rec, o); err != nil {
				return err
			}
			if atomic.CompareAndSwapUint64(w, v, id.word|lwSleepers) {
				return h.settle(rec, id, h.takeOver(rec, o))
			}
			continue
		}
		if v != last {
			last, since = v, time.Now()
		} else if time.Since(since) > stuckAfter {
			return fmt.Errorf("%w: %s held by %s (%s) for %v", ErrLockStuck, h.lockName(rec), o, h.liveness(o), stuckAfter)
		}
		if v&lwStateMask == lwHeld {
			if !atomic.CompareAndSwapUint64(w, v, v^lwHeld|lwSleepers) {
				continue
			}
			v = v ^ lwHeld | lwSleepers
		}
		futex.Wait((*uint32)(h.At(rec)), uint32(v), sleepTimeout)
	}
}

// settle releases a lock just acquired if err says it cannot be used.
func (h *Heap) settle(rec uint64, id *identity, err error) error {
	if err != nil {
		h.unlockWord(rec)
	}
	return err
}

// settlePages prepares the takeover of the lock at rec from its dead holder.
// A class lock's holder takes the page lock inside it for a new slab, and that
// step's log stores the slab in the class's spare word. Had the holder died
// there, the page lock still holds a log that writes a word of this class: a
// taker that read the spare word first would take a second slab (the first
// leaks), or carve the spare and see a later page-lock taker's replay put it
// back (carved twice). So the class's taker settles the page lock first,
// taking it in the usual order (class, then pages) and replaying what the dead
// left. It does so before it takes the class lock over, so that a page lock it
// cannot get (ErrLockStuck) leaves the class lock as it was, still the dead
// holder's, for the next taker.
func (h *Heap) settlePages(rec uint64, dead Holder) error {
	pages := h.hdr.AllocOff + asPageLock
	if rec == pages {
		return nil
	}
	id, err := h.lock(pages)
	if err != nil {
		return fmt.Errorf("take over %s from dead %s: %w", h.lockName(rec), dead, err)
	}
	h.unlock(pages, id)
	return nil
}

// takeOver finishes a dead holder's critical section: it replays the redo log
// if one is committed (an uncommitted one changed nothing visible).
func (h *Heap) takeOver(rec uint64, dead Holder) error {
	if err := h.replay(rec); err != nil {
		return fmt.Errorf("take over %s from dead %s: %w", h.lockName(rec), dead, err)
	}
	atomic.AddUint64(h.Uint64(rec+lrTakeovers), 1)
	return nil
}

func (h *Heap) unlock(rec uint64, id *identity) {
	h.unlockWord(rec)
	id.held.Add(-1)
}

func (h *Heap) unlockWord(rec uint64) {
	if atomic.SwapUint64(h.Uint64(rec), 0)&lwStateMask == lwSleepers {
		futex.Wake((*uint32)(h.At(rec)), 1)
	}
}

// lockName names the lock whose record is at rec, for errors.
func (h *Heap) lockName(rec uint64) string {
	if rec == h.hdr.AllocOff+asPageLock {
		return fmt.Sprintf("page lock at %#x", rec)
	}
	c := (rec - h.hdr.AllocOff - asClasses) / classStateSz
	return fmt.Sprintf("%d-byte class lock at %#x", classSizes[c%numClasses], rec)
}
