package verifier

// Refinement: a conditional jump on numbers narrows both operands on both of
// its sides, as the kernel's reg_set_min_max does. A 64-bit comparison
// speaks of the 64-bit readings, a 32-bit one (jmp32) of the low halves; an
// unsigned order of the unsigned reading, a signed one of the signed; sync
// then carries what was learnt to the other readings and to the tnum. A side
// no value can take is not followed.

// branch narrows x (the jump's destination register) and y (its source
// register, or its immediate as a constant) where jump op is taken and where
// it falls through, on 64 bits (wide) or the low halves. Index 0 is x, 1 is y.
func branch(op uint8, wide bool, x, y Reg) (taken, fall [2]Reg, takenOK, fallOK bool) {
	ud, sd := u64, s64
	if !wide {
		ud, sd = u32, s32
	}
	switch op {
	case 0x10, 0x50: // jeq, jne
		eq, eqOK := equal(wide, x, y)
		ne, neOK := notEqual(wide, x, y)
		if op == 0x10 {
			return eq, ne, eqOK, neOK
		}
		return ne, eq, neOK, eqOK
	case 0x20, 0x30, 0xa0, 0xb0: // jgt, jge, jlt, jle
		return ordered(op, ud, x, y)
	case 0x60, 0x70: // jsgt, jsge: jgt, jge in the signed order
		return ordered(op-0x40, sd, x, y)
	case 0xc0, 0xd0: // jslt, jsle: jlt, jle in the signed order
		return ordered(op-0x20, sd, x, y)
	case 0x40: // jset
		return bitTest(wide, x, y)
	}
	return [2]Reg{x, y}, [2]Reg{x, y}, true, true
}

// ordered gives both sides of x op y for op jgt, jge, jlt or jle, in domain
// dom: jlt and jle are jgt and jge with the operands swapped, and each
// comparison's other side is its converse.
func ordered(op uint8, dom domain, x, y Reg) (taken, fall [2]Reg, takenOK, fallOK bool) {
	strict := op == 0x20 || op == 0xa0
	if op == 0x20 || op == 0x30 { // x > y (x >= y); else y >= x (y > x)
		taken, takenOK = greater(dom, strict, x, y)
		fall, fallOK = greater(dom, !strict, y, x)
		fall[0], fall[1] = fall[1], fall[0]
		return
	}
	taken, takenOK = greater(dom, strict, y, x)
	taken[0], taken[1] = taken[1], taken[0]
	fall, fallOK = greater(dom, !strict, x, y)
	return
}

// greater narrows x and y to x > y (strict) or x >= y in dom: x no lower than
// y's lowest, y no higher than x's highest (one past, if strict).
func greater(dom domain, strict bool, x, y Reg) ([2]Reg, bool) {
	xi, yi := x.B.get(dom), y.B.get(dom)
	var s uint64
	if strict {
		if yi.lo == dom.top() || xi.hi == 0 {
			return [2]Reg{x, y}, false
		}
		s = 1
	}
	ok := x.B.narrowKeys(dom, yi.lo+s, dom.top()) && y.B.narrowKeys(dom, 0, xi.hi-s)
	return synced(x, y, ok)
}

// equal narrows x and y to the values they share: in the 64-bit readings and
// the tnum (wide), or in the 32-bit readings and the tnum's low half.
func equal(wide bool, x, y Reg) ([2]Reg, bool) {
	doms := []domain{u32, s32}
	yt, xt := y.Val, x.Val
	if wide {
		doms = []domain{u64, s64, u32, s32}
	} else { // only the low halves meet
		yt, xt = yt.lowHalf(), xt.lowHalf()
	}
	ok := x.Val.overlaps(yt)
	if ok {
		x.Val, y.Val = x.Val.Intersect(yt), y.Val.Intersect(xt)
	}
	for _, d := range doms {
		xi, yi := x.B.get(d), y.B.get(d)
		ok = ok && x.B.narrowKeys(d, yi.lo, yi.hi) && y.B.narrowKeys(d, xi.lo, xi.hi)
	}
	regs, ok := synced(x, y, ok)
	for i, r := range regs {
		if r.Val.IsConst() { // a number now, whatever it pointed to (NULL, say)
			regs[i] = scalar(r.Val)
		}
	}
	return regs, ok
}

// notEqual narrows an operand against the other where that one is a
// constant (in the comparison's width) at an end of its intervals. A 64-bit
// test against 0 also proves a helper's heap-or-NULL result is not NULL.
func notEqual(wide bool, x, y Reg) ([2]Reg, bool) {
	ok := true
	trim := func(r *Reg, c Reg) {
		ct := c.Val
		if !wide {
			ct = ct.Truncate(4)
		}
		if !ct.IsConst() || !ok {
			return
		}
		if wide && ct.Value == 0 && r.Off == 0 && r.Span == 0 {
			r.MaybeNull = false
		}
		for _, d := range []domain{u64, s64, u32, s32} {
			if d.wide() != wide {
				continue
			}
			k, iv := d.key(ct.Value&d.top()), r.B.get(d)
			switch {
			case iv.lo == k && iv.hi == k:
				ok = false
			case iv.lo == k:
				iv.lo++
			case iv.hi == k:
				iv.hi--
			}
			r.B.set(d, iv)
		}
	}
	trim(&x, y)
	trim(&y, x)
	return synced(x, y, ok)
}

// bitTest gives both sides of jset x, k for a constant k: where it falls
// through, k's bits are 0 in x; where it is taken, x has one of them set (if
// k has one bit, that bit). A side the tnum rules out is not followed.
func bitTest(wide bool, x, y Reg) (taken, fall [2]Reg, takenOK, fallOK bool) {
	kt := y.Val
	if !wide {
		kt = kt.Truncate(4)
	}
	taken, fall = [2]Reg{x, y}, [2]Reg{x, y}
	if !kt.IsConst() {
		return taken, fall, true, true
	}
	k := kt.Value
	clear := Tnum{Mask: ^k}
	fallOK = x.Val.overlaps(clear)
	if fallOK {
		fall[0].Val = x.Val.Intersect(clear)
		fall, fallOK = synced(fall[0], y, true)
	}
	takenOK = x.Val.Max()&k != 0
	if set := (Tnum{Value: k, Mask: ^k}); takenOK && k&(k-1) == 0 {
		takenOK = x.Val.overlaps(set)
		taken[0].Val = x.Val.Intersect(set)
		taken, takenOK = synced(taken[0], y, takenOK)
	}
	return taken, fall, takenOK, fallOK
}

// synced is x and y, each synced, and ok if neither is left without values.
func synced(x, y Reg, ok bool) ([2]Reg, bool) {
	if !ok {
		return [2]Reg{x, y}, false
	}
	x, xOK := x.sync()
	y, yOK := y.sync()
	return [2]Reg{x, y}, xOK && yOK
}
