// Package amd64 encodes the x86-64 instructions kflex's JIT emits. It is a
// small assembler, not a general one: each method writes one instruction form,
// and the tests check every form against an independent disassembler.
//
// Layer 3 (userspace, jit/amd64, jit/interp): it imports no kflex package.
package amd64

import "fmt"

// Reg is a general-purpose register, numbered as in the instruction encoding.
type Reg uint8

const (
	RAX Reg = iota
	RCX
	RDX
	RBX
	RSP
	RBP
	RSI
	RDI
	R8
	R9
	R10
	R11
	R12
	R13
	R14
	R15
)

func (r Reg) String() string {
	return [...]string{"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
		"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}[r&15]
}

func (r Reg) low() byte { return byte(r) & 7 }
func (r Reg) ext() bool { return r >= R8 }

// Mem is a memory operand [Base + Index + Disp] (Index only if HasIndex).
type Mem struct {
	Base     Reg
	Index    Reg
	HasIndex bool
	Disp     int32
}

// M is [base + disp].
func M(base Reg, disp int32) Mem { return Mem{Base: base, Disp: disp} }

// MI is [base + index + disp].
func MI(base, index Reg, disp int32) Mem {
	return Mem{Base: base, Index: index, HasIndex: true, Disp: disp}
}

func (m Mem) String() string {
	if m.HasIndex {
		return fmt.Sprintf("[%v+%v%+d]", m.Base, m.Index, m.Disp)
	}
	return fmt.Sprintf("[%v%+d]", m.Base, m.Disp)
}

// Cond is a condition code (the low nibble of Jcc's opcode).
type Cond uint8

const (
	CondB  Cond = 0x2 // unsigned <
	CondAE Cond = 0x3 // unsigned >=
	CondE  Cond = 0x4
	CondNE Cond = 0x5
	CondBE Cond = 0x6 // unsigned <=
	CondA  Cond = 0x7 // unsigned >
	CondL  Cond = 0xc // signed <
	CondGE Cond = 0xd // signed >=
	CondLE Cond = 0xe // signed <=
	CondG  Cond = 0xf // signed >
)
