package mcs

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/sys/futex"
)

// The helpers the bytecode lock calls (abi's numbers): HelperWake wakes a Go
// waiter parked on a futex (r1: the address of the 32-bit word; executors
// that have no such helper, the kernel, leave the waiter to its parking
// timeout); HelperSliceYield gives the CPU back after unlocking when the
// kernel extended the thread's time slice (rseq_slice_yield, which bytecode
// cannot do itself); HelperLockCheck is called every RelaxEvery spins: it
// gives the CPU to others (in kflex's runtime, a goroutine holding the lock
// may be waiting for it), as HelperRelax does, and runs the recovery
// protocol's checks for the waiting node (recover.go; LockCheck is its
// implementation), so that the logic exists once, in Go.
const (
	HelperWake       = abi.HelperWake
	HelperSliceYield = abi.HelperSliceYield
	HelperRelax      = abi.HelperRelax
	HelperLockCheck  = abi.HelperLockCheck
	RelaxEvery       = 256
)

// What mcs_lock returns in r0, in either form (abi's; the kernel form also
// returns KernelTimedOut, KernelNodeBusy and KernelStuck): LockAcquired;
// LockOwnerDied, held, taken over from a dead holder (ErrOwnerDied's
// counterpart: repair, then abi.ConsistentCall, then mcs_unlock);
// LockNotRecoverable, not held (ErrNotRecoverable's). Only the runtime form
// takes a lock over (through HelperLockCheck); the kernel form waits for a Go
// party to do it, timing out meanwhile.
const (
	LockAcquired       = abi.LockAcquired
	LockOwnerDied      = abi.LockOwnerDied
	LockNotRecoverable = abi.LockNotRecoverable
)

// target says where bytecode lock code will run, which decides what it may
// call and how it waits.
type target int

const (
	// forRuntime: kflex's executors (interpreter, JIT). Spins are
	// cancellation points that call HelperLockCheck; parked Go waiters are woken
	// through HelperWake; the executor thread's rseq slice request is honoured.
	forRuntime target = iota
	// forKernel: Linux, on a BPF arena. There are no kflex helpers: every wait
	// is bounded by a deadline (bpf_ktime_get_ns, helper 5) and by may_goto,
	// and ends with an error instead of a hang (see KernelLock).
	forKernel
)

// KernelSpinTimeout is how long the kernel form of the lock waits in the
// queue before it gives up. It is short: a kernel thread spinning in a BPF
// program is not preempted for the user-space holder it waits for (unless the
// kernel is fully preemptible), so on a machine with as many kernel spinners as
// CPUs a long spin starves the holder. Measured on 2 CPUs
// (TestMixedContentionKernel): a 20 ms deadline took 11-21 s with thousands of
// timeouts; 1 ms takes 0.2-4 s. The caller retries from user space, where it
// can be preempted.
const KernelSpinTimeout = 1 * time.Millisecond

// Errors the kernel form of mcs_lock returns in r0 (negated errno values, as
// kernel code reports them).
const (
	// KernelTimedOut: the deadline passed while queued; the waiter left the
	// queue (its node is marked abandoned and will be freed by whoever would
	// have granted it) and does not hold the lock.
	KernelTimedOut = -110 // ETIMEDOUT
	// KernelNodeBusy: the node is still abandoned in a queue from an earlier
	// timeout; try again later (or with another node).
	KernelNodeBusy = -16 // EBUSY
	// KernelStuck: may_goto's bound (about 250 ms in Linux) ran out while the
	// lock was held and a successor had not linked itself (it may have died
	// between its tail swap and its link), or a lock word kept changing. The
	// lock is held and its queue is owed a hand-off: Process.Unstick does it
	// from Go, with the recovery protocol, and releases the lock.
	KernelStuck = -35 // EDEADLK
	// KernelStuckUnheld: as KernelStuck, while the waiter was leaving the
	// queue (after KernelTimedOut's deadline, or on a lock not recoverable):
	// the lock is not held; Process.Unstick hands the head position on.
	KernelStuckUnheld = -37 // ENOLCK
)

// BytecodeLock is the MCS lock of word.go and node.go as eBPF subprograms in
// bytecode.Assemble syntax, to be appended to a program that calls them:
//
//	mcs_lock:   r1 = lock word address, r2 = this executor's node address,
//	            r3 = that node's index + 1, r4 = the held bits (Held), r5 = the
//	            node table's address. Returns r0 = LockAcquired (0) or
//	            LockOwnerDied with the lock held, LockNotRecoverable without.
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
// through HelperWake when it is parked, skipping it when it abandoned its
// place). Bytecode never parks: its waits are spin loops, which are
// cancellation points in kflex's executors, and which call HelperLockCheck
// every RelaxEvery rounds. They use r0-r9 and keep the caller's r6-r9, as any eBPF
// call does.
var BytecodeLock = lockText(forRuntime, 0)

// KernelLock is BytecodeLock for Linux on a BPF arena: the same protocol and
// layout, built from the same template. The caller passes arena pointers (cast
// with addr_space_cast). The kernel cannot wake a parked Go waiter: granting
// one sets the head-sleeping bit so that others may use the lock until the
// waiter's timed park ends. Each wait is bounded: on timeout a queued waiter
// abandons its node (KernelTimedOut), and a head that times out passes the
// head position on, or empties the queue, before leaving.
var KernelLock = KernelLockWithin(KernelSpinTimeout)

// KernelLockWithin is KernelLock with waits bounded by d instead of
// KernelSpinTimeout. Linux's may_goto ends any wait after about 250 ms
// whatever d says (measured: a 300 ms deadline returned after 254-269 ms).
func KernelLockWithin(d time.Duration) string { return lockText(forKernel, d) }

// lockText builds the lock's subprograms for target t (waits bounded by d, in
// the kernel form) from the one definition in lockTemplate.
func lockText(t target, d time.Duration) string {
	var b strings.Builder
	keep := true
	for line := range strings.Lines(lockTemplate) {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "@only":
			keep = f[1] == map[target]string{forRuntime: "runtime", forKernel: "kernel"}[t]
		case len(f) == 1 && f[0] == "@end":
			keep = true
		case !keep:
		case len(f) > 0 && f[0] == "@spin" && t == forRuntime:
			// Every RelaxEvery rounds, HelperLockCheck: spin on (0), go on as
			// the head (1), or return what it says (it handed the head on).
			fmt.Fprintf(&b, "\tadd %%r7, 1\n\tmov %%r6, %%r7\n\tand %%r6, %d\n\tjne %%r6, 0, %s\n%s_check:\n%s\n"+
				"\tjeq %%r0, 0, %s\n\tjeq %%r0, 1, mcs_lock_head\n\tmov %%r4, %%r0\n\tja mcs_lock_done\n",
				RelaxEvery-1, f[1], f[1], saveArgs(fmt.Sprintf("\tcall %#x", HelperLockCheck)), f[1])
		case len(f) > 0 && f[0] == "@spin":
			fmt.Fprintf(&b, "%s\n\tldxdw %%r6, [%%r10-48]\n\tjgt %%r0, %%r6, %s\n\tmay_goto %s\n\tja %s\n",
				saveArgs("\tcall 5"), f[2], f[2], f[1])
		case len(f) >= 2 && f[0] == "@fault":
			// A fault point (fault.go): only in the runtime form of a
			// kflexfault build whose KFLEX_FAULT names it, so that no other
			// process's lock calls HelperFault, which only the runtime offers.
			if id := slices.Index(bytecodeFaults, f[1]); t == forRuntime && id >= 0 && f[1] == faultArmed() {
				regs := []int{1, 2, 3, 4, 5}
				if len(f) > 2 {
					regs = nil
					for _, r := range f[2:] {
						regs = append(regs, int(r[len(r)-1]-'0'))
					}
				}
				fmt.Fprintf(&b, "%s\n", saveRegs(fmt.Sprintf("\tmov %%r1, %d\n\tcall %#x", id+1, abi.HelperFault), regs))
			}
		case len(f) > 0 && f[0] == "@link" && t == forRuntime:
			// The holder waits for its successor to link itself. Every
			// RelaxEvery rounds HelperLockCheck (held bits 0: the holder's call)
			// finds a successor that died before linking, by its prev, and
			// links it; then the loop looks again.
			fmt.Fprintf(&b, "\tadd %%r7, 1\n\tmov %%r6, %%r7\n\tand %%r6, %d\n\tjne %%r6, 0, %s\n%s\n\tja %s\n",
				RelaxEvery-1, f[1], saveArgs(fmt.Sprintf("\tmov %%r4, 0\n\tcall %#x", HelperLockCheck)), f[1])
		case len(f) > 0 && f[0] == "@link":
			fmt.Fprintf(&b, "\tmay_goto %s\n\tja %s\n", f[2], f[1])
		case len(f) > 0 && f[0] == "@skiplink" && t == forRuntime:
			// A granter skipping node r6 (r7) waits for whoever is behind it
			// to link itself. Every RelaxEvery rounds (counted at [r10-56])
			// HelperLockCheck, held bits 0, for that node finds a successor
			// of its that died before linking, by its prev, and links it, as
			// @link does for the holder's own node.
			fmt.Fprintf(&b, "\tldxdw %%r8, [%%r10-56]\n\tadd %%r8, 1\n\tstxdw [%%r10-56], %%r8\n\tand %%r8, %d\n\tjne %%r8, 0, %s\n%s\n\tja %s\n",
				RelaxEvery-1, f[1], saveArgs(fmt.Sprintf("\tmov %%r2, %%r7\n\tmov %%r3, %%r6\n\tmov %%r4, 0\n\tcall %#x", HelperLockCheck)), f[1])
		case len(f) > 0 && f[0] == "@skiplink":
			fmt.Fprintf(&b, "\tmay_goto %s\n\tja %s\n", f[2], f[1])
		case len(f) > 0 && f[0] == "@retry" && t == forRuntime:
			fmt.Fprintf(&b, "\tja %s\n", f[1])
		case len(f) > 0 && f[0] == "@retry":
			fmt.Fprintf(&b, "\tmay_goto %s\n\tja %s\n", f[2], f[1])
		case len(f) > 0 && f[0] == "@deadline":
			fmt.Fprintf(&b, "%s\n\tadd %%r0, %d\n\tstxdw [%%r10-48], %%r0\n", saveArgs("\tcall 5"), min(d.Nanoseconds(), 1<<31-1))
		default:
			b.WriteString(helperNames.Replace(line))
		}
	}
	return b.String()
}

// helperNames puts the helpers' numbers in the template's calls.
var helperNames = strings.NewReplacer("@wake", fmt.Sprintf("%#x", HelperWake), "@slice_yield", fmt.Sprintf("%#x", HelperSliceYield))

// saveArgs wraps a helper call made inside mcs_lock, keeping mcs_lock's
// arguments r1-r5 (which a call clobbers) in its stack frame.
func saveArgs(call string) string { return saveRegs(call, []int{1, 2, 3, 4, 5}) }

// saveRegs wraps call in the save and restore of registers regs (of r1-r5),
// each in its slot of saveArgs.
func saveRegs(call string, regs []int) string {
	var b strings.Builder
	for _, r := range regs {
		fmt.Fprintf(&b, "\tstxdw [%%r10-%d], %%r%d\n", 8*r, r)
	}
	b.WriteString(call + "\n")
	for _, r := range regs {
		fmt.Fprintf(&b, "\tldxdw %%r%d, [%%r10-%d]\n", r, 8*r)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// lockTemplate is the lock in both forms. "@only runtime" ... "@end" and
// "@only kernel" ... "@end" enclose lines of one form; "@spin LOOP TIMEOUT"
// ends a wait loop (Runtime: HelperLockCheck every RelaxEvery rounds; Kernel:
// check the deadline and may_goto, to TIMEOUT when either runs out); "@retry
// LOOP STUCK" goes back to a compare-and-swap loop (Kernel: bounded by
// may_goto); "@link LOOP STUCK" ends the holder's wait for its successor's
// link (Runtime: HelperLockCheck with held bits 0 every RelaxEvery rounds,
// which links a successor that died before linking; Kernel: as @retry);
// "@skiplink LOOP STUCK" ends a granter's wait for the link behind a node it
// skips (r6, r7), the same way for that node (Runtime: its counter at
// [r10-56], which the runtime form's slow path zeroes);
// "@deadline" sets the kernel form's deadline at [r10-48]; "@fault POINT" is
// a fault point (HelperFault, in the runtime form of a kflexfault build whose
// KFLEX_FAULT names it), saving r1-r5 around the call, or the registers
// listed after POINT ("@fault granted r2 r4"); "call
// @wake" and "call @slice_yield" call HelperWake and HelperSliceYield.
//
// Registers in mcs_lock after the fast path: r6-r9 and r0 are scratch; r4,
// once the lock is taken, is the result to return (0, or KernelTimedOut for a
// head that leaves); grants use r6 = the successor's index + 1 and r7 = its
// node. A head that leaves skips itself as a granter skips an abandoned node:
// it ends the queue if it is the tail, or grants its successor. A skipper
// moves its own node's next on to the node after the one it skips before it
// frees that one, as the Go grant does (Reap follows it there). In the
// runtime form, a skipper waiting for the link behind a node that is free
// (a waiter behind it made itself the head past it, and freed it: the Go
// grant's follow) is done: the head position is taken.
const lockTemplate = `
mcs_lock:
@only runtime
	ldxdw %r0, [%r2+24]
	jeq %r0, 0, mcs_lock_fast
	stb [%r0+0], 1
@end
mcs_lock_fast:
	mov %r0, 0
	lock cmpxchg [%r1+0], %r4
	jne %r0, 0, mcs_lock_slow
	exit
mcs_lock_slow:
@only runtime
	stdw [%r10-56], 0
@end
@only kernel
	ldxw %r0, [%r2+4]
	jeq %r0, 0, mcs_lock_node_free
	mov %r0, -16
	exit
mcs_lock_node_free:
@deadline
@end
	mov %r7, 0
	stw [%r2+0], 0
	stw [%r2+4], 1
	mov %r6, %r4
	rsh %r6, 16
	stxw [%r2+8], %r6
	mov %r0, %r1
	ldxdw %r6, [%r2+32]
	and %r0, %r6
	stxdw [%r2+16], %r0
mcs_lock_swap:
	ldxdw %r9, [%r1+0]
	mov %r8, %r9
	rsh %r8, 32
	stxw [%r2+12], %r8
	mov %r8, %r9
	lsh %r8, 32
	rsh %r8, 32
	mov %r6, %r3
	lsh %r6, 32
	or %r8, %r6
	mov %r0, %r9
	lock cmpxchg [%r1+0], %r8
	jeq %r0, %r9, mcs_lock_queued
@retry mcs_lock_swap mcs_lock_unqueued
mcs_lock_queued:
	rsh %r9, 32
	jeq %r9, 0, mcs_lock_head
@fault swapped
	sub %r9, 1
	lsh %r9, 6
	mov %r6, %r5
	add %r6, %r9
	stxw [%r6+0], %r3
@fault linked
mcs_lock_wait:
	ldxw %r0, [%r2+4]
	jeq %r0, 3, mcs_lock_head
@spin mcs_lock_wait mcs_lock_abandon
mcs_lock_head:
@fault head
	ldxdw %r9, [%r1+0]
	mov %r6, %r9
	and %r6, 3
@only runtime
	jeq %r6, 2, mcs_lock_head_check
@end
@only kernel
	jeq %r6, 2, mcs_lock_unrecoverable
@end
	jeq %r6, 0, mcs_lock_free
@spin mcs_lock_head mcs_lock_leave
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
	jeq %r0, %r9, mcs_lock_taken
@retry mcs_lock_head mcs_lock_leave
mcs_lock_taken:
@fault taken
	mov %r4, 0
	rsh %r9, 32
	jeq %r9, %r3, mcs_lock_done
mcs_lock_next:
	ldxw %r6, [%r2+0]
	jne %r6, 0, mcs_lock_grant
@link mcs_lock_next mcs_lock_stuck
mcs_lock_grant:
	mov %r8, %r6
	sub %r8, 1
	lsh %r8, 6
	mov %r7, %r5
	add %r7, %r8
	mov %r0, 1
	mov %r8, 3
	lock cmpxchg32 [%r7+4], %r8
	jeq %r0, 1, mcs_lock_done
	jeq %r0, 3, mcs_lock_done
	jeq %r0, 4, mcs_lock_skip
	jeq %r0, 0, mcs_lock_skip
@only runtime
	mov %r8, 12
@end
@only kernel
	mov %r8, 4
@end
	lock or [%r1+0], %r8
	mov %r0, 2
	mov %r8, 3
	lock cmpxchg32 [%r7+4], %r8
	jeq %r0, 2, mcs_lock_granted
@retry mcs_lock_grant mcs_lock_stuck
mcs_lock_granted:
@only runtime
	mov %r8, %r2
	mov %r9, %r4
	mov %r1, %r7
	add %r1, 4
	call @wake
	mov %r2, %r8
	mov %r4, %r9
@end
	ja mcs_lock_done
mcs_lock_skip:
	ldxdw %r9, [%r1+0]
	mov %r8, %r9
	rsh %r8, 32
	jne %r8, %r6, mcs_lock_skip_next
	mov %r8, %r9
	lsh %r8, 32
	rsh %r8, 32
	mov %r0, %r9
	lock cmpxchg [%r1+0], %r8
	jne %r0, %r9, mcs_lock_skip_again
	stw [%r7+4], 0
	ja mcs_lock_done
mcs_lock_skip_next:
	ldxw %r8, [%r7+0]
	jeq %r8, 0, mcs_lock_skip_link
	stxw [%r2+0], %r8
	stw [%r7+4], 0
	mov %r6, %r8
@retry mcs_lock_grant mcs_lock_stuck
mcs_lock_skip_link:
@only runtime
	ldxw %r8, [%r7+4]
	jeq %r8, 0, mcs_lock_done
@end
@skiplink mcs_lock_skip mcs_lock_stuck
mcs_lock_skip_again:
@retry mcs_lock_skip mcs_lock_stuck
mcs_lock_done:
@fault granted r2 r4
	stw [%r2+4], 0
	mov %r0, %r4
	exit
@only kernel
mcs_lock_unqueued:
	stw [%r2+4], 0
	mov %r0, -110
	exit
mcs_lock_abandon:
	mov %r0, 1
	mov %r8, 4
	lock cmpxchg32 [%r2+4], %r8
	jne %r0, 1, mcs_lock_leave
	mov %r0, -110
	exit
mcs_lock_unrecoverable:
	mov %r4, -131
	ja mcs_lock_leave_with
mcs_lock_leave:
	mov %r4, -110
mcs_lock_leave_with:
	mov %r6, %r3
	mov %r7, %r2
	ja mcs_lock_skip
mcs_lock_stuck:
	mov %r0, -35
	jeq %r4, 0, mcs_lock_stuck_held
	mov %r0, -37
mcs_lock_stuck_held:
	exit
@end

mcs_unlock:
	mov %r8, %r3
	mov %r0, %r2
	mov %r3, 0
	lock cmpxchg [%r1+0], %r3
	jeq %r0, %r2, mcs_unlock_slice
	lddw %r4, 0xffffffff0000000e
mcs_unlock_slow:
	ldxdw %r6, [%r1+0]
	mov %r3, %r6
	and %r3, %r4
@only runtime
	mov %r5, %r6
	and %r5, 12
	jne %r5, 4, mcs_unlock_cas
	or %r3, 8
@end
mcs_unlock_cas:
	mov %r0, %r6
	lock cmpxchg [%r1+0], %r3
	jeq %r0, %r6, mcs_unlock_released
@retry mcs_unlock_slow mcs_unlock_stuck
mcs_unlock_released:
@only runtime
	and %r6, 12
	jne %r6, 4, mcs_unlock_slice
	call @wake
@end
mcs_unlock_slice:
@only runtime
	ldxdw %r6, [%r8+24]
	jeq %r6, 0, mcs_unlock_done
	stb [%r6+0], 0
	ldxb %r7, [%r6+1]
	jeq %r7, 0, mcs_unlock_done
	call @slice_yield
@end
mcs_unlock_done:
	mov %r0, 0
	exit
@only kernel
mcs_unlock_stuck:
	mov %r0, -35
	exit
@end
`

// Held is the held bits an executor of process slot slot, attached as
// generation gen of it, passes to mcs_lock and mcs_unlock (Process.Held).
func Held(slot, gen uint32) uint64 { return held(slot, gen) }

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
func (p *Process) TakeNode() Node { return p.lend(<-p.nodes) }

// TryTakeNode is TakeNode when a node is free, without waiting for one.
func (p *Process) TryTakeNode() (Node, bool) {
	select {
	case idx := <-p.nodes:
		return p.lend(idx), true
	default:
		return Node{}, false
	}
}

// lend prepares node idx for a bytecode executor.
func (p *Process) lend(idx uint32) Node {
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

// LockOnceProgram is an extension showing how to handle mcs_lock's codes:
// it takes the lock whose address is the first word of its context (as an
// extension does through abi.LockCall) once; if the holder died
// (LockOwnerDied), it would repair the data and then marks it consistent
// (abi.ConsistentCall); it unlocks on every path (after LockNotRecoverable
// mcs_unlock changes nothing, and kflex's verifier wants every path to
// unlock) and returns mcs_lock's r0. The recovery tests and `kflex bench
// recovery` use it as their bytecode waiter.
var LockOnceProgram = `
	mov %r9, %r1
	ldxdw %r1, [%r9+0]` + abi.LockCall + `
	mov %r6, %r0
	jne %r6, ` + fmt.Sprint(LockOwnerDied) + `, release
	ldxdw %r1, [%r9+0]` + abi.ConsistentCall + `
release:
	ldxdw %r1, [%r9+0]` + abi.UnlockCall + `
	mov %r0, %r6
	exit
` + BytecodeLock

// LockOnly and UnlockOnly cut a lock text (BytecodeLock, KernelLock) down to
// one of its two subprograms, for a program that calls only that one: the
// kernel rejects code that nothing reaches.
func LockOnly(text string) string {
	lock, _, _ := strings.Cut(text, "\nmcs_unlock:")
	return lock
}

// UnlockOnly: see LockOnly.
func UnlockOnly(text string) string {
	_, unlock, _ := strings.Cut(text, "\nmcs_unlock:")
	return "\nmcs_unlock:" + unlock
}
