// Package userspace is what applications link to share a kflex heap and its locks
// with other processes and with extensions.
//
// Layer 3 (userspace, jit/amd64, jit/interp): the top of what applications
// link, which imports no engine, no runtime and not cilium/ebpf
// (internal/layers checks).
//
// # Lifetimes
//
// A Heap is this process's attachment: a mapping of the heap file at an address
// aligned to its size, an owner slot registered with the kernel (so that this
// process's death is reported in the heap), and allocator caches. Keep it open as
// long as any pointer into it or any Mutex from it is in use; Close detaches,
// returns cached memory to the shared pools and unmaps. The heap file outlives
// every attachment.
//
// # Pointers
//
// Ptr is an address in this process's view. Pointers stored inside the heap use
// the canonical view, the same in every process: convert with Canonical before a
// store and Local after a load, or use LoadPtr and StorePtr, which do both. NULL
// stays NULL either way.
package userspace

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/translate"
)

// Ptr is an address inside this process's view of the heap, or 0 (NULL).
type Ptr uint64

// Heap is an attached heap.
type Heap struct {
	h       *heap.Heap
	proc    *mcs.Process
	local   translate.View
	canon   translate.View
	release func() error // unmaps memory the heap lives in (an arena), or nil
}

// Options for attaching. MapAt forces the mapping address (aligned to the heap
// size); zero lets the kernel choose.
type Options struct {
	MapAt uintptr
}

// Create makes a new heap file at path of the given size (a power of two; 0 for
// the default 256 MiB) and attaches to it.
func Create(path string, size uint64, opts *Options) (*Heap, error) {
	ho := heap.Options{Params: heap.Params{Size: size}}
	if opts != nil {
		ho.MapAt = opts.MapAt
	}
	h, err := heap.Create(path, &ho)
	if err != nil {
		return nil, err
	}
	return attach(h)
}

// Attach maps the heap file at path and attaches to it.
func Attach(path string, opts *Options) (*Heap, error) {
	h, err := heap.Open(path, heapOptions(opts))
	if err != nil {
		return nil, err
	}
	return attach(h)
}

// AttachFD attaches to the heap behind fd, for example a memfd received from
// another process. The caller keeps fd.
func AttachFD(fd int, opts *Options) (*Heap, error) {
	h, err := heap.OpenFD(fd, heapOptions(opts))
	if err != nil {
		return nil, err
	}
	return attach(h)
}

// AttachHeap attaches to a heap this process has already mapped, for example
// one in a BPF arena (kernel.OpenArena, then its OpenHeap). The returned Heap
// owns h: Close closes it.
func AttachHeap(h *heap.Heap) (*Heap, error) { return attach(h) }

func heapOptions(opts *Options) *heap.Options {
	if opts == nil {
		return nil
	}
	return &heap.Options{MapAt: opts.MapAt}
}

func attach(h *heap.Heap) (*Heap, error) {
	p, err := mcs.Attach(h)
	if err != nil {
		h.Close()
		return nil, err
	}
	local, err := translate.NewView(h.Base(), h.Size())
	if err == nil {
		var canon translate.View
		canon, err = translate.NewView(h.CanonBase(), h.Size())
		if err == nil {
			return &Heap{h: h, proc: p, local: local, canon: canon}, nil
		}
	}
	p.Detach()
	h.Close()
	return nil, fmt.Errorf("attach %s: %w", h.Name(), err)
}

// Close detaches from the heap and unmaps it. No lock taken through this Heap
// may be held, and no Ptr from it used, afterwards.
func (h *Heap) Close() error {
	h.proc.Detach()
	err := h.h.Close()
	if h.release != nil {
		if rerr := h.release(); err == nil {
			err = rerr
		}
	}
	return err
}

// Raw is the underlying heap mapping.
func (h *Heap) Raw() *heap.Heap { return h.h }

// Process is this process's owner-table membership.
func (h *Heap) Process() *mcs.Process { return h.proc }

// Base is the start of this process's view; Size the heap size.
func (h *Heap) Base() Ptr    { return Ptr(h.local.Base) }
func (h *Heap) Size() uint64 { return h.local.Size() }

// Alloc allocates size bytes (not zeroed) and returns their address.
func (h *Heap) Alloc(size uint64) (Ptr, error) {
	off, err := h.h.Alloc(size)
	if err != nil {
		return 0, err
	}
	return Ptr(h.local.At(off)), nil
}

// Free releases memory from Alloc. Pointers not from Alloc, including pointers
// into another heap, are reported and change nothing.
func (h *Heap) Free(p Ptr) error {
	if !h.local.Contains(uint64(p)) {
		return fmt.Errorf("%w: %#x is not in this view [%#x, +%#x)", heap.ErrInvalidPointer, p, h.local.Base, h.Size())
	}
	return h.h.Free(h.local.Offset(uint64(p)))
}

// Canonical converts a local pointer to the form stored in the heap.
func (h *Heap) Canonical(p Ptr) uint64 { return h.canon.From(uint64(p)) }

// Local converts a pointer loaded from the heap (of any view) to this view.
func (h *Heap) Local(stored uint64) Ptr { return Ptr(h.local.From(stored)) }

// Pointer returns p as an unsafe.Pointer into the mapping, forced inside the heap.
func (h *Heap) Pointer(p Ptr) unsafe.Pointer { return h.h.At(h.local.Offset(uint64(p))) }

// Bytes returns the n bytes at p.
func (h *Heap) Bytes(p Ptr, n uint64) []byte { return h.h.Bytes(h.local.Offset(uint64(p)), n) }

// Uint64 returns the 8-byte word at p (8-byte aligned), for plain or atomic access.
func (h *Heap) Uint64(p Ptr) *uint64 { return (*uint64)(h.Pointer(p)) }

// LoadPtr reads the pointer stored at p and returns it in this view.
func (h *Heap) LoadPtr(p Ptr) Ptr { return h.Local(atomic.LoadUint64(h.Uint64(p))) }

// StorePtr stores q at p in canonical form.
func (h *Heap) StorePtr(p, q Ptr) { atomic.StoreUint64(h.Uint64(p), h.Canonical(q)) }

// SetRoot stores p in root word i of the heap (0 <= i < heap.NumRoots), where any
// process finds it with Root.
func (h *Heap) SetRoot(i int, p Ptr) { atomic.StoreUint64(h.h.Root(i), h.Canonical(p)) }

// Root returns the pointer in root word i, in this view.
func (h *Heap) Root(i int) Ptr { return h.Local(atomic.LoadUint64(h.h.Root(i))) }

// NewMutex allocates a lock word in the heap and returns a handle on it. Other
// processes reach the same lock through Mutex with the word's address in their
// view (store it in the heap with StorePtr).
func (h *Heap) NewMutex() (*mcs.Mutex, Ptr, error) {
	p, err := h.Alloc(8)
	if err != nil {
		return nil, 0, err
	}
	*h.Uint64(p) = 0
	m, err := h.Mutex(p)
	return m, p, err
}

// Mutex returns a handle on the lock word at p.
func (h *Heap) Mutex(p Ptr) (*mcs.Mutex, error) {
	if !h.local.Contains(uint64(p)) {
		return nil, fmt.Errorf("mcs: lock word %#x is not in this view", p)
	}
	return h.proc.Mutex(h.local.Offset(uint64(p)))
}
