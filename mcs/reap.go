package mcs

import (
	"sync/atomic"

	"github.com/kflex-go/kflex/heap"
)

// Reap gives the owner slots of dead processes back, once no queue needs
// their nodes, and reports how many it freed. A dead process's node that
// nobody will act on is freed here: one in a queue whose every node, from
// its lock's tail back to its head, is a dead process's (endDeadQueue: the
// queue is ended; a lone dead head is the simplest such queue), and one that
// the live queue can no longer reach (reachable). Nodes
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
	if lock == 0 {
		// Never queued: a waiter writes its node's lock before its tail swap
		// (Go and bytecode alike) and nothing clears it, so a node that names
		// no lock belongs to a process killed while it set the node up for
		// its first wait, after the state and before the lock.
		return atomic.CompareAndSwapUint32(n.state(), s, nodeFree)
	}
	if !lockOffValid(hdr, lock) {
		return false // not a node the lock wrote: leave it alone
	}
	word := h.Uint64(lock)
	if tail := wordTail(atomic.LoadUint64(word)); tail != 0 && endDeadQueue(h, word, lock, tail) {
		// The queue this node's lock had is over, and its nodes are free:
		// this one, if it was among them; if not, it is judged below against
		// whatever queue the lock has now.
		if s = atomic.LoadUint32(n.state()); s == nodeFree {
			return true
		}
	}
	w := atomic.LoadUint64(word)
	if wordTail(w) == me {
		// Last in a queue that a live party is in (endDeadQueue would have
		// ended it otherwise): a live granter ahead will skip it, or a live
		// head will end the queue past it.
		return false
	}
	if reachable(h, me, lock, wordTail(w)) {
		return false
	}
	return atomic.CompareAndSwapUint32(n.state(), s, nodeFree)
}

// endDeadQueue ends the queue on the lock word at heap offset lock (word, in
// our view) whose tail was tail (index + 1) if nobody alive is in it, and
// frees its nodes; it reports whether it did.
//
// A queue is dead when its nodes, from the tail back along prev to its head
// (a node granted the head, or one waiting or parked with prev 0, the head at
// once), are all of dead processes and queued on this lock. Nobody will act on
// them: a grant, a skip, a link (deadSuccessor), a repair and a head's
// hand-off come only from a live node of the queue, and none is left; and a
// newcomer may not come, or not soon: while the dead head is marked asleep
// (wordHeadSleeping, which only the head clears) newcomers take a free lock
// without queueing, so none queues behind the tail to repair around the dead
// (the cross-process fuzzer's dead-sleeping-head-left-queued: two nodes and
// their slot leaked for good). A lone head-like tail is the one-node case.
//
// The walk follows the edges a newcomer's repair would, the tail's prev
// chain: each prev is the tail that its node's swap replaced, or (moved by
// a repair) that node's prev, so a chain that starts at the lock's tail stays
// inside the queue. Abandoned nodes of dead processes are walked through, as
// repair walks through them; abandoned nodes the chain skips (a repair moved
// a prev past them) hang off the chain by next only, and once the queue is
// ended endDeadQueue frees them (freeHanging): a dead process's would be
// unreachable and freed by reapNode, but a live process's (a kernel waiter's
// that timed out) nobody else frees. A live node anywhere
// in the chain, or one that is free, queued elsewhere or out of range (a stale
// or corrupt link), leaves the queue alone. The walk is bounded by the node
// table's size: a corrupt heap may hold a cycle.
func endDeadQueue(h *heap.Heap, word *uint64, lock uint64, tail uint32) bool {
	hdr := h.Header()
	total := hdr.MaxProcs * hdr.NodesPerProc
	var chain, states []uint32
	for idx := tail; ; {
		if idx == 0 || idx > total || uint32(len(chain)) >= total {
			return false
		}
		x := nodeAt(h, idx-1)
		s := atomic.LoadUint32(x.state())
		if s != nodeWaiting && s != nodeParked && s != nodeHead && s != nodeAbandoned ||
			atomic.LoadUint64(x.lock()) != lock ||
			!slotDead(atomic.LoadUint32(h.Uint32(h.OwnerRecord((idx-1)/hdr.NodesPerProc, heap.OwnerLive)))) {
			return false
		}
		chain, states = append(chain, idx), append(states, s)
		if s == nodeHead {
			break
		}
		if idx = atomic.LoadUint32(x.prev()); idx == 0 {
			break // the head at once (or an abandoned one that was)
		}
	}
	// End the queue: clear the tail, and the head bits, which describe its
	// dead head, as a lone head's own hand-off does (successor). The CAS makes
	// this safe against everyone who may touch the word meanwhile, because it
	// succeeds only while the tail is still the one whose chain we judged:
	//
	//   - A newcomer swapping the tail: its swap and our CAS are on one word;
	//     if its swap lands first (it queued behind the dead tail), the tail
	//     differs and we give up (its repair will free the dead nodes); if
	//     ours lands first, its CAS fails and it reloads a word with no queue,
	//     taking the lock or queueing as the head of a new one. The tail
	//     names a node behind which nobody queued as long as it is the tail
	//     (a tail changes only by a swap to a new node, or to 0), so a
	//     successful CAS removes nobody alive.
	//   - A holder (a barger, or one that took the lock before the head
	//     died): its bits are kept; its unlock, in Go (unlockSlow) or bytecode
	//     (mcs_unlock), looks only at the head bits to decide on a wake, and
	//     with them clear it releases without one, which nobody needs.
	//     Its lock and unlock change the word, failing our CAS: we reload
	//     and retry while the tail is the same, since the held bits do not
	//     bear on the queue we judged.
	//   - The dead nodes change only by others' CAS, and nobody else will
	//     make one: a granter (grant, skipping dead nodes, or a leaving head)
	//     is the predecessor of the node it grants, named by that node's prev
	//     (repair moves a prev only past a dead or abandoned node), so it is
	//     in the chain while its node is queued, and the kernel form's
	//     leaving head, which frees its node before it grants on, leaves a
	//     free node in the chain; a repairing successor and deadSuccessor's
	//     linker are live nodes behind, which would be the tail or in the
	//     chain; none is live (we checked). Another Reap ending the same
	//     queue clears the tail first, failing our CAS.
	//
	// The tail's slot is looked at again before each CAS: a tail that is the
	// same index but lives again (another Reap ended this queue and freed the
	// slot, and a new process attached to it and queued the node on this
	// lock while we were descheduled) is not the queue we judged. As with
	// Reap's other look-then-CAS steps, this narrows that window to a few
	// instructions rather than closing it.
	//
	// The retries are bounded: a lock busy enough to change under us every
	// time is left to a later Reap.
	tailLive := h.Uint32(h.OwnerRecord((tail-1)/hdr.NodesPerProc, heap.OwnerLive))
	for try := 0; ; try++ {
		w := atomic.LoadUint64(word)
		if wordTail(w) != tail || try == 64 || !slotDead(atomic.LoadUint32(tailLive)) {
			return false
		}
		if atomic.CompareAndSwapUint64(word, w, w&^(wordTailMask|wordHeadBits)) {
			break
		}
	}
	// The queue is ours alone now. First the abandoned nodes that hang off
	// the chain by next (a repair moved a prev past them): those of dead
	// processes reapNode would free as unreachable, but those of live ones
	// (a kernel waiter's that timed out) nobody else will, and their thread
	// waits for them; then the chain's nodes, from the states we saw. A node is
	// freed only if it is still on this lock in that state (its process is
	// dead, so nobody but another Reap changes it, and that one frees it
	// too).
	for _, idx := range chain {
		freeHanging(h, lock, atomic.LoadUint32(nodeAt(h, idx-1).next()))
	}
	for k, idx := range chain {
		x := nodeAt(h, idx-1)
		if atomic.LoadUint64(x.lock()) == lock {
			atomic.CompareAndSwapUint32(x.state(), states[k], nodeFree)
		}
	}
	return true
}

// freeHanging frees, from the node with index+1 idx along next, the abandoned
// nodes on the lock at heap offset lock of a queue that endDeadQueue ended:
// nobody is left to skip them. Where a next is still 0 because the node
// behind died between its tail swap and its link, it goes on to an abandoned
// node whose prev names it, as a granter would (deadSuccessor). It stops at
// anything else: the chain's own nodes (waiting, parked, head), and nodes
// freed or queued again since.
func freeHanging(h *heap.Heap, lock uint64, idx uint32) {
	hdr := h.Header()
	total := hdr.MaxProcs * hdr.NodesPerProc
	for steps := uint32(0); idx != 0 && idx <= total && steps < total; steps++ {
		x := nodeAt(h, idx-1)
		if atomic.LoadUint64(x.lock()) != lock || atomic.LoadUint32(x.state()) != nodeAbandoned {
			return
		}
		next := atomic.LoadUint32(x.next())
		if next == 0 {
			// The first in the queue of those naming it (firstOf): the others
			// moved their prev to it past that one.
			var found []uint32
			for i := range total {
				y := nodeAt(h, i)
				if atomic.LoadUint32(y.prev()) == idx && atomic.LoadUint32(y.state()) == nodeAbandoned &&
					atomic.LoadUint64(y.lock()) == lock {
					found = append(found, i+1)
				}
			}
			next = firstOf(h, idx, lock, found)
		}
		if !atomic.CompareAndSwapUint32(x.state(), nodeAbandoned, nodeFree) {
			return
		}
		idx = next
	}
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
// at its prev again. A granter at a node whose next is still 0 finds the
// node behind it by that node's prev, if it died before linking itself
// (deadSuccessor): a dead node that swapped the tail behind a predecessor it
// never linked to is named by nothing else once the waiter behind it
// repaired past it (its prev moved on), and freed, it left the granter
// waiting for the link forever — and so did a dead node behind that one,
// unlinked in turn, which deadSuccessor needs to see the first in the queue
// (the kflexfault stress with kills aimed at that window: runs of such
// nodes). So the roots are the tail and every live process's queued node on
// the lock, and the edges are next, prev of a node that is not the head, and,
// from a node whose next is 0 and that is not the tail, every queued node on
// the lock whose prev names it; a dead node is kept while it is reachable
// from a root, through nodes of any liveness. Edges between dead nodes alone
// (two abandoned nodes naming each other, a dead abandoned node naming a dead
// head) keep nothing: nobody will ever walk them. The walk visits each node
// once, so it ends whatever cycles a heap holds.
//
// A granter's own node is a root, and its next follows the walk: the granter
// moves it on past each node it skips before it frees that node (grant), so
// that the nodes after a freed one stay in reach.
//
// The walk is not atomic: it reads the roots first and the nodes after, and
// a granter moves on meanwhile. One that moved its next from a node to the
// one after it, and then freed the first, between the walk's reads of the
// two, hid from the walk every node ahead of it, and Reap freed them: dead
// nodes that the granter needs to find the node behind them (deadSuccessor),
// which then waited at their predecessor forever (the kflexfault stress with
// kills aimed at the MCS window, traced: Reap freed the last of three
// unlinked dead nodes as the runtime's granter stepped onto the first). A
// granter's step changes a root first (its next), as do a repairing waiter's
// (its prev) and a node's leaving (its state), and a queue that ends or grows
// changes the tail; so a walk that finds nothing is believed only if the roots
// and the tail read the same after it; otherwise it is tried again, and after
// a few tries the node is kept, for a later Reap.
//
// One party keeps its place in no root: a waiter that replaced a dead head
// and walks over what it passed (freeAhead). Between freeing that head and
// saying head it is still waiting with the freed node as its prev, and the
// walk follows the edge it will walk, that node's next. Once it says head, its
// walk's position is in its registers only, and Reap may free dead nodes
// ahead of it: the walk passes those (freeAhead).
func reachable(h *heap.Heap, me uint32, lock uint64, tail uint32) bool {
	for range 4 {
		if found, stable := reachOnce(h, me, lock, tail); found || stable {
			return found
		}
	}
	return true
}

// reachVisited, if set (by tests), is called after each node reachOnce
// visits: where another party's step lands between two of its reads.
var reachVisited func(idx uint32)

// rootAt is what reachOnce read of a root: a live process's queued node.
type rootAt struct{ idx, state, next, prev uint32 }

func (r rootAt) same(h *heap.Heap) bool {
	x := nodeAt(h, r.idx-1)
	return atomic.LoadUint32(x.state()) == r.state && atomic.LoadUint32(x.next()) == r.next &&
		atomic.LoadUint32(x.prev()) == r.prev
}

// reachOnce is one walk of reachable's: whether it found me, and whether
// the roots and the lock's tail read the same after it as before.
func reachOnce(h *heap.Heap, me uint32, lock uint64, tail uint32) (found, stable bool) {
	hdr := h.Header()
	total := hdr.MaxProcs * hdr.NodesPerProc
	seen := make(map[uint32]bool)
	namedBy := namedByPrev(h, lock)
	var stack []uint32
	push := func(idx uint32) {
		if idx == 0 || idx > total || seen[idx] {
			return
		}
		seen[idx] = true
		stack = append(stack, idx)
	}
	push(tail)
	var roots []rootAt
	waitsBehind := make(map[uint32]bool) // the prevs of live waiting nodes
	for s := range hdr.MaxProcs {
		live := atomic.LoadUint32(h.Uint32(h.OwnerRecord(s, heap.OwnerLive)))
		if slotDead(live) {
			continue
		}
		for i := s * hdr.NodesPerProc; i < (s+1)*hdr.NodesPerProc; i++ {
			x := nodeAt(h, i)
			st := atomic.LoadUint32(x.state())
			if st == nodeFree || atomic.LoadUint64(x.lock()) != lock {
				continue
			}
			r := rootAt{idx: i + 1, state: st, next: atomic.LoadUint32(x.next()), prev: atomic.LoadUint32(x.prev())}
			roots = append(roots, r)
			push(i + 1)
			if st == nodeWaiting || st == nodeParked {
				waitsBehind[r.prev] = true
			}
		}
	}
	for len(stack) > 0 {
		idx := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		x := nodeAt(h, idx-1)
		s := atomic.LoadUint32(x.state())
		if atomic.LoadUint64(x.lock()) != lock {
			continue // not in this queue: its fields are stale
		}
		if s == nodeFree {
			// A live waiter whose predecessor is free walks on from that
			// node's next (repair): a dead head it replaced, freed before
			// the waiter says head and walks over what it passed.
			if waitsBehind[idx] {
				push(atomic.LoadUint32(x.next()))
			}
			continue
		}
		if idx == me {
			return true, true // (stable or not: kept either way)
		}
		next := atomic.LoadUint32(x.next())
		push(next)
		if s != nodeHead {
			push(atomic.LoadUint32(x.prev()))
		}
		if next == 0 && idx != tail {
			// (The tail has nobody behind it: a node naming it is stale, or
			// died before its own swap.)
			for _, b := range namedBy(idx) {
				push(b)
			}
		}
		if reachVisited != nil {
			reachVisited(idx)
		}
	}
	if wordTail(atomic.LoadUint64(h.Uint64(lock))) != tail {
		return false, false
	}
	for _, r := range roots {
		if !r.same(h) {
			return false, false
		}
	}
	return false, true
}

// namedByPrev returns what lists the nodes queued on the lock at heap offset
// lock (index + 1) whose prev names the node with index+1 idx: the edges back
// from a node whose next is still 0 to those queued after it. The index is
// built by one scan of the node table, on first use (most walks never need it).
func namedByPrev(h *heap.Heap, lock uint64) func(idx uint32) []uint32 {
	var behind map[uint32][]uint32 // prev -> the queued nodes naming it
	return func(idx uint32) []uint32 {
		if behind == nil {
			behind = make(map[uint32][]uint32)
			hdr := h.Header()
			for i := range hdr.MaxProcs * hdr.NodesPerProc {
				x := nodeAt(h, i)
				if atomic.LoadUint32(x.state()) != nodeFree && atomic.LoadUint64(x.lock()) == lock {
					if p := atomic.LoadUint32(x.prev()); p != 0 {
						behind[p] = append(behind[p], i+1)
					}
				}
			}
		}
		return behind[idx]
	}
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
