// Package translate converts pointers between views of a kflex heap.
//
// Layer 1 (heap, translate, rseq, bytecode): it imports no kflex package.
//
// Every process maps a heap of size S = 2^k at its own S-aligned base. A view is
// that base plus the mask S-1. Because every base is aligned, the low k bits of a
// pointer are its offset in the heap whatever view it came from, and the high bits
// are the view's base; moving a pointer to view V is (p & mask) | V.Base. The same
// operation applied to an arbitrary value is the SFI guard: its result always
// lies inside V. The only pointer that is not moved is NULL, which stays NULL so
// that linked structures keep their terminators across views.
package translate

import (
	"fmt"
	"math/bits"
)

// View is one mapping of a heap: its base address and the mask S-1.
type View struct {
	Base uint64
	Mask uint64
}

// NewView returns the view of a heap of the given size mapped at base. It fails if
// size is not a power of two or base is not aligned to it.
func NewView(base, size uint64) (View, error) {
	if size == 0 || bits.OnesCount64(size) != 1 {
		return View{}, fmt.Errorf("translate: heap size %#x is not a power of two", size)
	}
	if base&(size-1) != 0 || base == 0 {
		return View{}, fmt.Errorf("translate: base %#x is not a non-zero multiple of heap size %#x", base, size)
	}
	return View{Base: base, Mask: size - 1}, nil
}

// Size is the heap size S.
func (v View) Size() uint64 { return v.Mask + 1 }

// Guard forces p into v: the SFI operation. It is total: any value yields an
// address inside the heap.
func (v View) Guard(p uint64) uint64 { return p&v.Mask | v.Base }

// From moves p, a pointer in any view of the same heap, into v; NULL stays NULL.
func (v View) From(p uint64) uint64 {
	if p == 0 {
		return 0
	}
	return v.Guard(p)
}

// Offset is p's byte offset in the heap, whatever view p is in.
func (v View) Offset(p uint64) uint64 { return p & v.Mask }

// At is the pointer in v to byte off of the heap.
func (v View) At(off uint64) uint64 { return v.Base | off&v.Mask }

// Contains reports whether p points into v itself (not merely into another view).
func (v View) Contains(p uint64) bool { return p&^v.Mask == v.Base }
