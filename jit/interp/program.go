package interp

import (
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
)

// insn is one pre-decoded instruction slot.
type insn struct {
	op     uint8  // the raw opcode byte
	dst    uint8  // register numbers
	src    uint8  //
	size   uint8  // bytes accessed by a load, store or atomic
	off    int16  // memory offset
	atomic uint16 // atomic operation (immediate of an atomic instruction)
	imm    int32  // raw immediate
	k      uint64 // immediate sign-extended to 64 bits, or lddw's 64-bit value
	target int32  // slot a jump or local call goes to
	// shielded: not a cancellation point even if it is a back-edge or a
	// helper call (PrepareWith's Shielded).
	shielded bool
}

// Range is the instruction slots [Start, End).
type Range struct{ Start, End int }

// Options prepare a program.
type Options struct {
	// Shielded are slot ranges where a cancel does not stop the program:
	// their back-edges and helper calls do not test the terminate word. They
	// are for code that must not stop halfway and leaves by itself when
	// cancelled (the lock's subprograms: their helper returns an error
	// wrapping abi.ErrCancelled once it has left the queue). The JIT takes
	// the same ranges (jit.Options.Shielded).
	Shielded []Range
}

// Program is validated bytecode, pre-decoded for the interpreter. It is
// immutable and may be run by many Machines at once.
type Program struct {
	code  []insn
	insns asm.Instructions
}

// Load validates insns and prepares them for execution. Errors name the
// instruction.
func Load(insns asm.Instructions) (*Program, error) {
	p, err := bytecode.NewProgram(insns)
	if err != nil {
		return nil, err
	}
	return Prepare(p)
}

// LoadBytes decodes, validates and prepares raw bytecode.
func LoadBytes(raw []byte) (*Program, error) {
	p, err := bytecode.DecodeProgram(raw)
	if err != nil {
		return nil, err
	}
	return Prepare(p)
}

// Prepare pre-decodes bp, which is validated already, for execution; it
// refuses what the interpreter cannot run (lddw pseudo sources, kfuncs).
func Prepare(bp *bytecode.Program) (*Program, error) { return PrepareWith(bp, Options{}) }

// PrepareWith is Prepare with options.
func PrepareWith(bp *bytecode.Program, o Options) (*Program, error) {
	slots := bp.Slots()
	p := &Program{code: make([]insn, len(slots)), insns: bp.Instructions()}
	for slot, sl := range slots {
		in := &p.code[slot]
		in.op, in.dst, in.src, in.off, in.imm, in.k = sl.Op, sl.Dst, sl.Src, sl.Off, sl.Imm, sl.Imm64
		in.size = uint8(bytecode.MemSize(sl.Op))
		switch cls := in.op & 7; {
		case in.op == opLdDW && in.src != 0:
			return nil, &bytecode.Error{Insn: slot, Reason: fmt.Sprintf(
				"lddw with pseudo source %d needs a loader that resolves it (maps, functions); the interpreter runs plain constants only", in.src)}
		case cls == clsSTX && in.op&0xe0 == modeAtomic:
			in.atomic = uint16(in.imm)
		case cls == clsJMP || cls == clsJMP32:
			ins := asm.Instruction{OpCode: asm.OpCode(in.op), Src: asm.Register(in.src), Offset: in.off, Constant: int64(in.imm)}
			if t, ok := bytecode.Target(ins, slot); ok {
				in.target = int32(t)
			}
			if in.op == opCall && in.src == bytecode.CallKfunc {
				return nil, &bytecode.Error{Insn: slot, Reason: fmt.Sprintf("call to kernel function (BTF id %d) is not supported", in.imm)}
			}
		}
	}
	for _, r := range o.Shielded {
		for slot := max(r.Start, 0); slot < min(r.End, len(p.code)); slot++ {
			p.code[slot].shielded = true
		}
	}
	return p, nil
}

// Instructions returns the program's instructions.
func (p *Program) Instructions() asm.Instructions { return p.insns }

// Len is the number of instruction slots.
func (p *Program) Len() int { return len(p.code) }

// Opcode parts (RFC 9669 §3).
const (
	clsLD    = 0x00
	clsLDX   = 0x01
	clsST    = 0x02
	clsSTX   = 0x03
	clsALU   = 0x04
	clsJMP   = 0x05
	clsJMP32 = 0x06
	clsALU64 = 0x07

	modeMem    = 0x60
	modeMemSX  = 0x80
	modeAtomic = 0xc0

	opLdDW = 0x18
	opCall = 0x85
)
