package abi

// Helpers every extension may call, by number ("KF" in the upper half, so
// that none collides with a Linux helper). r1-r5 are the arguments, r0 the
// result; a call clobbers r1-r5.
const (
	// HelperWake wakes a Go waiter parked on a futex (r1: the address of the
	// 32-bit word). The bytecode lock calls it when it grants the lock to a
	// parked waiter; executors without it (the kernel) leave the waiter to
	// its parking timeout.
	HelperWake = 0x4b460001
	// HelperSliceYield gives the CPU back after the kernel extended the
	// thread's time slice (rseq_slice_yield), which bytecode cannot do
	// itself; the bytecode lock calls it after unlocking.
	HelperSliceYield = 0x4b460002
	// HelperRelax lets other goroutines run (a holder of the lock may be
	// waiting for this CPU); the bytecode lock calls it every RelaxEvery
	// spins (mcs.RelaxEvery).
	HelperRelax = 0x4b460003
	// HelperLockCheck is the bytecode lock's link to the recovery protocol
	// (package mcs, recover.go), called every mcs.RelaxEvery spins of
	// mcs_lock in kflex's executors instead of HelperRelax (it relaxes too),
	// with mcs_lock's r1-r4 (lock word address, node address, node index + 1,
	// held bits). r0: 0, spin on; 1, the node is now the queue's head (its
	// predecessor died); LockOwnerDied or LockNotRecoverable, which mcs_lock
	// returns as they are (the helper has handed the queue's head on).
	HelperLockCheck = 0x4b460004
	// HelperFault exists only in builds with the kflexfault tag (tests): the
	// bytecode lock's fault points call it with the point's number in r1
	// (mcs.FaultHelper), and it kills the process when KFLEX_FAULT names
	// that point. Other builds neither emit nor accept the call.
	HelperFault = 0x4b460005
	// HelperAlloc: r1 = size → r0 = a heap pointer (the runtime's view), or
	// 0 when it cannot allocate.
	HelperAlloc = 0x4b460010
	// HelperFree: r1 = pointer → r0 = 0, or 1 if not the allocator's.
	HelperFree = 0x4b460011
	// HelperTime: → r0 = monotonic nanoseconds.
	HelperTime = 0x4b460012
	// HelperCPU: → r0 = the executor's CPU.
	HelperCPU = 0x4b460013
	// HelperTrace: r1 = a value, written to the runtime's trace output.
	HelperTrace = 0x4b460014
)

// What mcs_lock returns in r0 (besides the kernel form's own negative
// errnos, mcs.KernelTimedOut, KernelNodeBusy and KernelStuck):
const (
	// LockAcquired: the lock is held.
	LockAcquired = 0
	// LockOwnerDied (-EOWNERDEAD): the lock is held, taken over from a holder
	// that died. Repair the data it protects, clear the word's owner-died
	// bit (ConsistentCall), then unlock; unlocked without that, the lock is
	// not recoverable.
	LockOwnerDied = -130
	// LockNotRecoverable (-ENOTRECOVERABLE): a holder that got LockOwnerDied
	// (or Go's mcs.ErrOwnerDied) unlocked without repair. The lock is not
	// held, and no lock call will take it again. mcs_unlock on it changes
	// nothing, so a program may unlock on every path after mcs_lock (as
	// kflex's verifier, which sees mcs_lock take the lock, requires).
	LockNotRecoverable = -131
)

// ConsistentCall marks the data under the lock whose address is in r1
// repaired after mcs_lock returned LockOwnerDied (Go: Mutex.Consistent): it
// clears the lock word's owner-died bit (bit 1). It clobbers r0.
const ConsistentCall = `
	mov %r0, -3
	lock and [%r1+0], %r0`

// Arg is what a helper accepts in one argument register.
type Arg uint8

const (
	// ArgAny: any value the program set.
	ArgAny Arg = iota
	// ArgNumber: a number (a heap address is one). The engine's own
	// addresses, of the context and the frame, are refused: a helper should
	// neither see nor keep memory outside the heap.
	ArgNumber
	// ArgNonNull: a number proven not 0 on every path.
	ArgNonNull
)

// Ret is what a helper returns in r0.
type Ret uint8

const (
	// RetNumber: a number the program knows nothing more of.
	RetNumber Ret = iota
	// RetHeapOrNull: an address in the heap (the engine's view) or 0.
	RetHeapOrNull
)

// Prototype is a helper's signature: its name (as logs show it), the
// arguments it reads from r1 upwards, and what it returns.
type Prototype struct {
	Name string
	Args []Arg
	Ret  Ret
}

// Prototypes are the helpers an extension may call. Every argument is a
// number (each helper handles 0).
func Prototypes() map[int32]Prototype {
	number := []Arg{ArgNumber}
	protos := map[int32]Prototype{
		HelperAlloc:      {Name: "alloc", Args: number, Ret: RetHeapOrNull},
		HelperFree:       {Name: "free", Args: number},
		HelperTime:       {Name: "time"},
		HelperCPU:        {Name: "cpu"},
		HelperTrace:      {Name: "trace", Args: number},
		HelperWake:       {Name: "wake", Args: number},
		HelperSliceYield: {Name: "slice_yield"},
		HelperRelax:      {Name: "relax"},
		HelperLockCheck:  {Name: "lock_check", Args: []Arg{ArgNumber, ArgNumber, ArgNumber, ArgNumber}},
	}
	if faultHelper {
		protos[HelperFault] = Prototype{Name: "fault", Args: number}
	}
	return protos
}
