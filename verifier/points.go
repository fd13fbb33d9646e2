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
	// Allocs are the unpublished allocations the frame holds there (refs.go),
	// each with one place that keeps its pointer, for the runtime to free.
	Allocs []Alloc
}

// Alloc is an unpublished allocation and where its pointer is: a register
// (at a call site one of r6-r9, which the callee preserves) or an 8-byte
// stack slot of the frame (Reg OnStack).
type Alloc struct {
	Site int // the slot of the allocation helper's call that made it
	Reg  int // 0-9, or OnStack
	Off  int // OnStack: the slot's offset from the frame pointer (r10), -8 to -512
}

// OnStack is Alloc.Reg for a pointer kept in a stack slot.
const OnStack = -1

// placeOrder is the order in which places are considered for an Alloc:
// the callee-saved registers, the stack, then the rest (not at call sites).
var placeOrder = func() []int {
	order := []int{6, 7, 8, 9}
	for p := 10; p < numPlaces; p++ {
		order = append(order, p)
	}
	return append(order, 0, 1, 2, 3, 4, 5)
}()

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
		if s.hasAllocs() {
			st := *s
			places := placeOrder
			if calls {
				a.passAllocs(&st, nil, a.symbol(a.g.Calls[pc]))
				places = placeOrder[:len(placeOrder)-6]
			}
			cp.Allocs = st.allocPlaces(places)
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

// allocPlaces lists s's allocations, each at the first of places (by
// placeOrder's numbering) that keeps it; one kept in none of them is left
// out (the analysis rejects losing one; at a call site, one only in r0-r5
// is lost at the return).
func (s *State) allocPlaces(places []int) []Alloc {
	var out []Alloc
	for id, site := range s.Allocs {
		if site == 0 {
			continue
		}
		for _, p := range places {
			if int(s.RefAt[p]) != id+1 {
				continue
			}
			al := Alloc{Site: int(site) - 1, Reg: p}
			if p >= 10 {
				al.Reg, al.Off = OnStack, -8*(p-10+1)
			}
			out = append(out, al)
			break
		}
	}
	return out
}

// releasable rejects a program that can be stopped while it holds a lock
// whose address no callee-saved register keeps: a cancellation there could
// not release the lock (the table names where each held lock's address is,
// and the runtime releases exactly what it names). Stops happen at the
// cancellation points, and in a callee of a call site; the lock's own
// subprograms (Config.LockFunc, UnlockFunc) are not stopped midway (the
// runtime shields them), so their call sites need no register.
func (a *analysis) releasable(r *Result) error {
	check := func(cp CancelPoint, where string) error {
		for i, reg := range cp.LockRegs {
			if reg == 0 {
				return reject(cp.Slot, "%s with lock %d of %d held, and no callee-saved register (r6-r9) keeps its address: "+
					"keep the address passed to %s in one while the lock is held, so that a cancellation can release it "+
					"(in C: a local pointer variable passed to kflex_lock and kflex_unlock; a global lock through kflex_keep(&lock), include/kflex.h)",
					where, i+1, cp.Locks, a.cfg.LockFunc)
			}
		}
		return nil
	}
	for _, cp := range r.CancelTable {
		if err := check(cp, "a cancellation point"); err != nil {
			return err
		}
	}
	for _, cp := range r.CallTable {
		if name := a.symbol(a.g.Calls[cp.Slot]); name == a.cfg.LockFunc || name == a.cfg.UnlockFunc {
			continue
		}
		if err := check(cp, "a call"); err != nil {
			return err
		}
	}
	return nil
}
