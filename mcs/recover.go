package mcs

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/sys/futex"
)

// Recovery from dead processes. The kernel reports a death in the dead
// process's liveness word (owner.go); nobody polls /proc. Whoever waits for
// a dead party repairs around it, and every repair is a compare-and-swap, so
// that of two parties that find the same dead one exactly one acts:
//
//   - The holder died: the queue's head (or, with no queue, a newcomer) takes
//     the lock over with the owner-died bit set (takeover). A holder is dead
//     when its slot's liveness word says so, is free, or belongs to a later
//     attach (the word's generation differs from the slot's).
//   - A waiter died. Its granter skips it (grant), as it skips an abandoned
//     node. Its successor, watching its predecessor's liveness while it
//     waits (repair): a dead head (or a dead waiter that was the head at
//     once, prev 0, or one freed without granting) is replaced, the
//     successor taking the head position; a dead waiter is abandoned and the
//     successor waits behind that waiter's predecessor instead.
//   - A waiter died between its tail swap and its link to its predecessor
//     (the MCS window): the predecessor, waiting for the link, finds it by
//     its prev field among the dead slots' nodes (deadSuccessor) and links it
//     itself; it is then skipped as any dead waiter is.
//
// Waiters see deaths fast: spinners read the liveness word every deathEvery
// polls; parked Go waiters sleep on it too (futex_waitv), after setting
// FUTEX_WAITERS in it, so the kernel wakes one of them at the death; whoever
// acts on a death wakes the others.
//
// The tests kill child processes at each named step of the protocol (the
// Fault points, with the kflexfault build tag): TestKillAtEveryPoint.

// Errors of Lock, TryLock and LockExtended.
var (
	// ErrOwnerDied: the lock was taken over from a holder that died. The lock
	// is held; the data it protects may be inconsistent. Repair it and call
	// Consistent before Unlock, or the lock becomes not recoverable.
	ErrOwnerDied = errors.New("mcs: lock holder died; lock taken over, data may need repair")
	// ErrNotRecoverable: a holder that got ErrOwnerDied unlocked without
	// Consistent. The lock is not held and cannot be taken again.
	ErrNotRecoverable = errors.New("mcs: lock not recoverable")
)

// slotDead reports whether a slot whose liveness word reads live has no live
// process: the kernel marked it, or it is free.
func slotDead(live uint32) bool { return live == 0 || live&futex.OwnerDied != 0 }

// liveWord is slot's liveness word.
func (p *Process) liveWord(slot uint32) *uint32 {
	return p.h.Uint32(p.h.OwnerRecord(slot, heap.OwnerLive))
}

// HolderDead reports whether the holder named by lock word w, a word of heap
// h, is dead: its slot is marked dead or free, or attached again since (the
// generation differs). A free word has no holder (false). A held word that
// names no process (owner 0, or beyond the owner table: Abandon's mark, or
// garbage, since every executor's held bits name its slot) counts as a dead
// holder's, so the lock passes on with the owner-died result rather than
// leaving every locker waiting for a release that never comes. heap info
// reads lock words with it too.
func HolderDead(h *heap.Heap, w uint64) bool {
	if w&wordLocked == 0 {
		return false // free: nobody to judge
	}
	o := wordOwner(w)
	if o == 0 || o > h.Header().MaxProcs {
		return true // nobody: a corrupt word
	}
	live, gen := h.OwnerLiveness(o - 1)
	return slotDead(live) || gen&0xfff != wordGen(w)
}

// nodeOwner is the owner slot + 1 of the node with index+1 idx (0 for none).
func (p *Process) nodeOwner(idx uint32) uint32 {
	if idx == 0 {
		return 0
	}
	return (idx-1)/p.h.Header().NodesPerProc + 1
}

// nodeDead reports whether the process owning the node with index+1 idx is
// dead. A queued node's slot is not reclaimed while the node is in a queue
// (Reap), so the slot still names its owner.
func (p *Process) nodeDead(idx uint32) bool {
	return slotDead(atomic.LoadUint32(p.liveWord(p.nodeOwner(idx) - 1)))
}

// park2 sleeps on addr while it holds val, and on the liveness word of owner
// slot owner-1 (none if owner is 0), for at most the park timeout, and says
// how the sleep ended. It sets FUTEX_WAITERS in the liveness word first: the
// kernel wakes a sleeper on it at the process's death only if that bit is
// set, and then only one.
func (p *Process) park2(addr *uint32, val uint32, owner uint32) Way {
	how := NoSleep
	if owner == 0 || owner > p.h.Header().MaxProcs {
		r, _ := futex.WaitAny([]*uint32{addr}, []uint32{val}, p.park)
		how = parkWay(r)
	} else {
		lw := p.liveWord(owner - 1)
		for {
			v := atomic.LoadUint32(lw)
			if slotDead(v) {
				break // the caller looks again
			}
			if v&futex.Waiters == 0 && !atomic.CompareAndSwapUint32(lw, v, v|futex.Waiters) {
				continue
			}
			r, _ := futex.WaitAny([]*uint32{addr, lw}, []uint32{val, v | futex.Waiters}, p.park)
			if how = parkWay(r); how == DeathWake {
				// The death's one wake was spent on us, whatever we do next:
				// the others asleep on the word (waiting for other locks the
				// dead process held, or behind its other nodes) are ours to
				// wake. Even a waiter whose own word was woken first (granted,
				// or the lock released) may have taken it: a sleeper stays
				// queued on the liveness word until it runs, and WaitAny then
				// reports the liveness word (futex.WaitAny).
				wakeDead(lw)
			}
			break
		}
	}
	p.counts.parked(how)
	return how
}

// wakeDeath wakes everyone asleep on owner slot owner-1's liveness word, if
// the process died: they wait for the same dead process.
func (p *Process) wakeDeath(owner uint32) {
	if owner != 0 && owner <= p.h.Header().MaxProcs {
		wakeDead(p.liveWord(owner - 1))
	}
}

// wakeDead wakes everyone asleep on liveness word lw if it says its process
// is dead (marked, or the slot freed) and somebody may sleep on it
// (FUTEX_WAITERS, which the kernel keeps when it marks the word). The first
// caller clears the bit and wakes: nobody sleeps on a dead process's word
// afterwards (park2 looks first), so later callers need no system call.
func wakeDead(lw *uint32) {
	for {
		v := atomic.LoadUint32(lw)
		if v&futex.Waiters == 0 || v&^futex.Waiters != 0 && v&futex.OwnerDied == 0 {
			return
		}
		if atomic.CompareAndSwapUint32(lw, v, v&^futex.Waiters) {
			futex.Wake(lw, math.MaxInt32)
			return
		}
	}
}

// takeOver replaces lock word w, held by a dead holder, with nw.
func (m *Mutex) takeOver(w, nw uint64) bool {
	if !atomic.CompareAndSwapUint64(m.word, w, nw) {
		return false
	}
	m.p.wakeDeath(wordOwner(w))
	return true
}

// repair looks at the predecessor of waiting node n and, if it is dead,
// repairs the queue around it; it reports whether n is now the head. Dead
// predecessors it abandons are appended to skipped: if n takes the head
// position itself, nobody else will free them. A death it acts on is
// counted as learned the way how.
func (m *Mutex) repair(n node, skipped *[]uint32, how Way) bool {
	for seen := false; ; {
		front := uint32(0) // the first node behind the dead head we replace
		pred := atomic.LoadUint32(n.prev())
		if pred != 0 {
			pn := m.p.node(pred - 1)
			// One look at the predecessor's state: everything below is decided
			// on it. A live predecessor's node goes on being used: freed after
			// its grant to us, then (an executor's node, reused by every lock
			// call) queued again at once, on this lock, behind us. A second
			// look may see that next use, and acting on it (freeing or
			// abandoning a node that is queued behind us) loses a waiter and
			// lets two parties think they are the head.
			s := atomic.LoadUint32(pn.state())
			dead := m.p.nodeDead(pred)
			// A live predecessor will grant us, or skip us past abandoned
			// nodes, unless it is itself abandoned: a waiter that left (a
			// kernel waiter that timed out, a stand-in Detach stopped) acts no
			// more, alive or not, so we look through it to what is ahead of
			// it.
			if !dead && s != nodeAbandoned {
				if !m.gone(pn, s) {
					return false
				}
				// Nor will one whose node has left this queue, freed or
				// queued on another lock: a node is freed only after its
				// grant, so either the grant reached us (we are the head),
				// or a live granter is handing the head position past it to
				// us (a leaving or abandoned node is freed before the grant
				// of its successor), or it died or was reaped without
				// granting, and its slot lives again in another process (a
				// predecessor reached through abandoned nodes: Reap frees
				// no slot that a waiting node names as its prev). We are
				// next; its node is not ours to touch.
				if atomic.LoadUint32(n.state()) == nodeHead {
					return true // its grant came
				}
				if s == nodeFree {
					front = atomic.LoadUint32(pn.next())
				}
			} else {
				if !seen && dead {
					seen = true
					m.p.sawDeath(how)
				}
				switch {
				case atomic.LoadUint64(pn.lock()) != m.off:
					// Queued elsewhere now: it left ours long ago, and its
					// next is another queue's. We are next.
				case s == nodeFree && atomic.LoadUint32(n.state()) == nodeHead:
					return true // its grant came after all
				case s == nodeHead || (s == nodeWaiting || s == nodeParked) && atomic.LoadUint32(pn.prev()) == 0:
					// A dead head (or a dead first waiter): nobody will grant
					// us.
					front = atomic.LoadUint32(pn.next())
					if !atomic.CompareAndSwapUint32(pn.state(), s, nodeFree) {
						continue
					}
					m.p.wakeDeath(m.p.nodeOwner(pred))
				case s == nodeFree:
					// A dead predecessor that freed its node without granting
					// us (a holder, or a skipper, killed just after; or
					// reaped): we are next. Its next still names who was
					// behind, unless it was queued again since: freeAhead
					// checks each node it visits.
					front = atomic.LoadUint32(pn.next())
				case s == nodeWaiting || s == nodeParked:
					if !atomic.CompareAndSwapUint32(pn.state(), s, nodeAbandoned) {
						continue
					}
					fault(FaultRepairAbandoned)
					m.p.wakeDeath(m.p.nodeOwner(pred))
					fallthrough
				default: // abandoned: wait behind its predecessor
					*skipped = append(*skipped, pred)
					ahead := atomic.LoadUint32(pn.prev())
					if m.behind(ahead, n) {
						// A stale prev: it names a node queued again since,
						// behind us. What it named has left the queue: we
						// have no predecessor.
						ahead = 0
					}
					atomic.StoreUint32(n.prev(), ahead)
					continue
				}
			}
		}
		if pred == 0 && len(*skipped) > 0 {
			front = (*skipped)[len(*skipped)-1] // the first in the queue, abandoned
		}
		// We are the head. Our granter (if it lives) may grant us at the same
		// time: both store head.
		atomic.CompareAndSwapUint32(n.state(), nodeWaiting, nodeHead)
		atomic.CompareAndSwapUint32(n.state(), nodeParked, nodeHead)
		fault(FaultRepairHead)
		if front == 0 && pred != 0 && atomic.LoadUint64(m.p.node(pred-1).lock()) == m.off {
			// The node behind pred died before linking itself (the MCS
			// window), and pred's next stayed 0: the walk starts at that
			// node, found by its prev, as a granter finds it.
			front = m.p.deadSuccessor(pred, m.off, wordTail(atomic.LoadUint64(m.word)), false)
		}
		m.freeAhead(front, n)
		for _, i := range *skipped {
			// A live owner's abandoned node may have been freed by a granter
			// meanwhile and queued again elsewhere: free it only while it still
			// names this lock.
			if sn := m.p.node(i - 1); atomic.LoadUint64(sn.lock()) == m.off {
				atomic.CompareAndSwapUint32(sn.state(), nodeAbandoned, nodeFree)
			}
		}
		return true
	}
}

// behind reports whether the node with index+1 idx waits, directly or through
// the prevs of queued nodes on this lock, for node n: whether it is behind n.
// A prev is the tail that its node's swap replaced, or moved by a repair to
// one further ahead, so in one queue the prevs lead only forward; a dead
// node's prev may name a node freed and queued again since (executors reuse
// theirs at once, on the same lock), and a waiter that looked through the dead
// node to it waited for a node behind it. With the nodes between waiting for
// it in turn, the queue waited for itself (the swap-window stress with
// stand-ins, traced: a dead worker's node named an executor's node's earlier
// use, and a stand-in's repair made its own node its prev).
func (m *Mutex) behind(idx uint32, n node) bool {
	hdr := m.p.h.Header()
	total := hdr.MaxProcs * hdr.NodesPerProc
	for steps := uint32(0); idx != 0 && idx <= total && steps < total; steps++ {
		x := m.p.node(idx - 1)
		if x.p == n.p {
			return true
		}
		if s := atomic.LoadUint32(x.state()); s == nodeFree || s == nodeHead || atomic.LoadUint64(x.lock()) != m.off {
			return false // out of the queue, or its head (whose prev nobody reads)
		}
		idx = atomic.LoadUint32(x.prev())
	}
	return false
}

// gone reports whether node pn, seen in state s, has left this lock's queue:
// freed, or queued on another lock.
func (m *Mutex) gone(pn node, s uint32) bool {
	return s == nodeFree || atomic.LoadUint64(pn.lock()) != m.off
}

// freeAhead frees the abandoned nodes from the one with index+1 idx along
// the next links up to n, which has just made itself the head past them.
// Nobody else will: the dead head ahead of them grants no more, and a waiter
// that skipped them on its way forward (its prev moved past them) keeps the
// list of what it skipped only in its own memory — lost if it died, and
// never kept by an executor's lock call — so without this walk the nodes of a
// live process that abandoned them (a kernel waiter's that timed out) would
// never be freed. The walk stops at anything not abandoned on this lock: a
// node freed meanwhile may be queued elsewhere already, and its next is not
// ours. Where a next is still 0 because the node behind died between its tail
// swap and its link, the walk goes on to that node, found by its prev
// (deadSuccessor), as a granter does: with kills aimed at that window, the
// abandoned nodes behind such holes were never freed.
//
// A dead process's node that is free already does not end the walk: Reap
// frees dead nodes ahead of it while it goes (its position is in no node Reap
// starts from), and ending there left a timed-out kernel waiter's node after
// them abandoned for good (TestFreeAheadPassesReapedDeadNode). The walk passes
// such a node along its next, which its process set in this queue: a dead
// process's node is queued again only after Reap frees its slot, which waits
// for its nodes, and a new process attaches to it; nodeDead says neither has
// happened.
func (m *Mutex) freeAhead(idx uint32, n node) {
	total := m.p.h.Header().MaxProcs * m.p.h.Header().NodesPerProc
	for steps := uint32(0); idx != 0 && idx <= total && steps < total; steps++ {
		x := m.p.node(idx - 1)
		if x.p == n.p || atomic.LoadUint64(x.lock()) != m.off {
			return
		}
		s := atomic.LoadUint32(x.state())
		if s != nodeAbandoned && !m.reaped(idx, s) {
			return
		}
		next := atomic.LoadUint32(x.next())
		if next == 0 {
			next = m.p.deadSuccessor(idx, m.off, wordTail(atomic.LoadUint64(m.word)), false)
		}
		if s == nodeAbandoned && !atomic.CompareAndSwapUint32(x.state(), nodeAbandoned, nodeFree) &&
			!m.reaped(idx, atomic.LoadUint32(x.state())) {
			return
		}
		idx = next
	}
}

// reaped reports whether the node with index+1 idx, seen in state s, is a
// dead process's that is free: its fields are as its process left them.
func (m *Mutex) reaped(idx, s uint32) bool { return s == nodeFree && m.p.nodeDead(idx) }

// deadSuccessor finds the node that swapped the tail after the node with
// index+1 idx on the lock at heap offset lock and died before linking itself:
// a node of a dead slot, queued on lock, whose prev is idx, and which really
// is in the queue (it is the tail, or somebody queued behind it) rather than
// one that died before its own swap. It returns its index + 1, or 0.
//
// It returns 0 while a live node on lock whose prev is idx is named by no
// node's next: a successor between its swap and its link (an executor's
// thread preempted there), which links itself. A dead node naming idx may be
// stale, left from an earlier use of the node idx names (its process reuses
// it at once, on the same lock), and linking it would send the granter down
// a queue that is over, past the live successor (the kflexfault stress with
// kills aimed at the swap window: a granter waited at the end of that queue
// forever). A live node whose prev a repair moved to idx is named by the
// next of the node it linked itself behind, and does not hold this up.
//
// A dead node that is the head is not one: the head position came to it
// along a link, or it took it past dead predecessors itself, either way after
// it linked, so it names idx from an earlier use of that node (it died before
// it freed its own node). Taking it, the granter stopped there (a node already
// head took the position itself) and left the real one behind (the
// swap-window stress with stand-ins, traced: the waiter behind named the
// granter's node, which was then queued again behind that waiter, and three
// queued nodes waited for each other).
//
// patient false skips that wait: a live node whose prev a repair moved to idx
// past a node freed and reused since is named by no next either, and the Go
// granter stops waiting for it after a while (successor).
//
// More than one dead node may name idx: the one that swapped the tail behind
// it, and nodes behind that one whose prev a repair moved to idx past it
// (and past abandoned nodes after it) before they died themselves. The one
// returned is the first in the queue, behind none of the others (firstOf):
// taking a later one skipped the nodes between, and the abandoned nodes of
// live processes among them (a cancelled executor's) were never freed (the
// kflexfault stress with kills aimed at the swap window: a dead node of a
// lower slot, whose prev had moved past a dead unlinked node and an
// executor's abandoned one, was linked behind the granter in their place).
func (p *Process) deadSuccessor(idx uint32, lock uint64, tail uint32, patient bool) uint32 {
	hdr := p.h.Header()
	if patient && p.linking(idx, lock) {
		return 0
	}
	var found []uint32
	for s := range hdr.MaxProcs {
		if !slotDead(atomic.LoadUint32(p.liveWord(s))) {
			continue
		}
		for i := s * hdr.NodesPerProc; i < (s+1)*hdr.NodesPerProc; i++ {
			n := p.node(i)
			if st := atomic.LoadUint32(n.state()); st == nodeFree || st == nodeHead ||
				atomic.LoadUint32(n.prev()) != idx || atomic.LoadUint64(n.lock()) != lock {
				continue
			}
			if tail == i+1 || atomic.LoadUint32(n.next()) != 0 || p.queuedBehind(i+1, lock) {
				found = append(found, i+1)
			}
		}
	}
	return firstOf(p.h, idx, lock, found)
}

// firstOf returns, of the nodes found (index + 1, each naming the node with
// index+1 idx as its prev, on the lock at heap offset lock), the first in
// the queue: one that is behind none of the others. A node is behind another
// if a walk from that one reaches it along the edges that lead back from a
// node to those queued after it: its next, and (where a next is still 0) the
// nodes naming it as their prev, every one of which swapped the tail after
// it or moved its prev to it from further back. The walk stays on nodes
// queued on lock and does not pass idx. If stale links (a node freed and
// queued again) leave every one behind another, the first found is taken.
func firstOf(h *heap.Heap, idx uint32, lock uint64, found []uint32) uint32 {
	if len(found) < 2 {
		if len(found) == 0 {
			return 0
		}
		return found[0]
	}
	hdr := h.Header()
	total := hdr.MaxProcs * hdr.NodesPerProc
	namedBy := namedByPrev(h, lock)
	later := make(map[uint32]bool) // found nodes behind another found node
	for _, f := range found {
		seen := map[uint32]bool{f: true, idx: true}
		stack := []uint32{f}
		push := func(x uint32) {
			if x != 0 && x <= total && !seen[x] {
				seen[x] = true
				stack = append(stack, x)
			}
		}
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if x != f {
				later[x] = true
			}
			n := nodeAt(h, x-1)
			if atomic.LoadUint32(n.state()) == nodeFree || atomic.LoadUint64(n.lock()) != lock {
				continue
			}
			if next := atomic.LoadUint32(n.next()); next != 0 {
				push(next)
				continue
			}
			for _, b := range namedBy(x) {
				push(b)
			}
		}
	}
	for _, f := range found {
		if !later[f] {
			return f
		}
	}
	return found[0]
}

// linking reports whether a live process's node queued on lock has the node
// with index+1 idx as its prev and is named by no node's next: it swapped the
// tail behind idx and has not linked itself yet.
func (p *Process) linking(idx uint32, lock uint64) bool {
	hdr := p.h.Header()
	total := hdr.MaxProcs * hdr.NodesPerProc
	for s := range hdr.MaxProcs {
		if slotDead(atomic.LoadUint32(p.liveWord(s))) {
			continue
		}
		for i := s * hdr.NodesPerProc; i < (s+1)*hdr.NodesPerProc; i++ {
			n := p.node(i)
			if atomic.LoadUint32(n.prev()) != idx || atomic.LoadUint64(n.lock()) != lock {
				continue
			}
			if st := atomic.LoadUint32(n.state()); st != nodeWaiting && st != nodeParked {
				continue
			}
			named := false
			for j := range total {
				if atomic.LoadUint32(p.node(j).next()) == i+1 {
					named = true
					break
				}
			}
			if !named {
				return true
			}
		}
	}
	return false
}

// queuedBehind reports whether some queued node on lock has the node with
// index+1 idx as its prev.
func (p *Process) queuedBehind(idx uint32, lock uint64) bool {
	hdr := p.h.Header()
	for i := range hdr.MaxProcs * hdr.NodesPerProc {
		n := p.node(i)
		if atomic.LoadUint32(n.state()) != nodeFree && atomic.LoadUint32(n.prev()) == idx &&
			atomic.LoadUint64(n.lock()) == lock {
			return true
		}
	}
	return false
}

// LockCheck is HelperLockCheck's implementation for the executors of process
// p: the recovery protocol's checks for a bytecode waiter, with mcs_lock's
// arguments (lock word address in any view, node address, node index + 1,
// held bits). A waiting node whose predecessor died is repaired (1: it is now
// the head); a head whose holder died takes the lock over and hands the head
// position on (LockOwnerDied); a head on a lock that is not recoverable leaves
// the queue (LockNotRecoverable); otherwise 0. It yields the CPU first, as
// HelperRelax does. Arguments that name no lock word or node are ignored (0).
func (p *Process) LockCheck(lock, _, idx, held uint64) uint64 {
	runtime.Gosched()
	hdr := p.h.Header()
	off := lock & p.h.Mask()
	if !lockOffValid(hdr, off) || idx == 0 || idx > uint64(hdr.MaxProcs*hdr.NodesPerProc) {
		return 0
	}
	m := &Mutex{p: p, word: p.h.Uint64(off), off: off, held: held}
	me := uint32(idx)
	n := p.node(me - 1)
	if held == 0 {
		// The holder's call (mcs_lock_next): it waits for its successor to
		// link itself. One that died between its tail swap and its link is
		// found by its prev, and linked on its behalf; the holder then
		// grants it, and the grant skips it.
		if atomic.LoadUint32(n.next()) == 0 {
			if s := p.deadSuccessor(me, off, wordTail(atomic.LoadUint64(m.word)), true); s != 0 {
				atomic.CompareAndSwapUint32(n.next(), 0, s)
			}
		}
		return 0
	}
	if atomic.LoadUint32(n.state()) != nodeHead && atomic.LoadUint32(n.prev()) != 0 {
		var skipped []uint32 // left to Reap: the executor keeps no list
		if m.repair(n, &skipped, Polled) {
			return 1
		}
		return 0
	}
	w := atomic.LoadUint64(m.word)
	switch {
	case notRecoverable(w):
		m.grant(n, m.successor(n, me))
		return r0(LockNotRecoverable)
	case w&wordLocked != 0 && HolderDead(m.p.h, w):
		nw := takeover(w, held)
		if wordTail(w) == me {
			nw &^= wordTailMask
		}
		if !m.takeOver(w, nw) {
			return 0
		}
		p.sawDeath(Polled)
		if wordTail(w) != me {
			m.grant(n, m.successor(n, me))
		}
		return r0(LockOwnerDied)
	}
	return 0
}

// r0 is a signed result code as a register holds it.
func r0(code int64) uint64 { return uint64(code) }

// Unstick finishes from Go what the kernel form of mcs_lock left undone when
// it returned r0 = KernelStuck or KernelStuckUnheld for node n on the lock at
// heap offset lock: it hands the queue's head position on from n as the Go
// side does (waiting for a live successor to link, finding by its prev one
// that died before linking, skipping abandoned and dead nodes), frees n, and,
// for KernelStuck, releases the lock the kernel program holds.
func (p *Process) Unstick(lock uint64, n Node, r0 int32) error {
	if r0 != KernelStuck && r0 != KernelStuckUnheld {
		return fmt.Errorf("mcs: unstick after r0 = %d: not a stuck lock call", r0)
	}
	m, err := p.Mutex(lock)
	if err != nil {
		return err
	}
	node := p.node(n.Index)
	if atomic.LoadUint32(node.state()) != nodeFree {
		m.handOn(node, n.Index+1)
	}
	if r0 == KernelStuck {
		m.Unlock()
	}
	return nil
}
