package serve

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/rseq"
)

// An executor's thread registers an rseq area for the duration of an
// invocation (bind). The area is in the heap only where that buys the slice
// extension, whose request byte the bytecode lock writes with an ordinary
// guarded store: an area in the heap is one that extensions can write, its
// rseq_cs pointer included, and the kernel kills the thread (SIGSEGV, the
// whole runtime) when, preempting it, it cannot read the critical section
// that pointer names. Elsewhere the area the kernel reads is private memory
// of the executor's, and the heap's keeps the request byte the lock writes,
// which no kernel reads there.

// privateRseq maps an executor's private rseq area, or returns nil where the
// kernel offers the slice extension (the area is then the heap's).
func privateRseq() (unsafe.Pointer, error) {
	if rseq.Probe().SliceExtension {
		return nil, nil
	}
	mem, err := unix.MmapPtr(-1, 0, nil, uintptr(os.Getpagesize()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("serve: executor rseq area: %w", err)
	}
	return mem, nil
}

// freePrivateRseq unmaps what privateRseq mapped (nil: nothing).
func freePrivateRseq(mem unsafe.Pointer) {
	if mem != nil {
		unix.MunmapPtr(mem, uintptr(os.Getpagesize()))
	}
}
