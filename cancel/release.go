package cancel

import (
	"errors"
	"fmt"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/verifier"
)

// What a cancelled invocation holds.
//
// The verifier's tables are the contract (verifier.Result.HeldAt): for each
// cancellation point, what the frame stopped there holds, and for each
// bpf-to-bpf call site, what a caller holds while its callee runs. Plan
// reads them against the call stack the engine reports at the stop
// (interp.RuntimeError.Stack) and says what to release, frame by frame:
//
//   - the locks taken through mcs_lock and not released, by the address a
//     callee-saved register keeps (0 where the table knows none);
//   - the allocations made through abi.HelperAlloc and not published. An
//     allocation is published when the program passed it to abi.HelperFree,
//     stored it anywhere but its own frame's stack (through a heap pointer,
//     or into the context), or returned it in r0 from the main program's
//     exit; until then only the invocation can reach it, and the runtime
//     frees it when it cancels. Each is read from the register or stack slot
//     the table names; one read from a stack slot is marked Spilled: frames
//     live in the sandbox, where a store through a heap alias may have
//     changed it, so the runtime should check it is an allocation it made
//     for this invocation before freeing it.
//
// Nothing is guessed at run time: a stack the table does not describe (a
// frame stopped where the table has no entry, a place the table names that
// the engine did not report) is an error wrapping ErrTableMismatch, never a
// shorter list.

// ErrTableMismatch: the stopped stack and the verifier's table disagree.
var ErrTableMismatch = errors.New("the call stack does not match the cancellation table")

// Table is what a verified program holds where it may stop:
// *verifier.Result.
type Table interface {
	HeldAt(pc int) (verifier.CancelPoint, bool)
}

// Held is what a stopped invocation holds, frame by frame, innermost first.
type Held struct {
	Frames []FrameHeld
}

// FrameHeld is what one frame holds where it stopped (Insn: the
// cancellation point, or the call for a caller).
type FrameHeld struct {
	Insn   int
	Locks  []uint64 // the held locks' addresses, in the order taken (0: no register known to keep it)
	Allocs []Allocation
}

// Allocation is an unpublished allocation to free.
type Allocation struct {
	Ptr     uint64
	Site    int  // the slot of the HelperAlloc call that made it
	Spilled bool // read from a stack slot (see the package doc)
}

// Locks are the addresses of all the locks held, innermost frame first.
func (h Held) Locks() []uint64 {
	var out []uint64
	for _, f := range h.Frames {
		out = append(out, f.Locks...)
	}
	return out
}

// Allocs are all the allocations to free, innermost frame first.
func (h Held) Allocs() []Allocation {
	var out []Allocation
	for _, f := range h.Frames {
		out = append(out, f.Allocs...)
	}
	return out
}

// Plan says what the invocation stopped with stack holds, from table;
// readStack reads the 8-byte word at a stack address (Frame.FP minus an
// offset) in the engine's memory. An allocation pointer read as 0 (one
// that failed, before its test) holds nothing and is left out.
func Plan(table Table, stack []interp.Frame, readStack func(addr uint64) uint64) (Held, error) {
	if len(stack) == 0 {
		return Held{}, fmt.Errorf("%w: no frames", ErrTableMismatch)
	}
	if len(stack) > abi.MaxFrames {
		return Held{}, fmt.Errorf("%w: %d frames (at most %d)", ErrTableMismatch, len(stack), abi.MaxFrames)
	}
	var h Held
	seen := map[uint64]int{} // allocation pointer → its frame
	for i := range stack {
		f := &stack[i]
		cp, ok := table.HeldAt(f.Insn)
		if !ok {
			return Held{}, mismatch(i, f, "no table entry for the instruction")
		}
		fh := FrameHeld{Insn: f.Insn}
		if len(cp.LockRegs) != cp.Locks {
			return Held{}, mismatch(i, f, fmt.Sprintf("%d locks, %d lock registers", cp.Locks, len(cp.LockRegs)))
		}
		for _, r := range cp.LockRegs {
			if r == 0 {
				fh.Locks = append(fh.Locks, 0)
				continue
			}
			if !f.Has(r) {
				return Held{}, mismatch(i, f, fmt.Sprintf("the table names r%d for a lock, which the engine did not report", r))
			}
			fh.Locks = append(fh.Locks, f.Regs[r])
		}
		for _, a := range cp.Allocs {
			al := Allocation{Site: a.Site}
			switch {
			case a.Reg == verifier.OnStack:
				if a.Off > -8 || a.Off < -abi.StackSize || a.Off%8 != 0 {
					return Held{}, mismatch(i, f, fmt.Sprintf("stack slot %d for the allocation made at %d", a.Off, a.Site))
				}
				al.Ptr, al.Spilled = readStack(f.FP+uint64(int64(a.Off))), true
			case f.Has(a.Reg):
				al.Ptr = f.Regs[a.Reg]
			default:
				return Held{}, mismatch(i, f, fmt.Sprintf("the table names r%d for the allocation made at %d, which the engine did not report", a.Reg, a.Site))
			}
			if al.Ptr == 0 {
				continue
			}
			if j, dup := seen[al.Ptr]; dup {
				return Held{}, mismatch(i, f, fmt.Sprintf("allocation %#x also held by frame %d: it would be freed twice", al.Ptr, j))
			}
			seen[al.Ptr] = i
			fh.Allocs = append(fh.Allocs, al)
		}
		h.Frames = append(h.Frames, fh)
	}
	return h, nil
}

func mismatch(i int, f *interp.Frame, what string) error {
	return fmt.Errorf("%w: frame %d (insn %d): %s", ErrTableMismatch, i, f.Insn, what)
}
