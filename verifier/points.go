package verifier

import "slices"

// CancelPoint is what one frame holds at one instruction where the runtime
// may find it stopped: a cancellation point (back-edges and helper calls:
// the innermost frame of a cancelled program) or a bpf-to-bpf call site (a
// caller's frame, while the subprogram it called runs).
type CancelPoint struct {
	Slot  int
	Locks int // taken through Config.LockFunc and not released yet, in this frame
	// LockRegs names, for each of those locks in the order taken, the
	// callee-saved register (6-9) that holds its address there, or 0 if none
	// is known to (the program passed mcs_lock an address it keeps nowhere,
	// or changed the register since).
	LockRegs []int
}

// HeldAt is what the frame stopped at slot pc holds: the CancelTable entry
// of a cancellation point or the CallTable entry of a call site (a call
// that is also a cancellation point cannot be: a helper call is never a
// bpf-to-bpf call). false if pc is neither, or the analysis never reached it.
func (r *Result) HeldAt(pc int) (CancelPoint, bool) {
	for _, t := range [][]CancelPoint{r.CancelTable, r.CallTable} {
		if i, ok := slices.BinarySearchFunc(t, pc, func(c CancelPoint, pc int) int { return c.Slot - pc }); ok {
			return t[i], true
		}
	}
	return CancelPoint{}, false
}

// table is what each frame holds at pcs (in order), from the states kept
// there, for those the analysis reached. At a call site (calls), only what
// the callee cannot change is named: r6-r9, which it preserves for its caller.
func (a *analysis) table(pcs []int, calls bool) []CancelPoint {
	var t []CancelPoint
	for _, pc := range pcs {
		s := a.in[pc]
		if s == nil {
			continue
		}
		cp := CancelPoint{Slot: pc, Locks: int(s.Locks)}
		for _, reg := range s.Held[:min(int(s.Locks), maxLocks)] {
			cp.LockRegs = append(cp.LockRegs, int(reg))
		}
		t = append(t, cp)
	}
	return t
}

// callSites are the slots of bpf-to-bpf calls, in order.
func (g *CFG) callSites() []int {
	pcs := make([]int, 0, len(g.Calls))
	for pc := range g.Calls {
		pcs = append(pcs, pc)
	}
	sortInts(pcs)
	return pcs
}
