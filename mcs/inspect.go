package mcs

import (
	"fmt"
	"sync/atomic"

	"github.com/kflex-go/kflex/heap"
)

// LockState is a lock word decoded, as diagnostics and the cross-executor
// layout tests read it.
type LockState struct {
	Locked, OwnerDied, HeadSleeping, WakePending bool
	Abandoned                                    bool   // held, given up by a cancelled extension (Abandon): the next locker takes it over
	Owner                                        uint32 // holder's process slot + 1 (0: none)
	Gen                                          uint32 // low 12 bits of the holder slot's generation
	Tail                                         uint32 // index + 1 of the last queued node (0: no queue)
}

// DecodeWord decodes lock word w.
func DecodeWord(w uint64) LockState {
	return LockState{
		Locked: w&wordLocked != 0, OwnerDied: w&wordOwnerDied != 0,
		HeadSleeping: w&wordHeadSleeping != 0, WakePending: w&wordWakePending != 0,
		Owner: wordOwner(w), Gen: wordGen(w), Tail: wordTail(w),
		Abandoned: w&wordLocked != 0 && wordOwner(w) == abandonedOwner,
	}
}

// QueueNode is a queue node's fields.
type QueueNode struct {
	Next  uint32 // index + 1 of the successor (0: none linked)
	State uint32 // NodeFree, NodeWaiting, ...
	Owner uint32 // waiter's process slot + 1
	Prev  uint32 // index + 1 of its predecessor when it queued (0: none)
	Lock  uint64 // heap offset of the lock word it queues on
}

// Node states, as QueueNode.State reports them.
const (
	NodeFree      = nodeFree
	NodeWaiting   = nodeWaiting
	NodeParked    = nodeParked
	NodeHead      = nodeHead
	NodeAbandoned = nodeAbandoned
)

// QueueNode reads node idx of the heap's node table (any process's).
func (p *Process) QueueNode(idx uint32) QueueNode {
	n := p.node(idx)
	return QueueNode{Next: atomic.LoadUint32(n.next()), State: atomic.LoadUint32(n.state()),
		Owner: atomic.LoadUint32(n.owner()), Prev: atomic.LoadUint32(n.prev()), Lock: atomic.LoadUint64(n.lock())}
}

// CheckLocks verifies, as the heap h stands when no process is changing it
// and without attaching, the node table, the lock directories and the lock
// words the queues are on. Every node's state is a node state, and every
// node in a queue names a waiter's slot that is not free (Reap frees a slot
// only once its nodes are out of every queue), a lock word inside the heap's
// pages, and a predecessor and successor inside the table; a node that names
// no lock was never queued (its process died setting it up, before it
// joined: Reap frees it). The lock word a queue is on names a tail inside the
// table and, if held, a holder: a slot in the table, or a cancelled
// extension's abandoned mark (Abandon). Every directory entry names a word in
// the pages (checkDirs). It reads each word once and returns every violation
// it finds, nodes first, each a *heap.FieldError.
func CheckLocks(h *heap.Heap) []error {
	hdr := h.Header()
	total := hdr.MaxProcs * hdr.NodesPerProc
	var errs []error
	at := func(idx uint32, field uint64) uint64 { return hdr.NodeOff + uint64(idx)*heap.NodeSize + field }
	bad := func(off uint64, field, format string, args ...any) {
		errs = append(errs, &heap.FieldError{Offset: off, Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	words := map[uint64]bool{}
	word := func(off uint64, field string) { // a lock word a queue is on
		if words[off] {
			return
		}
		words[off] = true
		w := atomic.LoadUint64(h.Uint64(off))
		if problem := wordProblem(hdr, w); problem != "" {
			bad(off, field, "%#x: %s", w, problem)
		}
	}
	for i := range total {
		n := nodeAt(h, i)
		st := atomic.LoadUint32(n.state())
		if st == nodeFree {
			continue
		}
		if st > nodeAbandoned {
			bad(at(i, nodeState), fmt.Sprintf("queue node %d state", i), "%d is no node state", st)
			continue
		}
		off := atomic.LoadUint64(n.lock())
		if off == 0 {
			continue // never queued (reapNode)
		}
		owner := fmt.Sprintf("queue node %d owner", i)
		if o := atomic.LoadUint32(n.owner()); o == 0 || o > hdr.MaxProcs {
			bad(at(i, nodeOwner), owner, "%d names no owner slot (slot + 1, at most %d)", o, hdr.MaxProcs)
		} else if live, _ := h.OwnerLiveness(o - 1); live == 0 {
			bad(at(i, nodeOwner), owner, "slot %d, which is free: a queued node's slot is freed only after the node", o-1)
		}
		for _, f := range []struct {
			at   uint64
			name string
		}{{nodeNext, "next"}, {nodePrev, "prev"}} {
			if v := atomic.LoadUint32(h.Uint32(at(i, f.at))); v > total {
				bad(at(i, f.at), fmt.Sprintf("queue node %d %s", i, f.name), "index + 1 %d, the table has %d nodes", v, total)
			}
		}
		if !lockOffValid(hdr, off) {
			bad(at(i, nodeLock), fmt.Sprintf("queue node %d lock", i), "offset %#x is not an 8-byte aligned word in [%#x, %#x)", off, hdr.PagesOff, hdr.Size)
			continue
		}
		word(off, fmt.Sprintf("lock word queued on by node %d", i))
	}
	return append(errs, checkDirs(h)...)
}

// wordProblem says what makes w no lock word of a heap with header hdr, or
// "": a tail beyond the node table, or held bits that name no holder (owner
// 0, or beyond the owner table and not Abandon's mark).
func wordProblem(hdr heap.Header, w uint64) string {
	if t, total := wordTail(w), hdr.MaxProcs*hdr.NodesPerProc; t > total {
		return fmt.Sprintf("tail %d, the table has %d nodes", t, total)
	}
	if o := wordOwner(w); w&wordLocked != 0 && (o == 0 || o > hdr.MaxProcs && o != abandonedOwner) {
		return fmt.Sprintf("held by no process (owner %d)", o)
	}
	return ""
}

// ReadsAsLock reports whether w reads as a lock word of h in a state a lock
// can be in: wordProblem finds nothing, and a free word carries no holder's
// bits (an unlock clears them with the locked bit). heap info counts a listed
// word that does not apart: its object was freed since, presumably.
func ReadsAsLock(h *heap.Heap, w uint64) bool {
	return wordProblem(h.Header(), w) == "" && (w&wordLocked != 0 || w&(wordGenMask|wordOwnerMask) == 0)
}
