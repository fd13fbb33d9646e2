// Package vm reserves address space at addresses aligned to a power of two, the
// placement every kflex heap view needs (a heap file, or a kernel BPF arena).
//
// Layer 0 (system plumbing and the executor ABI: internal/sys/*, abi,
// internal/testutil): it imports no kflex package.
package vm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reserve reserves size bytes at an address aligned to size (a power of two),
// plus guard bytes on each side, as inaccessible anonymous memory. If at is not
// zero the window must start exactly there. It returns the aligned base; the
// caller maps over the reservation with MAP_FIXED, which is safe because the
// range is its own, and gives it back with Release.
func Reserve(size, guard, at uintptr) (unsafe.Pointer, error) {
	span := size + 2*guard
	const flags = unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_NORESERVE
	if at != 0 {
		if at%size != 0 || at < guard {
			return nil, fmt.Errorf("map at %#x: not aligned to heap size %#x", at, size)
		}
		want := unsafe.Add(nil, at-guard) // an address outside the Go heap
		got, err := unix.MmapPtr(-1, 0, want, span, unix.PROT_NONE, flags|unix.MAP_FIXED_NOREPLACE)
		if err != nil {
			return nil, fmt.Errorf("map at %#x: address range in use or invalid: %w", at, err)
		}
		if got != want { // kernels before 4.17 ignore MAP_FIXED_NOREPLACE
			unix.MunmapPtr(got, span)
			return nil, fmt.Errorf("map at %#x: kernel placed the reservation at %p", at, got)
		}
		return unsafe.Add(got, guard), nil
	}
	// S + S + 2 guards always holds an S-aligned window with a guard on each
	// side; the rest is given back.
	resLen := 2*size + 2*guard
	res, err := unix.MmapPtr(-1, 0, nil, resLen, unix.PROT_NONE, flags)
	if err != nil {
		return nil, fmt.Errorf("reserve %d bytes of address space: %w", resLen, err)
	}
	r := uintptr(res)
	b := (r + guard + size - 1) &^ (size - 1)
	base := unsafe.Add(res, b-r)
	if head := b - guard - r; head > 0 {
		unix.MunmapPtr(res, head)
	}
	if tail := r + resLen - (b + size + guard); tail > 0 {
		unix.MunmapPtr(unsafe.Add(base, size+guard), tail)
	}
	return base, nil
}

// Release unmaps a reservation made by Reserve, with whatever was mapped over it.
func Release(base unsafe.Pointer, size, guard uintptr) error {
	return unix.MunmapPtr(unsafe.Add(base, -int(guard)), size+2*guard)
}

// MapScratch maps private, writable, zeroed memory over [p, p+n) of a reservation.
func MapScratch(p unsafe.Pointer, n uintptr) error {
	_, err := unix.MmapPtr(-1, 0, p, n, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED)
	return err
}

// MapShared maps size bytes of fd, shared, over [base, base+size) of a
// reservation, replacing it (MAP_FIXED), and scratch memory over the guard
// bytes on each side.
func MapShared(fd int, base unsafe.Pointer, size, guard uintptr) error {
	if _, err := unix.MmapPtr(fd, 0, base, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
		return fmt.Errorf("map descriptor %d at %p: %w", fd, base, err)
	}
	for _, g := range []unsafe.Pointer{unsafe.Add(base, -int(guard)), unsafe.Add(base, size)} {
		if err := MapScratch(g, guard); err != nil {
			return fmt.Errorf("map guard region at %p: %w", g, err)
		}
	}
	return nil
}
