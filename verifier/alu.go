package verifier

import (
	"math/bits"

	"github.com/kflex-go/kflex/bytecode"
)

// alu applies an ALU instruction (64-bit if w).
func (a *analysis) alu(pc int, s *State, in bytecode.Slot, w bool) error {
	op := in.Op & 0xf0
	var src Reg
	if in.Op&0x08 != 0 && op != 0xd0 {
		r, err := a.read(pc, s, in.Src)
		if err != nil {
			return err
		}
		src = r
	} else {
		src = scalar(Const(uint64(int64(in.Imm))))
		if !w {
			src = scalar(Const(uint64(uint32(in.Imm))))
		}
	}
	if op == 0xb0 && in.Off == 0 { // mov, of any value
		v := scalarResult(in, w, src, src)
		var ref uint8
		if w && in.Op&0x08 != 0 {
			v = copyOf(in.Src, v)
			if in.Src < 10 {
				ref = s.RefAt[in.Src] // a copy of an allocation's pointer
			}
		}
		s.set(in.Dst, v)
		if in.Dst < 10 {
			s.RefAt[in.Dst] = ref
		}
		return nil
	}
	if op == 0xb0 && in.Off == 1 {
		// addr_space_cast. Into the engine's view (imm 1) it masks and
		// rebases like a guard, keeping NULL: a checked pointer, or 0 if the
		// source may be 0. Into the canonical view: a heap pointer, as a number.
		s.set(in.Dst, unknownScalar())
		if in.Imm == 1 {
			lo, _ := src.Bounds()
			nonZero := src.Kind == PtrCtx || src.Kind == PtrStack ||
				src.Kind == Scalar && (lo > 0 || src.Checked && !src.MaybeNull)
			s.set(in.Dst, heapPointer(!nonZero, 0))
		}
		return nil
	}
	var dst Reg
	if op == 0xb0 { // movsx reads only its source
		dst = src
	} else {
		d, err := a.read(pc, s, in.Dst)
		if err != nil {
			return err
		}
		dst = d
	}
	// Pointer arithmetic: a constant moves a pointer; two pointers of one kind
	// subtract to a number; anything else makes a number of a pointer.
	if dst.Kind >= PtrCtx || src.Kind >= PtrCtx {
		s.set(in.Dst, pointerALU(op, w, dst, src))
		return nil
	}
	r := scalarResult(in, w, dst, src)
	if w && (op == 0x00 || op == 0x10) {
		r = movedChecked(op, dst, src, r)
	}
	s.set(in.Dst, r)
	return nil
}

// scalarResult is the value of an ALU operation on scalars d and s: its
// tnum, narrowed by its intervals. A mov (Off 0) copies s of any kind, or
// truncates it.
func scalarResult(in bytecode.Slot, w bool, d, s Reg) Reg {
	switch {
	case in.Op&0xf0 != 0xb0:
	case in.Off != 0: // movsx
		return signExtended(s, int(in.Off), w)
	case w:
		return s
	default:
		return truncate(s)
	}
	return aluBounds(in, w, d, s, scalar(scalarALU(in, w, d.Val, s.Val)))
}

// movedChecked: a checked pointer plus or minus a number whose unsigned
// range is small (a constant, an index shifted into place) stays checked, its
// offsets moved by that range, while they stay within reach of the guard
// regions. r is the sum as a number.
func movedChecked(op uint8, dst, src, r Reg) Reg {
	if op == 0x00 && src.Checked && !dst.Checked {
		dst, src = src, dst // addition commutes
	}
	if !dst.Checked || src.Checked {
		return r
	}
	lo, hi := src.Bounds()
	if c, ok := constOf(src); ok && c < 0 {
		// A negative constant, as the program wrote it: the other way by -c
		// (add 0x00 <-> sub 0x10).
		op ^= 0x10
		lo, hi = uint64(-c), uint64(-c)
	}
	if hi >= guardReach {
		return r
	}
	off, span := dst.Off+int64(lo), dst.Span+int64(hi-lo)
	if op == 0x10 {
		off = dst.Off - int64(hi)
	}
	if off > -guardReach && off+span < guardReach {
		r.Checked, r.Off, r.Span, r.SanPC, r.MaybeNull = true, off, span, dst.SanPC, dst.MaybeNull
	}
	return r
}

// truncate is mov32: r's low half, zero-extended, with its 32-bit intervals.
func truncate(r Reg) Reg {
	if r.Kind != Scalar {
		return scalar(Unknown.Truncate(4))
	}
	t := scalar(r.Val.Truncate(4))
	if i32, s := r.B.get(u32), r.B.get(s32); t.B.narrowKeys(u32, i32.lo, i32.hi) && t.B.narrowKeys(s32, s.lo, s.hi) {
		if nt, ok := t.sync(); ok {
			return nt
		}
	}
	return fallback(r.Val.Truncate(4), "mov32")
}

func pointerALU(op uint8, w bool, dst, src Reg) Reg {
	c, isConst := constOf(src)
	switch {
	case !w:
	case op == 0x00 && dst.Kind >= PtrCtx && isConst && fitsOffset(dst.Off+c):
		return Reg{Kind: dst.Kind, Off: dst.Off + c}
	case op == 0x00 && src.Kind >= PtrCtx && dst.Kind == Scalar:
		if d, ok := constOf(dst); ok && fitsOffset(src.Off+d) {
			return Reg{Kind: src.Kind, Off: src.Off + d}
		}
		return Reg{Kind: PtrMixed}
	case op == 0x10 && dst.Kind >= PtrCtx && isConst && fitsOffset(dst.Off-c):
		return Reg{Kind: dst.Kind, Off: dst.Off - c}
	case op == 0x10 && dst.Kind == src.Kind && dst.Kind != PtrMixed:
		return scalar(Const(uint64(dst.Off - src.Off)))
	case (op == 0x00 || op == 0x10) && dst.Kind >= PtrCtx:
		return Reg{Kind: PtrMixed} // a pointer moved by an unknown amount
	}
	return unknownScalar()
}

// scalarALU is the tnum of a scalar ALU operation.
func scalarALU(in bytecode.Slot, w bool, d, s Tnum) Tnum {
	if in.Op&0xf0 == 0xd0 {
		// Byte swaps, whose width is their immediate, not their class,
		// move known bits with the bytes.
		return Tnum{Value: fold(in, true, d.Value, 0), Mask: fold(in, true, d.Mask, 0)}
	}
	if !w {
		d, s = d.Truncate(4), s.Truncate(4)
	}
	width := uint(64)
	if !w {
		width = 32
	}
	var r Tnum
	switch in.Op & 0xf0 {
	case 0x00:
		r = d.Add(s)
	case 0x10:
		r = d.Sub(s)
	case 0x20:
		r = d.Mul(s)
	case 0x40:
		r = d.Or(s)
	case 0x50:
		r = d.And(s)
	case 0xa0:
		r = d.Xor(s)
	case 0x80:
		r = Const(0).Sub(d)
	case 0x60, 0x70, 0xc0:
		if !s.IsConst() {
			r = Unknown
			break
		}
		n := uint(s.Value) & (width - 1)
		switch in.Op & 0xf0 {
		case 0x60:
			r = d.Lsh(n)
		case 0x70:
			r = d.Rsh(n)
		default:
			if w {
				r = d.Arsh(n)
			} else {
				r = d.Lsh(32).Arsh(32 + n).Truncate(4)
			}
		}
	default: // div, mod: exact only on constants
		if d.IsConst() && s.IsConst() {
			r = Const(fold(in, w, d.Value, s.Value))
		} else {
			r = Unknown
		}
	}
	if !w {
		r = r.Truncate(4)
	}
	return r
}

// fold computes division and modulo on constants, and byte swaps (which
// scalarALU applies to a tnum's known bits and unknown ones alike), exactly
// as the ISA defines them.
func fold(in bytecode.Slot, w bool, d, s uint64) uint64 {
	signed := in.Off == 1
	switch in.Op & 0xf0 {
	case 0x30, 0x90:
		mod := in.Op&0xf0 == 0x90
		if !w {
			d, s = uint64(uint32(d)), uint64(uint32(s))
		}
		switch {
		case s == 0 && mod:
			return d
		case s == 0:
			return 0
		case signed && w && mod:
			if int64(s) == -1 {
				return 0
			}
			return uint64(int64(d) % int64(s))
		case signed && w:
			if int64(s) == -1 {
				return -d
			}
			return uint64(int64(d) / int64(s))
		case signed && mod:
			if int32(s) == -1 {
				return 0
			}
			return uint64(uint32(int32(d) % int32(s)))
		case signed:
			if int32(s) == -1 {
				return uint64(uint32(-int32(d)))
			}
			return uint64(uint32(int32(d) / int32(s)))
		case mod:
			return d % s
		}
		return d / s
	case 0xd0: // byte swaps
		toBE := in.Op == 0xdc || in.Op == 0xd7
		switch in.Imm {
		case 16:
			if toBE {
				return uint64(bits.ReverseBytes16(uint16(d)))
			}
			return uint64(uint16(d))
		case 32:
			if toBE {
				return uint64(bits.ReverseBytes32(uint32(d)))
			}
			return uint64(uint32(d))
		}
		if toBE {
			return bits.ReverseBytes64(d)
		}
		return d
	}
	return 0
}
