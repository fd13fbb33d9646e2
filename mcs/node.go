package mcs

// A queue node is 64 bytes (a cache line, so waiters spinning on their own nodes
// do not share lines) in the heap's node table. Process slot s owns nodes
// [s*NodesPerProc, (s+1)*NodesPerProc); a waiter uses one of its process's nodes
// only while it is queued, never while it holds the lock, so NodesPerProc bounds
// the goroutines of one process waiting at once, not the locks held.
//
//	offset 0   next   u32  index + 1 of the successor (0 until it links itself)
//	offset 4   state  u32  futex word, one of the node states below
//	offset 8   owner  u32  process slot + 1 of the waiter
//	offset 12  prev   u32  index + 1 of the predecessor: the tail the waiter's
//	                       tail swap replaced, written before the swap (0: the
//	                       queue was empty, so the node was the head at once)
//	offset 16  lock   u64  heap offset of the lock word it queues on
//	offset 24  slice  u64  bytecode executors: address of their thread's rseq
//	                       slice-request byte, or 0 (see BytecodeLock)
//	offset 32  mask   u64  bytecode executors: the heap's size - 1, set by
//	                       TakeNode, with which BytecodeLock turns the lock's
//	                       address (in its view) into the offset above
const (
	nodeNext     = 0
	nodeState    = 4
	nodeOwner    = 8
	nodePrev     = 12
	nodeLock     = 16
	nodeSliceReq = 24
	nodeMask     = 32
)

// Node states. A node goes waiting -> (parked ->) head -> free, or, for a
// waiter that gives up (the kernel form's timeout) or dies, waiting (or
// parked) -> abandoned -> free (by its granter, or by its successor).
// Another process changes a node's state only by compare-and-swap, so that of
// a granter and a successor repairing around a dead node exactly one wins:
//
//   - a granter: waiting or parked -> head (the grant), or, the waiter being
//     dead, -> abandoned; abandoned -> free when it skips the node;
//   - a successor whose predecessor is dead: head (or waiting with prev 0, a
//     head that never said so) -> free, taking the head position itself;
//     waiting or parked -> abandoned, queueing behind the predecessor's
//     predecessor instead.
//
// A node's owner moves it free -> waiting, waiting <-> parked, and, once it
// holds the lock or leaves the queue, -> free; a kernel waiter whose deadline
// passes, and a cancelled executor's stand-in stopped by Detach, waiting or
// parked -> abandoned.
const (
	nodeFree      = 0 // not queued
	nodeWaiting   = 1 // queued behind a predecessor, running (spinning)
	nodeParked    = 2 // queued and asleep on the state word
	nodeHead      = 3 // the predecessor took the lock: this waiter now watches the lock word
	nodeAbandoned = 4 // the waiter gave up or died; grants skip it and free it
)
