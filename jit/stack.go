package jit

import (
	"sort"
	"unsafe"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/jit/interp"
)

// cancelled is the error of a run stopped by Cancel at slot pc, with the
// call stack read from the execution context (interp.Frame): the registers
// stored at the exit, and the frames the calls pushed, each naming its call
// by its native return address. Only a cancel exit pays for it.
func (m *Machine) cancelled(p *Program, pc int, detail string) error {
	c := m.ctx
	stack := []interp.Frame{interp.StoppedFrame(pc, &c.regs)}
	for i := int(c.frameOff-ctxFrames)/frameSize - 1; i >= 0; i-- {
		f := &c.frames[i]
		stack = append(stack, interp.CallerFrame(p.callSlot(f.ret), f.r6, f.r7, f.r8, f.r9, f.fp))
	}
	return &interp.RuntimeError{Insn: pc, Err: abi.ErrCancelled, Detail: detail, Stack: stack}
}

// callSlot is the slot of the call whose native return address is ret: the
// last slot whose code starts before it (a call's code ends at its return
// address, which is where the next slot's starts).
func (p *Program) callSlot(ret uint64) int {
	off := int(ret - uint64(uintptr(unsafe.Pointer(&p.code[0]))))
	return sort.SearchInts(p.starts, off) - 1
}
