package mcs

import (
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReapEndsDeadSleepingQueue: H, a dead process's node, is the queue's
// head, asleep (head-sleeping set); behind it P, a dead process's node, is
// parked and the lock word's tail. The lock is free. Newcomers take it
// without queueing (the head sleeps), so nobody queues behind P and repairs:
// a live newcomer barges and unlocks, and the queue stays. Reap ends it (no
// tail, no head bits), frees H and P, and reclaims the slots. Before, Reap
// kept both (P is the tail, a root of reachable, and not head-like; H is
// P's prev) and the slot leaked for good (the cross-process fuzzer's
// dead-sleeping-head-left-queued). H and P are of one dead process, as in
// the fuzzer's run, or of two.
func TestReapEndsDeadSleepingQueue(t *testing.T) {
	for _, procs := range []string{"one", "two"} {
		t.Run(procs, func(t *testing.T) {
			w := newWorld(t, 1<<20)
			offs := w.locks(t, 3)
			off := offs[0]
			npp := w.h.Header().NodesPerProc
			hd := w.killedSlot(t, offs[1])
			h, p := hd*npp, hd*npp+1
			if procs == "two" {
				p = w.killedSlot(t, offs[2]) * npp
			}
			w.setNode(h, QueueNode{Next: p + 1, State: NodeHead, Lock: off})
			w.setNode(p, QueueNode{State: NodeParked, Prev: h + 1, Lock: off})
			atomic.StoreUint64(w.h.Uint64(off), wordHeadSleeping|uint64(p+1)<<wordTailShift)

			m := mutex(t, w.p, off)
			require.NoError(t, m.Lock(), "a newcomer barges past the sleeping head")
			require.Empty(t, w.p.QueueNode(w.p.Slot()*npp).State, "without queueing")
			m.Unlock()
			got := DecodeWord(atomic.LoadUint64(w.h.Uint64(off)))
			require.Equal(t, p+1, got.Tail, "the dead queue stays after the barger's unlock")
			require.True(t, got.HeadSleeping)

			want := map[string]int{"one": 1, "two": 2}[procs]
			assert.Equal(t, want, Reap(w.h), "the dead slots reclaimed")
			assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)), "no tail, no head bits")
			assert.Equal(t, uint32(NodeFree), w.p.QueueNode(h).State, "H freed")
			assert.Equal(t, uint32(NodeFree), w.p.QueueNode(p).State, "P freed")
			w.settled(t, off, 0)
		})
	}
}

// TestReapKeepsQueueWithLiveNode: as TestReapEndsDeadSleepingQueue, but a
// live process's node is in the chain from the tail back to the head: a
// waiter behind the dead head (it will repair around it), or the head
// itself (asleep, and it will wake). Reap leaves the lock word and every
// node as they are, and so the slot of the dead.
func TestReapKeepsQueueWithLiveNode(t *testing.T) {
	for _, live := range []string{"waiter", "head"} {
		t.Run(live, func(t *testing.T) {
			w, off, _, dead := deadSlotScene(t)
			pl, plDone := w.attached(t)
			l := pl.TakeNode()
			d0, d1 := dead, dead+1
			var idx []uint32
			if live == "waiter" {
				// D0 (dead head) <- L (live, waiting) <- D1 (dead, parked: tail)
				w.setNode(d0, QueueNode{Next: l.Index + 1, State: NodeHead, Lock: off})
				w.setNode(l.Index, QueueNode{Next: d1 + 1, State: NodeWaiting, Prev: d0 + 1, Lock: off})
				w.setNode(d1, QueueNode{State: NodeParked, Prev: l.Index + 1, Lock: off})
				idx = []uint32{d0, l.Index, d1}
			} else {
				// L (live head, asleep) <- D0 (dead, parked) <- D1 (dead, parked: tail)
				w.setNode(l.Index, QueueNode{Next: d0 + 1, State: NodeHead, Lock: off})
				w.setNode(d0, QueueNode{Next: d1 + 1, State: NodeParked, Prev: l.Index + 1, Lock: off})
				w.setNode(d1, QueueNode{State: NodeParked, Prev: d0 + 1, Lock: off})
				idx = []uint32{l.Index, d0, d1}
			}
			word := wordHeadSleeping | uint64(d1+1)<<wordTailShift
			atomic.StoreUint64(w.h.Uint64(off), word)
			var before []QueueNode
			for _, i := range idx {
				before = append(before, w.p.QueueNode(i))
			}

			assert.Zero(t, Reap(w.h), "the dead slot is kept")
			assert.Equal(t, word, atomic.LoadUint64(w.h.Uint64(off)), "lock word untouched")
			for k, i := range idx {
				assert.Equal(t, before[k], w.p.QueueNode(i), "node %d untouched", i)
			}

			for _, i := range idx {
				w.setNode(i, QueueNode{})
			}
			atomic.StoreUint64(w.h.Uint64(off), 0)
			pl.GiveNode(l)
			plDone()
			w.settled(t, off, 0)
		})
	}
}

// TestReapKeepsUnlinkedDeadSuccessor: D, a dead process's node, swapped the
// tail behind A (an abandoned node of a live process) and died before linking
// itself (A.next stays 0); W, behind D, repaired past D and A (its prev now
// names X, the head). Nothing names D any more, but a granter walking from X
// to A finds whoever is behind A only through D (deadSuccessor, by D's prev):
// Reap must keep D, and its slot, until then. Before, Reap freed D as
// unreachable and the granter waited for A's link forever.
func TestReapKeepsUnlinkedDeadSuccessor(t *testing.T) {
	w, off, me, dead := deadSlotScene(t)
	x, a, wn, d := me+1, me+2, me+3, dead+1
	w.setNode(x, QueueNode{Next: a + 1, State: NodeHead, Lock: off})
	w.setNode(a, QueueNode{State: NodeAbandoned, Prev: x + 1, Lock: off})
	w.setNode(d, QueueNode{Next: wn + 1, State: NodeAbandoned, Prev: a + 1, Lock: off})
	w.setNode(wn, QueueNode{State: NodeWaiting, Prev: x + 1, Lock: off})
	atomic.StoreUint64(w.h.Uint64(off), uint64(wn+1)<<wordTailShift)
	Reap(w.h)
	assert.Equal(t, uint32(NodeAbandoned), w.p.QueueNode(d).State, "D is kept for the granter at A")
	w.clear(off, x, a, wn, d)
}

// deadSlotScene is a fresh world with a free lock at off, and the first node
// indices of this process's range (mine) and of a killed child's (dead).
func deadSlotScene(t *testing.T) (w *world, off uint64, mine, dead uint32) {
	w = newWorld(t, 1<<20)
	offs := w.locks(t, 2)
	npp := w.h.Header().NodesPerProc
	return w, offs[0], w.p.Slot() * npp, w.killedSlot(t, offs[1]) * npp
}

// clear frees the nodes a test set up by hand and the lock word at off, and
// reaps the dead slots.
func (w *world) clear(off uint64, nodes ...uint32) {
	for _, n := range nodes {
		w.setNode(n, QueueNode{})
	}
	atomic.StoreUint64(w.h.Uint64(off), 0)
	Reap(w.h)
}

// TestReapWalkSeesGranterStep: X, a live granter, is the head; behind it P
// and A, a dead process's nodes, abandoned (A linked behind P, its next 0);
// D, dead too, swapped the tail behind A and died before linking (a
// repair abandoned it); W, a live waiter, linked behind D and repaired its
// prev past them to X. The granter finds D only by its prev (deadSuccessor),
// so Reap must keep D. Reap's walk reads X's next (P), and then, before it
// reaches P, the granter steps over P: its next moves on to A, and P is
// freed. A walk that believed what it read found P free and D out of reach,
// and freed D; the granter then waited at A forever (the kflexfault stress
// with kills aimed at the MCS window, traced). The walk sees X changed under
// it, walks again, and keeps D.
func TestReapWalkSeesGranterStep(t *testing.T) {
	w, off, me, dead := deadSlotScene(t)
	x, wn := me+1, me+2
	d, p, a := dead, dead+1, dead+2 // D first: Reap judges it before P and A
	w.setNode(x, QueueNode{Next: p + 1, State: NodeHead, Lock: off})
	w.setNode(p, QueueNode{Next: a + 1, State: NodeAbandoned, Prev: x + 1, Lock: off})
	w.setNode(a, QueueNode{State: NodeAbandoned, Prev: p + 1, Lock: off})
	w.setNode(d, QueueNode{Next: wn + 1, State: NodeAbandoned, Prev: a + 1, Lock: off})
	w.setNode(wn, QueueNode{State: NodeWaiting, Prev: x + 1, Lock: off})
	atomic.StoreUint64(w.h.Uint64(off), wordLocked|uint64(wn+1)<<wordTailShift)

	stepped := false
	reachVisited = func(idx uint32) {
		if idx == x+1 && !stepped {
			stepped = true
			atomic.StoreUint32(w.p.node(x).next(), a+1) // the granter's step over P
			atomic.StoreUint32(w.p.node(p).state(), nodeFree)
		}
	}
	t.Cleanup(func() { reachVisited = nil })
	Reap(w.h)
	require.True(t, stepped, "the granter stepped during Reap's walk")
	assert.Equal(t, uint32(NodeAbandoned), w.p.QueueNode(d).State, "D is kept for the granter at A")
	assert.Equal(t, uint32(NodeAbandoned), w.p.QueueNode(a).State, "A is kept for the granter")

	reachVisited = nil
	w.clear(off, x, wn, d, p, a)
}

// TestReapFollowsFreedHeadToWalk: W, a live waiter, has just replaced P, a
// dead head: it freed P and has yet to say head and walk over what it passed
// from P's next: X1 and X2, a dead process's, and K, a live kernel waiter's
// node that timed out (X2's prev was moved to P by its own repair, K's prev
// names X2, and W's was moved past them all to P). Only P's next names X1.
// Reap must keep X1 for W's walk, which a free node ends; before, it freed
// X1 as out of reach, the walk ended at once, and K (with X2, which K names,
// and so its slot) was left for good.
func TestReapFollowsFreedHeadToWalk(t *testing.T) {
	w, off, me, dead := deadSlotScene(t)
	wn, k := me+1, me+2
	p, x1, x2 := dead, dead+1, dead+2
	w.setNode(p, QueueNode{Next: x1 + 1, Lock: off}) // freed by W's repair
	w.setNode(x1, QueueNode{Next: x2 + 1, State: NodeAbandoned, Prev: p + 1, Lock: off})
	w.setNode(x2, QueueNode{Next: k + 1, State: NodeAbandoned, Prev: p + 1, Lock: off})
	w.setNode(k, QueueNode{Next: wn + 1, State: NodeAbandoned, Prev: x2 + 1, Lock: off})
	w.setNode(wn, QueueNode{State: NodeWaiting, Prev: p + 1, Lock: off})
	atomic.StoreUint64(w.h.Uint64(off), wordLocked|uint64(wn+1)<<wordTailShift)

	Reap(w.h)
	assert.Equal(t, uint32(NodeAbandoned), w.p.QueueNode(x1).State, "X1 is kept for W's walk")
	w.clear(off, wn, k, p, x1, x2)
}

// TestDeadSuccessorSkipsStaleHead: X holds the lock and waits for its
// successor's link. D, a dead process's node, swapped the tail behind X and
// died before linking (W, behind it, repaired past it to X). S, of a dead
// process too, also names X as its prev, but from an earlier use of X's node:
// S was granted the head behind that earlier X, and its process died before
// it freed its node. deadSuccessor takes D. It took S, first in slot order,
// which was head already, so the granter stopped there (a node already head
// took the position itself): D and W were left behind, W's prev named X's
// node, and once that node was queued again behind W, three queued nodes
// waited for each other (the swap-window stress with stand-ins, traced).
func TestDeadSuccessorSkipsStaleHead(t *testing.T) {
	w, off, me, dead := deadSlotScene(t)
	x, wn, gone := me+1, me+2, me+3
	s, d := dead, dead+1 // S first in slot order
	w.setNode(x, QueueNode{State: NodeHead, Lock: off})
	w.setNode(s, QueueNode{Next: gone + 1, State: NodeHead, Prev: x + 1, Lock: off})
	w.setNode(d, QueueNode{Next: wn + 1, State: NodeAbandoned, Prev: x + 1, Lock: off})
	w.setNode(wn, QueueNode{State: NodeWaiting, Prev: x + 1, Lock: off})
	atomic.StoreUint64(w.h.Uint64(off), wordLocked|uint64(wn+1)<<wordTailShift)

	assert.Equal(t, d+1, w.p.deadSuccessor(x+1, off, wn+1, false), "D, not the stale head S")
	w.clear(off, x, wn, s, d)
}

// TestRepairStalePrevBehind: W, a live waiter, finds its predecessor D dead
// and abandoned; D's prev names X's node from an earlier use, and X's node is
// queued again since, behind W (its prev names W). Looking through D to X, W
// would wait for a node that waits for W. It takes the head position instead:
// what D's prev named has left the queue.
func TestRepairStalePrevBehind(t *testing.T) {
	w, off, me, dead := deadSlotScene(t)
	wn, x := me+1, me+2
	d := dead
	w.setNode(d, QueueNode{Next: wn + 1, State: NodeAbandoned, Prev: x + 1, Lock: off})
	w.setNode(wn, QueueNode{State: NodeWaiting, Prev: d + 1, Lock: off})
	w.setNode(x, QueueNode{State: NodeWaiting, Prev: wn + 1, Lock: off})
	atomic.StoreUint64(w.h.Uint64(off), wordLocked|uint64(x+1)<<wordTailShift)

	m := mutex(t, w.p, off)
	var skipped []uint32
	assert.True(t, m.repair(w.p.node(wn), &skipped, Polled), "W is the head")
	assert.Equal(t, uint32(NodeHead), w.p.QueueNode(wn).State)
	assert.Equal(t, []uint32{d + 1}, skipped)
	w.clear(off, wn, x, d)
}

// TestFreeAheadPassesReapedDeadNode: W replaced P, a dead head, and walks
// over what it passed (freeAhead) from X1: then Y and Z, a dead process's
// nodes, and K, a live kernel waiter's node that timed out. Z's prev was
// moved to X1 by its own repair, K's names Z. Reap runs while the walk is at
// X1 (it has read X1's next and freed X1): the walk's position is in no root,
// Y is named by nothing Reap follows, and Reap frees it. The walk passes Y,
// free and dead, along its next, and frees Z and K. It used to end at Y, and K
// (and Z, which K names, and so its slot) was left for good. Found by review.
func TestFreeAheadPassesReapedDeadNode(t *testing.T) {
	w, off, me, dead := deadSlotScene(t)
	y, x1, z, p := dead, dead+1, dead+2, dead+3
	k, wn := me+1, me+2
	w.setNode(p, QueueNode{Next: x1 + 1, Lock: off})
	w.setNode(x1, QueueNode{Next: y + 1, State: NodeAbandoned, Prev: p + 1, Lock: off})
	w.setNode(y, QueueNode{Next: z + 1, State: NodeAbandoned, Prev: x1 + 1, Lock: off})
	w.setNode(z, QueueNode{Next: k + 1, State: NodeAbandoned, Prev: x1 + 1, Lock: off})
	w.setNode(k, QueueNode{Next: wn + 1, State: NodeAbandoned, Prev: z + 1, Lock: off})
	w.setNode(wn, QueueNode{State: NodeHead, Prev: p + 1, Lock: off})
	atomic.StoreUint64(w.h.Uint64(off), wordLocked|uint64(wn+1)<<wordTailShift)

	// The walk's first step, at X1, as Reap finds it.
	atomic.StoreUint32(w.p.node(x1).state(), nodeFree)
	Reap(w.h)
	require.Equal(t, uint32(NodeFree), w.p.QueueNode(y).State, "Reap freed Y, out of its reach")

	m := mutex(t, w.p, off)
	m.freeAhead(y+1, w.p.node(wn))
	assert.Equal(t, uint32(NodeFree), w.p.QueueNode(z).State, "Z freed by the walk")
	assert.Equal(t, uint32(NodeFree), w.p.QueueNode(k).State, "K freed by the walk")
	w.clear(off, y, x1, z, p, k, wn)
}
