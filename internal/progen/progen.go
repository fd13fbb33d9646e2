// Package progen generates random eBPF programs for differential testing: every
// program it makes is valid, terminates, and stays inside the subset the Linux
// verifier accepts for a privileged syscall program (no pointer arithmetic, no
// unconditional jumps that would strand code, aligned context accesses, only
// initialised registers and stack), so the kernel, the interpreter and the JIT
// can all run it and must agree.
//
// Layer 7 (program harnesses: internal/isatest, internal/progen,
// internal/benchprog): only tests, the harnesses of layer 8 and the commands
// import it.
//
// A program sees a context of CtxSize bytes in r1. It loads r0-r8 from the
// context's first 72 bytes, initialises 64 bytes of stack, runs a random body of
// ALU operations of both widths, byte swaps, sign extensions, 64-bit immediates,
// loads and stores on stack and context, atomics on the stack, and forward
// conditional jumps; then it stores r0-r8 back into the context's first 72 bytes
// and exits with r0. Comparing the output context compares every register.
package progen

import (
	"github.com/cilium/ebpf/asm"
)

const (
	// CtxSize is the size of the context a generated program expects.
	CtxSize = 128
	// RegDump is where r0-r8 are loaded from and stored to in the context.
	RegDump = 0
	// ctxData is the part of the context the body reads and writes.
	ctxData    = 72
	stackBytes = 64
	ctxReg     = asm.R9
)

// Source supplies the generator's decisions; fuzzing passes its input through
// it so that a mutation changes one decision.
type Source struct {
	data []byte
	pos  int
}

// NewSource reads decisions from data, then zeros.
func NewSource(data []byte) *Source { return &Source{data: data} }

func (s *Source) byte() byte {
	if s.pos >= len(s.data) {
		return 0
	}
	b := s.data[s.pos]
	s.pos++
	return b
}

func (s *Source) intn(n int) int { return int(s.byte()) % n }

func (s *Source) u32() uint32 {
	return uint32(s.byte()) | uint32(s.byte())<<8 | uint32(s.byte())<<16 | uint32(s.byte())<<24
}

// imm picks an immediate biased towards the values that find bugs: small
// numbers, signs and boundaries.
func (s *Source) imm() int32 {
	switch s.intn(8) {
	case 0:
		return int32(s.intn(5)) - 2
	case 1:
		return []int32{-1 << 31, 1<<31 - 1, 1 << 15, -1 << 15, 0xff, 0xffff, 63, 64}[s.intn(8)]
	case 2, 3:
		return int32(s.intn(256)) - 128
	}
	return int32(s.u32())
}

// item is one body instruction; a jump names the item it goes to.
type item struct {
	ins    asm.Instruction
	jumpTo int // index of the target item, or -1
}

// Context returns the input context for a program: CtxSize bytes from src.
func Context(src *Source) []byte {
	ctx := make([]byte, CtxSize)
	for i := range ctx {
		ctx[i] = src.byte()
	}
	return ctx
}

// Options add instruction kinds to what Generate makes.
type Options struct {
	// Calls adds bpf-to-bpf calls to a subprogram that computes on r0-r5;
	// after each call the body sets r1-r5 afresh, as a verifier demands.
	Calls bool
}

// Generate makes one program of at most bodyLen body instructions.
func Generate(src *Source, bodyLen int) asm.Instructions {
	return GenerateWith(src, bodyLen, Options{})
}

// GenerateWith is Generate with more kinds of instructions.
func GenerateWith(src *Source, bodyLen int, opts Options) asm.Instructions {
	var prog asm.Instructions
	prog = append(prog, asm.Mov.Reg(ctxReg, asm.R1))
	for r := asm.R0; r <= asm.R8; r++ {
		prog = append(prog, asm.LoadMem(r, ctxReg, int16(RegDump+8*int(r)), asm.DWord))
	}
	for off := int16(-stackBytes); off < 0; off += 8 {
		prog = append(prog, asm.StoreMem(asm.R10, off, asm.Register(src.intn(9)), asm.DWord))
	}
	n := 1 + src.intn(bodyLen)
	body := make([]item, 0, n)
	for len(body) < n {
		if opts.Calls && src.intn(16) == 0 && len(body)+6 <= n {
			body = append(body, item{ins: asm.Instruction{OpCode: asm.Call.Op(asm.ImmSource), Src: 1}, jumpTo: -2})
			for r := asm.R1; r <= asm.R5; r++ {
				body = append(body, item{ins: asm.Mov.Imm(r, src.imm()), jumpTo: -1})
			}
			continue
		}
		body = append(body, genItem(src, len(body), n))
	}
	var sub asm.Instructions
	if opts.Calls {
		sub = append(sub, asm.Mov.Reg(asm.R0, asm.R1))
		for range 1 + src.intn(6) {
			op := aluOps[src.intn(len(aluOps))]
			sub = append(sub, op.Reg(asm.Register(src.intn(6)), asm.Register(1+src.intn(5))))
		}
		sub = append(sub, asm.Return())
	}
	// Lay out: jump offsets count slots, and lddw takes two.
	slot := make([]int, n+1)
	for i, it := range body {
		slot[i+1] = slot[i] + int(it.ins.Width())
	}
	// The subprogram follows the epilogue: 9 stores and an exit.
	subAt := slot[n] + 10
	for i := range body {
		switch t := body[i].jumpTo; {
		case t >= 0:
			body[i].ins.Offset = int16(slot[t] - slot[i] - 1)
		case t == -2:
			body[i].ins.Constant = int64(subAt - slot[i] - 1)
		}
		prog = append(prog, body[i].ins)
	}
	for r := asm.R0; r <= asm.R8; r++ {
		prog = append(prog, asm.StoreMem(ctxReg, int16(RegDump+8*int(r)), r, asm.DWord))
	}
	prog = append(prog, asm.Return())
	return append(prog, sub...)
}

var (
	aluOps = []asm.ALUOp{asm.Add, asm.Sub, asm.Mul, asm.Div, asm.SDiv, asm.Mod, asm.SMod,
		asm.Or, asm.And, asm.LSh, asm.RSh, asm.ArSh, asm.Xor, asm.Mov}
	jumpOps = []asm.JumpOp{asm.JEq, asm.JGT, asm.JGE, asm.JSet, asm.JNE, asm.JSGT, asm.JSGE,
		asm.JLT, asm.JLE, asm.JSLT, asm.JSLE}
	sizes = []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord}
)

func reg(src *Source) asm.Register { return asm.Register(src.intn(9)) } // r0-r8

func genItem(src *Source, at, n int) item {
	it := item{jumpTo: -1}
	dst := reg(src)
	switch k := src.intn(20); {
	case k < 7: // ALU with an immediate
		op := aluOps[src.intn(len(aluOps))]
		is32 := src.intn(2) == 0
		v := src.imm()
		switch op {
		case asm.Div, asm.SDiv, asm.Mod, asm.SMod:
			if v == 0 { // the verifier rejects a constant zero divisor
				v = 3
			}
		case asm.LSh, asm.RSh, asm.ArSh: // and constant shifts past the width
			v &= 31
			if !is32 {
				v = int32(uint32(v)<<1|uint32(src.intn(2))) & 63
			}
		}
		it.ins = op.Imm(dst, v)
		if is32 {
			it.ins = op.Imm32(dst, v)
		}
	case k < 12: // ALU with a register
		op := aluOps[src.intn(len(aluOps))]
		it.ins = op.Reg(dst, reg(src))
		if src.intn(2) == 0 {
			it.ins = op.Reg32(dst, reg(src))
		}
	case k == 12: // neg, movsx, byte swaps
		switch src.intn(4) {
		case 0:
			it.ins = asm.Instruction{OpCode: asm.OpCode(asm.ALU64Class).SetALUOp(asm.Neg), Dst: dst}
			if src.intn(2) == 0 {
				it.ins.OpCode = asm.OpCode(asm.ALUClass).SetALUOp(asm.Neg)
			}
		case 1:
			op := []asm.ALUOp{asm.MovSX8, asm.MovSX16, asm.MovSX32}[src.intn(3)]
			it.ins = op.Reg(dst, reg(src))
			if op != asm.MovSX32 && src.intn(2) == 0 {
				it.ins = op.Reg32(dst, reg(src))
			}
		case 2:
			it.ins = asm.HostTo([]asm.Endianness{asm.LE, asm.BE}[src.intn(2)], dst, sizes[1+src.intn(3)])
		default:
			it.ins = asm.BSwap(dst, sizes[1+src.intn(3)])
		}
	case k == 13:
		it.ins = asm.LoadImm(dst, int64(src.u32())<<32|int64(src.u32()), asm.DWord)
	case k == 14: // stack load or store
		size := sizes[src.intn(4)]
		w := int16(size.Sizeof())
		off := -int16(stackBytes) + int16(src.intn(stackBytes/int(w)))*w
		switch src.intn(3) {
		case 0:
			it.ins = asm.LoadMem(dst, asm.R10, off, size)
			if size != asm.DWord && src.intn(2) == 0 {
				it.ins.OpCode = asm.LoadMemSXOp(size)
			}
		case 1:
			it.ins = asm.StoreMem(asm.R10, off, reg(src), size)
		default:
			it.ins = asm.Instruction{OpCode: asm.StoreImmOp(size), Dst: asm.R10, Offset: off, Constant: int64(src.imm())}
		}
	case k == 15: // context load or store, aligned, in the data area
		size := sizes[src.intn(4)]
		w := int16(size.Sizeof())
		off := int16(ctxData) + int16(src.intn((CtxSize-ctxData)/int(w)))*w
		if src.intn(2) == 0 {
			it.ins = asm.LoadMem(dst, ctxReg, off, size)
		} else {
			it.ins = asm.StoreMem(ctxReg, off, reg(src), size)
		}
	case k == 16: // atomic on the stack
		size := []asm.Size{asm.Word, asm.DWord}[src.intn(2)]
		w := int16(size.Sizeof())
		off := -int16(stackBytes) + int16(src.intn(stackBytes/int(w)))*w
		ops := []asm.AtomicOp{asm.AddAtomic, asm.FetchAdd, asm.OrAtomic, asm.FetchOr, asm.AndAtomic,
			asm.FetchAnd, asm.XorAtomic, asm.FetchXor, asm.Xchg, asm.CmpXchg}
		it.ins = ops[src.intn(len(ops))].Mem(asm.R10, reg(src), size, off)
	default: // forward conditional jump, to a later item or past the body
		op := jumpOps[src.intn(len(jumpOps))]
		is32 := src.intn(2) == 0
		if src.intn(2) == 0 {
			it.ins = op.Imm(dst, src.imm(), "")
			if is32 {
				it.ins = op.Imm32(dst, src.imm(), "")
			}
		} else {
			it.ins = op.Reg(dst, reg(src), "")
			if is32 {
				it.ins = op.Reg32(dst, reg(src), "")
			}
		}
		it.jumpTo = at + 1 + src.intn(n-at)
	}
	return it
}
