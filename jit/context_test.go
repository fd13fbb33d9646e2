package jit

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
)

// TestContextOffsets pins the layout generated code and the trampoline use.
func TestContextOffsets(t *testing.T) {
	var c execContext
	var f frame
	for name, o := range map[string][2]uintptr{
		"regs":      {ctxRegs, unsafe.Offsetof(c.regs)},
		"resume":    {ctxResume, unsafe.Offsetof(c.resume)},
		"heapBase":  {ctxHeapBase, unsafe.Offsetof(c.heapBase)},
		"heapMask":  {ctxHeapMask, unsafe.Offsetof(c.heapMask)},
		"exitCode":  {ctxExitCode, unsafe.Offsetof(c.exitCode)},
		"exitPC":    {ctxExitPC, unsafe.Offsetof(c.exitPC)},
		"exitArg":   {ctxExitArg, unsafe.Offsetof(c.exitArg)},
		"budget":    {ctxBudget, unsafe.Offsetof(c.budget)},
		"mayGoto":   {ctxMayGoto, unsafe.Offsetof(c.mayGoto)},
		"terminate": {ctxTerminate, unsafe.Offsetof(c.terminate)},
		"frameOff":  {ctxFrameOff, unsafe.Offsetof(c.frameOff)},
		"canonBase": {ctxCanonBase, unsafe.Offsetof(c.canonBase)},
		"save":      {ctxSave, unsafe.Offsetof(c.save)},
		"frames":    {ctxFrames, unsafe.Offsetof(c.frames)},
		"frame.ret": {frameRet, unsafe.Offsetof(f.ret)},
		"frame.r6":  {frameR6, unsafe.Offsetof(f.r6)},
		"frame.fp":  {frameFP, unsafe.Offsetof(f.fp)},
	} {
		assert.Equal(t, o[1], o[0], name)
	}
	assert.Equal(t, uintptr(frameSize), unsafe.Sizeof(f))
	assert.LessOrEqual(t, unsafe.Sizeof(c), uintptr(4096), "the context fits its page")
}
