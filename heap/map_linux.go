package heap

import (
	"fmt"
	"unsafe"

	"github.com/kflex-go/kflex/internal/sys/vm"
)

// GuardSize is the scratch memory mapped on each side of the heap. eBPF offsets
// are signed 16-bit, so a guarded base plus an offset lands at most 32 KiB
// outside; 64 KiB matches the kernel arena's guard. The guards are private,
// writable anonymous memory, not PROT_NONE: a stray access from generated code
// reads or writes a harmless value instead of faulting, because a fault outside Go
// code kills a Go process.
const GuardSize = 64 << 10

// mapping is one process's view of a heap file: the file at an address aligned
// to its size, with a guard region on each side.
type mapping struct {
	base unsafe.Pointer // first byte of the heap in this view
	size uintptr
}

// mapAligned maps size bytes of fd at an address aligned to size. If at is not
// zero it is the address to use (it must be aligned and free).
func mapAligned(fd int, size uintptr, at uintptr) (*mapping, error) {
	base, err := vm.Reserve(size, GuardSize, at)
	if err != nil {
		return nil, err
	}
	m := &mapping{base: base, size: size}
	if err := vm.MapShared(fd, base, size, GuardSize); err != nil {
		m.unmap()
		return nil, fmt.Errorf("map heap file: %w", err)
	}
	return m, nil
}

func (m *mapping) unmap() error { return vm.Release(m.base, m.size, GuardSize) }
