// Package mcs is kflex's lock: an MCS queue lock whose word and queue nodes live
// in the shared heap, so that Go code in any attached process, extensions in
// kflex's interpreter and JIT, and (through a BPF arena) kernel programs take
// the same lock.
//
// Layer 2 (mcs, verifier): the lock stands on the heap and rseq, and
// applications link it without any engine or cilium/ebpf.
//
// # The contract every executor follows
//
// word.go gives the 64-bit lock word bit by bit (locked, owner died, head
// sleeping, wake pending, the holder's owner slot, the tail as node index + 1);
// node.go the 64-byte queue node (next, state, owner, lock, slice request);
// owner.go the owner table and the liveness word the kernel marks when a
// process dies. lock.go is the Go side; bytecode.go the same protocol as eBPF
// subprograms, built from one template in two forms: BytecodeLock for kflex's
// executors and KernelLock for Linux on a BPF arena. They are tested together
// on one word in TestBytecodeLockMixed, and pair by pair, state by state, in
// the kernel package's TestLayoutContract (which can reach every executor,
// Linux included).
//
// # The protocol in short
//
// Locking is one CAS from zero to the held bits. Otherwise the waiter takes a
// node of its process, swaps itself in as the tail, links itself behind its
// predecessor and waits until that predecessor, having taken the lock, makes it
// the head; the head waits for the locked bit to clear and takes the lock, and
// then hands the head position to its successor. Unlocking is one CAS from the
// held bits to zero, or, with a queue, clearing the locked bit and owner.
// Go waiters spin briefly and then sleep on a shared futex with a timeout;
// bytecode waiters spin (their loops are cancellation points and relax through
// a helper). Kernel waiters spin against a deadline and, when it passes, leave
// the queue: a waiting node is marked abandoned, which every granter skips and
// frees; a head passes its position on. An extension cancelled while it waits
// leaves its node to a stand-in, a goroutine of its runtime's that waits in it
// and passes the head position on when it comes (Leave). While the head is
// off CPU a newcomer
// may take a free lock ahead of the queue (RATIONALE.md says why); queued
// waiters are never reordered.
//
// # Death
//
// A process may die at any step. The kernel marks its liveness word
// (owner.go); the lock word names the holder's slot and generation, each node
// its predecessor; whoever waits for the dead party repairs, by
// compare-and-swap (recover.go): the head (or a newcomer) takes over a lock
// whose holder died, and Lock returns ErrOwnerDied, as a robust mutex returns
// EOWNERDEAD; Consistent accepts the data, and an Unlock without it makes the
// lock not recoverable (ErrNotRecoverable for every later Lock). Dead waiters
// are skipped by their granter or replaced by their successor; Reap (also run
// by Attach when the owner table is full) gives their slots back.
//
// Extensions get the same outcomes from mcs_lock in r0 (abi's codes, listed
// beside the helpers): LockAcquired (0); LockOwnerDied (-130), held, to be
// repaired and marked consistent with abi.ConsistentCall before mcs_unlock;
// LockNotRecoverable (-131), not held (mcs_unlock then changes nothing);
// LockOnceProgram shows the handling. The runtime form reaches the Go
// protocol through HelperLockCheck (Process.LockCheck); the kernel form never
// takes a lock over: it times out until a Go party has, and a hand-off it
// could not finish (KernelStuck, KernelStuckUnheld) is finished by
// Process.Unstick.
package mcs
