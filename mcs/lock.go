package mcs

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/sys/futex"
	"github.com/kflex-go/kflex/rseq"
)

// Mutex is an MCS queue lock on a 64-bit word in the heap, shared with every
// process (and extension) attached to the heap. The zero value is not usable:
// get one from Process.Mutex. A Mutex value is this process's handle; the lock
// itself is the word, and any number of handles may name it.
//
// Waiters queue in FIFO order on nodes in the heap and are granted the head of
// the queue in that order. The head watches the lock word and takes the lock
// when it is released. One exception keeps oversubscribed machines moving:
// while the head is off CPU (asleep, or granted while asleep and not yet
// running), a newcomer may take a free lock ahead of it, as Go's sync.Mutex
// allows in normal mode; the head clears the permission as soon as it runs, so
// it is overtaken for at most one wake-up's time.
type Mutex struct {
	p    *Process
	word *uint64
	off  uint64
	held uint64 // p.Held(), precomputed for the fast paths
}

// Mutex returns a handle on the lock word at heap offset off, which must be
// 8-byte aligned and inside the allocatable part of the heap. A fresh lock word
// is zero. The word is listed in this process's slot's lock directory (the
// first heap.LockDirPerProc words it has a Mutex on), where heap info finds it
// held, queued or owner-died whatever becomes of the process; that costs one
// store the first time, and nothing on Lock and Unlock.
func (p *Process) Mutex(off uint64) (*Mutex, error) {
	hdr := p.h.Header()
	if !lockOffValid(hdr, off) {
		return nil, fmt.Errorf("mcs: lock word offset %#x: not 8-byte aligned inside [%#x, %#x)", off, hdr.PagesOff, hdr.Size)
	}
	p.enter(off)
	return &Mutex{p: p, word: p.h.Uint64(off), off: off, held: p.Held()}, nil
}

// lockOffValid reports whether off can be a lock word's offset: an 8-byte
// aligned word in the heap's pages.
func lockOffValid(hdr heap.Header, off uint64) bool {
	return off%8 == 0 && off >= hdr.PagesOff && off <= hdr.Size-8
}

// Offset is the heap offset of the lock word.
func (m *Mutex) Offset() uint64 { return m.off }

// Lock acquires the lock, waiting in FIFO order if it is held. It returns
// nil, or an error satisfying errors.Is(err, ErrOwnerDied) when the lock was
// taken over from a holder that died (the lock is held: repair the data it
// protects, call Consistent, then Unlock), or ErrNotRecoverable when a holder
// that got ErrOwnerDied unlocked without Consistent (the lock is not held,
// and never will be again).
func (m *Mutex) Lock() error {
	// Fast path: free and nobody queued. Kept tiny so that it inlines. (Under
	// the race detector, the slow path takes a free lock too, and tells the
	// detector.)
	if !raceEnabled && atomic.CompareAndSwapUint64(m.word, 0, m.held) {
		return nil
	}
	return m.lockSlow()
}

// TryLock acquires the lock if that needs no waiting, and reports whether it
// did, with Lock's errors: a lock whose holder died and that nobody waits for
// is taken over (true, ErrOwnerDied).
func (m *Mutex) TryLock() (bool, error) {
	for {
		switch a, err := m.try(atomic.LoadUint64(m.word)); a {
		case taken:
			raceAcquire(m)
			return true, err
		case busy:
			return false, err
		}
	}
}

// attempt is the outcome of try.
type attempt uint8

const (
	busy  attempt = iota // held or queued: wait (or, with an error, give up)
	taken                // the lock is ours
	retry                // the word changed under us
)

// try takes the lock in state w if that needs no waiting: it is free with no
// queue (or a sleeping head), or its holder died and nobody waits for it.
func (m *Mutex) try(w uint64) (attempt, error) {
	switch {
	case canBarge(w):
		if atomic.CompareAndSwapUint64(m.word, w, w|m.held) {
			return taken, nil
		}
		return retry, nil
	case notRecoverable(w):
		return busy, ErrNotRecoverable
	case w&wordLocked != 0 && wordTail(w) == 0 && HolderDead(m.p.h, w):
		if m.takeOver(w, takeover(w, m.held)) {
			m.p.sawDeath(Polled)
			return taken, ErrOwnerDied
		}
		return retry, nil
	}
	return busy, nil
}

// Consistent marks the data the lock protects repaired after Lock returned
// ErrOwnerDied: Unlock then releases the lock as usual. It is a fatal misuse
// to call it without holding the lock in that state.
func (m *Mutex) Consistent() {
	w := atomic.LoadUint64(m.word)
	if w&wordHeldMask != m.held || w&wordOwnerDied == 0 {
		fatal("mcs: Consistent on a lock not held after its holder died")
	}
	atomic.AndUint64(m.word, ^uint64(wordOwnerDied))
}

// Unlock releases the lock. It is a fatal misuse to unlock a free lock or one
// held by another process. Unlocking a lock taken over from a dead holder
// without Consistent makes it not recoverable.
func (m *Mutex) Unlock() {
	raceRelease(m)
	if atomic.CompareAndSwapUint64(m.word, m.held, 0) {
		return
	}
	m.unlockSlow()
}

// LockExtended requests a time-slice extension for the calling thread (t is
// that thread's rseq registration), then locks: the holder of a contended lock
// is then rarely descheduled with waiters spinning behind it. The request is a
// byte store; there is no system call.
func (m *Mutex) LockExtended(t *rseq.Thread) error {
	t.Request()
	return m.Lock()
}

// UnlockExtended unlocks, then ends the extension, yielding the CPU only if the
// kernel extended the slice.
func (m *Mutex) UnlockExtended(t *rseq.Thread) {
	m.Unlock()
	t.Release()
}

// Spin budgets. Waiting is spin, then park on a futex with a timeout: a waiter
// that is not woken (its waker was a kernel BPF program, or died) re-checks after
// parkTimeout, so a lost wake-up costs latency, never progress. On a heap whose
// futexes do not reach other processes (a BPF arena: heap.SharedFutexes) every
// wake from another process is lost, so parks there are short.
const (
	spinIters        = 1024 // lock-word or node polls before parking
	pausePerTry      = 1    // PAUSEs between polls
	parkTimeout      = 10 * time.Millisecond
	localParkTimeout = 200 * time.Microsecond
	// deathEvery: a waiter looks at the liveness of whoever it waits for
	// (the holder, or its predecessor) every deathEvery polls, and after
	// every park.
	deathEvery = 64
	// patience: a granter waiting for a link looks for a dead successor in
	// its place only while no live one is about to link (deadSuccessor)
	// for its first patience polls.
	patience = 256 * spinIters
)

// lockSlow is not inlined into Lock: that would take Lock over the inlining
// budget.
//
//go:noinline
func (m *Mutex) lockSlow() error {
	err := m.lockQueued()
	if err != ErrNotRecoverable {
		raceAcquire(m)
	}
	return err
}

func (m *Mutex) lockQueued() error {
	if ok, err := m.TryLock(); ok || err != nil {
		return err
	}
	idx := <-m.p.nodes
	node := m.p.node(idx)
	atomic.StoreUint32(node.next(), 0)
	atomic.StoreUint32(node.state(), nodeWaiting)
	fault(FaultNodeSetUp)
	atomic.StoreUint32(node.owner(), m.p.slot+1)
	atomic.StoreUint64(node.lock(), m.off)
	me := idx + 1

	// Join the tail of the queue, unless the lock can be taken outright. The
	// predecessor is recorded before the swap, so that once the swap is done
	// others can find it even if we die before linking ourselves.
	var w uint64
	for {
		w = atomic.LoadUint64(m.word)
		if a, err := m.try(w); a == taken || err != nil {
			atomic.StoreUint32(node.state(), nodeFree)
			m.p.nodes <- idx
			return err
		} else if a == retry {
			continue
		}
		atomic.StoreUint32(node.prev(), wordTail(w))
		if atomic.CompareAndSwapUint64(m.word, w, w&^wordTailMask|uint64(me)<<wordTailShift) {
			break
		}
	}
	fault(FaultSwapped)
	if pred := wordTail(w); pred != 0 {
		// The window between the tail swap above and this link is where a
		// predecessor that took the lock waits for us (successor, below), or,
		// if we died here, finds us by our prev (deadSuccessor).
		atomic.StoreUint32(m.p.node(pred-1).next(), me)
		fault(FaultLinked)
		m.waitHead(node, me, nil)
	}
	fault(FaultHead)
	m.clearHeadBits()

	// Wait for the holder to release, or to die, then take the lock. If we
	// are still the tail, the queue empties; otherwise the tail stays.
	var err error
	how := Polled // how the next look at the holder learns of its death
	for spins := 0; ; {
		w = atomic.LoadUint64(m.word)
		if w&wordLocked == 0 {
			if notRecoverable(w) {
				m.leave(node, me)
				return ErrNotRecoverable
			}
			nw := w&^wordHeadBits | m.held
			if wordTail(w) == me {
				nw &^= wordTailMask
			}
			if atomic.CompareAndSwapUint64(m.word, w, nw) {
				break
			}
			continue
		}
		if spins%deathEvery == 0 && HolderDead(m.p.h, w) {
			nw := takeover(w, m.held)
			if wordTail(w) == me {
				nw &^= wordTailMask
			}
			if m.takeOver(w, nw) {
				m.p.sawDeath(how)
				err = ErrOwnerDied
				break
			}
			continue
		}
		if spins < spinIters {
			how = Polled
			spins++
			pause(pausePerTry)
			continue
		}
		// Park on the lock word's low half with the head-sleeping bit set, so
		// that the unlocker wakes us and newcomers may use the lock meanwhile,
		// and on the holder's liveness word, which the kernel marks and wakes
		// when the holder dies. A wake issued for an earlier sleep is spent.
		sw := w&^wordWakePending | wordHeadSleeping
		if sw != w && !atomic.CompareAndSwapUint64(m.word, w, sw) {
			continue
		}
		fault(FaultHeadParked)
		how = m.p.park2(lowHalf(m.word), uint32(sw), wordOwner(w))
		// Running again: no more barging ahead of us.
		atomic.AndUint64(m.word, ^uint64(wordHeadBits))
		spins = 0
	}
	fault(FaultTaken)

	// We hold the lock. Hand the head of the queue to our successor, if any.
	if wordTail(w) != me {
		m.grant(node, m.successor(node, me))
	}
	fault(FaultGranted)
	atomic.StoreUint32(node.state(), nodeFree)
	m.p.nodes <- idx
	return err
}

// clearHeadBits is for a head that runs: the bits an earlier head (one that
// slept, was granted while asleep, or died) left in the word are its to clear.
// Left set, they let newcomers barge past a head that never clears them (a
// bytecode head spins without looking at them).
func (m *Mutex) clearHeadBits() {
	if atomic.LoadUint64(m.word)&wordHeadBits != 0 {
		atomic.AndUint64(m.word, ^uint64(wordHeadBits))
	}
}

// leave takes the head (node n, index+1 me) out of the queue without the
// lock: the next waiter becomes the head, or the queue ends.
func (m *Mutex) leave(n node, me uint32) {
	m.handOn(n, me)
	m.p.nodes <- me - 1
}

// waitHead waits until the predecessor makes this node (index+1 me) the queue
// head, or, the predecessor having died, until repair puts it there, and
// reports true. A stand-in (stand) passes quit: once it is closed, waitHead
// abandons the node instead, if it is not the head yet, and reports false.
func (m *Mutex) waitHead(n node, me uint32, quit <-chan struct{}) bool {
	var skipped []uint32 // dead predecessors abandoned on the way
	how := Polled
	for spins := 0; ; {
		s := atomic.LoadUint32(n.state())
		if s == nodeHead {
			return true
		}
		if spins%deathEvery == 0 {
			if m.repair(n, &skipped, how) {
				return true
			}
			if quitting(quit) && atomic.CompareAndSwapUint32(n.state(), s, nodeAbandoned) {
				return false
			}
		}
		if spins < spinIters {
			how = Polled
			spins++
			pause(pausePerTry)
			continue
		}
		if s == nodeWaiting && !atomic.CompareAndSwapUint32(n.state(), nodeWaiting, nodeParked) {
			continue
		}
		fault(FaultParked)
		// Asleep on our state and on the predecessor's liveness word, so that
		// either a grant or the predecessor's death wakes us.
		how = m.p.park2(n.state(), nodeParked, m.p.nodeOwner(atomic.LoadUint32(n.prev())))
		spins = 0
	}
}

// quitting reports whether quit is closed (never, for nil).
func quitting(quit <-chan struct{}) bool {
	select {
	case <-quit:
		return true
	default:
		return false
	}
}

// successor returns the index + 1 of the node behind n (index + 1 idx) once
// it has linked itself, or ends the queue and returns 0 if n is the tail. A
// successor that died in the window between its tail swap and its link is
// found by its prev (deadSuccessor) and linked on its behalf.
func (m *Mutex) successor(n node, idx uint32) uint32 {
	next, _ := m.follow(n, idx, false)
	return next
}

// follow is successor for a granter's own node (skipping false), or for an
// abandoned node it skips (skipping true): then it gives up, reporting
// false, once that node is no longer abandoned. Only a party that took the
// head position past the node frees it under the granter: a waiter behind
// it whose repair found a node ahead gone (freed by this very granter,
// which skipped it on its way here) and made itself the head, freeing what
// it passed (this node, and a node behind it that died before linking
// itself, by whose prev deadSuccessor would have found it), or Reap ending
// a queue nobody alive was in. Either way nobody is left for this granter
// to grant.
func (m *Mutex) follow(n node, idx uint32, skipping bool) (uint32, bool) {
	for spins := 0; ; spins++ {
		if skipping && atomic.LoadUint32(n.state()) != nodeAbandoned {
			return 0, false
		}
		if next := atomic.LoadUint32(n.next()); next != 0 {
			return next, true
		}
		w := atomic.LoadUint64(m.word)
		if wordTail(w) == idx {
			if atomic.CompareAndSwapUint64(m.word, w, w&^(wordTailMask|wordHeadBits)) {
				return 0, true
			}
			continue
		}
		if spins >= spinIters && spins%spinIters == 0 {
			if s := m.p.deadSuccessor(idx, m.off, wordTail(w), spins < patience); s != 0 {
				atomic.CompareAndSwapUint32(n.next(), 0, s)
				continue
			}
		}
		backoff(spins) // the successor is between two instructions
	}
}

// grant makes the node with index+1 idx the head of the queue. If its waiter
// is asleep, newcomers may take the lock until it runs (wordHeadSleeping), and
// the wake is already issued (wordWakePending); both bits are set before the
// node says head, so that the waiter, which clears them when it runs as the
// head, never misses them. A node whose waiter abandoned it (a kernel waiter
// that timed out) or died is skipped: its successor, if it has one, is
// granted instead, and the node is freed. A node already head took the
// position itself (its predecessor, skipped, looked dead to it).
//
// The granter's own node, from, still queued, says where the walk is: before
// a skipped node is freed, from's next moves on to the node after it. Reap
// finds what a granter will visit by following next from the live queued
// nodes; with from's next still naming a node it freed, the nodes after it
// were out of reach of that walk while the granter went on to them.
func (m *Mutex) grant(from node, idx uint32) {
	for idx != 0 {
		n := m.p.node(idx - 1)
		switch s := atomic.LoadUint32(n.state()); s {
		case nodeHead:
			return
		case nodeWaiting, nodeParked:
			if m.p.nodeDead(idx) {
				atomic.CompareAndSwapUint32(n.state(), s, nodeAbandoned)
				continue
			}
			if s == nodeParked {
				atomic.OrUint64(m.word, wordHeadBits)
				fault(FaultGrantBits)
			}
			if atomic.CompareAndSwapUint32(n.state(), s, nodeHead) {
				if s == nodeParked {
					futex.Wake(n.state(), 1)
				}
				return
			}
		default: // abandoned, or freed by a successor that took the head position
			next, ok := m.follow(n, idx, true)
			if !ok {
				return // the position was taken past n (follow)
			}
			if next != 0 {
				atomic.StoreUint32(from.next(), next)
			}
			atomic.CompareAndSwapUint32(n.state(), nodeAbandoned, nodeFree)
			fault(FaultSkipped)
			idx = next
		}
	}
}

// backoff waits a little in a loop that waits for another thread to take a
// step of a few instructions: spin, then let it run.
func backoff(spins int) {
	if spins < spinIters {
		pause(pausePerTry)
	} else {
		runtime.Gosched()
	}
}

func (m *Mutex) unlockSlow() {
	for {
		w := atomic.LoadUint64(m.word)
		if w&wordLocked == 0 {
			fatal("mcs: unlock of unlocked lock")
		}
		if w&wordHeldMask != m.held {
			fatal(fmt.Sprintf("mcs: unlock of lock held by owner slot %d from slot %d", int(wordOwner(w))-1, m.p.slot))
		}
		// With the owner-died bit still set (no Consistent), the lock is
		// left not recoverable.
		nw := w &^ wordHeldMask
		wake := w&wordHeadSleeping != 0 && w&wordWakePending == 0
		if wake {
			nw |= wordWakePending
		}
		if atomic.CompareAndSwapUint64(m.word, w, nw) {
			if wake {
				fault(FaultWakePending)
				futex.Wake(lowHalf(m.word), 1)
			}
			return
		}
	}
}

// fatal reports a misuse of a lock, like sync's "unlock of unlocked mutex". The
// panic is the caller's bug surfacing; the lock word is left as it was.
func fatal(msg string) { panic(msg) }

// lowHalf is the futex word inside a lock word (little-endian: its first bytes).
func lowHalf(w *uint64) *uint32 { return (*uint32)(unsafe.Pointer(w)) }

// node is a queue node in this process's view.
type node struct{ p unsafe.Pointer }

func (p *Process) node(idx uint32) node { return nodeAt(p.h, idx) }

func nodeAt(h *heap.Heap, idx uint32) node {
	return node{h.At(h.Header().NodeOff + uint64(idx)*heap.NodeSize)}
}

func (n node) next() *uint32  { return (*uint32)(unsafe.Add(n.p, nodeNext)) }
func (n node) state() *uint32 { return (*uint32)(unsafe.Add(n.p, nodeState)) }
func (n node) owner() *uint32 { return (*uint32)(unsafe.Add(n.p, nodeOwner)) }
func (n node) prev() *uint32  { return (*uint32)(unsafe.Add(n.p, nodePrev)) }
func (n node) lock() *uint64  { return (*uint64)(unsafe.Add(n.p, nodeLock)) }
