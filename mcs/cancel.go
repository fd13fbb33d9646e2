package mcs

import (
	"fmt"
	"math"
	"sync/atomic"

	"github.com/kflex-go/kflex/internal/sys/futex"
)

// What a runtime does for an extension it cancels (package cancel): the
// locks the verifier's table says the extension holds are abandoned, so that
// the next acquirer takes them over with the owner-died result, as if their
// holder had died (the extension may have left the data half-updated); and
// an executor cancelled while it waits in mcs_lock leaves the queue.

// abandonedOwner is the owner field of an abandoned lock: a slot + 1 beyond
// every owner table (MaxProcs is at most 1<<16 - 2), so that every waiter's
// HolderDead reads it as a dead holder and takes the lock over.
const abandonedOwner = 0xffff

// Abandon gives up the lock at lock (an address in any view) that this
// process holds with the held bits held (an executor's: Held), without
// releasing it: the next acquirer takes it over and gets the owner-died
// result (ErrOwnerDied, LockOwnerDied), and must repair the data and mark it
// consistent. An error says the word is not held with those bits; on a lock
// not recoverable, which nobody holds (the extension's mcs_lock returned
// LockNotRecoverable), it wraps ErrNotRecoverable: there is nothing to give up.
func (p *Process) Abandon(lock, held uint64) error {
	off := lock & p.h.Mask()
	hdr := p.h.Header()
	if !lockOffValid(hdr, off) {
		return fmt.Errorf("mcs: abandon %#x: not a lock word in the heap", lock)
	}
	word := p.h.Uint64(off)
	for {
		w := atomic.LoadUint64(word)
		if notRecoverable(w) {
			return fmt.Errorf("mcs: abandon lock at heap offset %#x: %w, held by nobody", off, ErrNotRecoverable)
		}
		if w&wordHeldMask != held&wordHeldMask {
			return fmt.Errorf("mcs: abandon lock at heap offset %#x: word %#x is not held with %#x", off, w, held)
		}
		nw := w&^(wordGenMask|wordOwnerMask) | abandonedOwner<<wordOwnerShift
		if atomic.CompareAndSwapUint64(word, w, nw) {
			// Waiters asleep on the word wait for a value it no longer has;
			// they wake, see the dead owner and take the lock over.
			futex.Wake(lowHalf(word), math.MaxInt32)
			return nil
		}
	}
}

// Leave takes an executor's node (index + 1 idx) out of the queue of the
// lock at lock (any view), without the lock, for an extension cancelled while
// it waited in mcs_lock (its helper, HelperLockCheck, calls this instead of
// LockCheck). The head hands its position on, or ends the queue. A waiting
// node stays queued, and a goroutine of this process waits in it in the
// extension's place (stand) and hands the head position on as soon as it
// comes. Leave reports whether the node is free now; if not, it is freed
// later and the executor must not queue with it until then (NodeFree). It
// must not run concurrently with Detach.
//
// The node is not marked abandoned, as a kernel waiter that times out marks
// its own, for whoever passes it to free: with waiters dying around it, those
// parties were sometimes killed or cut short on the way, and a cancelled
// executor's node stayed abandoned for good (RATIONALE.md). Its own process
// frees it instead, after its grant, as every waiter's.
func (p *Process) Leave(lock, idx uint64) bool {
	off := lock & p.h.Mask()
	hdr := p.h.Header()
	if !lockOffValid(hdr, off) || idx == 0 || idx > uint64(hdr.MaxProcs*hdr.NodesPerProc) {
		return true // names nothing: nothing queued
	}
	m := &Mutex{p: p, word: p.h.Uint64(off), off: off}
	me := uint32(idx)
	n := p.node(me - 1)
	switch s := atomic.LoadUint32(n.state()); {
	case s == nodeFree:
		return true
	case s == nodeAbandoned:
		return false
	case s == nodeHead || atomic.LoadUint32(n.prev()) == 0:
		// The head (a node that found no predecessor keeps its waiting
		// state): hand the position on.
		m.handOn(n, me)
		return true
	}
	p.stand(m, n, me)
	return false
}

// stand waits in node n (index+1 me), queued on m, in the place of the
// executor that queued it, until it is the head, and then hands the position
// on. A stand-in that Detach stops first abandons the node, and Detach leaves
// the slot marked dead: the node is a dead waiter's, which the recovery
// protocol frees.
func (p *Process) stand(m *Mutex, n node, me uint32) {
	p.standing.Add(1)
	go func() {
		defer p.standing.Done()
		if m.waitHead(n, me, p.quit) {
			m.handOn(n, me)
		}
	}()
}

// handOn hands the head position of node n (index+1 me), which does not hold
// the lock, to the node behind it, or ends the queue, and frees n. It runs as
// the head, and clears the head bits as a head that takes the lock does.
func (m *Mutex) handOn(n node, me uint32) {
	m.clearHeadBits()
	m.grant(n, m.successor(n, me))
	atomic.StoreUint32(n.state(), nodeFree)
}

// NodeFree reports whether node n is out of every queue, so that its
// executor may queue with it again.
func (p *Process) NodeFree(n Node) bool {
	return atomic.LoadUint32(p.node(n.Index).state()) == nodeFree
}
