package verifier

import (
	"math"
	"math/bits"

	"github.com/kflex-go/kflex/bytecode"
)

// The intervals of an ALU result. Addition, subtraction, multiplication,
// negation, and, or and left shifts give a result whose low half depends on
// the operands' low halves alone, so they compute the 32-bit intervals from
// the operands' 32-bit ones, also for a 64-bit operation, as the kernel does;
// the 64-bit intervals from the 64-bit ones. The others (right shifts,
// division, modulo) compute the intervals of their own width. sync derives
// the rest. A 32-bit operation zero-extends: its 64-bit intervals follow from
// its 32-bit ones and its tnum.

// aluBounds narrows r, the result of d op s as its tnum alone says (scalarALU),
// by the intervals the operation keeps: 64-bit if w, else 32-bit.
func aluBounds(in bytecode.Slot, w bool, d, s, r Reg) Reg {
	op := in.Op & 0xf0
	b := fullBounds()
	low := []domain{u32, s32}
	both := []domain{u64, s64, u32, s32}
	own := [2]domain{u32, s32} // the domains of the operation's width
	if w {
		own = [2]domain{u64, s64}
	}
	k, isConst := constOf(s)
	shiftMask := uint64(31)
	if w {
		shiftMask = 63
	}
	switch {
	case op == 0x00 || op == 0x10 || op == 0x20 || op == 0x80:
		doms := low
		if w {
			doms = both
		}
		for _, dom := range doms {
			if iv, ok := arith(op, dom, d.B.get(dom), s.B.get(dom)); ok {
				b.set(dom, iv)
			}
		}
	case op == 0x50 || op == 0x40: // and: no larger than either; or: no smaller
		for _, dom := range []domain{u64, u32} {
			if dom == u64 && !w {
				continue
			}
			iv, di, si := b.get(dom), d.B.get(dom), s.B.get(dom)
			if op == 0x50 {
				iv.hi = min(di.hi, si.hi)
			} else {
				iv.lo = max(di.lo, si.lo)
			}
			b.set(dom, iv)
		}
	case op == 0x60 && isConst: // lsh, where nothing is shifted out
		n := uint64(k) & shiftMask
		for _, dom := range []domain{u64, u32} {
			if dom == u64 && !w || dom == u32 && n >= 32 {
				continue // not the operation's width; a low half shifted out
			}
			if iv := d.B.get(dom); iv.hi <= dom.top()>>n {
				b.set(dom, interval{iv.lo << n, iv.hi << n})
			}
		}
	case op == 0x70 && isConst: // rsh
		n, iv := uint64(k)&shiftMask, d.B.get(own[0])
		b.set(own[0], interval{iv.lo >> n, iv.hi >> n})
	case op == 0xc0 && isConst: // arsh: the signed interval, shifted
		n, dom := uint64(k)&shiftMask, own[1]
		iv := d.B.get(dom)
		b.set(dom, interval{dom.keyOf(dom.int(iv.lo) >> n), dom.keyOf(dom.int(iv.hi) >> n)})
	case (op == 0x30 || op == 0x90) && in.Off == 0: // unsigned division and modulo
		b.set(own[0], divMod(op, d.B.get(own[0]), s.B.get(own[0])))
	}
	for _, dom := range domains {
		if iv := b.get(dom); !r.B.narrowKeys(dom, iv.lo, iv.hi) {
			return fallback(r.Val, "ALU result")
		}
	}
	if nr, ok := r.sync(); ok {
		return nr
	}
	return fallback(r.Val, "ALU result")
}

// arith is the interval of x op y in domain dom for the operations that
// wrap (add, sub, mul; neg of x), false where the result could wrap.
func arith(op uint8, dom domain, x, y interval) (interval, bool) {
	if !dom.signed() {
		top := dom.top()
		switch op {
		case 0x00:
			lo, c1 := bits.Add64(x.lo, y.lo, 0)
			hi, c2 := bits.Add64(x.hi, y.hi, 0)
			return interval{lo, hi}, c1 == 0 && c2 == 0 && hi <= top
		case 0x10:
			return interval{x.lo - y.hi, x.hi - y.lo}, x.lo >= y.hi
		case 0x20:
			h, hi := bits.Mul64(x.hi, y.hi)
			return interval{x.lo * y.lo, hi}, h == 0 && hi <= top
		case 0x80: // -v for v in [lo, hi], none 0: 2^width - v
			return interval{top - x.hi + 1, top - x.lo + 1}, x.lo > 0
		}
		return interval{}, false
	}
	xl, xh, yl, yh := dom.int(x.lo), dom.int(x.hi), dom.int(y.lo), dom.int(y.hi)
	var lo, hi int64
	ok := true
	switch op {
	case 0x00:
		lo, hi = xl+yl, xh+yh
		ok = dom == s32 || !addOverflows(xl, yl) && !addOverflows(xh, yh)
	case 0x10:
		lo, hi = xl-yh, xh-yl
		ok = dom == s32 || !addOverflows(xl, -yh) && !addOverflows(xh, -yl) && yh != math.MinInt64 && yl != math.MinInt64
	case 0x20: // the corners, where every operand is below 2^31 in size
		for _, v := range []int64{xl, xh, yl, yh} {
			ok = ok && v > math.MinInt32 && v <= math.MaxInt32
		}
		lo, hi = xl*yl, xl*yl
		for _, p := range []int64{xl * yh, xh * yl, xh * yh} {
			lo, hi = min(lo, p), max(hi, p)
		}
	case 0x80:
		lo, hi = -xh, -xl
		ok = xl != dom.int(0) // the lowest value is its own negation
	default:
		return interval{}, false
	}
	if dom == s32 && (lo < math.MinInt32 || hi > math.MaxInt32) {
		return interval{}, false
	}
	return interval{dom.keyOf(lo), dom.keyOf(hi)}, ok
}

// addOverflows reports whether a+b leaves int64.
func addOverflows(a, b int64) bool {
	s := a + b
	return (a >= 0) == (b >= 0) && (s >= 0) != (a >= 0)
}

// divMod is the unsigned interval of x / y or x % y as RFC 9669 defines them
// (x/0 = 0, x%0 = x).
func divMod(op uint8, x, y interval) interval {
	if op == 0x30 { // no larger than the dividend
		iv := interval{0, x.hi / max(y.lo, 1)}
		if y.lo > 0 {
			iv.lo = x.lo / y.hi
		}
		return iv
	}
	switch {
	case x.hi < y.lo: // every divisor exceeds every dividend: x%y = x
		return x
	case y.lo > 0: // below the divisor
		return interval{0, min(x.hi, y.hi-1)}
	}
	return interval{0, x.hi} // x%0 = x
}

// signExtended is r's low n bits sign-extended (movsx, ldxs*): to 64 bits,
// or (w false) to 32 and then zero-extended. A value that already reads the
// same is kept as it is.
func signExtended(r Reg, n int, w bool) Reg {
	if r.Kind != Scalar {
		r = unknownScalar()
	}
	half := uint64(1) << (n - 1)
	if _, hi := r.Bounds(); hi < half {
		return r
	}
	t := r.Val.Lsh(uint(64 - n)).Arsh(uint(64 - n))
	dom := s64
	if !w {
		t, dom = t.Truncate(4), s32
	}
	x := scalar(t)
	lo, hi := -int64(half), int64(half-1)
	if x.B.narrowKeys(dom, dom.keyOf(lo), dom.keyOf(hi)) {
		if nx, ok := x.sync(); ok {
			return nx
		}
	}
	return fallback(t, "sign extension")
}
