#include "textflag.h"

// func enter(ctx uintptr)
//
// Loads the eBPF registers and the pinned sandbox registers from the execution
// context and calls the context's resume address. Generated code returns here
// after storing everything back. Register assignment must match regs in
// compile_amd64.go; offsets must match context.go (ctxRegs, ctxResume,
// ctxHeapBase, ctxHeapMask). The frame is not empty so that the assembler saves
// and restores BP, which generated code uses as eBPF's r10.
TEXT ·enter(SB), NOSPLIT, $16-8
	MOVQ ctx+0(FP), R10
	MOVQ 0(R10), AX   // r0
	MOVQ 8(R10), DI   // r1
	MOVQ 16(R10), SI  // r2
	MOVQ 24(R10), DX  // r3
	MOVQ 32(R10), CX  // r4
	MOVQ 40(R10), R8  // r5
	MOVQ 48(R10), BX  // r6
	MOVQ 56(R10), R13 // r7
	MOVQ 64(R10), R14 // r8
	MOVQ 72(R10), R15 // r9
	MOVQ 80(R10), BP  // r10
	MOVQ 96(R10), R12 // ctxHeapBase
	MOVQ 104(R10), R9 // ctxHeapMask
	CALL 88(R10)      // ctxResume
	RET
