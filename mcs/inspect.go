package mcs

import "sync/atomic"

// LockState is a lock word decoded, as diagnostics and the cross-executor
// layout tests read it.
type LockState struct {
	Locked, OwnerDied, HeadSleeping, WakePending bool
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
