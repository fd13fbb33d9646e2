package jit

import "github.com/kflex-go/kflex/abi"

// execContext is shared by generated code, the trampoline and the Go loop. It
// lives in mmap'd memory. Offsets are pinned by constants the generated code and
// trampoline_amd64.s use, checked by TestContextOffsets.
type execContext struct {
	regs      [11]uint64 // eBPF r0-r10, saved at every exit and loaded at entry
	resume    uint64     // native address to continue at
	heapBase  uint64     // sandbox base (pinned in r12)
	heapMask  uint64     // sandbox size - 1 (pinned in r9)
	exitCode  uint64     // why the code returned (exit*)
	exitPC    uint64     // the slot of the instruction that exited
	exitArg   uint64     // helper number
	budget    uint64     // back-edges left before a budget exit
	mayGoto   uint64     // may_goto instructions left that fall through
	terminate uint64     // address of the terminate word
	frameOff  uint64     // offset in the context of the next free frame (ctxFrames in the main program)
	canonBase uint64     // base of the canonical view (addr_space_cast to user)
	save      [4]uint64  // scratch for instruction sequences that need registers
	frames    [abi.MaxFrames]frame
	termWord  uint32 // the default terminate word
	_         uint32
}

// frame is a bpf-to-bpf call's saved state.
type frame struct {
	ret                uint64 // native return address
	r6, r7, r8, r9, fp uint64
}

const (
	ctxRegs      = 0
	ctxResume    = 88
	ctxHeapBase  = 96
	ctxHeapMask  = 104
	ctxExitCode  = 112
	ctxExitPC    = 120
	ctxExitArg   = 128
	ctxBudget    = 136
	ctxMayGoto   = 144
	ctxTerminate = 152
	ctxFrameOff  = 160
	ctxCanonBase = 168
	ctxSave      = 176
	ctxFrames    = 208
	frameSize    = 48
	frameRet     = 0
	frameR6      = 8
	frameFP      = 40
)

// Exit codes.
const (
	exitReturn    = 1 // the program exited; r0 is the result
	exitHelper    = 2 // call helper exitArg, put the result in r0, resume
	exitBudget    = 3 // the back-edge budget ran out: resume when Go is done
	exitCancel    = 4 // the terminate word was set at a cancellation point
	exitCallDepth = 5 // a call would exceed eight frames
	exitMisalign  = 6 // an atomic access is not aligned to its size
)
