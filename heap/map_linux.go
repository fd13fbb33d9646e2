package heap

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
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

// lo is the start of the whole mapped range (the lower guard).
func (m *mapping) lo() unsafe.Pointer { return unsafe.Add(m.base, -GuardSize) }

// mapAligned maps size bytes of fd at an address aligned to size. If at is not
// zero it is the address to use (it must be aligned and free); otherwise the
// kernel picks a range that is carved down to an aligned window.
func mapAligned(fd int, size uintptr, at uintptr) (*mapping, error) {
	span := size + 2*GuardSize
	var base unsafe.Pointer
	if at != 0 {
		if at%size != 0 || at < GuardSize {
			return nil, fmt.Errorf("map at %#x: not aligned to heap size %#x", at, size)
		}
		want := unsafe.Add(nil, at-GuardSize) // an address outside the Go heap
		got, err := unix.MmapPtr(-1, 0, want, span, unix.PROT_NONE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED_NOREPLACE)
		if err != nil {
			return nil, fmt.Errorf("map at %#x: address range in use or invalid: %w", at, err)
		}
		if got != want { // kernels before 4.17 ignore MAP_FIXED_NOREPLACE
			unix.MunmapPtr(got, span)
			return nil, fmt.Errorf("map at %#x: kernel placed the reservation at %p", at, got)
		}
		base = unsafe.Add(got, GuardSize)
	} else {
		// Reserve S + S + 2 guards: an S-aligned window with a guard on each side
		// always fits, and the rest is given back.
		resLen := 2*size + 2*GuardSize
		res, err := unix.MmapPtr(-1, 0, nil, resLen, unix.PROT_NONE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return nil, fmt.Errorf("reserve %d bytes of address space: %w", resLen, err)
		}
		r := uintptr(res)
		b := (r + GuardSize + size - 1) &^ (size - 1)
		base = unsafe.Add(res, b-r)
		if head := b - GuardSize - r; head > 0 {
			unix.MunmapPtr(res, head)
		}
		if tail := r + resLen - (b + size + GuardSize); tail > 0 {
			unix.MunmapPtr(unsafe.Add(base, size+GuardSize), tail)
		}
	}
	m := &mapping{base: base, size: size}
	if _, err := unix.MmapPtr(fd, 0, base, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
		m.unmap()
		return nil, fmt.Errorf("map heap file: %w", err)
	}
	for _, g := range []unsafe.Pointer{m.lo(), unsafe.Add(base, size)} {
		if _, err := unix.MmapPtr(-1, 0, g, GuardSize, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED); err != nil {
			m.unmap()
			return nil, fmt.Errorf("map guard region: %w", err)
		}
	}
	return m, nil
}

func (m *mapping) unmap() error {
	return unix.MunmapPtr(m.lo(), m.size+2*GuardSize)
}
