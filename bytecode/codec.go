package bytecode

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf/asm"
)

// SlotSize is the size of one instruction slot; lddw takes two.
const SlotSize = asm.InstructionSize

// Error is a problem with one instruction of a program. Insn is the index of the
// instruction's first slot, as in the kernel verifier's log.
type Error struct {
	Insn   int
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("instruction %d: %s", e.Insn, e.Reason) }

func errorf(insn int, format string, args ...any) error {
	return &Error{Insn: insn, Reason: fmt.Sprintf(format, args...)}
}

const atomicMask = 0x1ff00 // asm's opcode bits for the atomic operation (imm << 8)

// offsetVariants are the ALU operations that asm names as opcodes of their own
// but the ISA encodes as a base operation plus an offset.
var offsetVariants = map[asm.ALUOp]struct {
	base asm.ALUOp
	off  int16
}{
	asm.SDiv: {asm.Div, 1}, asm.SMod: {asm.Mod, 1},
	asm.MovSX8: {asm.Mov, 8}, asm.MovSX16: {asm.Mov, 16}, asm.MovSX32: {asm.Mov, 32},
}

// Decode reads little-endian bytecode. It fails on a length that is not a whole
// number of slots and on an lddw without a well-formed second half; anything
// else decodes, and Validate judges it.
func Decode(raw []byte) (asm.Instructions, error) {
	if len(raw)%SlotSize != 0 {
		return nil, fmt.Errorf("bytecode length %d is not a multiple of %d", len(raw), SlotSize)
	}
	insns := make(asm.Instructions, 0, len(raw)/SlotSize)
	for slot := 0; slot < len(raw)/SlotSize; slot++ {
		b := raw[slot*SlotSize:]
		ins := asm.Instruction{
			OpCode:   asm.OpCode(b[0]),
			Dst:      asm.Register(b[1] & 0xf),
			Src:      asm.Register(b[1] >> 4),
			Offset:   int16(binary.LittleEndian.Uint16(b[2:])),
			Constant: int64(int32(binary.LittleEndian.Uint32(b[4:]))),
		}
		switch op := ins.OpCode; {
		case op.Class().IsALU():
			// asm names the offset-selected variants as opcodes of their own.
			switch {
			case op.ALUOp() == asm.Div && ins.Offset == 1:
				ins.OpCode, ins.Offset = op.SetALUOp(asm.SDiv), 0
			case op.ALUOp() == asm.Mod && ins.Offset == 1:
				ins.OpCode, ins.Offset = op.SetALUOp(asm.SMod), 0
			case op.ALUOp() == asm.Mov && ins.Offset == 8:
				ins.OpCode, ins.Offset = op.SetALUOp(asm.MovSX8), 0
			case op.ALUOp() == asm.Mov && ins.Offset == 16:
				ins.OpCode, ins.Offset = op.SetALUOp(asm.MovSX16), 0
			case op.ALUOp() == asm.Mov && ins.Offset == 32:
				ins.OpCode, ins.Offset = op.SetALUOp(asm.MovSX32), 0
			}
		case op.Class() == asm.StXClass && op.Mode() == asm.AtomicMode:
			if uint32(ins.Constant)&^0x1ff != 0 {
				return nil, errorf(slot, "atomic operation %#x out of range", uint32(ins.Constant))
			}
			ins.OpCode |= asm.OpCode(ins.Constant<<8) & atomicMask
		case op.IsDWordLoad():
			if slot+1 >= len(raw)/SlotSize {
				return nil, errorf(slot, "lddw is missing its second half")
			}
			hi := raw[(slot+1)*SlotSize:]
			if binary.LittleEndian.Uint32(hi[0:4]) != 0 {
				return nil, errorf(slot, "lddw second half has non-zero opcode, registers or offset")
			}
			ins.Constant = int64(binary.LittleEndian.Uint32(hi[4:]))<<32 | int64(uint32(ins.Constant))
			slot++
		}
		insns = append(insns, ins)
	}
	return insns, nil
}

// Encode writes insns as little-endian bytecode, exactly as Decode read it.
func Encode(insns asm.Instructions) ([]byte, error) {
	out := make([]byte, 0, len(insns)*SlotSize)
	for i, ins := range insns {
		var err error
		if out, err = AppendInstruction(out, ins); err != nil {
			return nil, fmt.Errorf("encode instruction %d (%v): %w", i, ins, err)
		}
	}
	return out, nil
}

// AppendInstruction appends the encoding of one instruction to b.
func AppendInstruction(b []byte, ins asm.Instruction) ([]byte, error) {
	op, off, imm := ins.OpCode, ins.Offset, int32(ins.Constant)
	if ins.Dst > 0xf || ins.Src > 0xf {
		return b, fmt.Errorf("register out of range (dst %d, src %d)", ins.Dst, ins.Src)
	}
	switch {
	case op == asm.InvalidOpCode:
		return b, fmt.Errorf("invalid opcode")
	case op.Class().IsALU():
		if s, ok := offsetVariants[op.ALUOp()]; ok {
			if off != 0 {
				return b, fmt.Errorf("%v carries its own offset; Offset must be 0", op)
			}
			op, off = op.SetALUOp(s.base), s.off
		}
		// Any other offset is kept: addr_space_cast is mov with offset 1.
	case op.Class() == asm.StXClass && op.Mode() == asm.AtomicMode:
		// The operation lives in the immediate (asm.Marshal drops it here).
		imm = int32(op&atomicMask) >> 8
		op &^= atomicMask
	}
	if op > 0xff {
		return b, fmt.Errorf("opcode %#x does not fit a byte", uint32(op))
	}
	if op.IsDWordLoad() {
		imm = int32(uint32(ins.Constant))
	}
	b = append(b, byte(op), byte(ins.Src)<<4|byte(ins.Dst), 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint16(b[len(b)-6:], uint16(off))
	binary.LittleEndian.PutUint32(b[len(b)-4:], uint32(imm))
	if op.IsDWordLoad() {
		b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.LittleEndian.PutUint32(b[len(b)-4:], uint32(uint64(ins.Constant)>>32))
	}
	return b, nil
}

// Slots returns, for each instruction, the index of its first slot, and the
// total number of slots.
func Slots(insns asm.Instructions) (start []int, total int) {
	start = make([]int, len(insns))
	for i, ins := range insns {
		start[i] = total
		total += int(ins.Width())
	}
	return start, total
}
