package mcs

import (
	"sync/atomic"

	"github.com/kflex-go/kflex/heap"
)

// Reap gives the owner slots of dead processes back, once no queue needs
// their nodes, and reports how many it freed. A dead process's node that
// nobody will act on is freed here: one that is alone at the head of its
// queue (its lock's tail, with nobody ahead to grant it: the queue is
// ended), and one that the live queue can no longer reach (reachable). Nodes
// that a live party will still skip or replace are left to it, and their
// slot to a later Reap. A slot is freed only when none of its nodes is
// queued and no waiting node names one as its predecessor; the generation
// bumped by the next attach then keeps locks the dead process still holds
// recognisable as held by the dead.
//
// Nodes are reaped for every dead slot first and slots freed after, so that
// a dead waiting node of a later slot that named an earlier slot's node is
// already free when that slot is judged.
//
// Attach reaps when it finds no free slot; a runtime may call Reap at any
// time. It takes no lock and waits for nobody.
func Reap(h *heap.Heap) int {
	hdr := h.Header()
	var dead []uint32
	for s := range hdr.MaxProcs {
		live := atomic.LoadUint32(h.Uint32(h.OwnerRecord(s, heap.OwnerLive)))
		if live != 0 && heap.OwnerDead(live) {
			dead = append(dead, s)
		}
	}
	var busy []bool
	for _, s := range dead {
		b := false
		for i := s * hdr.NodesPerProc; i < (s+1)*hdr.NodesPerProc; i++ {
			if !reapNode(h, i) {
				b = true
			}
		}
		busy = append(busy, b)
	}
	freed := 0
	for k, s := range dead {
		if busy[k] || named(h, s*hdr.NodesPerProc+1, (s+1)*hdr.NodesPerProc+1) {
			continue
		}
		lw := h.Uint32(h.OwnerRecord(s, heap.OwnerLive))
		if live := atomic.LoadUint32(lw); heap.OwnerDead(live) && freeSlot(lw, live) {
			freed++
		}
	}
	return freed
}

// reapNode frees dead node i if nobody will, and reports whether it is free.
func reapNode(h *heap.Heap, i uint32) bool {
	n := nodeAt(h, i)
	s := atomic.LoadUint32(n.state())
	if s == nodeFree {
		return true
	}
	me := i + 1
	lock := atomic.LoadUint64(n.lock())
	hdr := h.Header()
	if lock%8 != 0 || lock < hdr.PagesOff || lock > hdr.Size-8 {
		return false // not a node the lock wrote: leave it alone
	}
	word := h.Uint64(lock)
	w := atomic.LoadUint64(word)
	if wordTail(w) == me {
		// Last in its queue. Alone at the head, nobody will act on it: end
		// the queue. Otherwise a live granter ahead will skip it.
		headLike := s == nodeHead || (s == nodeWaiting || s == nodeParked) && atomic.LoadUint32(n.prev()) == 0
		if !headLike || !atomic.CompareAndSwapUint64(word, w, w&^(wordTailMask|wordHeadBits)) {
			return false
		}
		return atomic.CompareAndSwapUint32(n.state(), s, nodeFree)
	}
	if reachable(h, me, lock, wordTail(w)) {
		return false
	}
	return atomic.CompareAndSwapUint32(n.state(), s, nodeFree)
}

// reachable reports whether the queue on the lock at heap offset lock, whose
// tail was tail (index + 1, 0 for none), can still reach the node with
// index+1 me: whether some party that lives, or will come, may act on it.
//
// The parties that act on a queued node are those that follow an edge to it:
// a granter follows next (and, skipping an abandoned or dead node, that
// node's next in turn); a waiter repairing around dead predecessors follows
// prev (and, past an abandoned one, its prev in turn); a newcomer queues
// behind the tail and so follows the tail's prev chain. A head never looks
// at its prev again. So the roots are the tail and every live process's
// queued node on the lock, and the edges are next, and prev of a node that
// is not the head; a dead node is kept while it is reachable from a root,
// through nodes of any liveness. Edges between dead nodes alone (two
// abandoned nodes naming each other, a dead abandoned node naming a dead
// head) keep nothing: nobody will ever walk them. The walk visits each node
// once, so it ends whatever cycles a heap holds.
func reachable(h *heap.Heap, me uint32, lock uint64, tail uint32) bool {
	hdr := h.Header()
	total := hdr.MaxProcs * hdr.NodesPerProc
	seen := make(map[uint32]bool)
	var stack []uint32
	push := func(idx uint32) {
		if idx == 0 || idx > total || seen[idx] {
			return
		}
		seen[idx] = true
		stack = append(stack, idx)
	}
	push(tail)
	for s := range hdr.MaxProcs {
		live := atomic.LoadUint32(h.Uint32(h.OwnerRecord(s, heap.OwnerLive)))
		if slotDead(live) {
			continue
		}
		for i := s * hdr.NodesPerProc; i < (s+1)*hdr.NodesPerProc; i++ {
			x := nodeAt(h, i)
			if atomic.LoadUint32(x.state()) != nodeFree && atomic.LoadUint64(x.lock()) == lock {
				push(i + 1)
			}
		}
	}
	for len(stack) > 0 {
		idx := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		x := nodeAt(h, idx-1)
		s := atomic.LoadUint32(x.state())
		if s == nodeFree || atomic.LoadUint64(x.lock()) != lock {
			continue // not in this queue: its fields are stale
		}
		if idx == me {
			return true
		}
		push(atomic.LoadUint32(x.next()))
		if s != nodeHead {
			push(atomic.LoadUint32(x.prev()))
		}
	}
	return false
}

// named reports whether a waiting node names a node with index+1 in [lo, hi)
// as its predecessor: it will look at that node again.
func named(h *heap.Heap, lo, hi uint32) bool {
	hdr := h.Header()
	for i := range hdr.MaxProcs * hdr.NodesPerProc {
		x := nodeAt(h, i)
		s := atomic.LoadUint32(x.state())
		if s != nodeWaiting && s != nodeParked {
			continue
		}
		if p := atomic.LoadUint32(x.prev()); p >= lo && p < hi {
			return true
		}
	}
	return false
}
