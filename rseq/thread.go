package rseq

import (
	"sync/atomic"
	"unsafe"
)

// Status says what a Thread can do.
type Status int

const (
	// NoRseq: the kernel has no rseq, or the thread could not be registered.
	NoRseq Status = iota
	// Foreign: another party (glibc, for a cgo thread) owns this thread's rseq.
	Foreign
	// Registered: rseq works (cpu id, per-thread area) but there is no slice
	// extension; Request and Release cost a byte store and a byte load.
	Registered
	// SliceExtension: the kernel may extend this thread's time slice on request.
	SliceExtension
)

func (s Status) String() string {
	return [...]string{"no rseq", "rseq owned by another party", "rseq registered, no slice extension",
		"rseq registered, slice extension enabled"}[s]
}

// Thread is one OS thread's rseq registration. Its methods must be called from
// that thread (the goroutine that registered it, still locked to it).
type Thread struct {
	area   unsafe.Pointer // struct rseq, in mmap'd memory; nil unless registered
	req    *uint8         // slice_ctrl.request in the area (nil unless registered)
	grant  *uint8         // slice_ctrl.granted
	size   uint32         // registered length
	owned  bool           // the area is ours to unmap
	status Status
	reason string // why status is not SliceExtension
	// yield is rseq_slice_yield(2); tests replace it.
	yield func()

	// Counters of the protocol's outcomes, for tests and rseq-check.
	Granted uint64 // releases that found the slice extended, and yielded
}

// Status reports what this thread can do; Reason says why it cannot do more.
func (t *Thread) Status() Status { return t.status }
func (t *Thread) Reason() string { return t.reason }

// The slice_ctrl bytes are plain loads and stores: only this thread and the
// kernel, interrupting this thread on its own CPU, touch them, and Go's
// compiler does not move memory accesses across the lock's atomic operations.
func (t *Thread) byteAt(off uintptr) *uint8 { return (*uint8)(unsafe.Add(t.area, off)) }

// setArea records a registered area (nil: none).
func (t *Thread) setArea(a unsafe.Pointer) {
	t.area, t.req, t.grant = a, nil, nil
	if a != nil {
		t.req, t.grant = t.byteAt(offSliceReq), t.byteAt(offSliceGrant)
	}
}

// Request asks the kernel not to preempt this thread until Release: call it
// before taking a lock. It is a single byte store.
func (t *Thread) Request() {
	if t.req != nil {
		*t.req = 1
	}
}

// Release ends a Request: call it after dropping the lock. If the kernel
// extended the slice meanwhile (it clears request and sets granted), the
// protocol requires giving the CPU back with rseq_slice_yield; otherwise it is
// a byte store and a byte load.
func (t *Thread) Release() {
	if t.req != nil {
		*t.req = 0
		if *t.grant != 0 {
			t.yieldGranted()
		}
	}
}

// yieldGranted is out of line so that Release inlines.
//
//go:noinline
func (t *Thread) yieldGranted() {
	t.Granted++
	t.yield()
}

// State reads the slice-control bytes: whether the request is still set (the
// kernel did not need to act) and whether the kernel granted an extension.
// Call it between Request and Release.
func (t *Thread) State() (requested, granted bool) {
	if t.area == nil {
		return false, false
	}
	return *t.byteAt(offSliceReq) != 0, *t.byteAt(offSliceGrant) != 0
}

// CPU returns the CPU the thread is running on: from the rseq area when
// registered (a load), else from getcpu (a system call).
func (t *Thread) CPU() int {
	if t.area != nil {
		if c := int32(atomic.LoadUint32((*uint32)(unsafe.Add(t.area, offCPUID)))); c >= 0 {
			return int(c)
		}
	}
	return getcpu()
}
