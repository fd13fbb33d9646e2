package interp

import "github.com/kflex-go/kflex/abi"

// Frame is one frame of a cancelled program's call stack
// (RuntimeError.Stack), the same from both engines: the innermost frame
// first, with the slot where the program stopped (a cancellation point) and
// r0-r9 there; then each caller, with the slot of its bpf-to-bpf call and
// the r6-r9 the engine saved at the call (the callee preserves them for it;
// r0-r5 are gone). FP is the frame's pointer (its r10): its stack slots lie
// below it, in memory the engine's Memory reads.
type Frame struct {
	Insn  int
	Regs  [10]uint64
	Known uint16 // bit i: Regs[i] is reported (all in the innermost frame, r6-r9 in callers)
	FP    uint64
}

// The registers each kind of frame reports (Frame.Known).
const (
	KnownAll     uint16 = 1<<10 - 1
	KnownCallees uint16 = 0xf << 6 // r6-r9
)

// Has reports whether the engine reported register r of the frame.
func (f *Frame) Has(r int) bool { return r >= 0 && r < 10 && f.Known&(1<<r) != 0 }

// CallerFrame is a caller's frame: its call at slot insn, r6-r9 as saved
// there, and its frame pointer.
func CallerFrame(insn int, r6, r7, r8, r9, fp uint64) Frame {
	f := Frame{Insn: insn, Known: KnownCallees, FP: fp}
	f.Regs[6], f.Regs[7], f.Regs[8], f.Regs[9] = r6, r7, r8, r9
	return f
}

// StoppedFrame is the innermost frame: the stop at slot insn with r0-r10.
func StoppedFrame(insn int, r *[11]uint64) Frame {
	f := Frame{Insn: insn, Known: KnownAll, FP: r[10]}
	copy(f.Regs[:], r[:10])
	return f
}

// cancelled ends a run stopped by Cancel at pc, with the call stack. Out of
// line, like fail: nothing of it is on the running path.
func (m *Machine) cancelled(pc int, n uint64, r *[11]uint64, frames *[abi.MaxFrames]frame, depth int, detail string) (uint64, error) {
	m.Executed = n
	stack := []Frame{StoppedFrame(pc, r)}
	for i := depth - 1; i >= 0; i-- {
		f := &frames[i]
		stack = append(stack, CallerFrame(f.ret-1, f.saved[0], f.saved[1], f.saved[2], f.saved[3], f.fp))
	}
	return 0, &RuntimeError{Insn: pc, Err: abi.ErrCancelled, Detail: detail, Stack: stack}
}
