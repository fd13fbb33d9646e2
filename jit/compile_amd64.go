//lint:file-ignore ST1001 the assembler reads best unqualified

package jit

import (
	"fmt"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	. "github.com/kflex-go/kflex/jit/amd64" // the assembler reads best unqualified
)

// Register assignment (must match trampoline_amd64.s). eBPF r0-r10 live in
// fixed registers; r10 (the frame pointer) in rbp. Three more are pinned: the
// execution context, the sandbox base and its mask. r11 is scratch.
var regs = [11]Reg{RAX, RDI, RSI, RDX, RCX, R8, RBX, R13, R14, R15, RBP}

const (
	ctxReg  = R10
	baseReg = R12
	maskReg = R9
	tmp     = R11
)

// compiler lowers one program.
type compiler struct {
	guardLoads, guardStores bool
	modes                   []AccessMode // by slot: what the verifier found
	guards, elided          int          // memory accesses guarded, and left unguarded as provably safe
	pc                      int          // the slot being lowered

	a      Asm
	slots  []bytecode.Slot
	starts []int      // native offset of each slot
	fixups []fixup    // jumps to slots, patched once every slot has an offset
	stubs  []func()   // out-of-line exits, emitted after the body
	exit   int        // offset of the shared exit tail
	tails  []int      // jumps to the shared exit tail
	leas   []ripFixup // lea rip-relative to a native offset known later

	tmpFor int // eBPF register sanitized in place whose offset tmp holds, or noReuse (tmpreuse_amd64.go)

	noCancelCheck bool   // Options.NoCancelCheck
	shielded      []bool // by slot: Options.Shielded
}

type fixup struct{ at, slot int }

type ripFixup struct {
	at     int
	target *int
}

// compile generates code for a validated program's slots, and returns the
// native offset where each slot's code starts (callSlot reads it) and the
// guards counted.
func compile(slots []bytecode.Slot, o Options) ([]byte, []int, guardCounts, error) {
	c, err := lowerWith(&compiler{noCancelCheck: o.NoCancelCheck, shielded: shieldedSlots(o.Shielded, len(slots))}, slots, o.Guard, o.Access)
	if err != nil {
		return nil, nil, guardCounts{}, err
	}
	return c.a.Buf, c.starts, guardCounts{c.guards, c.elided}, nil
}

type guardCounts struct{ kept, elided int }

// compileWithMap also returns the native offset where each slot's code starts
// (one more entry: where the out-of-line stubs start).
func compileWithMap(slots []bytecode.Slot, g Guard) ([]byte, []int, error) {
	c, err := lower(slots, g, nil)
	if err != nil {
		return nil, nil, err
	}
	return c.a.Buf, c.starts, nil
}

func lower(slots []bytecode.Slot, g Guard, modes []AccessMode) (*compiler, error) {
	return lowerWith(&compiler{}, slots, g, modes)
}

// lowerWith is lower into c, whose settings (noCancelCheck) it keeps.
func lowerWith(c *compiler, slots []bytecode.Slot, g Guard, modes []AccessMode) (*compiler, error) {
	c.slots, c.guardLoads, c.guardStores, c.modes, c.tmpFor = slots, g == GuardAll, g != GuardNone, modes, noReuse
	c.starts = make([]int, len(c.slots)+1)
	targets := jumpTargets(c.slots)
	for pc := 0; pc < len(c.slots); pc++ {
		c.starts[pc] = c.a.Len()
		s := c.slots[pc]
		c.pc = pc
		if targets[pc] {
			c.tmpFor = noReuse
		}
		if err := c.insn(pc, s); err != nil {
			return nil, &bytecode.Error{Insn: pc, Reason: err.Error()}
		}
		if c.tmpFor != noReuse && !keepsTmp(s, c.tmpFor) {
			c.tmpFor = noReuse
		}
		if s.Op == bytecode.OpLdDW {
			pc++
			c.starts[pc] = c.a.Len()
		}
	}
	c.starts[len(c.slots)] = c.a.Len()
	c.a.Int3() // falling off the end is impossible (validated)
	for i := 0; i < len(c.stubs); i++ {
		c.stubs[i]()
	}
	c.exitTail()
	for _, f := range c.fixups {
		c.a.Patch(f.at, c.starts[f.slot])
	}
	for _, t := range c.tails {
		c.a.Patch(t, c.exit)
	}
	for _, l := range c.leas {
		c.a.Patch(l.at, *l.target)
	}
	return c, nil
}

// exitTail stores every eBPF register into the context and returns to the
// trampoline. Exits jump here after setting exitCode, exitPC and resume.
func (c *compiler) exitTail() {
	c.exit = c.a.Len()
	for i, r := range regs {
		c.a.Store(8, M(ctxReg, int32(ctxRegs+8*i)), r)
	}
	c.a.Ret()
}

// exitHere emits an exit with code at slot pc; if resume, execution continues
// right after it when Go re-enters.
func (c *compiler) exitHere(code, pc int, resume bool) {
	c.a.StoreImm(8, M(ctxReg, ctxExitCode), int32(code))
	c.a.StoreImm(8, M(ctxReg, ctxExitPC), int32(pc))
	var after *int
	if resume {
		after = new(int)
		c.leas = append(c.leas, ripFixup{c.a.LeaRIP(tmp), after})
		c.a.Store(8, M(ctxReg, ctxResume), tmp)
	}
	c.tails = append(c.tails, c.a.Jmp())
	if resume {
		*after = c.a.Len()
	}
}

// stubExit emits, out of line, an exit taken by the conditional jump at jcc.
// A resumable stub continues at the instruction after the jump.
func (c *compiler) stubExit(jcc int, code, pc int, resume bool) {
	back := c.a.Len()
	c.stubs = append(c.stubs, func() {
		c.a.Patch(jcc, c.a.Len())
		c.a.StoreImm(8, M(ctxReg, ctxExitCode), int32(code))
		c.a.StoreImm(8, M(ctxReg, ctxExitPC), int32(pc))
		if resume {
			target := back
			c.leas = append(c.leas, ripFixup{c.a.LeaRIP(tmp), &target})
			c.a.Store(8, M(ctxReg, ctxResume), tmp)
		}
		c.tails = append(c.tails, c.a.Jmp())
	})
}

// cancelPoint counts a back-edge against the budget and tests the terminate
// word.
func (c *compiler) cancelPoint(pc int) {
	c.a.MemImm8(SUB, true, M(ctxReg, ctxBudget), 1)
	c.stubExit(c.a.Jcc(CondE), exitBudget, pc, true)
	if c.noCancelCheck || c.shielded != nil && c.shielded[pc] {
		return
	}
	c.a.RM(MOV, true, tmp, M(ctxReg, ctxTerminate))
	c.a.MemImm8(CMP, false, M(tmp, 0), 0)
	c.stubExit(c.a.Jcc(CondNE), exitCancel, pc, false)
}

func (c *compiler) jumpTo(slot int) { c.fixups = append(c.fixups, fixup{c.a.Jmp(), slot}) }

func (c *compiler) jccTo(cc Cond, slot int) { c.fixups = append(c.fixups, fixup{c.a.Jcc(cc), slot}) }

// mem returns the operand of an access through eBPF register base at off. A
// guarded access masks base into the sandbox as tmp first: the operand is then
// [sandbox + tmp + off], and with the offset added after the mask the address
// lands at most 32 KiB outside the sandbox, in its scratch guard regions.
func (c *compiler) mem(guarded bool, base uint8, off int16) Mem {
	if c.pc < len(c.modes) {
		switch c.modes[c.pc] {
		case NoGuard: // the verifier proved it in bounds
			c.elided++
			if c.tmpFor == int(base) {
				return MI(baseReg, tmp, int32(off)) // the same address, off the lea
			}
			return M(regs[base], int32(off))
		case SanitizeInPlace:
			if base != 10 {
				// Guard as usual, and also leave the sanitized pointer in the
				// register for the accesses after this one: the lea is off
				// this access's critical path.
				c.guards++
				c.a.RR(MOV, true, tmp, regs[base])
				c.a.RR(AND, true, tmp, maskReg)
				c.a.Lea(regs[base], MI(baseReg, tmp, 0))
				c.tmpFor = int(base)
				return MI(baseReg, tmp, int32(off))
			}
		}
	}
	// Everything below that guards writes tmp.
	if base == 10 {
		// r10 is read-only and always points into the stack frames, which lie
		// inside the sandbox at least 32 KiB from either end or next to its
		// guard regions: any signed 16-bit offset stays in mapped memory that
		// belongs to the sandbox. No guard needed.
		c.elided++
		return M(RBP, int32(off))
	}
	if !guarded {
		return M(regs[base], int32(off))
	}
	c.guards++
	c.tmpFor = noReuse
	c.a.RR(MOV, true, tmp, regs[base])
	c.a.RR(AND, true, tmp, maskReg)
	return MI(baseReg, tmp, int32(off))
}

func (c *compiler) insn(pc int, s bytecode.Slot) error {
	cls := s.Op & 7
	switch {
	case cls == 0x07 || cls == 0x04:
		return c.alu(s, cls == 0x07)
	case cls == 0x05 || cls == 0x06:
		return c.jump(pc, s)
	case s.Op == bytecode.OpLdDW:
		if s.Src != 0 {
			return fmt.Errorf("lddw with pseudo source %d is not supported by the JIT yet", s.Src)
		}
		c.a.MovImm(regs[s.Dst], s.Imm64)
		return nil
	case cls == 0x01: // ldx
		m := c.mem(c.guardLoads, s.Src, s.Off)
		if s.Op&0xe0 == 0x80 {
			c.a.LoadSX(bytecode.MemSize(s.Op), regs[s.Dst], m)
		} else {
			c.a.Load(bytecode.MemSize(s.Op), regs[s.Dst], m)
		}
		return nil
	case cls == 0x02: // st
		c.a.StoreImm(bytecode.MemSize(s.Op), c.mem(c.guardStores, s.Dst, s.Off), s.Imm)
		return nil
	case cls == 0x03 && s.Op&0xe0 == 0x60: // stx
		c.a.Store(bytecode.MemSize(s.Op), c.mem(c.guardStores, s.Dst, s.Off), regs[s.Src])
		return nil
	case cls == 0x03: // atomic
		return c.atomic(pc, s)
	}
	return fmt.Errorf("opcode %#02x is not supported by the JIT", s.Op)
}

func (c *compiler) alu(s bytecode.Slot, w bool) error {
	d := regs[s.Dst]
	reg := s.Op&0x08 != 0
	src := tmp
	if reg {
		src = regs[s.Src]
	}
	op := s.Op & 0xf0
	// An immediate operand: most operations take it directly; the rest get it
	// in tmp. 32-bit operations use its low 32 bits, 64-bit ones sign-extend it.
	if !reg && op != 0xd0 && op != 0x80 {
		switch op {
		case 0x00, 0x10, 0x40, 0x50, 0xa0:
			c.a.RI(map[uint8]ALU{0x00: ADD, 0x10: SUB, 0x40: OR, 0x50: AND, 0xa0: XOR}[op], w, d, s.Imm)
			return nil
		case 0xb0:
			if w {
				c.a.MovImm(d, uint64(int64(s.Imm)))
			} else {
				c.a.MovImm(d, uint64(uint32(s.Imm)))
			}
			return nil
		case 0x20:
			c.a.ImulImm(w, d, s.Imm)
			return nil
		case 0x60, 0x70, 0xc0:
			bits := uint8(31)
			if w {
				bits = 63
			}
			c.a.ShiftImm(map[uint8]Shift{0x60: SHL, 0x70: SHR, 0xc0: SAR}[op], w, d, uint8(s.Imm)&bits)
			return nil
		}
		if w {
			c.a.MovImm(tmp, uint64(int64(s.Imm)))
		} else {
			c.a.MovImm(tmp, uint64(uint32(s.Imm)))
		}
	}
	switch op {
	case 0x00, 0x10, 0x40, 0x50, 0xa0:
		c.a.RR(map[uint8]ALU{0x00: ADD, 0x10: SUB, 0x40: OR, 0x50: AND, 0xa0: XOR}[op], w, d, src)
	case 0x20:
		c.a.Imul(w, d, src)
	case 0x30, 0x90:
		c.divmod(d, src, w, op == 0x90, s.Off == 1)
	case 0x60, 0x70, 0xc0:
		c.shiftCL(map[uint8]Shift{0x60: SHL, 0x70: SHR, 0xc0: SAR}[op], w, d, src)
	case 0x80:
		c.a.Un(NEG, w, d)
	case 0xb0:
		switch s.Off {
		case 0:
			c.a.RR(MOV, w, d, src)
		case 8, 16, 32:
			c.a.Movsx(w, d, src, int(s.Off))
			if !w && s.Off == 32 {
				return fmt.Errorf("32-bit movsx from 32 bits")
			}
		default: // addr_space_cast: validated, so offset 1, imm 1 or 1<<16
			c.cast(d, src, s.Imm == 1)
		}
	case 0xd0:
		c.swap(d, s)
	default:
		return fmt.Errorf("ALU operation %#02x is not supported by the JIT", s.Op)
	}
	return nil
}

// cast moves pointer src into the sandbox's own view (toSandbox) or the
// canonical view stored in the heap, keeping NULL as NULL.
func (c *compiler) cast(d, src Reg, toSandbox bool) {
	a := &c.a
	a.RR(MOV, true, tmp, src)
	a.RR(AND, true, tmp, maskReg)
	if toSandbox {
		a.RR(OR, true, tmp, baseReg)
	} else {
		a.RM(OR, true, tmp, M(ctxReg, ctxCanonBase))
	}
	a.RR(TEST, true, src, src)
	nonNull := a.Jcc(CondNE)
	a.RR(XOR, false, tmp, tmp)
	a.Patch(nonNull, a.Len())
	a.RR(MOV, true, d, tmp)
}

// swap lowers le/be (ALU class) and bswap (ALU64 class).
func (c *compiler) swap(d Reg, s bytecode.Slot) {
	toBE := s.Op == 0xdc || s.Op == 0xd7
	switch s.Imm {
	case 16:
		if toBE {
			c.a.Rol16(d, 8)
		}
		c.a.Movzx(d, d, 16)
	case 32:
		if toBE {
			c.a.Bswap(false, d)
		} else {
			c.a.RR(MOV, false, d, d)
		}
	case 64:
		if toBE {
			c.a.Bswap(true, d)
		}
	}
}

// shiftCL shifts d by the register n, whose count must be in cl (eBPF's r4 is
// rcx). The hardware masks the count to 63 or 31, as eBPF specifies.
func (c *compiler) shiftCL(op Shift, w bool, d, n Reg) {
	if n == RCX {
		c.a.ShiftCL(op, w, d)
		return
	}
	c.a.RR(MOV, true, tmp, RCX) // tmp keeps rcx (or d, when d is rcx)
	c.a.RR(MOV, true, RCX, n)
	if d == RCX {
		c.a.ShiftCL(op, w, tmp)
		c.a.RR(MOV, true, RCX, tmp)
		return
	}
	c.a.ShiftCL(op, w, d)
	c.a.RR(MOV, true, RCX, tmp)
}

// divmod lowers unsigned and signed division and modulo with eBPF's answers
// where x86 would trap: x/0 = 0, x%0 = x, MIN/-1 = MIN, MIN%-1 = 0.
func (c *compiler) divmod(d, src Reg, w, mod, signed bool) {
	a := &c.a
	a.Store(8, M(ctxReg, ctxSave), RAX)
	a.Store(8, M(ctxReg, ctxSave+8), RDX)
	if src != tmp {
		a.RR(MOV, true, tmp, src)
	}
	a.RR(MOV, w, RAX, d) // the dividend, truncated for 32-bit operations
	a.RR(TEST, w, tmp, tmp)
	zero := a.Jcc(CondE)
	minus1 := -1
	if signed {
		a.RI(CMP, w, tmp, -1)
		minus1 = a.Jcc(CondE)
		if w {
			a.Cqo()
		} else {
			a.Cdq()
		}
		a.Un(IDIV, w, tmp)
	} else {
		a.RR(XOR, false, RDX, RDX)
		a.Un(DIV, w, tmp)
	}
	if mod {
		a.RR(MOV, true, tmp, RDX)
	} else {
		a.RR(MOV, true, tmp, RAX)
	}
	done := []int{a.Jmp()}
	a.Patch(zero, a.Len())
	if mod {
		a.RR(MOV, true, tmp, RAX) // x % 0 = x (truncated for 32 bits)
	} else {
		a.RR(XOR, false, tmp, tmp) // x / 0 = 0
	}
	if signed {
		done = append(done, a.Jmp())
		a.Patch(minus1, a.Len())
		if mod {
			a.RR(XOR, false, tmp, tmp) // x % -1 = 0
		} else {
			a.Un(NEG, w, RAX) // x / -1 = -x, MIN stays MIN
			a.RR(MOV, true, tmp, RAX)
		}
	}
	for _, j := range done {
		a.Patch(j, a.Len())
	}
	a.Load(8, RAX, M(ctxReg, ctxSave))
	a.Load(8, RDX, M(ctxReg, ctxSave+8))
	a.RR(MOV, true, d, tmp)
}

var conds = map[uint8]Cond{0x10: CondE, 0x20: CondA, 0x30: CondAE, 0x50: CondNE, 0x60: CondG,
	0x70: CondGE, 0xa0: CondB, 0xb0: CondBE, 0xc0: CondL, 0xd0: CondLE}

func (c *compiler) jump(pc int, s bytecode.Slot) error {
	target := pc + int(s.Off) + 1
	switch s.Op {
	case 0x05, 0x06: // ja, ja32
		if s.Op == 0x06 {
			target = pc + int(s.Imm) + 1
		}
		if target <= pc {
			c.cancelPoint(pc)
		}
		c.jumpTo(target)
		return nil
	case 0x95:
		c.exitInsn(pc)
		return nil
	case 0x85, 0x8d:
		return c.call(pc, s)
	case 0xe5: // may_goto: falls through while its budget lasts
		c.a.MemImm8(CMP, true, M(ctxReg, ctxMayGoto), 0)
		c.jccTo(CondE, target)
		c.a.MemImm8(SUB, true, M(ctxReg, ctxMayGoto), 1)
		return nil
	}
	if target <= pc {
		c.cancelPoint(pc)
	}
	w := s.Op&7 == 0x05
	d := regs[s.Dst]
	op := s.Op & 0xf0
	if op == 0x40 { // jset
		if s.Op&0x08 != 0 {
			c.a.RR(TEST, w, d, regs[s.Src])
		} else {
			c.a.RI(TEST, w, d, s.Imm)
		}
		c.jccTo(CondNE, target)
		return nil
	}
	cc, ok := conds[op]
	if !ok {
		return fmt.Errorf("jump %#02x is not supported by the JIT", s.Op)
	}
	if s.Op&0x08 != 0 {
		c.a.RR(CMP, w, d, regs[s.Src])
	} else {
		c.a.RI(CMP, w, d, s.Imm)
	}
	c.jccTo(cc, target)
	return nil
}

// exitInsn returns from a bpf-to-bpf call, or ends the program in the main
// program (no frame pushed).
func (c *compiler) exitInsn(pc int) {
	a := &c.a
	a.RM(MOV, true, tmp, M(ctxReg, ctxFrameOff))
	a.RI(CMP, true, tmp, ctxFrames)
	top := a.Jcc(CondE)
	a.RI(SUB, true, tmp, frameSize)
	a.Store(8, M(ctxReg, ctxFrameOff), tmp)
	for i, r := range []Reg{RBX, R13, R14, R15, RBP} { // r6-r9, r10
		a.Load(8, r, MI(ctxReg, tmp, int32(frameR6+8*i)))
	}
	a.JmpMem(MI(ctxReg, tmp, frameRet))
	a.Patch(top, a.Len())
	c.exitHere(exitReturn, pc, false)
}

func (c *compiler) call(pc int, s bytecode.Slot) error {
	a := &c.a
	switch {
	case s.Op == 0x8d: // callx: the helper's number is in dst
		a.Store(8, M(ctxReg, ctxExitArg), regs[s.Dst])
	case s.Src == bytecode.CallHelper:
		a.StoreImm(8, M(ctxReg, ctxExitArg), s.Imm)
	case s.Src == bytecode.CallLocal:
		// Push a frame in the context: return address, r6-r9, r10. The next
		// free frame is kept as its offset in the context, so that a call is
		// a load, stores and a store back, with no multiply or memory
		// read-modify-write on the way.
		a.RM(MOV, true, tmp, M(ctxReg, ctxFrameOff))
		a.RI(CMP, true, tmp, int32(ctxFrames+(len(execContext{}.frames)-1)*frameSize))
		c.stubExit(a.Jcc(CondAE), exitCallDepth, pc, false)
		for i, r := range []Reg{RBX, R13, R14, R15, RBP} {
			a.Store(8, MI(ctxReg, tmp, int32(frameR6+8*i)), r)
		}
		// The return address goes through rbx, which was just saved.
		ret := new(int)
		c.leas = append(c.leas, ripFixup{a.LeaRIP(RBX), ret})
		a.Store(8, MI(ctxReg, tmp, frameRet), RBX)
		a.Load(8, RBX, MI(ctxReg, tmp, frameR6))
		a.RI(ADD, true, tmp, frameSize)
		a.Store(8, M(ctxReg, ctxFrameOff), tmp)
		a.RI(SUB, true, RBP, abi.StackSize)
		c.jumpTo(pc + int(s.Imm) + 1)
		*ret = a.Len()
		return nil
	default:
		return fmt.Errorf("call to kernel function (BTF id %d) is not supported", s.Imm)
	}
	c.exitHere(exitHelper, pc, true)
	return nil
}

// atomic lowers the atomic read-modify-write instructions, load-acquire and
// store-release. An unaligned address exits with an error rather than risk a
// split-lock trap.
func (c *compiler) atomic(pc int, s bytecode.Slot) error {
	a := &c.a
	size := bytecode.MemSize(s.Op)
	w := size == 8
	switch s.Imm {
	case bytecode.LoadAcquire:
		a.Load(size, regs[s.Dst], c.mem(c.guardLoads, s.Src, s.Off)) // x86 loads are acquire loads
		return nil
	case bytecode.StoreRelease:
		a.Store(size, c.mem(c.guardStores, s.Dst, s.Off), regs[s.Src]) // and stores release stores
		return nil
	}
	a.Lea(tmp, c.mem(c.guardStores, s.Dst, s.Off))
	a.RI(TEST, false, tmp, int32(size-1))
	c.stubExit(a.Jcc(CondNE), exitMisalign, pc, false)
	m := M(tmp, 0)
	src := regs[s.Src]
	switch s.Imm {
	case bytecode.AtomicAdd:
		a.LockOp(ADD, w, m, src)
	case bytecode.AtomicOr:
		a.LockOp(OR, w, m, src)
	case bytecode.AtomicAnd:
		a.LockOp(AND, w, m, src)
	case bytecode.AtomicXor:
		a.LockOp(XOR, w, m, src)
	case bytecode.AtomicAdd | bytecode.AtomicFetch:
		a.LockXadd(w, m, src)
	case bytecode.AtomicXchg:
		a.Xchg(w, m, src)
	case bytecode.AtomicCmpXchg:
		a.LockCmpxchg(w, m, src) // compares with rax, eBPF's r0
		if !w {
			a.RR(MOV, false, RAX, RAX) // r0 is the old value, zero-extended, either way
		}
	case bytecode.AtomicOr | bytecode.AtomicFetch, bytecode.AtomicAnd | bytecode.AtomicFetch,
		bytecode.AtomicXor | bytecode.AtomicFetch:
		op := map[int32]ALU{0x41: OR, 0x51: AND, 0xa1: XOR}[s.Imm]
		c.fetchOp(op, w, src)
	default:
		return fmt.Errorf("atomic operation %#x is not supported by the JIT", s.Imm)
	}
	return nil
}

// fetchOp is a fetching or/and/xor at [tmp]: a compare-and-exchange loop.
// rax (r0) and a second register are borrowed and restored through the
// context's scratch slots; the operand is read from there, since it may be
// one of the borrowed registers.
func (c *compiler) fetchOp(op ALU, w bool, src Reg) {
	a := &c.a
	borrow := RCX
	if src == RCX {
		borrow = RDX
	}
	a.Store(8, M(ctxReg, ctxSave), RAX)
	a.Store(8, M(ctxReg, ctxSave+8), borrow)
	a.Store(8, M(ctxReg, ctxSave+16), src)
	loop := a.Len()
	if w {
		a.Load(8, RAX, M(tmp, 0))
	} else {
		a.Load(4, RAX, M(tmp, 0))
	}
	a.RR(MOV, true, borrow, RAX)
	a.RM(op, w, borrow, M(ctxReg, ctxSave+16))
	a.LockCmpxchg(w, M(tmp, 0), borrow)
	a.Patch(a.Jcc(CondNE), loop)
	a.RR(MOV, w, tmp, RAX) // the old value (zero-extended for 32 bits)
	a.Load(8, borrow, M(ctxReg, ctxSave+8))
	a.Load(8, RAX, M(ctxReg, ctxSave))
	a.RR(MOV, true, src, tmp)
}
