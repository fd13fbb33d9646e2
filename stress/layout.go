package stress

import (
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/heap"
)

// The parent's table, one heap allocation whose offset is in heap root
// tableRoot: a header, Locks lock records, then Procs × Threads thread
// records. Every word is read and written atomically: workers, the parent and
// dead processes' leftovers share it. Offsets stored in it are heap offsets,
// the same in every view.
const (
	tableRoot = 0
	magic     = 0x4b464c5853545201 // "KFLXSTR" + version 1

	tMagic   = 0  // magic
	tProcs   = 8  // P
	tThreads = 16 // T
	tLocks   = 24 // L
	tPlant   = 32 // planted bug (plant*)
	tStop    = 40 // nonzero: workers finish their step and exit
	tWindow  = 48 // spins between the pair's two increments
	tCap     = 56 // list length at which inserts stop
	tHeader  = 128

	// The extension runtime's process (Config.Runtime): its window, its
	// owner slot + 1 while it runs (0: none), and what its invocations saw.
	tRtWindow        = 64
	tRtSlot          = 72
	tRtAcquired      = 80
	tRtRepaired      = 88
	tRtViolations    = 96
	tRtCancellations = 104
	tRtStuck         = 112 // executors that left its pool

	// tKernel: 1 when goroutine 0 of every worker is a kernel executor
	// (Config.Kernel).
	tKernel = 120

	// Lock record.
	lWord        = 0  // the mcs lock word
	lA           = 8  // pair: a == b outside the critical section
	lB           = 16 //
	lNext        = 24 // sentinel: first list object (the record's lNext itself when empty)
	lPrev        = 32 // sentinel: last list object
	lLen         = 40 // list length
	lRecoveries  = 48 // acquisitions that returned ErrOwnerDied
	lRecoveredAt = 56 // CLOCK_MONOTONIC ns of the last such acquisition
	lAcquired    = 64 // acquisitions
	lIndex       = 72 // the lock's index (the extension's object magic)
	lockRecSize  = 128

	// Thread record.
	rState     = 0  // what the thread does (st*)
	rWaitSince = 8  // CLOCK_MONOTONIC ns when its Lock call began, 0 outside Lock
	rMaxWait   = 16 // longest Lock call, ns
	rHeldLock  = 24 // index + 1 of the lock it holds (set after Lock, cleared before Unlock)
	rHold      = 32 // object it owns outside the lists (holdPending: allocating)
	rAcquired  = 40 // acquisitions
	rRepaired  = 48 // broken invariants found after ErrOwnerDied and repaired
	rViolation = 56 // broken invariants under a nil Lock, unparsable lists, ErrNotRecoverable
	rOps       = 64 // loop iterations
	// A kernel executor's (Config.Kernel): bounded kernel waits that timed
	// out and were retried, and hand-offs the kernel could not finish that
	// Go finished (mcs.Process.Unstick).
	rKernelTimeouts  = 72
	rKernelUnstuck   = 80
	rKernelFallbacks = 88 // acquisitions made from Go after kernelTries timeouts
	// rFaulted (goroutine 0's record): the worker reached its armed fault
	// point and is killing itself.
	rFaulted   = 96
	threadSize = 128

	// List object: forward and backward links (heap offsets of the next
	// object, or of the sentinel's lNext word), a magic word naming its lock.
	oNext    = 0
	oPrev    = 8
	oMagic   = 16
	objSize  = 32
	objMagic = 0x4f424a0000000000 // | lock index

	holdPending = 1
)

// Thread states, as the parent reads them to aim its kills.
const (
	stIdle = iota
	stWaiting
	stHolding
	stAllocator // in Alloc or Free
)

// Planted bugs: the harness must report them as violations.
const (
	plantNone     = 0
	plantNoRepair = 1 // after ErrOwnerDied, call Consistent without repairing
	plantNoLock   = 2 // sometimes update the pair without taking the lock
)

// table is the parent's table in one process's view.
type table struct {
	h                     *heap.Heap
	off                   uint64
	procs, threads, locks int
}

func tableSize(procs, threads, locks int) uint64 {
	return tHeader + uint64(locks)*lockRecSize + uint64(procs*threads)*threadSize
}

func (t *table) word(off uint64) *uint64 { return t.h.Uint64(off) }
func (t *table) load(off uint64) uint64  { return atomic.LoadUint64(t.h.Uint64(off)) }
func (t *table) store(off, v uint64)     { atomic.StoreUint64(t.h.Uint64(off), v) }
func (t *table) add(off, v uint64)       { atomic.AddUint64(t.h.Uint64(off), v) }

func (t *table) lock(i int) uint64 { return t.off + tHeader + uint64(i)*lockRecSize }

func (t *table) thread(proc, th int) uint64 {
	return t.off + tHeader + uint64(t.locks)*lockRecSize + uint64(proc*t.threads+th)*threadSize
}

// openTable reads the table whose offset is in the heap's root.
func openTable(h *heap.Heap) (*table, bool) {
	off := atomic.LoadUint64(h.Root(tableRoot))
	if off == 0 || off%8 != 0 || off >= h.Size() || atomic.LoadUint64(h.Uint64(off+tMagic)) != magic {
		return nil, false
	}
	t := &table{h: h, off: off}
	t.procs, t.threads, t.locks = int(t.load(off+tProcs)), int(t.load(off+tThreads)), int(t.load(off+tLocks))
	return t, t.procs > 0 && t.threads > 0 && t.locks > 0
}

// now is CLOCK_MONOTONIC in nanoseconds: one clock for every process of the
// machine.
func now() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
