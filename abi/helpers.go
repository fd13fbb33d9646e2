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
	return map[int32]Prototype{
		HelperAlloc:      {Name: "alloc", Args: number, Ret: RetHeapOrNull},
		HelperFree:       {Name: "free", Args: number},
		HelperTime:       {Name: "time"},
		HelperCPU:        {Name: "cpu"},
		HelperTrace:      {Name: "trace", Args: number},
		HelperWake:       {Name: "wake", Args: number},
		HelperSliceYield: {Name: "slice_yield"},
		HelperRelax:      {Name: "relax"},
	}
}
