package verifier

import (
	"math"
	"math/bits"
)

// Unsigned bounds. A scalar's tnum knows its bits; it cannot say "between 1
// and 3" or keep "below 4096" through a subtraction. A scalar also carries an
// unsigned interval, kept by addition, subtraction and shifts and narrowed by
// the comparisons a program branches on, as the kernel's umin/umax are. The
// two describe one value: each narrows the other (see withBounds).
//
// The interval is stored so that the zero value admits everything: every
// scalar made without bounds (a load, a helper's result) is unbounded but for
// its tnum.

// Bounds returns the unsigned range r's value lies in.
func (r Reg) Bounds() (lo, hi uint64) {
	return max(r.UMin, r.Val.Min()), min(^r.UMaxNot, r.Val.Max())
}

// withBounds narrows r to [lo, hi] and its tnum to match; ok is false when no
// value remains (the path cannot be taken).
func (r Reg) withBounds(lo, hi uint64) (Reg, bool) {
	clo, chi := r.Bounds()
	lo, hi = max(lo, clo), min(hi, chi)
	if lo > hi {
		return r, false
	}
	r.Val = r.Val.Intersect(Range(lo, hi))
	// Keep only what the tnum does not say, so that equal values compare
	// equal.
	r.UMin, r.UMaxNot = 0, 0
	if lo > r.Val.Min() {
		r.UMin = lo
	}
	if hi < r.Val.Max() {
		r.UMaxNot = ^hi
	}
	return r, true
}

// aluBounds is the interval of a 64-bit ALU result r = d op s (r already holds
// the tnum); where the operation could wrap, r keeps its tnum alone.
func aluBounds(op uint8, d, s, r Reg) Reg {
	dlo, dhi := d.Bounds()
	slo, shi := s.Bounds()
	var lo, hi uint64
	switch op {
	case 0x00: // add
		var c1, c2 uint64
		lo, c1 = bits.Add64(dlo, slo, 0)
		hi, c2 = bits.Add64(dhi, shi, 0)
		if c1 != 0 || c2 != 0 {
			return r
		}
	case 0x10: // sub
		if dlo < shi {
			return r
		}
		lo, hi = dlo-shi, dhi-slo
	case 0x20: // mul, where the high end does not wrap
		h, p := bits.Mul64(dhi, shi)
		if h != 0 {
			return r
		}
		lo, hi = dlo*slo, p
	case 0x30: // div (unsigned): no larger than the dividend; x/0 = 0
		lo, hi = 0, dhi/max(slo, 1)
		if slo > 0 {
			lo = dlo / shi
		}
	case 0x90: // mod (unsigned): below the divisor, or the dividend itself (x%0 = x)
		lo, hi = 0, dhi
		switch {
		case dhi < slo: // every divisor exceeds every dividend: x%s = x
			lo = dlo
		case slo > 0:
			hi = min(dhi, shi-1)
		}
	case 0x50: // and: no larger than either side
		lo, hi = 0, min(dhi, shi)
	case 0x60, 0x70: // shifts by a constant
		k, ok := constOf(s)
		if !ok || k < 0 || k > 63 {
			return r
		}
		if op == 0x70 {
			lo, hi = dlo>>k, dhi>>k
		} else if dhi > math.MaxUint64>>k {
			return r
		} else {
			lo, hi = dlo<<k, dhi<<k
		}
	default:
		return r
	}
	nr, ok := r.withBounds(lo, hi)
	if !ok { // cannot happen for sound inputs; stay with the tnum
		return r
	}
	return nr
}

// aluBounds32 is aluBounds for a 32-bit ALU operation, which works on the
// operands' low halves and zero-extends its result: where the operands fit in
// 32 bits (or are cut to an unknown 32-bit value) and the 64-bit result
// interval stays below 2^32, nothing wrapped and the interval holds.
func aluBounds32(op uint8, d, s, r Reg) Reg {
	d, s = d.low32(), s.low32()
	if op == 0x60 || op == 0x70 { // 32-bit shifts mask the count with 31
		k, ok := constOf(s)
		if !ok {
			return r
		}
		s = scalar(Const(uint64(k) & 31))
	}
	// The interval alone first: intersected with r's (32-bit) tnum it would
	// hide a wrap.
	b := aluBounds(op, d, s, unknownScalar())
	lo, hi := b.Bounds()
	if hi > math.MaxUint32 {
		return r
	}
	if nr, ok := r.withBounds(lo, hi); ok {
		return nr
	}
	return r
}

// low32 is r as a 32-bit operation reads it: r itself if it fits in 32 bits,
// otherwise its tnum cut to the low half.
func (r Reg) low32() Reg {
	if _, hi := r.Bounds(); hi <= math.MaxUint32 {
		return r
	}
	return scalar(r.Val.Truncate(4))
}

// joinBounds is the interval where a (the state so far) and b (arriving) meet:
// both ranges' hull, where an end that moves is widened to a power of two (the
// low end down to one or to 0, the high end up to one less), so that a counter
// round a loop reaches its fixpoint in a few dozen passes at most, not one
// pass per step. The comparison that bounds the loop then trims the widened
// end back.
func joinBounds(j, a, b Reg) Reg {
	alo, ahi := a.Bounds()
	blo, bhi := b.Bounds()
	lo, hi := alo, ahi
	if blo < alo {
		lo = 0
		if blo > 0 {
			lo = 1 << (bits.Len64(blo) - 1)
		}
	}
	if bhi > ahi {
		hi = math.MaxUint64 >> bits.LeadingZeros64(bhi)
	}
	if nj, ok := j.withBounds(lo, hi); ok {
		return nj
	}
	return j
}

// refine narrows the scalar x on both sides of the 64-bit comparison "x op
// k": the bounds where the branch is taken, and where it falls through; a
// false ok says that side cannot happen.
func refine(op uint8, x Reg, k uint64) (taken, fall Reg, takenOK, fallOK bool) {
	switch op {
	case 0x20, 0x30, 0xa0, 0xb0: // jgt, jge, jlt, jle
		geq := func(lo uint64) (Reg, bool) { return x.withBounds(lo, math.MaxUint64) }
		leq := func(hi uint64) (Reg, bool) { return x.withBounds(0, hi) }
		return ordered(op, x, k, 0, math.MaxUint64, geq, leq)
	case 0x10, 0x50: // jeq, jne: x = k on one side; off an end of its range on the other
		eq, eqOK := x.withBounds(k, k)
		if eqOK {
			eq = scalar(Const(k))
		}
		ne, neOK := x, true
		if k == 0 && x.Off == 0 && x.Span == 0 {
			// Not 0, so the address the helper returned (moved, NULL
			// would not be 0 any more: that test proves nothing).
			ne.MaybeNull = false
		}
		if lo, hi := ne.Bounds(); lo == k && hi == k {
			neOK = false
		} else if lo == k {
			ne, neOK = ne.withBounds(k+1, hi)
		} else if hi == k {
			ne, neOK = ne.withBounds(lo, k-1)
		}
		if op == 0x10 {
			return eq, ne, eqOK, neOK
		}
		return ne, eq, neOK, eqOK
	case 0x60, 0x70, 0xc0, 0xd0: // jsgt, jsge, jslt, jsle
		return refineSigned(op, x, k)
	default:
		return x, x, true, true
	}
}

// refine32 is refine for a 32-bit comparison (jmp32), which compares the low
// halves. Where x is known to fit in 32 bits its low half is x itself, so the
// 64-bit refinement with k's low half applies, and for the signed orders
// where x also fits in 31 bits (non-negative as an int32) with k's low half
// sign-extended. Otherwise nothing is learnt (both sides stay possible).
func refine32(op uint8, x Reg, k uint64) (taken, fall Reg, takenOK, fallOK bool) {
	_, hi := x.Bounds()
	switch op {
	case 0x10, 0x50, 0x20, 0x30, 0xa0, 0xb0:
		if hi <= math.MaxUint32 {
			return refine(op, x, uint64(uint32(k)))
		}
	case 0x60, 0x70, 0xc0, 0xd0:
		if hi <= math.MaxInt32 {
			return refine(op, x, uint64(int64(int32(k))))
		}
	}
	return x, x, true, true
}

// refineSigned narrows x on both sides of a signed comparison with k: the
// comparisons of ordered in the signed order, whose ends are MinInt64 and
// MaxInt64. Each side is a signed range, which is one unsigned range if it does
// not cross zero, and two otherwise ([lo, MaxUint64] for its negative part,
// [0, hi] for the rest). Intersected with x's unsigned range, a side that
// leaves one piece narrows x to it; one that leaves two keeps x as it was (one
// interval cannot say more); one that leaves nothing cannot happen.
func refineSigned(op uint8, x Reg, k uint64) (taken, fall Reg, takenOK, fallOK bool) {
	geq := func(lo uint64) (Reg, bool) { return signedSide(x, int64(lo), math.MaxInt64) }
	leq := func(hi uint64) (Reg, bool) { return signedSide(x, math.MinInt64, int64(hi)) }
	// jsgt, jsge, jslt, jsle are jgt, jge, jlt, jle in the signed order.
	unsigned := op - 0x40 // 0x60 -> 0x20, 0x70 -> 0x30
	if op >= 0xc0 {
		unsigned = op - 0x20 // 0xc0 -> 0xa0, 0xd0 -> 0xb0
	}
	return ordered(unsigned, x, k, 1<<63, math.MaxInt64, geq, leq)
}

// signedSide narrows x to the values whose signed reading lies in [lo, hi]
// (lo <= hi), where one unsigned interval can say so (see refineSigned).
func signedSide(x Reg, lo, hi int64) (Reg, bool) {
	if lo >= 0 || hi < 0 { // one piece, in one half of the unsigned order
		return x.withBounds(uint64(lo), uint64(hi))
	}
	neg, negOK := x.withBounds(uint64(lo), math.MaxUint64)
	pos, posOK := x.withBounds(0, uint64(hi))
	switch {
	case negOK && posOK:
		return x, true
	case negOK:
		return neg, true
	case posOK:
		return pos, true
	}
	return x, false
}

// ordered gives both sides of "x op k" for op jgt, jge, jlt or jle of an
// order whose ends are lowest and highest, from geq(v) and leq(v), which
// narrow x to x >= v and x <= v. jlt and jle are jge and jgt with their
// sides swapped; at an end of the order one side cannot happen.
func ordered(op uint8, x Reg, k, lowest, highest uint64, geq, leq func(uint64) (Reg, bool)) (taken, fall Reg, takenOK, fallOK bool) {
	var holds, fails Reg // x >= k (jge, jlt) or x > k (jgt, jle), and the complement
	var holdsOK, failsOK bool
	switch op {
	case 0x30, 0xa0:
		holds, holdsOK = geq(k)
		fails, failsOK = x, false
		if k != lowest {
			fails, failsOK = leq(k - 1)
		}
	case 0x20, 0xb0:
		holds, holdsOK = x, false
		if k != highest {
			holds, holdsOK = geq(k + 1)
		}
		fails, failsOK = leq(k)
	}
	if op == 0xa0 || op == 0xb0 {
		return fails, holds, failsOK, holdsOK
	}
	return holds, fails, holdsOK, failsOK
}
