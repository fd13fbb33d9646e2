package verifier

import (
	"github.com/kflex-go/kflex/abi"
)

// Allocations as references.
//
// A pointer returned by the allocation helper (abi.HelperAlloc) is an owned
// reference, as the kernel tracks acquired references (ref_obj_id), from the
// call's return, before its test against 0 and after it, until it is
// published:
//
//   - passed to the free helper (abi.HelperFree): released;
//   - stored anywhere but its own frame's stack (through a heap pointer or
//     into the context), whatever the store's size: another party can then
//     reach it;
//   - returned in r0 by the main program's exit: handed to the invoker.
//
// Until then it is unpublished, and the frame holding it lists, at each of
// its cancellation points and call sites, one place that keeps its pointer
// (a register, or an 8-byte stack slot it was stored to whole): the runtime
// frees it there when it stops the program. Past a test against 0, the side
// where it is 0 holds nothing.
//
// The rules that keep the lists exact: an allocation no register or stack
// slot keeps any more is lost, and rejected where the loss is first seen;
// paths meet holding the same allocations in common places (one path may
// have instead a register known to be 0 where the other keeps one: it holds
// the allocation or NULL there, which frees nothing); no exit leaves an
// unpublished allocation behind, a subprogram's exit none at all (its r0
// goes to a caller that does not track it). An allocation passed to a
// subprogram in r1-r5 is handed to it (the caller lists it no more, the
// callee owns it), except to the lock subprograms, which keep no pointer.
//
// Values reloaded from the stack are numbers (State), but an 8-byte reload
// of a slot keeping an allocation is taken to be it for ownership: freeing
// or storing the reloaded value publishes it. A frame lives in the sandbox,
// where a store through a heap alias (by the program or another process)
// can change a slot behind the analysis' back: the runtime should take a
// pointer read from a stack slot for what it is, one the program could have
// passed to the free helper itself, and may check it against the
// allocations it made for the invocation.

// maxAllocs is how many unpublished allocations a frame may hold at once.
const maxAllocs = 8

// numPlaces: registers r0-r9, then the frame's 8-byte stack slots from the
// top (slot k is at fp-8(k+1)).
const numPlaces = 10 + frameSize/8

func stackPlace(off int64) int { return 10 + int(-off/8) - 1 }

// hasAllocs reports whether s holds any unpublished allocation.
func (s *State) hasAllocs() bool { return s.Allocs != [maxAllocs]int32{} }

// newAlloc records an allocation made at slot site, kept in register r.
func (s *State) newAlloc(pc int, site int32, r uint8) error {
	for id := range s.Allocs {
		if s.Allocs[id] == 0 {
			s.Allocs[id] = site
			s.RefAt[r] = uint8(id + 1)
			return nil
		}
	}
	return reject(pc, "more than %d unpublished allocations held at once", maxAllocs)
}

// publish forgets the allocation whose pointer register r keeps, if any:
// it is freed, stored out of the frame, or handed on.
func (s *State) publish(r uint8) {
	if r < 10 && s.RefAt[r] != 0 {
		s.drop(int(s.RefAt[r]) - 1)
	}
}

// drop forgets allocation id, wherever it is kept.
func (s *State) drop(id int) {
	s.Allocs[id] = 0
	for p, t := range s.RefAt {
		if int(t) == id+1 {
			s.RefAt[p] = 0
		}
	}
}

// clobberStack forgets the allocations kept in the stack slots that the
// size bytes at off overlap, and keeps src's there if it is an 8-byte store
// of a register that keeps one to a whole slot (src < 0: no register).
func (s *State) clobberStack(off int64, size int, src int) {
	for b := off &^ 7; b < off+int64(size); b += 8 {
		s.RefAt[stackPlace(b)] = 0
	}
	if src >= 0 && src < 10 && size == 8 && off%8 == 0 {
		s.RefAt[stackPlace(off)] = s.RefAt[src]
	}
}

// lostAlloc is the site of an allocation s holds that no place keeps, or 0.
func (s *State) lostAlloc() int32 {
	if !s.hasAllocs() {
		return 0
	}
	var kept [maxAllocs]bool
	for _, t := range s.RefAt {
		if t != 0 {
			kept[t-1] = true
		}
	}
	for id, site := range s.Allocs {
		if site != 0 && !kept[id] {
			return site
		}
	}
	return 0
}

// checkAllocs rejects, at pc, a state that lost an allocation or where
// paths met holding different ones.
func (s *State) checkAllocs(pc int) error {
	if s.AllocsDiffer != 0 {
		return reject(pc, "paths meet here holding different unpublished allocations (the one made at insn %d)", s.AllocsDiffer-1)
	}
	if site := s.lostAlloc(); site != 0 {
		return reject(pc, "the allocation made at insn %d is lost: no register or stack slot keeps it, and it was neither freed, stored out of the frame nor returned",
			site-1)
	}
	return nil
}

// checkExit rejects an exit that leaves an unpublished allocation behind:
// any, from a subprogram; any but r0's, from the main program.
func (s *State) checkExit(pc int, main bool) error {
	for id, site := range s.Allocs {
		if site == 0 {
			continue
		}
		if !main {
			return reject(pc, "exit from a subprogram holding the allocation made at insn %d: free it or store it in the heap (a subprogram cannot return one)", site-1)
		}
		if int(s.RefAt[0]) != id+1 {
			return reject(pc, "exit with the allocation made at insn %d unpublished: free it, store it in the heap or return it", site-1)
		}
	}
	return nil
}

// nullSide forgets, on the side of a 64-bit comparison where register r is
// 0, the allocation r keeps: NULL holds nothing.
func nullSide(s *State, r uint8) {
	if r < 10 && s.RefAt[r] != 0 {
		s.drop(int(s.RefAt[r]) - 1)
	}
}

// handOver moves the allocations a call to a subprogram passes in r1-r5
// from the caller's state s to the callee's entry state e (nil: only
// forget them in s).
func handOver(s, e *State) {
	for r := 1; r <= 5; r++ {
		t := s.RefAt[r]
		if t == 0 {
			continue
		}
		if e != nil { // the same id: the callee's frame holds nothing else yet
			e.Allocs[t-1] = s.Allocs[t-1]
			for q := r; q <= 5; q++ {
				if s.RefAt[q] == t {
					e.RefAt[q] = t
				}
			}
		}
		s.drop(int(t) - 1)
	}
}

// joinAllocs merges o's allocations into s (joinInto): those held in the
// same places on both paths stay, in the places both keep them; one held on
// one path only stays if the other has 0 in each register that keeps it
// (it is the allocation or NULL there); anything else marks s AllocsDiffer.
func (s *State) joinAllocs(o *State) bool {
	if !s.hasAllocs() && !o.hasAllocs() {
		return false
	}
	changed := false
	for id := range s.Allocs {
		a, b := s.Allocs[id], o.Allocs[id]
		switch {
		case a == b && a == 0:
		case a == b:
			common := false
			for p := range s.RefAt {
				if int(s.RefAt[p]) == id+1 {
					if int(o.RefAt[p]) == id+1 {
						common = true
					} else {
						s.RefAt[p], changed = 0, true
					}
				}
			}
			if !common {
				s.markDiffer(a)
				changed = true
			}
		case b == 0 && nullWhereKept(s, o, id):
		case a == 0 && nullWhereKept(o, s, id) && !s.kept(id):
			s.Allocs[id] = b
			for p, t := range o.RefAt {
				if int(t) == id+1 {
					s.RefAt[p] = t
				}
			}
			changed = true
		default:
			s.markDiffer(max(a, b))
			changed = true
		}
	}
	return changed
}

func (s *State) markDiffer(site int32) {
	if s.AllocsDiffer == 0 {
		s.AllocsDiffer = site
	}
}

// kept reports whether some place of s holds tag id+1.
func (s *State) kept(id int) bool {
	for _, t := range s.RefAt {
		if int(t) == id+1 {
			return true
		}
	}
	return false
}

// nullWhereKept: every place where x keeps allocation id is a register y
// holds 0 in, and y keeps nothing there.
func nullWhereKept(x, y *State, id int) bool {
	for p, t := range x.RefAt {
		if int(t) != id+1 {
			continue
		}
		if p >= 10 || y.RefAt[p] != 0 {
			return false
		}
		if v, ok := constOf(y.Regs[p]); !ok || v != 0 {
			return false
		}
	}
	return true
}

// isAlloc and isFree: the helper numbers the verifier tracks allocations by.
func isAlloc(id int32) bool { return id == abi.HelperAlloc }
func isFree(id int32) bool  { return id == abi.HelperFree }

// passAllocs applies a call to the subprogram named name to the allocations
// of the caller's state s: those passed in r1-r5 are handed to the callee
// (entry state e; nil: forgotten only), except by a call to the lock
// subprograms, which keep no pointer. A frame pointer passed lets the callee
// write the caller's stack slots: they keep nothing any more.
func (a *analysis) passAllocs(s, e *State, name string) {
	if !s.hasAllocs() {
		return
	}
	if name == "" || name != a.cfg.LockFunc && name != a.cfg.UnlockFunc {
		handOver(s, e)
	}
	for r := 1; r <= 5; r++ {
		if s.Regs[r].Kind == PtrStack {
			clear(s.RefAt[10:])
		}
	}
}
