package mcs

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/futex"
)

// HelperWake is the helper number the bytecode lock calls to wake a Go waiter
// parked on a futex (r1: the address of the 32-bit word). Executors that have
// no such helper (the kernel) leave the waiter to its parking timeout.
const HelperWake = 0x4b460001 // "KF" 0001

// HelperSliceYield is the helper the bytecode lock calls after unlocking when
// the kernel extended its thread's time slice: it must give the CPU back
// (rseq_slice_yield), which bytecode cannot do itself.
const HelperSliceYield = 0x4b460002

// HelperRelax is called by the bytecode lock every RelaxEvery spins: the
// executor gives its CPU to others (in kflex's runtime, a goroutine holding the
// lock may be waiting for it). An executor without it spins on.
const (
	HelperRelax = 0x4b460003
	RelaxEvery  = 256
)

// BytecodeLock is the MCS lock of word.go and node.go as eBPF subprograms in
// bytecode.Assemble syntax, to be appended to a program that calls them:
//
//	mcs_lock:   r1 = lock word address, r2 = this executor's node address,
//	            r3 = that node's index + 1, r4 = the held bits (Held), r5 = the
//	            node table's address. Returns r0 = 0 with the lock held.
//	mcs_unlock: r1 = lock word address, r2 = the held bits, r3 = the node
//	            address. Returns r0 = 0.
//
// A queued node records the lock's heap offset: the address masked with the
// node's word at offset 32 (nodeMask, which TakeNode sets). The node's word at
// offset 24 (nodeSliceReq) may hold the address of the executor thread's rseq
// slice-request byte: mcs_lock then sets it before taking the lock and
// mcs_unlock clears it after releasing, calling HelperSliceYield if the kernel
// granted an extension meanwhile. The Go lock's equivalent is LockExtended.
//
// Addresses are in the executor's view. Both follow the Go side step for step:
// the same fast paths, the tail swap, the link to the predecessor, the head
// waiting for the word's locked bit, the grant to the successor (waking it
// through HelperWake when it is parked). Bytecode never parks: its waits are
// spin loops, which are cancellation points in kflex's executors, and which
// call HelperRelax every RelaxEvery rounds. They use r0-r9 and keep the
// caller's r6-r9, as any eBPF call does.
const BytecodeLock = `
mcs_lock:
	ldxdw %r0, [%r2+24]
	jeq %r0, 0, mcs_lock_fast
	stb [%r0+0], 1
mcs_lock_fast:
	mov %r0, 0
	lock cmpxchg [%r1+0], %r4
	jne %r0, 0, mcs_lock_slow
	exit
mcs_lock_slow:
	mov %r7, 0
	stw [%r2+0], 0
	stw [%r2+4], 1
	mov %r6, %r4
	rsh %r6, 16
	stxw [%r2+8], %r6
	ldxdw %r0, [%r2+32]
	and %r0, %r1
	stxdw [%r2+16], %r0
mcs_lock_swap:
	ldxdw %r9, [%r1+0]
	mov %r8, %r9
	lsh %r8, 32
	rsh %r8, 32
	mov %r6, %r3
	lsh %r6, 32
	or %r8, %r6
	mov %r0, %r9
	lock cmpxchg [%r1+0], %r8
	jne %r0, %r9, mcs_lock_swap
	rsh %r9, 32
	jeq %r9, 0, mcs_lock_head
	sub %r9, 1
	lsh %r9, 6
	add %r9, %r5
	stxw [%r9+0], %r3
mcs_lock_wait:
	ldxw %r0, [%r2+4]
	jeq %r0, 3, mcs_lock_head
	add %r7, 1
	mov %r6, %r7
	and %r6, 255
	jne %r6, 0, mcs_lock_wait
` + relax + `
	ja mcs_lock_wait
mcs_lock_head:
	ldxdw %r9, [%r1+0]
	mov %r6, %r9
	and %r6, 1
	jeq %r6, 0, mcs_lock_free
	add %r7, 1
	mov %r6, %r7
	and %r6, 255
	jne %r6, 0, mcs_lock_head
` + relax + `
	ja mcs_lock_head
mcs_lock_free:
	mov %r8, %r9
	and %r8, -13
	or %r8, %r4
	mov %r6, %r9
	rsh %r6, 32
	jne %r6, %r3, mcs_lock_take
	lsh %r8, 32
	rsh %r8, 32
mcs_lock_take:
	mov %r0, %r9
	lock cmpxchg [%r1+0], %r8
	jne %r0, %r9, mcs_lock_head
	rsh %r9, 32
	jeq %r9, %r3, mcs_lock_done
mcs_lock_next:
	ldxw %r6, [%r2+0]
	jeq %r6, 0, mcs_lock_next
	sub %r6, 1
	lsh %r6, 6
	add %r6, %r5
	mov %r0, 1
	mov %r7, 3
	lock cmpxchg32 [%r6+4], %r7
	jeq %r0, 1, mcs_lock_done
	mov %r7, 12
	lock or [%r1+0], %r7
	stw [%r6+4], 3
	mov %r7, %r2
	mov %r1, %r6
	add %r1, 4
	call 0x4b460001
	mov %r2, %r7
mcs_lock_done:
	stw [%r2+4], 0
	mov %r0, 0
	exit

mcs_unlock:
	mov %r8, %r3
	mov %r0, %r2
	mov %r3, 0
	lock cmpxchg [%r1+0], %r3
	jeq %r0, %r2, mcs_unlock_slice
	lddw %r4, 0xffffffff0000fffe
mcs_unlock_slow:
	ldxdw %r6, [%r1+0]
	mov %r3, %r6
	and %r3, %r4
	mov %r5, %r6
	and %r5, 12
	jne %r5, 4, mcs_unlock_cas
	or %r3, 8
mcs_unlock_cas:
	mov %r0, %r6
	lock cmpxchg [%r1+0], %r3
	jne %r0, %r6, mcs_unlock_slow
	and %r6, 12
	jne %r6, 4, mcs_unlock_slice
	call 0x4b460001
mcs_unlock_slice:
	ldxdw %r6, [%r8+24]
	jeq %r6, 0, mcs_unlock_done
	stb [%r6+0], 0
	ldxb %r7, [%r6+1]
	jeq %r7, 0, mcs_unlock_done
	call 0x4b460002
mcs_unlock_done:
	mov %r0, 0
	exit
`

// relax calls HelperRelax from a spin loop of mcs_lock, keeping mcs_lock's
// arguments r1-r5 (which a call clobbers) in its stack frame.
const relax = `
	stxdw [%r10-8], %r1
	stxdw [%r10-16], %r2
	stxdw [%r10-24], %r3
	stxdw [%r10-32], %r4
	stxdw [%r10-40], %r5
	call 0x4b460003
	ldxdw %r1, [%r10-8]
	ldxdw %r2, [%r10-16]
	ldxdw %r3, [%r10-24]
	ldxdw %r4, [%r10-32]
	ldxdw %r5, [%r10-40]`

// Held is the held bits an executor of process slot slot passes to mcs_lock
// and mcs_unlock.
func Held(slot uint32) uint64 { return held(slot) }

// Node is one of a process's queue nodes lent to a bytecode executor.
type Node struct {
	Index uint32 // node table index: the tail field holds Index+1
	Off   uint64 // heap offset of the node
}

// NodeSliceReq is the offset in a node of the executor's rseq slice-request
// byte address (0: the executor has none).
const NodeSliceReq = nodeSliceReq

// TakeNode lends one of this process's queue nodes to a bytecode executor
// (one per executing thread) until GiveNode.
func (p *Process) TakeNode() Node {
	idx := <-p.nodes
	atomic.StoreUint64((*uint64)(unsafe.Add(p.node(idx).p, nodeSliceReq)), 0)
	atomic.StoreUint64((*uint64)(unsafe.Add(p.node(idx).p, nodeMask)), p.h.Mask())
	return Node{Index: idx, Off: p.h.Header().NodeOff + uint64(idx)*heap.NodeSize}
}

// GiveNode returns a node lent by TakeNode.
func (p *Process) GiveNode(n Node) {
	if atomic.LoadUint32(p.node(n.Index).state()) != nodeFree {
		panic(fmt.Sprintf("mcs: node %d returned while queued", n.Index))
	}
	p.nodes <- n.Index
}

// WakeHelper is HelperWake's implementation: a futex wake of one waiter on the
// 32-bit word at addr, an address in this process.
func WakeHelper(addr uint64) error {
	_, err := futex.Wake((*uint32)(unsafe.Add(nil, uintptr(addr))), 1)
	return err
}
