package amd64

import "encoding/binary"

// Asm accumulates machine code.
type Asm struct {
	Buf []byte
}

// Len is the current offset.
func (a *Asm) Len() int { return len(a.Buf) }

func (a *Asm) b(bs ...byte) { a.Buf = append(a.Buf, bs...) }

func (a *Asm) u32(v uint32) { a.Buf = binary.LittleEndian.AppendUint32(a.Buf, v) }

// rex emits a REX prefix if one is needed: for 64-bit operand size (w), for
// extended registers, or (force) to reach the low bytes of rsp/rbp/rsi/rdi.
func (a *Asm) rex(w bool, reg, index, base Reg, force bool) {
	v := byte(0x40)
	if w {
		v |= 8
	}
	if reg.ext() {
		v |= 4
	}
	if index.ext() {
		v |= 2
	}
	if base.ext() {
		v |= 1
	}
	if v != 0x40 || force {
		a.b(v)
	}
}

// rr emits opcode op with a register-direct ModRM: reg field reg, r/m field rm.
func (a *Asm) rr(w bool, op []byte, reg, rm Reg, byteRegs bool) {
	a.rex(w, reg, 0, rm, byteRegs && (reg >= RSP && reg <= RDI || rm >= RSP && rm <= RDI))
	a.b(op...)
	a.b(0xc0 | reg.low()<<3 | rm.low())
}

// rm emits opcode op with a memory ModRM (and SIB, displacement) for m.
func (a *Asm) rm(w bool, op []byte, reg Reg, m Mem, byteReg bool) {
	idx := Reg(0)
	if m.HasIndex {
		idx = m.Index
	}
	a.rex(w, reg, idx, m.Base, byteReg && reg >= RSP && reg <= RDI)
	a.b(op...)
	a.modrm(reg.low(), m)
}

// modrm writes ModRM, SIB and displacement for memory operand m.
func (a *Asm) modrm(reg byte, m Mem) {
	var mod byte
	switch {
	case m.Disp == 0 && m.Base.low() != 5: // [rbp]/[r13] need a displacement
		mod = 0
	case m.Disp >= -128 && m.Disp <= 127:
		mod = 1
	default:
		mod = 2
	}
	if m.HasIndex {
		a.b(mod<<6|reg<<3|4, m.Index.low()<<3|m.Base.low())
	} else if m.Base.low() == 4 { // rsp/r12 as base need a SIB
		a.b(mod<<6|reg<<3|4, 0x24)
	} else {
		a.b(mod<<6 | reg<<3 | m.Base.low())
	}
	switch mod {
	case 1:
		a.b(byte(int8(m.Disp)))
	case 2:
		a.u32(uint32(m.Disp))
	}
}

// ALU is a two-operand integer operation of the 0x01-0x39 family (and MOV, TEST).
type ALU struct {
	rmReg byte // opcode of "op r/m, reg"
	ext   byte // the /digit of "op r/m, imm"
}

var (
	ADD  = ALU{0x01, 0}
	OR   = ALU{0x09, 1}
	AND  = ALU{0x21, 4}
	SUB  = ALU{0x29, 5}
	XOR  = ALU{0x31, 6}
	CMP  = ALU{0x39, 7}
	MOV  = ALU{0x89, 0}
	TEST = ALU{0x85, 0}
)

// RR is "op dst, src" on registers; w selects 64-bit operands.
func (a *Asm) RR(op ALU, w bool, dst, src Reg) { a.rr(w, []byte{op.rmReg}, src, dst, false) }

// RI is "op dst, imm" with a 32-bit immediate, sign-extended for 64-bit operands.
func (a *Asm) RI(op ALU, w bool, dst Reg, imm int32) {
	switch {
	case op == MOV:
		a.rr(w, []byte{0xc7}, 0, dst, false)
		a.u32(uint32(imm))
	case op == TEST:
		a.rr(w, []byte{0xf7}, 0, dst, false)
		a.u32(uint32(imm))
	case imm >= -128 && imm <= 127:
		a.rr(w, []byte{0x83}, Reg(op.ext), dst, false)
		a.b(byte(int8(imm)))
	default:
		a.rr(w, []byte{0x81}, Reg(op.ext), dst, false)
		a.u32(uint32(imm))
	}
}

// MovImm loads a 64-bit constant with the shortest encoding.
func (a *Asm) MovImm(dst Reg, v uint64) {
	switch {
	case v <= 0xffffffff: // mov r32, imm32 zero-extends
		a.rex(false, 0, 0, dst, false)
		a.b(0xb8 + dst.low())
		a.u32(uint32(v))
	case int64(v) == int64(int32(v)):
		a.RI(MOV, true, dst, int32(v))
	default:
		a.rex(true, 0, 0, dst, false)
		a.b(0xb8 + dst.low())
		a.Buf = binary.LittleEndian.AppendUint64(a.Buf, v)
	}
}

// Imul is "imul dst, src".
func (a *Asm) Imul(w bool, dst, src Reg) { a.rr(w, []byte{0x0f, 0xaf}, dst, src, false) }

// ImulImm is "imul dst, dst, imm32".
func (a *Asm) ImulImm(w bool, dst Reg, imm int32) {
	a.rr(w, []byte{0x69}, dst, dst, false)
	a.u32(uint32(imm))
}

// Unary operations of the 0xf7 group, on one register.
type Unary byte

const (
	NOT  Unary = 2
	NEG  Unary = 3
	DIV  Unary = 6 // unsigned rdx:rax / r
	IDIV Unary = 7 // signed rdx:rax / r
)

// Un is "op r".
func (a *Asm) Un(op Unary, w bool, r Reg) { a.rr(w, []byte{0xf7}, Reg(op), r, false) }

// Shift kinds (the /digit of 0xd3 and 0xc1).
type Shift byte

const (
	SHL Shift = 4
	SHR Shift = 5
	SAR Shift = 7
	ROL Shift = 0
)

// ShiftCL is "op r, cl".
func (a *Asm) ShiftCL(op Shift, w bool, r Reg) { a.rr(w, []byte{0xd3}, Reg(op), r, false) }

// ShiftImm is "op r, imm8".
func (a *Asm) ShiftImm(op Shift, w bool, r Reg, n uint8) {
	a.rr(w, []byte{0xc1}, Reg(op), r, false)
	a.b(n)
}

// Rol16 rotates the low 16 bits of r by n.
func (a *Asm) Rol16(r Reg, n uint8) {
	a.b(0x66)
	a.ShiftImm(ROL, false, r, n)
}

// Cqo sign-extends rax into rdx:rax; Cdq eax into edx:eax.
func (a *Asm) Cqo() { a.b(0x48, 0x99) }
func (a *Asm) Cdq() { a.b(0x99) }

// Bswap reverses the bytes of r (32 or 64 bits).
func (a *Asm) Bswap(w bool, r Reg) {
	a.rex(w, 0, 0, r, false)
	a.b(0x0f, 0xc8+r.low())
}

// Movsx sign-extends the low from bits (8, 16, 32) of src into dst (64 bits if
// w, else 32 bits zero-extended).
func (a *Asm) Movsx(w bool, dst, src Reg, from int) {
	switch from {
	case 8:
		a.rr(w, []byte{0x0f, 0xbe}, dst, src, true)
	case 16:
		a.rr(w, []byte{0x0f, 0xbf}, dst, src, false)
	default:
		a.rr(true, []byte{0x63}, dst, src, false)
	}
}

// Movzx zero-extends the low from bits (8, 16) of src into dst.
func (a *Asm) Movzx(dst, src Reg, from int) {
	if from == 8 {
		a.rr(false, []byte{0x0f, 0xb6}, dst, src, true)
	} else {
		a.rr(false, []byte{0x0f, 0xb7}, dst, src, false)
	}
}

// Load reads size bytes (1, 2, 4, 8) at m into dst, zero-extended.
func (a *Asm) Load(size int, dst Reg, m Mem) {
	switch size {
	case 1:
		a.rm(false, []byte{0x0f, 0xb6}, dst, m, false)
	case 2:
		a.rm(false, []byte{0x0f, 0xb7}, dst, m, false)
	case 4:
		a.rm(false, []byte{0x8b}, dst, m, false)
	default:
		a.rm(true, []byte{0x8b}, dst, m, false)
	}
}

// LoadSX reads size bytes (1, 2, 4) at m into dst, sign-extended to 64 bits.
func (a *Asm) LoadSX(size int, dst Reg, m Mem) {
	switch size {
	case 1:
		a.rm(true, []byte{0x0f, 0xbe}, dst, m, false)
	case 2:
		a.rm(true, []byte{0x0f, 0xbf}, dst, m, false)
	default:
		a.rm(true, []byte{0x63}, dst, m, false)
	}
}

// Store writes the low size bytes of src to m.
func (a *Asm) Store(size int, m Mem, src Reg) {
	switch size {
	case 1:
		a.rm(false, []byte{0x88}, src, m, true)
	case 2:
		a.b(0x66)
		a.rm(false, []byte{0x89}, src, m, false)
	case 4:
		a.rm(false, []byte{0x89}, src, m, false)
	default:
		a.rm(true, []byte{0x89}, src, m, false)
	}
}

// StoreImm writes imm (sign-extended for 8 bytes) as size bytes to m.
func (a *Asm) StoreImm(size int, m Mem, imm int32) {
	switch size {
	case 1:
		a.rm(false, []byte{0xc6}, 0, m, false)
		a.b(byte(imm))
	case 2:
		a.b(0x66)
		a.rm(false, []byte{0xc7}, 0, m, false)
		a.b(byte(imm), byte(imm>>8))
	case 4:
		a.rm(false, []byte{0xc7}, 0, m, false)
		a.u32(uint32(imm))
	default:
		a.rm(true, []byte{0xc7}, 0, m, false)
		a.u32(uint32(imm))
	}
}

// Lea is "lea dst, m".
func (a *Asm) Lea(dst Reg, m Mem) { a.rm(true, []byte{0x8d}, dst, m, false) }

// LockXadd is "lock xadd m, r": m += r, r = old m.
func (a *Asm) LockXadd(w bool, m Mem, r Reg) {
	a.b(0xf0)
	a.rm(w, []byte{0x0f, 0xc1}, r, m, false)
}

// Xchg is "xchg m, r" (locked by the processor).
func (a *Asm) Xchg(w bool, m Mem, r Reg) { a.rm(w, []byte{0x87}, r, m, false) }

// LockCmpxchg is "lock cmpxchg m, r": if rax == m then m = r; rax = old m.
func (a *Asm) LockCmpxchg(w bool, m Mem, r Reg) {
	a.b(0xf0)
	a.rm(w, []byte{0x0f, 0xb1}, r, m, false)
}

// LockOp is "lock op m, r" for ADD, OR, AND, XOR.
func (a *Asm) LockOp(op ALU, w bool, m Mem, r Reg) {
	a.b(0xf0)
	a.rm(w, []byte{op.rmReg}, r, m, false)
}

// MemOp is "op m, r" (CMP, ADD, ...) and MemImm8 is "op m, imm8" (qword if w).
func (a *Asm) MemImm8(op ALU, w bool, m Mem, imm int8) {
	a.rm(w, []byte{0x83}, Reg(op.ext), m, false)
	a.b(byte(imm))
}

// Jcc emits a conditional jump with a 32-bit displacement to be patched, and
// returns the offset of that displacement.
func (a *Asm) Jcc(c Cond) int {
	a.b(0x0f, 0x80|byte(c))
	a.u32(0)
	return len(a.Buf) - 4
}

// Jmp emits "jmp rel32" to be patched and returns the displacement's offset.
func (a *Asm) Jmp() int {
	a.b(0xe9)
	a.u32(0)
	return len(a.Buf) - 4
}

// Patch points the rel32 at offset at to the code offset target.
func (a *Asm) Patch(at, target int) {
	binary.LittleEndian.PutUint32(a.Buf[at:], uint32(int32(target-(at+4))))
}

// JmpReg is "jmp r".
func (a *Asm) JmpReg(r Reg) { a.rr(false, []byte{0xff}, 4, r, false) }

// JmpMem is "jmp qword m".
func (a *Asm) JmpMem(m Mem) { a.rm(false, []byte{0xff}, 4, m, false) }

// Ret is "ret".
func (a *Asm) Ret() { a.b(0xc3) }

// LeaRIP is "lea dst, [rip + rel32]" to be patched; returns the rel32's offset.
func (a *Asm) LeaRIP(dst Reg) int {
	a.rex(true, dst, 0, 0, false)
	a.b(0x8d, dst.low()<<3|5)
	a.u32(0)
	return len(a.Buf) - 4
}

// Int3 is a breakpoint, used to pad unreachable code.
func (a *Asm) Int3() { a.b(0xcc) }

// RM is "op dst, m" (ADD, OR, AND, SUB, XOR, CMP, MOV).
func (a *Asm) RM(op ALU, w bool, dst Reg, m Mem) { a.rm(w, []byte{op.rmReg + 2}, dst, m, false) }
