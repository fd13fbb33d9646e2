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
	held uint64 // held(p.slot), precomputed for the fast paths
}

// Mutex returns a handle on the lock word at heap offset off, which must be
// 8-byte aligned and inside the allocatable part of the heap. A fresh lock word
// is zero.
func (p *Process) Mutex(off uint64) (*Mutex, error) {
	hdr := p.h.Header()
	if off%8 != 0 || off < hdr.PagesOff || off > hdr.Size-8 {
		return nil, fmt.Errorf("mcs: lock word offset %#x: not 8-byte aligned inside [%#x, %#x)", off, hdr.PagesOff, hdr.Size)
	}
	return &Mutex{p: p, word: p.h.Uint64(off), off: off, held: held(p.slot)}, nil
}

// Offset is the heap offset of the lock word.
func (m *Mutex) Offset() uint64 { return m.off }

// Lock acquires the lock, waiting in FIFO order if it is held.
func (m *Mutex) Lock() {
	// Fast path: free and nobody queued. Kept tiny so that it inlines.
	if atomic.CompareAndSwapUint64(m.word, 0, m.held) {
		raceAcquire(m)
		return
	}
	m.lockSlow()
}

// TryLock acquires the lock if that needs no waiting, and reports whether it did.
func (m *Mutex) TryLock() bool {
	for {
		w := atomic.LoadUint64(m.word)
		if !canBarge(w) {
			return false
		}
		if atomic.CompareAndSwapUint64(m.word, w, w|m.held) {
			raceAcquire(m)
			return true
		}
	}
}

// Unlock releases the lock. It is a fatal misuse to unlock a free lock or one
// held by another process.
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
func (m *Mutex) LockExtended(t *rseq.Thread) {
	t.Request()
	m.Lock()
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
)

func (m *Mutex) lockSlow() {
	m.lockQueued()
	raceAcquire(m)
}

func (m *Mutex) lockQueued() {
	if m.TryLock() {
		return
	}
	idx := <-m.p.nodes
	node := m.p.node(idx)
	atomic.StoreUint32(node.next(), 0)
	atomic.StoreUint32(node.state(), nodeWaiting)
	atomic.StoreUint32(node.owner(), m.p.slot+1)
	atomic.StoreUint64(node.lock(), m.off)
	me := idx + 1

	// Join the tail of the queue, unless the lock can be taken outright.
	var w uint64
	for {
		w = atomic.LoadUint64(m.word)
		if canBarge(w) {
			if atomic.CompareAndSwapUint64(m.word, w, w|m.held) {
				m.p.nodes <- idx
				return
			}
			continue
		}
		if atomic.CompareAndSwapUint64(m.word, w, w&^wordTailMask|uint64(me)<<wordTailShift) {
			break
		}
	}
	if pred := wordTail(w); pred != 0 {
		// The window between the tail swap above and this link is where a
		// predecessor that took the lock waits for us (succ, below).
		atomic.StoreUint32(m.p.node(pred-1).next(), me)
		m.waitHead(node)
	}

	// Head of the queue: wait for the holder to release, then take the lock. If
	// we are still the tail, the queue empties; otherwise the tail stays.
	for spins := 0; ; {
		w = atomic.LoadUint64(m.word)
		if w&wordLocked == 0 {
			nw := w&^(wordHeadSleeping|wordWakePending) | m.held
			if wordTail(w) == me {
				nw &^= wordTailMask
			}
			if atomic.CompareAndSwapUint64(m.word, w, nw) {
				break
			}
			continue
		}
		if spins < spinIters {
			spins++
			pause(pausePerTry)
			continue
		}
		// Park on the lock word's low half with the head-sleeping bit set, so
		// that the unlocker wakes us and newcomers may use the lock meanwhile.
		sw := w | wordHeadSleeping
		if w&wordHeadSleeping == 0 && !atomic.CompareAndSwapUint64(m.word, w, sw) {
			continue
		}
		futex.Wait(lowHalf(m.word), uint32(sw), m.p.park)
		// Running again: no more barging ahead of us.
		atomic.AndUint64(m.word, ^uint64(wordHeadSleeping|wordWakePending))
		spins = 0
	}

	// We hold the lock. Hand the head of the queue to our successor, if any.
	if wordTail(w) != me {
		m.grant(m.succ(node))
	}
	atomic.StoreUint32(node.state(), nodeFree)
	m.p.nodes <- idx
}

// waitHead waits until the predecessor makes this node the queue head.
func (m *Mutex) waitHead(n node) {
	for spins := 0; ; {
		s := atomic.LoadUint32(n.state())
		if s == nodeHead {
			return
		}
		if spins < spinIters {
			spins++
			pause(pausePerTry)
			continue
		}
		if s == nodeWaiting && !atomic.CompareAndSwapUint32(n.state(), nodeWaiting, nodeParked) {
			continue
		}
		futex.Wait(n.state(), nodeParked, m.p.park)
		if atomic.LoadUint32(n.state()) == nodeHead {
			// We were granted while parked, and the granter let newcomers barge
			// (wordHeadSleeping) until we run: we run now.
			atomic.AndUint64(m.word, ^uint64(wordHeadSleeping|wordWakePending))
			return
		}
	}
}

// succ waits for the successor that swapped the tail after us to link itself,
// and returns its index + 1.
func (m *Mutex) succ(n node) uint32 {
	for spins := 0; ; spins++ {
		if next := atomic.LoadUint32(n.next()); next != 0 {
			return next
		}
		backoff(spins) // the successor is between two instructions
	}
}

// grant makes the node with index+1 idx the head of the queue. If its waiter
// is asleep, newcomers may take the lock until it runs (wordHeadSleeping), and
// the wake is already issued (wordWakePending); both bits are set before the
// node says head, so that the waiter, which clears them when it sees head,
// never misses them. A node whose waiter abandoned it (a kernel waiter that
// timed out) is skipped: its successor, if it has one, is granted instead, and
// the node is freed for its owner.
func (m *Mutex) grant(idx uint32) {
	for {
		n := m.p.node(idx - 1)
		if atomic.CompareAndSwapUint32(n.state(), nodeWaiting, nodeHead) {
			return
		}
		if atomic.LoadUint32(n.state()) == nodeAbandoned {
			if idx = m.skip(n, idx); idx == 0 {
				return
			}
			continue
		}
		// The node is parked (a waiting node only moves to parked, by its owner,
		// or to abandoned, by a kernel owner, which never parks).
		atomic.OrUint64(m.word, wordHeadSleeping|wordWakePending)
		atomic.StoreUint32(n.state(), nodeHead)
		futex.Wake(n.state(), 1)
		return
	}
}

// skip unlinks the abandoned node n (index+1 idx) from the queue: if it is the
// tail, the queue ends before it and skip returns 0; otherwise it returns its
// successor once that has linked itself. Either way n is freed.
func (m *Mutex) skip(n node, idx uint32) uint32 {
	for spins := 0; ; spins++ {
		w := atomic.LoadUint64(m.word)
		if wordTail(w) == idx {
			if atomic.CompareAndSwapUint64(m.word, w, w&^wordTailMask) {
				atomic.StoreUint32(n.state(), nodeFree)
				return 0
			}
			continue
		}
		if next := atomic.LoadUint32(n.next()); next != 0 {
			atomic.StoreUint32(n.state(), nodeFree)
			return next
		}
		backoff(spins)
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
		if wordOwner(w) != m.p.slot+1 {
			fatal(fmt.Sprintf("mcs: unlock of lock held by owner slot %d from slot %d", int(wordOwner(w))-1, m.p.slot))
		}
		nw := w &^ (wordLocked | wordOwnerMask)
		wake := w&wordHeadSleeping != 0 && w&wordWakePending == 0
		if wake {
			nw |= wordWakePending
		}
		if atomic.CompareAndSwapUint64(m.word, w, nw) {
			if wake {
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

func (p *Process) node(idx uint32) node {
	return node{p.h.At(p.h.Header().NodeOff + uint64(idx)*heap.NodeSize)}
}

func (n node) next() *uint32  { return (*uint32)(unsafe.Add(n.p, nodeNext)) }
func (n node) state() *uint32 { return (*uint32)(unsafe.Add(n.p, nodeState)) }
func (n node) owner() *uint32 { return (*uint32)(unsafe.Add(n.p, nodeOwner)) }
func (n node) lock() *uint64  { return (*uint64)(unsafe.Add(n.p, nodeLock)) }
