package verifier

import (
	"github.com/kflex-go/kflex/bytecode"
)

// sameFunction is the rule that a program breaks where a lock is released
// that its function does not hold, or a function returns holding one: locks
// are counted per frame.
const sameFunction = "a lock is taken and released in the same function, which returns holding none"

func (a *analysis) jump(pc int, s *State, in bytecode.Slot) error {
	succ := a.g.Succ[pc]
	switch in.Op {
	case 0x95: // exit
		r0, err := a.read(pc, s, 0)
		if err != nil {
			return err
		}
		if r0.Kind != Scalar {
			return reject(pc, "exit with a %v pointer in R0", r0.Kind)
		}
		if s.Locks != 0 {
			return reject(pc, "exit with %d lock(s) held, the last taken at insn %d (%s)", s.Locks, s.LockSite-1, sameFunction)
		}
		return s.checkExit(pc, len(a.g.Subprogs) < 2 || pc < a.g.Subprogs[1])
	case 0x85, 0x8d: // call, callx
		if in.Op == 0x85 && in.Src == bytecode.CallLocal {
			return a.localCall(pc, s, in)
		}
		ids := []int32{in.Imm}
		if in.Op == 0x8d {
			r, err := a.read(pc, s, in.Dst)
			if err != nil {
				return err
			}
			if ids, err = callxTargets(pc, in.Dst, r); err != nil {
				return err
			}
		}
		heapOrNull, allocs, frees := true, 0, 0
		for _, id := range ids {
			if isAlloc(id) {
				allocs++
			}
			if isFree(id) {
				frees++
			}
			h, ok := a.cfg.Helpers[id]
			if !ok {
				return reject(pc, "call to unknown helper %d", id)
			}
			for r := uint8(1); r <= uint8(h.Args); r++ {
				v, err := a.read(pc, s, r)
				if err != nil {
					return reject(pc, "helper %s reads R%d, which is not set", h.Name, r)
				}
				if int(r) <= len(h.Params) {
					if err := checkParam(pc, h, r, v); err != nil {
						return err
					}
				}
			}
			heapOrNull = heapOrNull && h.HeapOrNull
		}
		if (allocs != 0 || frees != 0) && len(ids) > 1 {
			return reject(pc, "callx r%d may call the allocation or free helper among others: call them directly", in.Dst)
		}
		if frees != 0 {
			s.publish(1) // released (refs.go)
		}
		afterCall(s)
		if heapOrNull {
			s.set(0, heapPointer(true, 0))
		}
		if allocs != 0 {
			if err := s.newAlloc(pc, int32(pc+1), 0); err != nil {
				return err
			}
		}
		a.flow(succ[0], s)
		return nil
	case 0x05, 0x06, 0xe5: // ja, ja32, may_goto
		for _, t := range succ {
			a.flow(t, s)
		}
		return nil
	}
	d, err := a.read(pc, s, in.Dst)
	if err != nil {
		return err
	}
	var src Reg
	if in.Op&0x08 != 0 {
		if src, err = a.read(pc, s, in.Src); err != nil {
			return err
		}
	}
	fall, taken := *s, *s
	fallOK, takenOK := true, true
	// Refinement (refine.go): both operands, if numbers, narrow on both
	// sides; a side no value can take is not followed.
	if hasSrc := in.Op&0x08 != 0; d.Kind == Scalar && (!hasSrc || src.Kind == Scalar) {
		y := src
		if !hasSrc {
			y = scalar(Const(uint64(int64(in.Imm))))
		}
		t, f, tOK, fOK := branch(in.Op&0xf0, in.Op&7 == 0x05, d, y)
		taken.Regs[in.Dst], fall.Regs[in.Dst], takenOK, fallOK = t[0], f[0], tOK, fOK
		if hasSrc && in.Src != in.Dst {
			taken.Regs[in.Src], fall.Regs[in.Src] = t[1], f[1]
		}
		// On the side where an allocation's pointer is NULL, there is
		// nothing to free (refs.go).
		if zero, ok := constOf(y); ok && zero == 0 && in.Op&7 == 0x05 {
			switch in.Op & 0xf0 {
			case 0x10: // jeq
				nullSide(&taken, in.Dst)
			case 0x50: // jne
				nullSide(&fall, in.Dst)
			}
		}
	}
	if fallOK {
		a.flow(succ[0], &fall)
	}
	if takenOK {
		a.flow(succ[1], &taken)
	}
	return nil
}

// maxCallxTargets is how many helpers a callx may be shown to choose among.
const maxCallxTargets = 8

// callxTargets are the helpers a callx through register reg, holding r, may
// call: the engines take the register's low half as the helper's number, so
// the numbers its signed 32-bit interval and its tnum allow, if they are few.
func callxTargets(pc int, reg uint8, r Reg) ([]int32, error) {
	if r.Kind != Scalar {
		return nil, reject(pc, "callx r%d holds a %v pointer, not a helper's number", reg, r.Kind)
	}
	iv, low := r.B.get(s32), r.Val.Truncate(4)
	if iv.hi-iv.lo >= maxCallxTargets {
		return nil, reject(pc, "callx r%d: the helper is only known at run time (%v); at most %d candidates can be checked",
			reg, r, maxCallxTargets)
	}
	var ids []int32
	for k := iv.lo; k <= iv.hi; k++ {
		if id := int32(s32.int(k)); low.Contains(uint64(uint32(id))) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// checkParam rejects argument v in register r of a call to h where h's
// prototype does not take it.
func checkParam(pc int, h Helper, r uint8, v Reg) error {
	switch h.Params[r-1] {
	case ParamNumber, ParamNonNull:
		if v.Kind != Scalar {
			return reject(pc, "helper %s: R%d is a %v pointer; it takes a number", h.Name, r, v.Kind)
		}
		if lo, _ := v.Bounds(); h.Params[r-1] == ParamNonNull && lo == 0 && !(v.Checked && !v.MaybeNull) {
			return reject(pc, "helper %s: R%d may be 0 (%v); test it first", h.Name, r, v)
		}
	}
	return nil
}

// release forgets the held lock whose address register r keeps. If r is not
// known to keep one, some lock was released, but which is not known: the
// registers of those still held are forgotten too.
func (s *State) release(r int8) {
	n := int(s.Locks)
	i := n - 1
	for j := range n {
		if r != 0 && s.Held[j] == r {
			i = j
		}
	}
	if r == 0 || s.Held[i] != r {
		clear(s.Held[:n])
	}
	copy(s.Held[i:n], s.Held[i+1:n])
	s.Held[n-1] = 0
	s.Locks--
}

// afterCall: r0 holds the result, r1-r5 are clobbered.
func afterCall(s *State) {
	s.set(0, unknownScalar())
	for r := uint8(1); r <= 5; r++ {
		s.set(r, Reg{})
	}
}

// localCall enters the subprogram with the caller's r1-r5 and a fresh frame,
// and continues after the call with the callee's result unknown.
func (a *analysis) localCall(pc int, s *State, in bytecode.Slot) error {
	callee := a.g.Calls[pc]
	var e State
	for r := 1; r <= 5; r++ {
		e.Regs[r] = s.Regs[r]
		e.Regs[r].Alias = 0 // the caller's registers are not the callee's
		if s.Regs[r].Kind == PtrStack {
			// The callee sees the caller's frame at an offset it cannot
			// know; as a number, its accesses are guarded.
			e.Regs[r] = unknownScalar()
		}
	}
	e.Regs[10] = Reg{Kind: PtrStack}
	name := a.symbol(callee)
	a.passAllocs(s, &e, name)
	a.flow(callee, &e)
	lockReg := s.Regs[1].Alias // r1 is the lock's address: which register keeps it
	afterCall(s)
	switch {
	case name == "":
	case name == a.cfg.LockFunc:
		if s.Locks >= maxLocks {
			return reject(pc, "more than %d locks held at once", maxLocks)
		}
		s.Held[s.Locks] = lockReg
		s.Locks++
		s.LockSite = pc + 1
	case name == a.cfg.UnlockFunc:
		if s.Locks == 0 {
			return reject(pc, "%s without a lock held (%s)", name, sameFunction)
		}
		s.release(lockReg)
	}
	a.flow(a.g.Succ[pc][0], s)
	return nil
}
