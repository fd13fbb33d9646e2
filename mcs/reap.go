package mcs

import (
	"sync/atomic"

	"github.com/kflex-go/kflex/heap"
)

// Reap gives the owner slots of dead processes back, once no queue needs
// their nodes, and reports how many it freed. A dead process's node that
// nobody will act on is freed here: one that is alone at the head of its
// queue (its lock's tail, with nobody ahead to grant it: the queue is
// ended), and one that no queued node refers to any more (a holder killed
// after granting its successor). Nodes that a live party will still skip or
// replace are left to it, and their slot to a later Reap. A slot is freed
// only when none of its nodes is queued and no waiting node names one as its
// predecessor; the generation bumped by the next attach then keeps locks the
// dead process still holds recognisable as held by the dead.
//
// Attach reaps when it finds no free slot; a runtime may call Reap at any
// time. It takes no lock and waits for nobody.
func Reap(h *heap.Heap) int {
	hdr := h.Header()
	freed := 0
	for s := range hdr.MaxProcs {
		lw := h.Uint32(h.OwnerRecord(s, heap.OwnerLive))
		live := atomic.LoadUint32(lw)
		if live == 0 || !heap.OwnerDead(live) {
			continue
		}
		busy := false
		for i := s * hdr.NodesPerProc; i < (s+1)*hdr.NodesPerProc; i++ {
			if !reapNode(h, i) {
				busy = true
			}
		}
		if busy || named(h, s*hdr.NodesPerProc+1, (s+1)*hdr.NodesPerProc+1) {
			continue
		}
		if atomic.CompareAndSwapUint32(lw, live, 0) {
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
	if referenced(h, me, lock) {
		return false
	}
	return atomic.CompareAndSwapUint32(n.state(), s, nodeFree)
}

// referenced reports whether a queued node on lock will act on the node with
// index+1 me: a waiter whose predecessor it is, or a node that will grant it.
func referenced(h *heap.Heap, me uint32, lock uint64) bool {
	hdr := h.Header()
	for i := range hdr.MaxProcs * hdr.NodesPerProc {
		x := nodeAt(h, i)
		s := atomic.LoadUint32(x.state())
		if i+1 == me || s == nodeFree || atomic.LoadUint64(x.lock()) != lock {
			continue
		}
		if atomic.LoadUint32(x.next()) == me || s != nodeHead && atomic.LoadUint32(x.prev()) == me {
			return true
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
