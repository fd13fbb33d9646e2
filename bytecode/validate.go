package bytecode

import (
	"sync/atomic"

	"github.com/cilium/ebpf/asm"
)

// Registers: r0-r9 are general purpose, r10 is the read-only frame pointer.
const (
	FramePointer = asm.R10
	maxReg       = asm.R10
)

// Atomic operations (the immediate of an atomic instruction, RFC 9669 §5.3, plus
// the load-acquire and store-release of Linux 6.15).
const (
	AtomicAdd     = 0x00
	AtomicOr      = 0x40
	AtomicAnd     = 0x50
	AtomicXor     = 0xa0
	AtomicFetch   = 0x01
	AtomicXchg    = 0xe0 | AtomicFetch
	AtomicCmpXchg = 0xf0 | AtomicFetch
	LoadAcquire   = 0x100
	StoreRelease  = 0x110
)

// Pseudo sources of lddw (src register field).
const (
	PseudoMapFD       = 1
	PseudoMapValue    = 2
	PseudoBTFID       = 3
	PseudoFunc        = 4
	PseudoMapIdx      = 5
	PseudoMapIdxValue = 6
)

// Call kinds (src register field of a call).
const (
	CallHelper = 0
	CallLocal  = 1
	CallKfunc  = 2
)

// AtomicImm returns the immediate (the operation) of an atomic instruction.
func AtomicImm(op asm.OpCode) uint32 { return uint32(op&atomicMask) >> 8 }

// Validate checks every instruction of a program in isolation and every jump
// and call target, and that execution cannot run off the end. It knows nothing
// of types or memory: that is the verifier's job.
func Validate(insns asm.Instructions) error {
	validations.Add(1)
	if len(insns) == 0 {
		return errorf(0, "empty program")
	}
	start, total := Slots(insns)
	isStart := make([]bool, total+1)
	for _, s := range start {
		isStart[s] = true
	}
	for i, ins := range insns {
		slot := start[i]
		if err := checkFields(ins); err != "" {
			return errorf(slot, "%v: %s", ins.OpCode, err)
		}
		if target, ok := Target(ins, slot); ok {
			if target < 0 || target >= total {
				return errorf(slot, "%v: target %d outside the program (0..%d)", ins.OpCode, target, total-1)
			}
			if !isStart[target] {
				return errorf(slot, "%v: target %d is the second half of an lddw", ins.OpCode, target)
			}
		}
	}
	last := insns[len(insns)-1]
	if op := last.OpCode; !(op.JumpOp() == asm.Exit || op.JumpOp() == asm.Ja) {
		return errorf(start[len(insns)-1], "%v: last instruction falls off the end of the program", last.OpCode)
	}
	return nil
}

// validations counts Validate's runs (Validations).
var validations atomic.Uint64

// Validations is how many times Validate has run in this process: tests read
// it to show that loading a program validates it once.
func Validations() uint64 { return validations.Load() }

// Target returns the slot a jump or local call at slot goes to.
func Target(ins asm.Instruction, slot int) (int, bool) {
	op := ins.OpCode
	switch {
	case !op.Class().IsJump():
		return 0, false
	case op.JumpOp() == asm.Call:
		if ins.Src != CallLocal {
			return 0, false
		}
		return slot + int(int32(ins.Constant)) + 1, true
	case op.JumpOp() == asm.Exit:
		return 0, false
	case op.JumpOp() == asm.Ja && op.Class() == asm.Jump32Class:
		return slot + int(int32(ins.Constant)) + 1, true
	}
	return slot + int(ins.Offset) + 1, true
}

// checkFields returns why ins is malformed, or "".
func checkFields(ins asm.Instruction) string {
	op := ins.OpCode
	dst, src, off, imm := ins.Dst, ins.Src, ins.Offset, ins.Constant
	if dst > maxReg {
		return "bad destination register"
	}
	if src > maxReg && !op.IsDWordLoad() {
		return "bad source register"
	}
	switch cls := op.Class(); {
	case op.IsDWordLoad():
		switch {
		case dst == FramePointer:
			return "writes the read-only frame pointer"
		case src > PseudoMapIdxValue:
			return "unknown lddw pseudo source"
		case off != 0:
			return "reserved field (offset) is not zero"
		}
		return ""
	case cls == asm.LdClass:
		if op.Mode() == asm.AbsMode || op.Mode() == asm.IndMode {
			return "legacy packet access (LD_ABS/LD_IND) is not supported"
		}
		return "unknown opcode"
	case cls == asm.LdXClass:
		switch {
		case op.Mode() != asm.MemMode && !(op.Mode() == asm.MemSXMode && op.Size() != asm.DWord):
			return "unknown opcode"
		case dst == FramePointer:
			return "writes the read-only frame pointer"
		case imm != 0:
			return "reserved field (immediate) is not zero"
		}
	case cls == asm.StClass:
		switch {
		case op.Mode() != asm.MemMode:
			return "unknown opcode"
		case src != 0:
			return "reserved field (source register) is not zero"
		}
	case cls == asm.StXClass:
		switch op.Mode() {
		case asm.MemMode:
			if imm != 0 {
				return "reserved field (immediate) is not zero"
			}
		case asm.AtomicMode:
			return checkAtomic(op, dst)
		default:
			return "unknown opcode"
		}
	case cls.IsALU():
		return checkALU(ins)
	case cls.IsJump():
		return checkJump(ins)
	}
	return ""
}

func checkAtomic(op asm.OpCode, dst asm.Register) string {
	a := AtomicImm(op)
	switch a {
	case LoadAcquire:
		if dst == FramePointer {
			return "writes the read-only frame pointer"
		}
		return ""
	case StoreRelease:
		return ""
	case AtomicAdd, AtomicOr, AtomicAnd, AtomicXor,
		AtomicAdd | AtomicFetch, AtomicOr | AtomicFetch, AtomicAnd | AtomicFetch, AtomicXor | AtomicFetch,
		AtomicXchg, AtomicCmpXchg:
		if op.Size() != asm.Word && op.Size() != asm.DWord {
			return "atomic read-modify-write needs a 32- or 64-bit size"
		}
		return ""
	}
	return "unknown atomic operation"
}

func checkALU(ins asm.Instruction) string {
	op := ins.OpCode
	is64 := op.Class() == asm.ALU64Class
	reg := op.Source() == asm.RegSource
	if ins.Dst == FramePointer {
		return "writes the read-only frame pointer"
	}
	switch alu := op.ALUOp(); alu {
	case asm.Swap:
		if ins.Src != 0 || ins.Offset != 0 {
			return "reserved fields (source, offset) are not zero"
		}
		if is64 && uint16(op)&0x08 != 0 { // ALU64 byte swap has no "to big endian" variant
			return "unknown opcode"
		}
		switch ins.Constant {
		case 16, 32, 64:
			return ""
		}
		return "byte swap width must be 16, 32 or 64"
	case asm.Neg:
		if reg || ins.Src != 0 || ins.Constant != 0 || ins.Offset != 0 {
			return "reserved fields of neg are not zero"
		}
		return ""
	case asm.MovSX32:
		if !is64 {
			return "32-bit movsx from 32 bits does not exist"
		}
		fallthrough
	case asm.MovSX8, asm.MovSX16:
		if !reg || ins.Constant != 0 {
			return "movsx takes a register source and a zero immediate"
		}
		return ""
	case asm.Mov:
		if reg && ins.Offset == 1 { // addr_space_cast
			if !is64 || (ins.Constant != 1 && ins.Constant != 1<<16) {
				return "bad addr_space_cast"
			}
			return ""
		}
	case asm.Add, asm.Sub, asm.Mul, asm.Div, asm.SDiv, asm.Or, asm.And, asm.LSh, asm.RSh,
		asm.Mod, asm.SMod, asm.Xor, asm.ArSh:
	default:
		return "unknown opcode"
	}
	if ins.Offset != 0 {
		return "reserved field (offset) is not zero"
	}
	return checkSource(ins, reg)
}

// checkSource checks that the operand not used is zero: the immediate when the
// source is a register, the source register when it is the immediate.
func checkSource(ins asm.Instruction, reg bool) string {
	switch {
	case reg && ins.Constant != 0:
		return "reserved field (immediate) is not zero"
	case !reg && ins.Src != 0:
		return "reserved field (source register) is not zero"
	}
	return ""
}

func checkJump(ins asm.Instruction) string {
	op := ins.OpCode
	jmp32 := op.Class() == asm.Jump32Class
	reg := op.Source() == asm.RegSource
	switch op.JumpOp() {
	case asm.Ja:
		if reg || ins.Dst != 0 || ins.Src != 0 || (jmp32 && ins.Offset != 0) || (!jmp32 && ins.Constant != 0) {
			return "reserved fields of ja are not zero"
		}
		return ""
	case asm.Exit:
		if reg || ins.Dst != 0 || ins.Src != 0 || ins.Offset != 0 || ins.Constant != 0 {
			return "reserved fields of exit are not zero"
		}
		return ""
	case asm.Call:
		if reg { // callx: the helper's number is in dst
			if ins.Src != 0 || ins.Offset != 0 || ins.Constant != 0 {
				return "reserved fields of callx are not zero"
			}
			return ""
		}
		if ins.Dst != 0 || ins.Offset != 0 || ins.Src > CallKfunc {
			return "reserved fields of call are not zero"
		}
		return ""
	case asm.JCOND:
		if jmp32 || reg || ins.Dst != 0 || ins.Src != 0 || ins.Constant != 0 {
			return "unknown opcode (only may_goto is defined)"
		}
		return ""
	case asm.JEq, asm.JGT, asm.JGE, asm.JSet, asm.JNE, asm.JSGT, asm.JSGE,
		asm.JLT, asm.JLE, asm.JSLT, asm.JSLE:
		return checkSource(ins, reg)
	}
	return "unknown opcode"
}
