package mcs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/sys/futex"
)

// The owner table's record layout is heap's (heap/owner.go): heap's allocator
// reads it too, to recover its own locks from dead holders.
const (
	ownerRobust = heap.OwnerRobust
	ownerLive   = heap.OwnerLive
	ownerPID    = heap.OwnerPID
	ownerGen    = heap.OwnerGen
	ownerSince  = heap.OwnerSince

	// robustFutexOffset is where the kernel finds the futex word from a robust
	// list entry: entry + offset.
	robustFutexOffset = ownerLive - ownerRobust
)

// Errors from attaching to the owner table.
var (
	ErrNoSlot   = errors.New("mcs: owner table full")
	ErrDetached = errors.New("mcs: process detached")
)

// Process is this process's membership of a heap's lock world: its owner slot,
// its liveness word registered with the kernel, and its queue nodes.
type Process struct {
	h     *heap.Heap
	slot  uint32
	gen   uint32      // the slot's generation when we attached
	nodes chan uint32 // free node indices of this process's range

	park     time.Duration // how long a waiter parks before it re-checks
	realtime bool          // the designated thread sleeps at a real-time priority
	counts   waitCounts    // how waits ended (WaitStats)

	dirMu sync.Mutex
	dir   dir // the slot's lock directory (lockdir.go)

	standing sync.WaitGroup // stand-ins waiting in cancelled executors' nodes (stand)
	quit     chan struct{}  // closed by Detach: stand-ins abandon their nodes

	stop chan struct{}
	done chan struct{}
	gone atomic.Bool
}

// Attach claims an owner slot in h for this process and registers its liveness
// word on the robust futex list of a dedicated OS thread, so that the kernel
// reports this process's death in the heap, whatever the cause. Detach gives the
// slot back.
func Attach(h *heap.Heap) (*Process, error) {
	p := &Process{h: h, park: parkTimeout, quit: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	if !h.SharedFutexes() {
		p.park = localParkTimeout
	}
	ready := make(chan error, 1)
	go p.liveness(ready)
	if err := <-ready; err != nil {
		<-p.done
		return nil, fmt.Errorf("attach to heap %s: %w", h.Name(), err)
	}
	p.openDir()
	h.BindOwner(p.slot) // the allocator's locks and caches name the slot from now on
	n := h.Header().NodesPerProc
	p.nodes = make(chan uint32, n)
	for i := range n {
		p.nodes <- p.slot*n + i
	}
	return p, nil
}

func (p *Process) record(field uint64) uint64 { return p.h.OwnerRecord(p.slot, field) }

// robustHead is the kernel's struct robust_list_head.
type robustHead struct {
	next          uint64 // first entry (circular: the last points back here)
	futexOffset   int64
	listOpPending uint64
}

// liveness is the designated thread. It registers an empty robust list,
// claims a slot with its TID under the list's list_op_pending protocol, and
// then stays locked to its thread until Detach: if it returned early, its
// thread would exit and the kernel would declare the process dead while it
// lives.
//
// The order makes a death at any instruction safe. The list is registered
// before any slot is claimed, and a slot is claimed with the kernel's
// protocol for an entry being added: list_op_pending names the slot's entry
// (its record's robust field) before the CAS of 0 -> TID into its liveness
// word, and is cleared only once the entry is linked into the list. At the
// thread's exit the kernel treats the pending entry like a listed one,
// marking its word OWNER_DIED only if the word holds the exiting thread's
// TID. So a death before the CAS leaves the slot free, one after it leaves
// the slot marked dead (for Reap), and a pending entry naming a slot whose
// CAS failed touches nothing: its word holds another TID. Nothing is written
// into a slot's record before the CAS wins: its robust field belongs to its
// owner's kernel list.
func (p *Process) liveness(ready chan<- error) {
	defer close(p.done)
	runtime.LockOSThread()
	// Never unlocked: when this goroutine returns, its thread exits, taking the
	// robust-list registration with it instead of handing it to other goroutines.

	// The list head must not move or be collected: keep it in mmap'd memory.
	mem, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		ready <- fmt.Errorf("map robust list head: %w", err)
		return
	}
	defer unix.Munmap(mem)
	head := (*robustHead)(unsafe.Pointer(&mem[0]))
	headAddr := uint64(uintptr(unsafe.Pointer(head)))
	head.next = headAddr // empty: the list is circular
	head.futexOffset = robustFutexOffset
	if err := setRobustList(head); err != nil {
		ready <- err
		return
	}

	tid := uint32(unix.Gettid())
	hdr := p.h.Header()
	found := false
	for range 2 { // a second time after reaping the slots of the dead
		for s := range hdr.MaxProcs {
			rec := hdr.OwnerOff + uint64(s)*heap.OwnerRecordSize
			atomic.StoreUint64(&head.listOpPending, uint64(uintptr(p.h.At(rec+ownerRobust))))
			if atomic.CompareAndSwapUint32(p.h.Uint32(rec+ownerLive), 0, tid) {
				p.slot, found = s, true
				break
			}
		}
		if found || Reap(p.h) == 0 {
			break
		}
	}
	if !found {
		atomic.StoreUint64(&head.listOpPending, 0)
		ready <- fmt.Errorf("%w: %d slots in use", ErrNoSlot, hdr.MaxProcs)
		return
	}
	fault(FaultAttachClaimed)
	// Ours now: link the entry (a circular list of one), then end the pending
	// operation.
	entry := p.h.At(p.record(ownerRobust))
	atomic.StoreUint64((*uint64)(entry), headAddr)
	atomic.StoreUint64(&head.next, uint64(uintptr(entry)))
	atomic.StoreUint64(&head.listOpPending, 0)
	atomic.StoreUint32(p.h.Uint32(p.record(ownerPID)), uint32(os.Getpid()))
	p.gen = atomic.AddUint32(p.h.Uint32(p.record(ownerGen)), 1)
	atomic.StoreUint64(p.h.Uint64(p.record(ownerSince)), uint64(time.Now().UnixNano()))
	before, err := enterRealtime()
	p.realtime = err == nil
	ready <- nil

	<-p.stop
	if p.realtime {
		leaveRealtime(before) // the loop below may spin against a waiter on the word
	}
	// Detach: empty the list, so that this thread's exit marks nothing, then
	// free the slot, with list_op_pending naming the slot's entry meanwhile,
	// as in the claim above. A death before the free marks the slot dead
	// (the kernel treats the pending entry like a listed one); a death after
	// it touches nothing (the word no longer holds this thread's TID). With
	// the list emptied first and nothing pending, a death in between left the
	// slot naming a dead thread, alive for good (TestKilledInDetach).
	//
	// A slot with a node still in a queue (a stand-in's, abandoned as Detach
	// stopped it) is marked dead instead, as the kernel marks a dead
	// process's: Reap frees it once nobody needs that node. Freed now, it was
	// claimed by the next Attach, which queued its nodes on other locks while
	// the old queue still named them, and a grant down that queue made one of
	// them a second head.
	atomic.StoreUint64(&head.listOpPending, uint64(uintptr(p.h.At(p.record(ownerRobust)))))
	atomic.StoreUint64(&head.next, headAddr)
	fault(FaultDetachUnlisted)
	lw := p.h.Uint32(p.record(ownerLive))
	if p.queued() {
		markDead(lw)
		return
	}
	for !freeSlot(lw, atomic.LoadUint32(lw)) { // a waiter may be setting FUTEX_WAITERS
	}
	atomic.StoreUint64(&head.listOpPending, 0)
}

// queued reports whether a node of this process's is in a queue.
func (p *Process) queued() bool {
	n := p.h.Header().NodesPerProc
	for i := p.slot * n; i < (p.slot+1)*n; i++ {
		if atomic.LoadUint32(p.node(i).state()) != nodeFree {
			return true
		}
	}
	return false
}

// markDead marks liveness word lw as the kernel marks a dead thread's
// (FUTEX_OWNER_DIED, keeping FUTEX_WAITERS), and wakes whoever sleeps on it.
func markDead(lw *uint32) {
	for {
		v := atomic.LoadUint32(lw)
		if atomic.CompareAndSwapUint32(lw, v, v&futex.Waiters|futex.OwnerDied) {
			if v&futex.Waiters != 0 {
				futex.Wake(lw, math.MaxInt32)
			}
			return
		}
	}
}

// freeSlot frees an owner slot whose liveness word lw reads live, and wakes
// whoever sleeps on the word (FUTEX_WAITERS): nobody should wait for a
// process that detached or was reaped, and one that does wakes to see it
// gone. It reports false, freeing nothing, if the word changed.
func freeSlot(lw *uint32, live uint32) bool {
	if !atomic.CompareAndSwapUint32(lw, live, 0) {
		return false
	}
	if live&futex.Waiters != 0 {
		futex.Wake(lw, math.MaxInt32)
	}
	return true
}

// enterRealtime moves the calling thread into SCHED_FIFO at the lowest
// real-time priority and returns its attributes before, for leaveRealtime.
// The designated thread sleeps in it: it costs nothing until the process
// dies, and then the thread runs its exit, which marks the liveness word,
// ahead of every ordinary thread, the dying process's many among them
// (RATIONALE.md: "Why does the designated thread sleep at a real-time
// priority?"). Without CAP_SYS_NICE or an RLIMIT_RTPRIO the kernel refuses and
// the thread stays as it was. RESET_ON_FORK: a thread it ever clones starts
// ordinary.
func enterRealtime() (*unix.SchedAttr, error) {
	before, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return nil, err
	}
	rt := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 1, Flags: unix.SCHED_FLAG_RESET_ON_FORK}
	if err := unix.SchedSetAttr(0, &rt, 0); err != nil {
		return nil, err
	}
	return before, nil
}

// leaveRealtime gives the calling thread back the attributes before, its
// policy and nice value, keeping RESET_ON_FORK: a thread without
// CAP_SYS_NICE may not clear that flag, nor lower its nice value, and the
// kernel would refuse the whole change (sched_setattr(2)).
func leaveRealtime(before *unix.SchedAttr) error {
	attr := *before
	attr.Flags |= unix.SCHED_FLAG_RESET_ON_FORK
	return unix.SchedSetAttr(0, &attr, 0)
}

func setRobustList(head *robustHead) error {
	_, _, e := unix.RawSyscall(unix.SYS_SET_ROBUST_LIST, uintptr(unsafe.Pointer(head)), unsafe.Sizeof(*head), 0)
	if e != 0 {
		return fmt.Errorf("set_robust_list: %w", e)
	}
	return nil
}

// RealtimeLiveness reports whether the kernel let the designated thread sleep
// at a real-time priority (SCHED_FIFO), which makes the kernel mark this
// process's death sooner when its machine is busy.
func (p *Process) RealtimeLiveness() bool { return p.realtime }

// Slot is this process's index in the owner table.
func (p *Process) Slot() uint32 { return p.slot }

// Gen is the owner slot's generation when this process attached to it.
func (p *Process) Gen() uint32 { return p.gen }

// Held is the held bits of this process in a lock word: what its executors
// pass to mcs_lock and mcs_unlock (abi.Context.Held).
func (p *Process) Held() uint64 { return held(p.slot, p.gen) }

// Heap is the heap this process is attached to.
func (p *Process) Heap() *heap.Heap { return p.h }

// Detach gives the owner slot back. The caller must hold no lock and have no
// goroutine waiting for one or leaving a queue (Leave). Stand-ins still
// waiting in cancelled executors' nodes (Leave) abandon them first, and the
// slot is then left marked dead rather than free: the recovery protocol
// frees those nodes as a dead waiter's, and Reap the slot after them.
func (p *Process) Detach() error {
	if p.gone.Swap(true) {
		return nil
	}
	close(p.quit)
	p.standing.Wait()
	p.h.UnbindOwner(p.slot) // before the slot is free, which would read as death
	p.closeDir()
	close(p.stop)
	<-p.done
	return nil
}

// OwnerState describes one owner-table slot.
type OwnerState struct {
	Slot uint32
	PID  uint32
	TID  uint32 // of the designated thread
	Dead bool   // the kernel reported the process's death
	Gen  uint32
}

// Owners lists the occupied slots of h's owner table.
func Owners(h *heap.Heap) []OwnerState {
	hdr := h.Header()
	var out []OwnerState
	for s := range hdr.MaxProcs {
		rec := hdr.OwnerOff + uint64(s)*heap.OwnerRecordSize
		live := atomic.LoadUint32(h.Uint32(rec + ownerLive))
		if live == 0 {
			continue
		}
		out = append(out, OwnerState{Slot: s, PID: atomic.LoadUint32(h.Uint32(rec + ownerPID)),
			TID: live & futex.TIDMask, Dead: live&futex.OwnerDied != 0,
			Gen: atomic.LoadUint32(h.Uint32(rec + ownerGen))})
	}
	return out
}

// WaitDeath blocks until the kernel marks slot's process dead or the timeout
// passes, and reports whether it died. It sleeps on the liveness word itself
// (setting FUTEX_WAITERS, without which the kernel marks the word but wakes
// nobody), so it returns within the kernel's exit path of the death.
func WaitDeath(h *heap.Heap, slot uint32, timeout time.Duration) bool {
	w := h.Uint32(h.Header().OwnerOff + uint64(slot)*heap.OwnerRecordSize + ownerLive)
	deadline := time.Now().Add(timeout)
	for {
		v := atomic.LoadUint32(w)
		if v&futex.OwnerDied != 0 {
			wakeDead(w) // the death's one wake may have been ours: pass it on
			return true
		}
		if v == 0 {
			return false // detached, or never attached
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		if v&futex.Waiters == 0 && !atomic.CompareAndSwapUint32(w, v, v|futex.Waiters) {
			continue
		}
		futex.Wait(w, v|futex.Waiters, left)
	}
}
